package testref

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder stands in for a test, recording how it ended.
type recorder struct {
	testing.TB
	failed, skipped string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Fatalf(f string, a ...any) { r.failed = fmt.Sprintf(f, a...) }
func (r *recorder) Skipf(f string, a ...any)  { r.skipped = fmt.Sprintf(f, a...) }

// A PyTorch made unimportable (a torch package on PYTHONPATH that raises
// ImportError) fails a cross-check under CI=true, saying what to install,
// and skips it elsewhere, saying that it was skipped.
func TestMissingReferenceFailsUnderCI(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "torch"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "torch", "__init__.py"), []byte("raise ImportError('deliberately unavailable')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PYTHONPATH", dir)
	for _, ci := range []string{"true", "1", "", "false"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		NeedPyTorch(r)
		if InCI() {
			if r.failed == "" || !strings.Contains(r.failed, "python3-torch") || !strings.Contains(r.failed, "deliberately unavailable") {
				t.Fatalf("CI=%q: want a failure naming python3-torch and the import error, got failed %q, skipped %q", ci, r.failed, r.skipped)
			}
		} else if r.failed != "" || !strings.Contains(r.skipped, "skipped, not passed") {
			t.Fatalf("CI=%q: want a skip that says so, got failed %q, skipped %q", ci, r.failed, r.skipped)
		}
	}
	// Without the blocker, the real PyTorch is there (make setup installs it).
	t.Setenv("PYTHONPATH", "")
	NeedPyTorch(t)
}
