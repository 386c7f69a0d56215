package torch_test

import (
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// BenchmarkAddUnscoped is one operator call whose result the caller frees.
func BenchmarkAddUnscoped(b *testing.B) {
	x, y := torch.Ones([]int64{1}), torch.Ones([]int64{1})
	defer x.Free()
	defer y.Free()
	for i := 0; i < b.N; i++ {
		x.Add(y).Free()
	}
}

// BenchmarkAddScoped is one operator call whose result a scope frees.
func BenchmarkAddScoped(b *testing.B) {
	s := torch.NewScope()
	defer s.Close()
	x, y := torch.Ones([]int64{1}, s), torch.Ones([]int64{1}, s)
	xs := x.MoveTo(nil)
	defer xs.Free()
	step := torch.NewScope()
	defer step.Close()
	xx := xs.Ref(step)
	for i := 0; i < b.N; i++ {
		xx.Add(y)
		if i%1000 == 999 {
			step.Reset()
			xx = xs.Ref(step)
		}
	}
}

// batchShape is a batch of 64 224x224 colour images: 38 MB of float32, over
// glibc's largest mmap threshold (32 MB), so each fresh one is mapped anew.
var batchShape = []int64{64, 3, 224, 224}

// BenchmarkBatchFresh copies a filled batch into a new tensor, as a loader
// that allocates each batch does (the kernel faults in every page).
func BenchmarkBatchFresh(b *testing.B) {
	xs := make([]float32, 64*3*224*224)
	b.SetBytes(int64(4 * len(xs)))
	for range b.N {
		torch.FromSlice(xs, batchShape).Free()
	}
}

// BenchmarkBatchPooled writes a batch into a tensor from a HostPool, as the
// loaders do: its pages are faulted in once.
func BenchmarkBatchPooled(b *testing.B) {
	xs := make([]float32, 64*3*224*224)
	p := torch.NewHostPool[float32](batchShape, 2)
	defer p.Close()
	b.SetBytes(int64(4 * len(xs)))
	for range b.N {
		x, mem, err := p.Get(batchShape)
		if err != nil {
			b.Fatal(err)
		}
		copy(mem, xs)
		x.Free()
	}
}
