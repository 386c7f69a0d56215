package atomicfile

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
)

// Recorder is an FS for tests: it performs each operation on the wrapped FS
// and records it, and Check replays the record against the rules of a
// power cut. After a crash of the machine (not of the process), a file holds
// what was last synced, and a directory the entries it held when last
// synced; everything else may be lost or reordered. So a save survives a
// power cut only if:
//
//  1. nothing is renamed into place (published) before its content is on
//     disk: a file's writes synced, a directory's files synced and its own
//     entries synced;
//  2. nothing is removed while a rename that published its replacement is
//     not yet durable (the directory receiving it not synced since): a crash
//     then could lose both the old and the new;
//  3. when the save returns, every publish is durable.
type Recorder struct {
	FS     FS
	mu     sync.Mutex
	Events []Event
}

// Event is one recorded operation.
type Event struct {
	Op   string // create, write, sync, close, mkdir, rename, removeall, syncdir
	Path string
	To   string // rename's new path
}

func (e Event) String() string {
	if e.To != "" {
		return fmt.Sprintf("%s %s -> %s", e.Op, e.Path, e.To)
	}
	return e.Op + " " + e.Path
}

func (r *Recorder) add(e Event) {
	r.mu.Lock()
	r.Events = append(r.Events, e)
	r.mu.Unlock()
}

func (r *Recorder) CreateTemp(dir, pattern string) (File, error) {
	f, err := r.FS.CreateTemp(dir, pattern)
	if err == nil {
		r.add(Event{Op: "create", Path: f.Name()})
		f = &recFile{File: f, r: r}
	}
	return f, err
}

func (r *Recorder) MkdirTemp(dir, pattern string) (string, error) {
	d, err := r.FS.MkdirTemp(dir, pattern)
	if err == nil {
		r.add(Event{Op: "mkdir", Path: d})
	}
	return d, err
}

func (r *Recorder) Rename(oldpath, newpath string) error {
	err := r.FS.Rename(oldpath, newpath)
	if err == nil {
		r.add(Event{Op: "rename", Path: oldpath, To: newpath})
	}
	return err
}

func (r *Recorder) RemoveAll(path string) error {
	r.add(Event{Op: "removeall", Path: path})
	return r.FS.RemoveAll(path)
}

func (r *Recorder) SyncDir(dir string) error {
	err := r.FS.SyncDir(dir)
	if err == nil {
		r.add(Event{Op: "syncdir", Path: dir})
	}
	return err
}

type recFile struct {
	File
	r *Recorder
}

func (f *recFile) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	if n > 0 {
		f.r.add(Event{Op: "write", Path: f.Name()})
	}
	return n, err
}

func (f *recFile) Sync() error {
	err := f.File.Sync()
	if err == nil {
		f.r.add(Event{Op: "sync", Path: f.Name()})
	}
	return err
}

// Check replays the record and returns every violation of the rules above
// (nil: the recorded saves survive a power cut at any point).
func (r *Recorder) Check() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var bad []string
	dirty := map[string]bool{}     // file -> written since its last sync
	pending := map[string]string{} // directory -> an entry change not yet synced (its description)
	published := map[string]string{}
	temp := map[string]bool{} // directories made by MkdirTemp and not yet published
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) }
	// move renames the state of everything at or under old to new.
	move := func(old, nw string) {
		for _, m := range []map[string]bool{dirty, temp} {
			for p, v := range m {
				if under(p, old) {
					delete(m, p)
					m[nw+strings.TrimPrefix(p, old)] = v
				}
			}
		}
		for p, v := range pending {
			if under(p, old) {
				delete(pending, p)
				pending[nw+strings.TrimPrefix(p, old)] = v
			}
		}
	}
	for i, e := range r.Events {
		at := fmt.Sprintf("event %d (%s)", i, e)
		switch e.Op {
		case "create", "mkdir":
			pending[filepath.Dir(e.Path)] = e.String()
			if e.Op == "mkdir" {
				temp[e.Path] = true
			}
		case "write":
			dirty[e.Path] = true
		case "sync":
			delete(dirty, e.Path)
		case "syncdir":
			delete(pending, e.Path)
			delete(published, e.Path)
		case "rename":
			// Rule 1: what is renamed is complete on disk.
			for p := range dirty {
				if under(p, e.Path) {
					bad = append(bad, fmt.Sprintf("%s: %s is renamed into place before its written content is synced", at, p))
				}
			}
			if temp[e.Path] {
				for d, why := range pending {
					if under(d, e.Path) {
						bad = append(bad, fmt.Sprintf("%s: directory %s is renamed into place before its entries are synced (%s)", at, d, why))
					}
				}
			}
			move(e.Path, e.To)
			delete(temp, e.To)
			from, to := filepath.Dir(e.Path), filepath.Dir(e.To)
			pending[from], pending[to] = e.String(), e.String()
			if !temp[to] && !insideTemp(temp, to) {
				published[to] = e.String()
			}
		case "removeall":
			// Rule 2: nothing is destroyed while a replacement's rename is volatile.
			for d, why := range published {
				bad = append(bad, fmt.Sprintf("%s: %s is removed while the publish %q in %s is not synced", at, e.Path, why, d))
			}
			for p := range dirty {
				if under(p, e.Path) {
					delete(dirty, p)
				}
			}
		}
	}
	// Rule 3: the save's result is durable when it returns.
	for d, why := range published {
		bad = append(bad, fmt.Sprintf("at the end: the publish %q in %s is not synced", why, d))
	}
	return bad
}

func insideTemp(temp map[string]bool, p string) bool {
	for d := range temp {
		if strings.HasPrefix(p, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
