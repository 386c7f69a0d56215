package objectives

import (
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// With global negatives the rows gathered from the ranks keep the
// view-major layout the estimators expect: V views of N images on each of W
// ranks become, for every view, rank 0's N images then rank 1's.
func TestGatherKeepsViewMajorLayout(t *testing.T) {
	const v, n = 2, 3
	d := &DIM{Cfg: DIMConfig{Views: v}}
	// A stand-in for a 2-rank all-gather: this rank's rows, then the other
	// rank's (the same rows + 100).
	d.Gather = func(x *torch.Tensor) *torch.Tensor {
		return torch.Cat([]*torch.Tensor{x, x.AddScalar(100)}, 0)
	}
	rows := make([]float32, v*n*2)
	for i := 0; i < v*n; i++ { // row i = view i/n, image i%n; two features
		rows[2*i], rows[2*i+1] = float32(10*(i/n)+i%n), -1
	}
	x := torch.FromSlice(rows, []int64{v * n, 2})
	defer x.Free()
	got, err := d.gather(x).Select(1, 0).Float64s()
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0, 1, 2, 100, 101, 102, 10, 11, 12, 110, 111, 112}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("gathered rows %v, want %v", got, want)
		}
	}
}
