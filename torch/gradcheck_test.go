package torch_test

import (
	"math"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// gradCheck compares autograd's gradient of sum(f(inputs) * r) with central
// finite differences, element by element, in float64.
func gradCheck(t *testing.T, f func(in []*torch.Tensor) *torch.Tensor, inputs ...*torch.Tensor) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	ins := make([]*torch.Tensor, len(inputs))
	for i, x := range inputs {
		ins[i] = x.Detach().MoveTo(s).SetRequiresGrad(true)
	}
	out := f(ins)
	if err := out.Err(); err != nil {
		t.Fatal(err)
	}
	r := torch.Randn(out.Shape(), torch.Float64, s)
	if err := out.Mul(r).Sum().Backward(); err != nil {
		t.Fatal(err)
	}
	const eps = 1e-6
	for i, x := range ins {
		g := x.Grad()
		if g == nil {
			t.Fatalf("input %d has no gradient", i)
		}
		analytic, err := g.Float64s()
		if err != nil {
			t.Fatal(err)
		}
		base, _ := x.Float64s()
		shape := x.Shape()
		for j := range base {
			eval := func(delta float64) float64 {
				v := append([]float64(nil), base...)
				v[j] += delta
				var val float64
				torch.NoGrad(func() {
					ss := torch.NewScope()
					defer ss.Close()
					args := make([]*torch.Tensor, len(ins))
					for k := range ins {
						args[k] = ins[k].Detach()
						args[k].MoveTo(ss)
					}
					args[i] = torch.FromSlice(v, shape, ss)
					val, err = f(args).Mul(r).Sum().Item()
				})
				if err != nil {
					t.Fatal(err)
				}
				return val
			}
			numeric := (eval(eps) - eval(-eps)) / (2 * eps)
			if math.Abs(numeric-analytic[j]) > 1e-5*(1+math.Abs(numeric)) {
				t.Fatalf("input %d element %d: autograd %.9g, finite differences %.9g", i, j, analytic[j], numeric)
			}
		}
	}
}

// away returns float64 values of the given shape with magnitude in
// [0.2, 1.2] and random signs: no ties and no points near 0, where abs, relu,
// clamp and max have kinks.
func away(shape ...int64) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	mag := torch.Rand(shape, torch.Float64, s).AddScalar(0.2)
	sign := torch.RandInt(0, 2, shape, s).MulScalar(2).SubScalar(1)
	return mag.Mul(sign).MoveTo(nil)
}

func positive(shape ...int64) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	return torch.Rand(shape, torch.Float64, s).AddScalar(0.5).MoveTo(nil)
}

func randn(shape ...int64) *torch.Tensor { return torch.Randn(shape, torch.Float64) }

type gcCase struct {
	name   string
	f      func(in []*torch.Tensor) *torch.Tensor
	inputs func() []*torch.Tensor
}

func unaryCase(name string, f func(x *torch.Tensor) *torch.Tensor, gen func(...int64) *torch.Tensor) gcCase {
	return gcCase{name, func(in []*torch.Tensor) *torch.Tensor { return f(in[0]) },
		func() []*torch.Tensor { return []*torch.Tensor{gen(3, 4)} }}
}

func binaryCase(name string, f func(a, b *torch.Tensor) *torch.Tensor, ga, gb func() *torch.Tensor) gcCase {
	return gcCase{name, func(in []*torch.Tensor) *torch.Tensor { return f(in[0], in[1]) },
		func() []*torch.Tensor { return []*torch.Tensor{ga(), gb()} }}
}

func TestGradCheck(t *testing.T) {
	if err := torch.ManualSeed(7); err != nil {
		t.Fatal(err)
	}
	// Index tensors made inside the functions under test (once per evaluation)
	// live until the test ends.
	ts := torch.NewScope()
	defer ts.Close()
	idx := func(v ...int64) *torch.Tensor { return torch.FromSlice(v, []int64{int64(len(v))}, ts) }
	cases := []gcCase{
		unaryCase("neg", (*torch.Tensor).Neg, randn),
		unaryCase("exp", (*torch.Tensor).Exp, randn),
		unaryCase("log", (*torch.Tensor).Log, positive),
		unaryCase("log1p", (*torch.Tensor).Log1p, positive),
		unaryCase("expm1", (*torch.Tensor).Expm1, randn),
		unaryCase("sigmoid", (*torch.Tensor).Sigmoid, randn),
		unaryCase("log_sigmoid", (*torch.Tensor).LogSigmoid, randn),
		unaryCase("tanh", (*torch.Tensor).Tanh, randn),
		unaryCase("relu", (*torch.Tensor).Relu, away),
		unaryCase("gelu", (*torch.Tensor).Gelu, randn),
		unaryCase("elu", (*torch.Tensor).Elu, away),
		unaryCase("sqrt", (*torch.Tensor).Sqrt, positive),
		unaryCase("rsqrt", (*torch.Tensor).Rsqrt, positive),
		unaryCase("abs", (*torch.Tensor).Abs, away),
		unaryCase("square", (*torch.Tensor).Square, randn),
		unaryCase("sin", (*torch.Tensor).Sin, randn),
		unaryCase("cos", (*torch.Tensor).Cos, randn),
		unaryCase("erf", (*torch.Tensor).Erf, randn),
		unaryCase("reciprocal", (*torch.Tensor).Reciprocal, away),
		unaryCase("softplus", (*torch.Tensor).Softplus, randn),
		unaryCase("leaky_relu", func(x *torch.Tensor) *torch.Tensor { return x.LeakyRelu(0.1) }, away),
		unaryCase("clamp", func(x *torch.Tensor) *torch.Tensor { return x.Clamp(-0.5, 0.5) }, away),
		unaryCase("add_scalar", func(x *torch.Tensor) *torch.Tensor { return x.AddScalar(2) }, randn),
		unaryCase("mul_scalar", func(x *torch.Tensor) *torch.Tensor { return x.MulScalar(-3) }, randn),
		unaryCase("div_scalar", func(x *torch.Tensor) *torch.Tensor { return x.DivScalar(4) }, randn),
		unaryCase("pow_scalar", func(x *torch.Tensor) *torch.Tensor { return x.PowScalar(2.5) }, positive),
		unaryCase("rsub", func(x *torch.Tensor) *torch.Tensor { return x.RSub(1) }, randn),
		unaryCase("rdiv", func(x *torch.Tensor) *torch.Tensor { return x.RDiv(2) }, away),
		unaryCase("rpow", func(x *torch.Tensor) *torch.Tensor { return x.RPow(1.7) }, randn),
		unaryCase("sum", (*torch.Tensor).Sum, randn),
		unaryCase("mean", (*torch.Tensor).Mean, randn),
		unaryCase("sum_dims", func(x *torch.Tensor) *torch.Tensor { return x.SumDims([]int64{1}, true) }, randn),
		unaryCase("mean_dims", func(x *torch.Tensor) *torch.Tensor { return x.MeanDims([]int64{0}, false) }, randn),
		unaryCase("logsumexp", func(x *torch.Tensor) *torch.Tensor { return x.LogSumExp([]int64{1}, false) }, randn),
		unaryCase("max", (*torch.Tensor).Max, randn),
		unaryCase("amin", func(x *torch.Tensor) *torch.Tensor { return x.AMin([]int64{1}, false) }, randn),
		unaryCase("max_dim", func(x *torch.Tensor) *torch.Tensor { v, _ := x.MaxDim(0, false); return v }, randn),
		unaryCase("prod", func(x *torch.Tensor) *torch.Tensor { return x.Prod([]int64{1}, false) }, away),
		unaryCase("var", func(x *torch.Tensor) *torch.Tensor { return x.Var([]int64{1}, true, false) }, randn),
		unaryCase("std", func(x *torch.Tensor) *torch.Tensor { return x.Std([]int64{0}, false, true) }, randn),
		unaryCase("softmax", func(x *torch.Tensor) *torch.Tensor { return x.Softmax(1) }, randn),
		unaryCase("log_softmax", func(x *torch.Tensor) *torch.Tensor { return x.LogSoftmax(0) }, randn),
		unaryCase("cumsum", func(x *torch.Tensor) *torch.Tensor { return x.Cumsum(1) }, randn),
		unaryCase("norm", func(x *torch.Tensor) *torch.Tensor { return x.Norm(2) }, randn),
		unaryCase("reshape", func(x *torch.Tensor) *torch.Tensor { return x.Reshape(2, -1) }, randn),
		unaryCase("view", func(x *torch.Tensor) *torch.Tensor { return x.View(12) }, randn),
		unaryCase("permute", func(x *torch.Tensor) *torch.Tensor { return x.Permute(1, 0) }, randn),
		unaryCase("transpose", func(x *torch.Tensor) *torch.Tensor { return x.Transpose(0, 1).Contiguous() }, randn),
		unaryCase("t", (*torch.Tensor).T, randn),
		unaryCase("flatten", func(x *torch.Tensor) *torch.Tensor { return x.Flatten(0, -1) }, randn),
		unaryCase("expand", func(x *torch.Tensor) *torch.Tensor { return x.Unsqueeze(0).Expand(2, -1, -1) }, randn),
		unaryCase("repeat", func(x *torch.Tensor) *torch.Tensor { return x.Repeat(2, 3) }, randn),
		unaryCase("flip", func(x *torch.Tensor) *torch.Tensor { return x.Flip(1) }, randn),
		unaryCase("squeeze", func(x *torch.Tensor) *torch.Tensor { return x.Unsqueeze(1).Squeeze(1) }, randn),
		unaryCase("narrow", func(x *torch.Tensor) *torch.Tensor { return x.Narrow(1, 1, 2) }, randn),
		unaryCase("slice", func(x *torch.Tensor) *torch.Tensor { return x.Slice(1, 0, 4, 2) }, randn),
		unaryCase("select", func(x *torch.Tensor) *torch.Tensor { return x.Select(0, 2) }, randn),
		unaryCase("index_select", func(x *torch.Tensor) *torch.Tensor { return x.IndexSelect(1, idx(3, 0, 0)) }, randn),
		unaryCase("gather", func(x *torch.Tensor) *torch.Tensor {
			return x.Gather(1, torch.FromSlice([]int64{0, 1, 3, 3, 2, 0}, []int64{3, 2}, ts))
		}, randn),
		unaryCase("masked_fill", func(x *torch.Tensor) *torch.Tensor { return x.MaskedFill(x.GtScalar(0), 0) }, away),
		unaryCase("unfold", func(x *torch.Tensor) *torch.Tensor { return x.Unfold(1, 2, 1) }, randn),
		unaryCase("pad_constant", func(x *torch.Tensor) *torch.Tensor {
			return x.Pad([]int64{1, 2}, torch.PadConstant, 3)
		}, randn),
		unaryCase("pad_reflect", func(x *torch.Tensor) *torch.Tensor {
			return x.Unsqueeze(0).Unsqueeze(0).Pad([]int64{1, 1, 2, 1}, torch.PadReflect, 0)
		}, randn),
		unaryCase("pad_replicate", func(x *torch.Tensor) *torch.Tensor {
			return x.Unsqueeze(0).Unsqueeze(0).Pad([]int64{2, 1, 1, 1}, torch.PadReplicate, 0)
		}, randn),
		unaryCase("clone_contiguous", func(x *torch.Tensor) *torch.Tensor { return x.T().Contiguous().Clone() }, randn),
		unaryCase("dropout_eval", func(x *torch.Tensor) *torch.Tensor { return torch.Dropout(x, 0.5, false) }, randn),
		unaryCase("split", func(x *torch.Tensor) *torch.Tensor {
			parts, err := x.Split(3, 1)
			if err != nil {
				return torch.Errored(err)
			}
			return parts[1].MulScalar(2).Sum().Add(parts[0].Sum())
		}, randn),
		binaryCase("add", (*torch.Tensor).Add, func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return randn(4) }),
		binaryCase("sub", (*torch.Tensor).Sub, func() *torch.Tensor { return randn(3, 1) }, func() *torch.Tensor { return randn(3, 4) }),
		binaryCase("mul", (*torch.Tensor).Mul, func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return randn(3, 4) }),
		binaryCase("div", (*torch.Tensor).Div, func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return away(3, 4) }),
		binaryCase("pow", (*torch.Tensor).Pow, func() *torch.Tensor { return positive(3, 4) }, func() *torch.Tensor { return randn(3, 4) }),
		binaryCase("maximum", (*torch.Tensor).Maximum, func() *torch.Tensor { return away(3, 4) }, func() *torch.Tensor { return away(3, 4).MulScalar(0.5) }),
		binaryCase("minimum", (*torch.Tensor).Minimum, func() *torch.Tensor { return away(3, 4) }, func() *torch.Tensor { return away(3, 4).MulScalar(0.5) }),
		binaryCase("matmul", (*torch.Tensor).Matmul, func() *torch.Tensor { return randn(2, 3, 4) }, func() *torch.Tensor { return randn(4, 5) }),
		binaryCase("mm", (*torch.Tensor).Mm, func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return randn(4, 2) }),
		binaryCase("bmm", (*torch.Tensor).Bmm, func() *torch.Tensor { return randn(2, 3, 4) }, func() *torch.Tensor { return randn(2, 4, 2) }),
		binaryCase("where", func(a, b *torch.Tensor) *torch.Tensor { return torch.Where(a.GtScalar(0), a, b) },
			func() *torch.Tensor { return away(3, 4) }, func() *torch.Tensor { return randn(3, 4) }),
		binaryCase("cat", func(a, b *torch.Tensor) *torch.Tensor { return torch.Cat([]*torch.Tensor{a, b}, 0) },
			func() *torch.Tensor { return randn(2, 4) }, func() *torch.Tensor { return randn(3, 4) }),
		binaryCase("stack", func(a, b *torch.Tensor) *torch.Tensor { return torch.Stack([]*torch.Tensor{a, b}, 1) },
			func() *torch.Tensor { return randn(2, 4) }, func() *torch.Tensor { return randn(2, 4) }),
		binaryCase("scatter", func(a, b *torch.Tensor) *torch.Tensor {
			return a.Scatter(1, torch.FromSlice([]int64{0, 2, 1, 3, 3, 0}, []int64{3, 2}, ts), b)
		}, func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return randn(3, 2) }),
		binaryCase("einsum", func(a, b *torch.Tensor) *torch.Tensor { return torch.Einsum("nlc,mc->nml", a, b) },
			func() *torch.Tensor { return randn(2, 3, 4) }, func() *torch.Tensor { return randn(5, 4) }),
		binaryCase("mse", func(a, b *torch.Tensor) *torch.Tensor { return torch.MSELoss(a, b, torch.ReduceMean) },
			func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return randn(3, 4) }),
		binaryCase("bce_with_logits", func(a, b *torch.Tensor) *torch.Tensor { return torch.BCEWithLogits(a, b, torch.ReduceSum) },
			func() *torch.Tensor { return randn(3, 4) }, func() *torch.Tensor { return positive(3, 4).DivScalar(2) }),
		{"cross_entropy", func(in []*torch.Tensor) *torch.Tensor {
			return torch.CrossEntropy(in[0], torch.FromSlice([]int64{1, 0, 3}, []int64{3}, ts), torch.ReduceMean)
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(3, 4)} }},
		{"linear", func(in []*torch.Tensor) *torch.Tensor { return torch.Linear(in[0], in[1], in[2]) },
			func() []*torch.Tensor { return []*torch.Tensor{randn(3, 4), randn(2, 4), randn(2)} }},
		{"conv2d", func(in []*torch.Tensor) *torch.Tensor {
			return torch.Conv2d(in[0], in[1], in[2], torch.ConvOptions{Stride: 2, Padding: 1})
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 5, 5), randn(3, 2, 3, 3), randn(3)} }},
		{"conv2d_groups_dilation", func(in []*torch.Tensor) *torch.Tensor {
			return torch.Conv2d(in[0], in[1], nil, torch.ConvOptions{Dilation: 2, Groups: 2})
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(1, 4, 6, 6), randn(2, 2, 2, 2)} }},
		{"conv_transpose2d", func(in []*torch.Tensor) *torch.Tensor {
			return torch.ConvTranspose2d(in[0], in[1], in[2], torch.ConvOptions{Stride: 2, Padding: 1, OutputPadding: 1})
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 3, 3), randn(2, 3, 3, 3), randn(3)} }},
		{"max_pool2d", func(in []*torch.Tensor) *torch.Tensor { return torch.MaxPool2d(in[0], 2, torch.ConvOptions{}) },
			func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 4, 4)} }},
		{"avg_pool2d", func(in []*torch.Tensor) *torch.Tensor {
			return torch.AvgPool2d(in[0], 3, torch.ConvOptions{Stride: 2, Padding: 1})
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 5, 5)} }},
		{"adaptive_avg_pool2d", func(in []*torch.Tensor) *torch.Tensor { return torch.AdaptiveAvgPool2d(in[0], 2, 3) },
			func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 5, 5)} }},
		{"adaptive_max_pool2d", func(in []*torch.Tensor) *torch.Tensor { return torch.AdaptiveMaxPool2d(in[0], 2, 2) },
			func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 4, 4)} }},
		{"batch_norm_train", func(in []*torch.Tensor) *torch.Tensor {
			return torch.BatchNorm(in[0], in[1], in[2], nil, nil, true, 0.1, 1e-5)
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(4, 3, 2, 2), randn(3), randn(3)} }},
		{"layer_norm", func(in []*torch.Tensor) *torch.Tensor {
			return torch.LayerNorm(in[0], []int64{4}, in[1], in[2], 1e-5)
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(3, 4), randn(4), randn(4)} }},
		{"interpolate_bilinear", func(in []*torch.Tensor) *torch.Tensor {
			return torch.Interpolate(in[0], 5, 7, torch.Bilinear, true)
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 3, 4)} }},
		{"interpolate_nearest", func(in []*torch.Tensor) *torch.Tensor {
			return torch.Interpolate(in[0], 6, 8, torch.Nearest, false)
		}, func() []*torch.Tensor { return []*torch.Tensor{randn(1, 2, 3, 4)} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ins := c.inputs()
			defer func() {
				for _, x := range ins {
					x.Free()
				}
			}()
			gradCheck(t, c.f, ins...)
		})
	}
}
