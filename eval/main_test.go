package eval

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/torch"
)

// TestMain fails the package when any tensor was left for a finalizer to
// free: a leak in the code or in a test, which would also disturb the
// live-tensor counts of the leak tests.
func TestMain(m *testing.M) {
	code := m.Run()
	collectGarbage()
	if n := torch.FinalizedTensors(); n > 0 && code == 0 {
		fmt.Printf("FAIL: %d tensors were never freed (the finalizers caught them)\n", n)
		code = 1
	}
	os.Exit(code)
}

// collectGarbage runs the collector until the finalizers of unreachable
// tensors have run.
func collectGarbage() {
	for i := 0; i < 3; i++ {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}
