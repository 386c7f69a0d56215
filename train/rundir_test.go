package train

import (
	"fmt"
	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// The crash tests run copies of the test binary that save a checkpoint and
// kill themselves (SIGKILL: no deferred clean-up runs) at the n-th step of
// the save, the way a power cut or the OOM killer would stop a run.
const (
	envCrashRun = "DIMTORCH_TRAIN_TEST_CRASH_RUN" // the run directory
	envCrashAt  = "DIMTORCH_TRAIN_TEST_CRASH_AT"  // the save step to die at (1-based; 0: finish)
)

// crashingSave loads the run's checkpoint as a resumed run would (step 0
// when there is none), saves the next step and dies at the requested point.
// Exit 0: the save finished; 3: an error.
func crashingSave(run string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	at, _ := strconv.Atoi(os.Getenv(envCrashAt))
	calls := 0
	savePoint = func(string) {
		if calls++; calls == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	var step int64
	if _, err := FindCheckpoint(run); err == nil {
		ck, err := LoadCheckpoint(run, true)
		if err != nil {
			fail(err)
		}
		step = ck.Meta.State.Step
		ck.Free()
	}
	lock, err := lockRun(run)
	if err != nil {
		fail(err)
	}
	defer lock.release()
	if err := saveTestCheckpoint(run, step+1); err != nil {
		fail(err)
	}
	os.Exit(0)
}

// saveTestCheckpoint saves a small checkpoint whose tensors encode its step.
func saveTestCheckpoint(run string, step int64) error {
	w := torch.Full([]int64{64, 64}, float64(step))
	defer w.Free()
	m := torch.Full([]int64{64}, float64(step))
	defer m.Free()
	meta := Meta{Config: Defaults(), State: State{Step: step}}
	return saveCheckpoint(run, meta, map[string]*torch.Tensor{"encoder.w": w}, map[string]*torch.Tensor{"encoder.m": m})
}

// loadedStep loads the run's checkpoint in full and checks that its tensors
// belong to the step its metadata names.
func loadedStep(t *testing.T, run string) int64 {
	t.Helper()
	ck, err := LoadCheckpoint(run, true)
	if err != nil {
		t.Fatalf("no loadable checkpoint: %v (run holds %v)", err, listDir(run))
	}
	defer ck.Free()
	step := ck.Meta.State.Step
	for name, tt := range map[string]*torch.Tensor{"model.safetensors": ck.Model["encoder.w"], "optim.safetensors": ck.Optim["encoder.m"]} {
		v, err := tt.Float64s()
		if err != nil || v[0] != float64(step) {
			t.Fatalf("checkpoint.json says step %d but %s holds %v (%v)", step, name, v[:1], err)
		}
	}
	return step
}

func listDir(dir string) []string {
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// crashSave runs one child; it reports whether the child died.
func crashSave(t *testing.T, run string, at int) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashRun+"="+run, envCrashAt+"="+strconv.Itoa(at))
	out, err := cmd.CombinedOutput()
	if err == nil {
		return false
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	t.Fatalf("crash child: %v\n%s", err, out)
	return false
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// savePoints counts the points a save over an existing checkpoint passes.
func savePoints(t *testing.T) int {
	t.Helper()
	run := t.TempDir()
	if err := saveTestCheckpoint(run, 1); err != nil {
		t.Fatal(err)
	}
	n := 0
	savePoint = func(string) { n++ }
	defer func() { savePoint = func(string) {} }()
	if err := saveTestCheckpoint(run, 2); err != nil {
		t.Fatal(err)
	}
	if n < 8 {
		t.Fatalf("a save passes %d points: the hooks are not where this test expects", n)
	}
	return n
}

// TestCheckpointSurvivesKills kills (SIGKILL: nothing deferred runs) a
// process saving over a checkpoint at each point of the save: the run then
// holds a complete checkpoint, the old or the new, and the next save
// finishes.
func TestCheckpointSurvivesKills(t *testing.T) {
	points := savePoints(t)
	dir := t.TempDir()
	for i := 1; i <= points; i++ {
		run := filepath.Join(dir, fmt.Sprintf("kill-%d", i))
		if err := os.Mkdir(run, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := saveTestCheckpoint(run, 1); err != nil {
			t.Fatal(err)
		}
		if !crashSave(t, run, i) {
			t.Fatalf("save point %d of %d: the child did not die", i, points)
		}
		s := loadedStep(t, run)
		if s != 1 && s != 2 {
			t.Fatalf("killed at point %d: step %d, want 1 or 2", i, s)
		}
		if crashSave(t, run, 0) {
			t.Fatal("an uninterrupted save died")
		}
		if got := loadedStep(t, run); got != s+1 {
			t.Fatalf("killed at point %d, then saved: step %d, want %d", i, got, s+1)
		}
	}
}

// crashed stands for a process that died in a save: savePoint panics with it
// and the save's code runs nothing more (it defers no clean-up).
type crashed struct{}

// saveOrCrash saves step, crashing at the at-th save point (0: never); it
// reports whether it crashed.
func saveOrCrash(t *testing.T, run string, step int64, at int) (died bool) {
	t.Helper()
	calls := 0
	savePoint = func(string) {
		if calls++; calls == at {
			panic(crashed{})
		}
	}
	defer func() {
		savePoint = func(string) {}
		if r := recover(); r != nil {
			if _, ok := r.(crashed); !ok {
				panic(r)
			}
			died = true
		}
	}()
	if err := saveTestCheckpoint(run, step); err != nil {
		t.Fatal(err)
	}
	return false
}

// TestCheckpointSurvivesCrashSequences crashes every save of a sequence at
// every combination of points, each save made as a resumed run makes it
// (the next step after the checkpoint it loads, after taking the run):
// after every crash a complete checkpoint remains, never older than the
// last save that finished. Among the sequences is the one that broke the
// earlier swap: a crash that leaves only checkpoint.old, then a crash in the
// next save after it had deleted checkpoint.old. The kill test above shows
// that these in-process crashes leave what real ones leave.
func TestCheckpointSurvivesCrashSequences(t *testing.T) {
	points := savePoints(t) + 2 // a save after a crash may pass more points: it discards leftovers
	dir := t.TempDir()
	runs := 0
	var walk func(run string, finished int64, depth int, path []int)
	walk = func(run string, finished int64, depth int, path []int) {
		for at := 1; at <= points+1; at++ {
			next := filepath.Join(dir, fmt.Sprint(runs))
			runs++
			copyDir(t, run, next)
			lock, err := claimRun(Options{Out: next})
			if err != nil {
				t.Fatal(err)
			}
			step := loadedStep(t, next)
			if step < finished {
				t.Fatalf("crashes at %v: step %d, older than the last finished save (%d)", path, step, finished)
			}
			died := saveOrCrash(t, next, step+1, at)
			lock.release()
			seq := append(append([]int(nil), path...), at)
			got := loadedStep(t, next)
			switch {
			case !died && got != step+1:
				t.Fatalf("crashes at %v: a finished save left step %d, want %d", seq, got, step+1)
			case died && got != step && got != step+1:
				t.Fatalf("crashes at %v: step %d, want %d or %d", seq, got, step, step+1)
			}
			if died && depth > 1 {
				walk(next, step, depth-1, seq)
			}
			if !died {
				os.RemoveAll(next)
				break
			}
			os.RemoveAll(next)
		}
	}
	base := filepath.Join(dir, "base")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := saveTestCheckpoint(base, 1); err != nil {
		t.Fatal(err)
	}
	walk(base, 1, 3, nil)
	t.Logf("%d crash sequences of up to 3 saves", runs)
}

// TestRunLockAndStaleCleanup: a second writer is refused while the first
// holds the run, and taking the run removes the temporaries of crashed saves
// (never the checkpoint).
func TestRunLockAndStaleCleanup(t *testing.T) {
	run := t.TempDir()
	if err := saveTestCheckpoint(run, 1); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{tmpPrefix + "123", trashPrefix + "456"} {
		if err := os.MkdirAll(filepath.Join(run, name, "c"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(run, name, "c", "model.safetensors"), make([]byte, 1000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{Out: run}
	lock, err := claimRun(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range listDir(run) {
		if strings.HasPrefix(name, tmpPrefix) || strings.HasPrefix(name, trashPrefix) {
			t.Errorf("%s left after taking the run", name)
		}
	}
	if loadedStep(t, run) != 1 {
		t.Fatal("the checkpoint changed")
	}
	_, err = claimRun(o)
	if err == nil || !strings.Contains(err.Error(), "is in use") || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("a second writer: %v, want an error naming process %d", err, os.Getpid())
	}
	if _, err := Resume(o, nil); err == nil || !strings.Contains(err.Error(), "is in use") {
		t.Fatalf("resume while the run is held: %v", err)
	}
	lock.release()
	lock, err = claimRun(o)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	lock.release()
}

// TestRescueFromTemporary: a run left with no checkpoint but complete copies
// in temporary directories (as crashes during the earlier swap could leave)
// gets the newest complete one back when it is next taken.
func TestRescueFromTemporary(t *testing.T) {
	run := t.TempDir()
	for _, step := range []int64{3, 5, 4} {
		src := t.TempDir()
		if err := saveTestCheckpoint(src, step); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(src, CheckpointDir), filepath.Join(run, fmt.Sprintf("%s%d", tmpPrefix, step))); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of step 9 that a crash cut short: no checkpoint.json yet.
	if err := os.Remove(filepath.Join(run, tmpPrefix+"4", "checkpoint.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(run, tmpPrefix+"4"), filepath.Join(run, tmpPrefix+"9")); err != nil {
		t.Fatal(err)
	}
	lock, err := claimRun(Options{Out: run})
	if err != nil {
		t.Fatal(err)
	}
	defer lock.release()
	if s := loadedStep(t, run); s != 5 {
		t.Fatalf("rescued step %d, want 5 (the newest complete copy)", s)
	}
	for _, name := range listDir(run) {
		if strings.HasPrefix(name, tmpPrefix) {
			t.Errorf("%s left", name)
		}
	}
}

// Saves survive a power cut, not only a killed process (which keeps the page
// cache, so a missing fsync would pass every other test here): the file
// operations of three checkpoint saves in a row (the first into an empty run,
// the others swapping the previous checkpoint out) and of a whole training
// run are recorded and checked against a power cut's rules
// (atomicfile.Recorder): nothing published before its content and entries
// are synced, nothing removed while its replacement's rename is volatile,
// everything durable when the save returns. bench/mutants.sh removes the
// run directory's sync after the swap and expects this test to fail.
func TestCheckpointSurvivesPowerCut(t *testing.T) {
	rec := &atomicfile.Recorder{FS: atomicfile.Sys}
	prev := atomicfile.Sys
	atomicfile.Sys = rec
	defer func() { atomicfile.Sys = prev }()
	run := t.TempDir()
	for step := int64(1); step <= 3; step++ {
		if err := saveTestCheckpoint(run, step); err != nil {
			t.Fatal(err)
		}
	}
	if got := loadedStep(t, run); got != 3 {
		t.Fatalf("the run holds step %d after three saves", got)
	}
	cfg := smallConfig(t)
	cfg.Epochs = 2
	tr, err := New(cfg, opts(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)
	renames := 0
	for _, e := range rec.Events {
		if e.Op == "rename" && filepath.Base(e.To) == CheckpointDir {
			renames++
		}
	}
	if renames < 5 {
		t.Fatalf("%d checkpoint swaps recorded: the saves did not go through atomicfile.Sys", renames)
	}
	if bad := rec.Check(); len(bad) != 0 {
		t.Fatalf("a power cut during these saves could lose the checkpoint:\n%s", strings.Join(bad, "\n"))
	}
}
