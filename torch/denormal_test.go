//go:build !dimtorch_shim

// A separately built shim (-tags dimtorch_shim) has no OpenMP pragma: it
// flushes denormals on the calling thread only, as documented, so this
// test of the whole team is for the default build.

package torch_test

import (
	"runtime"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// With denormals flushed, arithmetic on them gives zero, on the calling
// thread and on the intra-op threads (a large product runs on all of them);
// without, they survive.
func TestFlushDenormal(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := torch.SetNumThreads(2); err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope()
	defer s.Close()
	const tiny = 1e-39 // a float32 denormal
	survivors := func() float64 {
		small := torch.Full([]int64{1}, tiny, s).MulScalar(1)
		large := torch.Full([]int64{1 << 20}, tiny, s).MulScalar(1).Ne(torch.Zeros([]int64{1 << 20}, s)).Sum()
		a, err := small.Item()
		if err != nil {
			t.Fatal(err)
		}
		b, err := large.Item()
		if err != nil {
			t.Fatal(err)
		}
		return a + b
	}
	if !torch.SetFlushDenormal(true) {
		t.Skip("this CPU cannot flush denormals")
	}
	defer torch.SetFlushDenormal(false)
	if n := survivors(); n != 0 {
		t.Fatalf("with denormals flushed, %g survived", n)
	}
	torch.SetFlushDenormal(false)
	if n := survivors(); n < 1<<20 {
		t.Fatalf("without flushing, only %g denormals survived", n)
	}
}
