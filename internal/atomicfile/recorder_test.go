package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func record(t *testing.T) *Recorder {
	t.Helper()
	r := &Recorder{FS: osFS{}}
	prev := Sys
	Sys = r
	t.Cleanup(func() { Sys = prev })
	return r
}

// Write's operations survive a power cut; the same record with the file's
// sync or the directory's sync removed does not.
func TestWriteIsDurable(t *testing.T) {
	r := record(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteBytes(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteBytes(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	if bad := r.Check(); len(bad) != 0 {
		t.Fatalf("Write is not durable:\n%s", strings.Join(bad, "\n"))
	}
	for _, drop := range []string{"sync", "syncdir"} {
		m := &Recorder{}
		for _, e := range r.Events {
			if e.Op != drop {
				m.Events = append(m.Events, e)
			}
		}
		if bad := m.Check(); len(bad) == 0 {
			t.Errorf("without %s the record still passes", drop)
		} else {
			t.Logf("without %s: %s", drop, bad[0])
		}
	}
}

// The rules on a hand-written record of a directory swap: publishing a
// directory whose entries are not synced, and removing the old copy before
// the swap's rename is synced, are both caught.
func TestCheckDirectorySwap(t *testing.T) {
	good := []Event{
		{Op: "mkdir", Path: "/r/.tmp1"},
		{Op: "create", Path: "/r/.tmp1/.a.tmp"}, {Op: "write", Path: "/r/.tmp1/.a.tmp"}, {Op: "sync", Path: "/r/.tmp1/.a.tmp"},
		{Op: "rename", Path: "/r/.tmp1/.a.tmp", To: "/r/.tmp1/a"}, {Op: "syncdir", Path: "/r/.tmp1"},
		{Op: "rename", Path: "/r/ck", To: "/r/ck.old"}, {Op: "rename", Path: "/r/.tmp1", To: "/r/ck"}, {Op: "syncdir", Path: "/r"},
		{Op: "mkdir", Path: "/r/.trash1"}, {Op: "rename", Path: "/r/ck.old", To: "/r/.trash1/c"}, {Op: "removeall", Path: "/r/.trash1"},
		{Op: "syncdir", Path: "/r"},
	}
	if bad := (&Recorder{Events: good}).Check(); len(bad) != 0 {
		t.Fatalf("a durable swap fails: %v", bad)
	}
	without := func(i int) []Event { return append(append([]Event{}, good[:i]...), good[i+1:]...) }
	for i, want := range map[int]string{5: "entries are synced", 8: "is removed while", 3: "before its written content is synced"} {
		bad := (&Recorder{Events: without(i)}).Check()
		if len(bad) == 0 || !strings.Contains(strings.Join(bad, "\n"), want) {
			t.Errorf("without event %d (%s): %v, want %q", i, good[i], bad, want)
		}
	}
}
