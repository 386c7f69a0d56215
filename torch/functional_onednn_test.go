package torch_test

import (
	"math"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// Linear on oneDNN (a 1x1 convolution) computes what at::linear computes,
// to float32 rounding: the output, the gradients of input, weight and bias,
// and the gradient of a gradient (the prior's penalty needs it); for 2-D and
// 3-D inputs.
func TestOneDNNLinearMatchesATenLinear(t *testing.T) {
	prev := torch.OneDNNLinear()
	defer torch.SetOneDNNLinear(prev)
	if torch.SetOneDNNLinear(true); !torch.OneDNNLinear() {
		t.Skip("this libtorch has no oneDNN")
	}
	_ = torch.ManualSeed(4)
	s := torch.NewScope()
	defer s.Close()
	w := torch.Randn([]int64{7, 5}, s)
	b := torch.Randn([]int64{7}, s)
	for _, shape := range [][]int64{{6, 5}, {3, 4, 5}} {
		x := torch.Randn(shape, s)
		run := func(on bool) [][]float64 {
			torch.SetOneDNNLinear(on)
			xs, ws, bs := x.Detach().SetRequiresGrad(true), w.Detach().SetRequiresGrad(true), b.Detach().SetRequiresGrad(true)
			y := torch.Linear(xs, ws, bs)
			g, err := torch.Grad([]*torch.Tensor{y.Square().Sum()}, []*torch.Tensor{xs, ws, bs}, torch.GradOptions{CreateGraph: true})
			if err != nil {
				t.Fatal(err)
			}
			gg, err := torch.Grad([]*torch.Tensor{g[0].Square().Sum()}, []*torch.Tensor{ws}, torch.GradOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var out [][]float64
			for _, v := range []*torch.Tensor{y, g[0], g[1], g[2], gg[0]} {
				f, err := v.Float64s()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, f)
			}
			if want := append(append([]int64(nil), shape[:len(shape)-1]...), 7); len(y.Shape()) != len(want) || y.Size(-1) != 7 {
				t.Fatalf("output shape %v, want %v", y.Shape(), want)
			}
			return out
		}
		a, o := run(false), run(true)
		for i := range a {
			for j := range a[i] {
				if !(math.Abs(a[i][j]-o[i][j]) <= 1e-4*(1+math.Abs(a[i][j]))) {
					t.Fatalf("input %v, result %d[%d]: at::linear %v, oneDNN %v", shape, i, j, a[i][j], o[i][j])
				}
			}
		}
	}
}
