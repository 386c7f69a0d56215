package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
)

// A run directory holds the checkpoint and what the run writes beside it.
// Two rules keep it usable whatever happens to the process:
//
//   - At every instant at least one complete checkpoint is reachable by
//     FindCheckpoint: RUN/checkpoint, or RUN/checkpoint.old while a swap is
//     in progress. A new checkpoint is written in full to a temporary
//     directory, then swapped in by renames; the previous one is only
//     discarded once the new one is in place (saveCheckpoint).
//   - One process at a time writes to a run: the leader holds an exclusive
//     lock on RUN/.lock (released by the kernel if the process dies), and on
//     taking it removes what crashed saves left behind.

const (
	tmpPrefix   = ".checkpoint-tmp-"   // a checkpoint being written
	trashPrefix = ".checkpoint-trash-" // a checkpoint being deleted
	lockName    = ".lock"
)

// savePoint is a test hook called at each step of saveCheckpoint, so a test
// can kill the process at every point of a save.
var savePoint = func(string) {}

// swapIn makes the complete checkpoint in tmp the run's checkpoint.
func swapIn(run, tmp string) error {
	dst := filepath.Join(run, CheckpointDir)
	old := dst + ".old"
	if _, err := os.Stat(dst); err == nil {
		// dst is complete (it only ever appears by a rename of a complete
		// directory), so an older checkpoint.old is not needed any more.
		if err := discard(run, old); err != nil {
			return err
		}
		savePoint("old-discarded")
		if err := atomicfile.Sys.Rename(dst, old); err != nil {
			return err
		}
		savePoint("current-moved")
	}
	// When dst is missing, checkpoint.old (if any) is the only complete
	// checkpoint: it stays until the new one is in place.
	if err := atomicfile.Sys.Rename(tmp, dst); err != nil {
		_ = atomicfile.Sys.Rename(old, dst)
		return err
	}
	savePoint("swapped")
	syncDir(run)
	savePoint("synced")
	err := discard(run, old)
	savePoint("done")
	return err
}

// discard deletes a checkpoint directory: renamed first (atomic), so a crash
// during the deletion leaves no half-deleted checkpoint.old that could be
// mistaken for a checkpoint.
func discard(run, dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	trash, err := atomicfile.Sys.MkdirTemp(run, trashPrefix)
	if err != nil {
		return err
	}
	if err := atomicfile.Sys.Rename(dir, filepath.Join(trash, "c")); err != nil {
		_ = atomicfile.Sys.RemoveAll(trash)
		return err
	}
	savePoint("trash-moved")
	return atomicfile.Sys.RemoveAll(trash)
}

// syncDir makes a directory's entries durable (best effort: a failure here
// cannot undo what was done).
func syncDir(dir string) { _ = atomicfile.Sys.SyncDir(dir) }

// runLock is an exclusive lock on a run directory.
type runLock struct{ f *os.File }

// lockRun takes the run's lock, or says which process holds it.
func lockRun(run string) (*runLock, error) {
	path := filepath.Join(run, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock run directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(b))
			if holder == "" {
				holder = "another process"
			} else {
				holder = "process " + holder
			}
			return nil, fmt.Errorf("%s is in use: %s is training in it (one run directory, one training process)", run, holder)
		}
		return nil, fmt.Errorf("lock run directory: %w", err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return &runLock{f: f}, nil
}

func (l *runLock) release() {
	if l == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// rescueTemp makes the newest complete temporary checkpoint the run's
// checkpoint when the run has none: runs written by dimtorch before the
// current swap could lose both checkpoint and checkpoint.old to two crashes
// while a complete copy sat in a temporary directory. checkpoint.json is
// written last, after both tensor files are on disk, so its presence marks a
// complete copy. It returns the directory it rescued ("" for none).
func rescueTemp(run string) (string, error) {
	if _, err := FindCheckpoint(run); err == nil {
		return "", nil
	}
	ents, err := os.ReadDir(run)
	if err != nil {
		return "", err
	}
	best, bestStep := "", int64(-1)
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		m, err := ReadMeta(filepath.Join(run, e.Name()))
		if err != nil {
			continue
		}
		if m.State.Step > bestStep {
			best, bestStep = e.Name(), m.State.Step
		}
	}
	if best == "" {
		return "", nil
	}
	if err := atomicfile.Sys.Rename(filepath.Join(run, best), filepath.Join(run, CheckpointDir)); err != nil {
		return best, err
	}
	syncDir(run)
	return best, nil
}

// cleanStale removes the temporary directories of saves that a crash
// interrupted; the caller holds the run's lock, so none is in use. It
// returns how many it removed and their size.
func cleanStale(run string) (n int, bytes int64, err error) {
	ents, err := os.ReadDir(run)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !(strings.HasPrefix(name, tmpPrefix) || strings.HasPrefix(name, trashPrefix)) {
			continue
		}
		p := filepath.Join(run, name)
		_ = filepath.WalkDir(p, func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					bytes += fi.Size()
				}
			}
			return nil
		})
		if err := atomicfile.Sys.RemoveAll(p); err != nil {
			return n, bytes, err
		}
		n++
	}
	return n, bytes, nil
}
