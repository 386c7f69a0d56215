package torch_test

import (
	"sync"
	"testing"
	"unsafe"

	"github.com/dimtorch/dimtorch/torch"
)

func addr(s []float32) uintptr { return uintptr(unsafe.Pointer(&s[0])) }

// getOK is HostPool.Get that fails the test on an error.
func getOK(t *testing.T, p *torch.HostPool[float32], shape []int64) (*torch.Tensor, []float32) {
	t.Helper()
	x, mem, err := p.Get(shape)
	if err != nil {
		t.Fatal(err)
	}
	return x, mem
}

func TestHostPoolReusesOnlyWhatNothingHolds(t *testing.T) {
	live := torch.LiveTensors()
	shape := []int64{2, 3}
	p := torch.NewHostPool[float32](shape, 4)
	a, am := getOK(t, p, shape)
	b, bm := getOK(t, p, shape)
	if addr(am) == addr(bm) {
		t.Fatal("two tensors in use share memory")
	}
	for i := range am {
		am[i] = float32(i)
	}
	got, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != float32(i) {
			t.Fatalf("element %d of the tensor is %v, written %d through its memory", i, v, i)
		}
	}

	// A view of a keeps it from reuse; so does a copy saved for backward.
	view := a.Narrow(0, 0, 1)
	w := torch.Ones([]int64{2, 3}).SetRequiresGrad(true)
	m := b.Mul(w) // saves b for w's gradient
	loss := m.Sum()
	a.Free()
	b.Free()
	c, cm := getOK(t, p, shape)
	if addr(cm) == addr(am) || addr(cm) == addr(bm) {
		t.Fatal("memory reused while a view or the autograd graph still refers to it")
	}
	view.Free()
	d, dm := getOK(t, p, shape)
	if addr(dm) != addr(am) {
		t.Fatal("a's memory not reused once its view was freed")
	}
	if err := loss.Backward(); err != nil {
		t.Fatal(err)
	}
	loss.Free()
	m.Free()
	w.Free()
	e, em := getOK(t, p, shape)
	if addr(em) != addr(bm) {
		t.Fatal("b's memory not reused once the graph that saved it was freed")
	}

	// Another shape is served, not pooled.
	f, fm := getOK(t, p, []int64{3, 3})
	if len(fm) != 9 {
		t.Fatalf("%d elements for a 3x3 tensor", len(fm))
	}
	f.Free()

	// Tensors handed out outlive Close.
	p.Close()
	em[0] = 42
	if v, err := e.Float32s(); err != nil || v[0] != 42 {
		t.Fatalf("after Close: %v, %v", v, err)
	}
	for _, x := range []*torch.Tensor{c, d, e} {
		x.Free()
	}
	if n := torch.LiveTensors(); n != live {
		t.Fatalf("%d live tensors after freeing everything, %d before", n, live)
	}
}

func TestHostPoolKeepsAtMostMax(t *testing.T) {
	live := torch.LiveTensors()
	shape := []int64{4}
	p := torch.NewHostPool[float32](shape, 2)
	var xs []*torch.Tensor
	for range 5 {
		x, _ := getOK(t, p, shape)
		xs = append(xs, x)
	}
	if n := torch.LiveTensors() - live; n != 5+2 {
		t.Fatalf("%d handles: want the 5 handed out and the pool's 2", n)
	}
	for _, x := range xs {
		x.Free()
	}
	p.Close()
	if n := torch.LiveTensors(); n != live {
		t.Fatalf("%d live tensors after Close, %d before", n, live)
	}
}

// Several goroutines getting, writing and freeing at once never share a
// tensor's memory (the race detector watches the writes).
func TestHostPoolConcurrent(t *testing.T) {
	shape := []int64{64}
	p := torch.NewHostPool[float32](shape, 3)
	defer p.Close()
	var mu sync.Mutex
	inUse := map[uintptr]bool{}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				x, mem, err := p.Get(shape)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if inUse[addr(mem)] {
					t.Error("memory handed out twice at once")
				}
				inUse[addr(mem)] = true
				mu.Unlock()
				for k := range mem {
					mem[k] = float32(g*1000 + i)
				}
				mu.Lock()
				delete(inUse, addr(mem))
				mu.Unlock()
				x.Free()
			}
		}()
	}
	wg.Wait()
}
