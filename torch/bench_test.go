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
