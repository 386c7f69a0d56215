package torch_test

import (
	"github.com/dimtorch/dimtorch/internal/testref"
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

// A 1x1 convolution in bfloat16 on the CPU (autocast) computed as a matrix
// product over NHWC rows agrees with oneDNN's convolution to bfloat16
// rounding: the output (in the input's layout, as the convolution's) and the
// gradients of input, weight and bias, for channels_last and NCHW inputs; and a 1x1 convolution
// with stride 2, or in float32, is left to the convolution (bit for bit the
// same either way).
func TestLowPrecision1x1MatmulMatchesConvolution(t *testing.T) {
	testref.NeedBF16(t)
	prev := torch.LowPrecision1x1Matmul()
	defer torch.SetLowPrecision1x1Matmul(prev)
	if torch.SetLowPrecision1x1Matmul(true); !torch.LowPrecision1x1Matmul() {
		t.Skip("this libtorch has no oneDNN")
	}
	_ = torch.ManualSeed(6)
	s := torch.NewScope()
	defer s.Close()
	w := torch.Randn([]int64{48, 40, 1, 1}, s).MulScalar(0.2).ChannelsLast()
	b := torch.Randn([]int64{48}, s)
	for _, c := range []struct {
		name   string
		nhwc   bool
		bf16   bool
		stride int64
	}{{"bf16 nhwc", true, true, 1}, {"bf16 nchw", false, true, 1}, {"bf16 stride 2", true, true, 2}, {"float32", true, false, 1}} {
		x := torch.Randn([]int64{4, 40, 6, 5}, s)
		if c.nhwc {
			x = x.ChannelsLast()
		}
		run := func(on bool) ([][]float64, bool) {
			torch.SetLowPrecision1x1Matmul(on)
			xs, ws, bs := x.Detach().SetRequiresGrad(true), w.Detach().SetRequiresGrad(true), b.Detach().SetRequiresGrad(true)
			var y *torch.Tensor
			fwd := func() { y = torch.Conv2d(xs, ws, bs, torch.ConvOptions{Stride: c.stride}) }
			if c.bf16 {
				if err := torch.Autocast(torch.BFloat16, fwd); err != nil {
					t.Fatal(err)
				}
			} else {
				fwd()
			}
			g, err := torch.Grad([]*torch.Tensor{y.To(torch.Float32).Square().Sum()}, []*torch.Tensor{xs, ws, bs}, torch.GradOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var out [][]float64
			for _, v := range []*torch.Tensor{y, g[0], g[1], g[2]} {
				f, err := v.Contiguous().Float64s()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, f)
			}
			return out, y.IsChannelsLast()
		}
		mm, mmNHWC := run(true)
		conv, convNHWC := run(false)
		if mmNHWC != convNHWC || mmNHWC != c.nhwc {
			t.Errorf("%s: output channels_last %v with the matrix product, %v with the convolution, input %v", c.name, mmNHWC, convNHWC, c.nhwc)
		}
		for i := range mm {
			scale := 0.0
			for _, v := range conv[i] {
				scale = math.Max(scale, math.Abs(v))
			}
			for j := range mm[i] {
				d := math.Abs(mm[i][j] - conv[i][j])
				if c.stride != 1 || !c.bf16 {
					if d != 0 {
						t.Fatalf("%s: result %d element %d differs (%v, %v): not the convolution", c.name, i, j, mm[i][j], conv[i][j])
					}
				} else if d > 1.0/64*scale {
					t.Fatalf("%s: result %d element %d: matrix product %v, convolution %v", c.name, i, j, mm[i][j], conv[i][j])
				}
			}
		}
	}
}
