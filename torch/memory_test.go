package torch_test

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// rssBytes reads the resident set size from /proc.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func smallNet() *nn.Sequential {
	return nn.NewSequential(
		nn.NewConv2d(1, 8, 3, torch.ConvOptions{Stride: 2, Padding: 1}, false),
		nn.NewBatchNorm2d(8),
		nn.ReLU(),
		nn.Flatten(),
		nn.NewLinear(8*8*8, 10, true),
	)
}

// TestMemoryFlatOverManySteps runs thousands of forward/backward/Adam steps
// and checks that resident memory and the number of live tensor handles stay
// flat, and that nothing had to be rescued by the finalizer safety net.
func TestMemoryFlatOverManySteps(t *testing.T) {
	steps := 2000
	if testing.Short() {
		steps = 600
	}
	net := smallNet()
	defer nn.Free(net)
	opt, err := optim.NewAdam(nn.Parameters(net), optim.AdamDefaults(1e-3))
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	target := torch.RandInt(0, 10, []int64{32})
	defer target.Free()
	s := torch.NewScope()
	defer s.Close()
	step := func() {
		x := torch.Randn([]int64{32, 1, 16, 16}, s)
		loss := torch.CrossEntropy(net.Forward(x), target, torch.ReduceMean)
		if err := opt.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		if err := loss.Backward(); err != nil {
			t.Fatal(err)
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
		s.Reset()
	}
	warm := steps / 6
	for i := 0; i < warm; i++ {
		step()
	}
	settleFinalizers()
	live0, fin0, rss0 := torch.LiveTensors(), torch.FinalizedTensors(), rssBytes(t)
	for i := 0; i < steps; i++ {
		step()
	}
	runtime.GC()
	live1, fin1, rss1 := torch.LiveTensors(), torch.FinalizedTensors(), rssBytes(t)
	t.Logf("%d steps: RSS %.1f -> %.1f MiB, live tensors %d -> %d", steps, float64(rss0)/(1<<20), float64(rss1)/(1<<20), live0, live1)
	if live1 != live0 {
		t.Errorf("live tensor handles grew from %d to %d", live0, live1)
	}
	if fin1 != fin0 {
		t.Errorf("%d tensors were only freed by finalizers", fin1-fin0)
	}
	if growth := rss1 - rss0; growth > 16<<20 {
		t.Errorf("resident memory grew by %.1f MiB over %d steps", float64(growth)/(1<<20), steps)
	}
}

// TestScopeFreesEverything checks the bookkeeping of scopes and MoveTo.
func TestScopeFreesEverything(t *testing.T) {
	before, fin0 := torch.LiveTensors(), torch.FinalizedTensors() // see TestResultJoinsTheYoungestScope
	s := torch.NewScope()
	x := torch.Randn([]int64{4, 4}, s)
	y := x.Matmul(x).Relu().Sum()
	kept := x.Exp().MoveTo(nil)
	if s.Len() != 4 {
		t.Fatalf("scope holds %d tensors, want 4", s.Len())
	}
	if y.Scope() != s || kept.Scope() != nil {
		t.Fatal("results must join their operand's scope; MoveTo(nil) leaves it")
	}
	s.Close()
	if got := torch.LiveTensors() - before + (torch.FinalizedTensors() - fin0); got != 1 {
		t.Fatalf("%d tensors alive after Close, want only the kept one", got)
	}
	if err := kept.Err(); err != nil {
		t.Fatalf("the kept tensor was freed: %v", err)
	}
	kept.Free()
	if got := torch.LiveTensors() - before + (torch.FinalizedTensors() - fin0); got != 0 {
		t.Fatalf("%d tensors alive after Free", got)
	}
}

// TestGoroutinesWithOwnTensors trains independent models on several
// goroutines at once and checks each gets the same result as a lone run.
func TestGoroutinesWithOwnTensors(t *testing.T) {
	run := func(seedOffset float64) float64 {
		s := torch.NewScope()
		defer s.Close()
		w := torch.Full([]int64{8}, seedOffset, torch.Float64, s).SetRequiresGrad(true)
		x := torch.Arange(0, 8, 1, torch.Float64, s)
		for i := 0; i < 200; i++ {
			loss := w.Mul(x).Sub(x.MulScalar(2)).Square().Sum()
			g, err := torch.Grad([]*torch.Tensor{loss}, []*torch.Tensor{w}, torch.GradOptions{})
			if err != nil {
				return -1
			}
			var e error
			torch.NoGrad(func() { e = w.SubInPlace(g[0], 0.001) })
			if e != nil {
				return -1
			}
		}
		v, _ := w.Sum().Item()
		return v
	}
	want := []float64{run(0), run(1), run(-1), run(3)}
	var wg sync.WaitGroup
	got := make([]float64, 16)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			got[i] = run([]float64{0, 1, -1, 3}[i%4])
		}(i)
	}
	wg.Wait()
	for i, g := range got {
		if g != want[i%4] {
			t.Fatalf("goroutine %d: %v, alone %v", i, g, want[i%4])
		}
	}
}

// TestNoGradIsScoped checks that NoGrad turns recording off inside and
// restores it outside.
func TestNoGradIsScoped(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Ones([]int64{2}, s).SetRequiresGrad(true)
	var inside *torch.Tensor
	torch.NoGrad(func() { inside = x.MulScalar(2) })
	if inside.RequiresGrad() {
		t.Fatal("NoGrad recorded an operation")
	}
	if !x.MulScalar(2).RequiresGrad() {
		t.Fatal("grad mode was not restored after NoGrad")
	}
}

// Unscoped temporaries in a chain are unreachable from Go while the next C
// call uses them; the binding must keep them alive until the call returns,
// or the finalizer frees them mid-call. A goroutine forcing garbage
// collections makes such a bug crash this test.
func TestTemporariesSurviveGCDuringCalls(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	x := torch.Randn([]int64{1024, 1024})
	defer x.Free()
	for i := 0; i < 300; i++ {
		v, err := x.Detach().MulScalar(2).Float32s()
		if err != nil || len(v) != 1024*1024 {
			t.Fatalf("iteration %d: %v", i, err)
		}
		if _, err := x.Detach().Exp().Sum().Item(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
}

// TestResultJoinsTheYoungestScope: an operator's result lives in the
// youngest scope among its operands', whatever their order, so per-batch
// results of a long-lived tensor are freed with the batch (they were kept
// until the long-lived scope closed when the first operand's scope won).
func TestResultJoinsTheYoungestScope(t *testing.T) {
	long := torch.NewScope()
	defer long.Close()
	x := torch.Randn([]int64{100, 8}, long)
	// Finalizers of tensors that earlier tests dropped may run meanwhile
	// (the count is global): their frees are added back below.
	before, fin0 := torch.LiveTensors(), torch.FinalizedTensors()
	for i := 0; i < 50; i++ {
		batch := torch.NewScope()
		idx := torch.RandInt(0, 100, []int64{16}, batch)
		a := x.IndexSelect(0, idx)                   // long-lived operand first
		b := torch.Where(idx.GtScalar(50), idx, idx) // batch operands only
		c := x.Narrow(0, 0, 16).Add(a)               // both scopes, long first
		d := a.Add(x.Narrow(0, 0, 16))               // both scopes, batch first
		for _, r := range []*torch.Tensor{a, b, c, d} {
			if r.Scope() != batch {
				t.Fatalf("a result of a batch operand is not in the batch's scope")
			}
		}
		if x.Narrow(0, 0, 1).Scope() != long {
			t.Fatal("a result of the long-lived operand alone left its scope")
		}
		batch.Close()
	}
	// The three narrows of x alone per batch stay in the long-lived scope,
	// by design; every batch result is freed.
	if got := torch.LiveTensors() - before + (torch.FinalizedTensors() - fin0); got != 3*50 {
		t.Fatalf("%d handles alive after the batches, want 150 (x's own narrows)", got)
	}
	// Unscoped operands do not count: the result joins the scoped one.
	w := torch.Randn([]int64{8, 8})
	defer w.Free()
	s := torch.NewScope()
	defer s.Close()
	y := torch.Randn([]int64{4, 8}, s)
	if w.Matmul(y.T()).Scope() != s || y.Matmul(w).Scope() != s {
		t.Fatal("a result of a scoped and an unscoped operand is not in the scope")
	}
}

// A Scope's methods are safe for concurrent use: goroutines adding results
// of their own tensors to one shared scope, then one Close, free everything
// (run under the race detector by make test).
func TestScopeSharedByGoroutines(t *testing.T) {
	before := torch.LiveTensors()
	s := torch.NewScope()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := torch.Randn([]int64{8, 8}, s)
			for i := 0; i < 50; i++ {
				x = x.Matmul(x).Tanh()
			}
			if err := x.Err(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := s.Len(); n != 4*(1+2*50) {
		t.Fatalf("the scope holds %d tensors, want %d", n, 4*(1+2*50))
	}
	s.Close()
	if got := torch.LiveTensors(); got != before {
		t.Fatalf("%d live tensors after Close, %d before", got, before)
	}
}

// settleFinalizers collects garbage until the finalizers of unreachable
// tensors left by earlier tests have all run (the count of finalized tensors
// holds still over a few collections), so that a measurement after it counts
// only what follows. Go runs finalizers on their own goroutine, after the
// collection that found them.
func settleFinalizers() {
	still := 0
	for i := 0; i < 100 && still < 3; i++ {
		n := torch.FinalizedTensors()
		runtime.GC()
		time.Sleep(2 * time.Millisecond)
		if torch.FinalizedTensors() == n {
			still++
		} else {
			still = 0
		}
	}
}
