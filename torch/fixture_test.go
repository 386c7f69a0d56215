package torch_test

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// The fixtures hold inputs and PyTorch's outputs for each case
// (testdata/gen_fixtures.py, run by Debian's PyTorch on the same libtorch).

type fixTensor struct {
	Shape []int64   `json:"shape"`
	DType string    `json:"dtype"`
	Data  []float64 `json:"data"`
}

type fixCase struct {
	Name    string               `json:"name"`
	Inputs  map[string]fixTensor `json:"inputs"`
	Outputs map[string]fixTensor `json:"outputs"`
}

func loadFixtures(t *testing.T) map[string]fixCase {
	t.Helper()
	b, err := os.ReadFile("testdata/fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []fixCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	m := map[string]fixCase{}
	for _, c := range f.Cases {
		m[c.Name] = c
	}
	return m
}

func (f fixTensor) tensor(s *torch.Scope) *torch.Tensor {
	if f.DType == "int64" {
		v := make([]int64, len(f.Data))
		for i, x := range f.Data {
			v[i] = int64(x)
		}
		return torch.FromSlice(v, f.Shape, s)
	}
	return torch.FromSlice(f.Data, f.Shape, s)
}

// closeTo fails unless got matches want elementwise within tol (absolute plus
// relative) and has the same shape.
func closeTo(t *testing.T, what string, got *torch.Tensor, want fixTensor, tol float64) {
	t.Helper()
	if err := got.Err(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if g := got.Shape(); !equalShape(g, want.Shape) {
		t.Fatalf("%s: shape %v, want %v", what, g, want.Shape)
	}
	vals, err := got.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want.Data {
		if math.Abs(vals[i]-w) > tol*(1+math.Abs(w)) {
			t.Fatalf("%s[%d] = %.10g, PyTorch %.10g", what, i, vals[i], w)
		}
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAgainstPyTorch recomputes every forward-and-gradient fixture through
// the binding: the forward output and the gradients of sum(out * r).
func TestAgainstPyTorch(t *testing.T) {
	fx := loadFixtures(t)
	ops := map[string]func(in map[string]*torch.Tensor) *torch.Tensor{
		"conv2d": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.Conv2d(in["x"], in["w"], in["b"], torch.ConvOptions{Stride: 2, Padding: 1})
		},
		"conv_transpose2d": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.ConvTranspose2d(in["x"], in["w"], in["b"], torch.ConvOptions{Stride: 2, Padding: 1})
		},
		"max_pool2d": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.MaxPool2d(in["x"], 3, torch.ConvOptions{Stride: 2, Padding: 1})
		},
		"avg_pool2d": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.AvgPool2d(in["x"], 2, torch.ConvOptions{})
		},
		"adaptive_avg_pool2d": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.AdaptiveAvgPool2d(in["x"], 3, 3)
		},
		"interpolate_bilinear": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.Interpolate(in["x"], 10, 12, torch.Bilinear, false)
		},
		"interpolate_nearest": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.Interpolate(in["x"], 14, 14, torch.Nearest, false)
		},
		"layer_norm": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.LayerNorm(in["x"], []int64{6}, in["w"], in["b"], 1e-5)
		},
		"linear": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.Linear(in["x"], in["w"], in["b"])
		},
		"logsumexp":   func(in map[string]*torch.Tensor) *torch.Tensor { return in["x"].LogSumExp([]int64{1, 2}, false) },
		"softmax":     func(in map[string]*torch.Tensor) *torch.Tensor { return in["x"].Softmax(1) },
		"log_softmax": func(in map[string]*torch.Tensor) *torch.Tensor { return in["x"].LogSoftmax(2) },
		"softplus":    func(in map[string]*torch.Tensor) *torch.Tensor { return in["x"].Softplus() },
		"leaky_relu":  func(in map[string]*torch.Tensor) *torch.Tensor { return in["x"].LeakyRelu(0.2) },
		"bmm":         func(in map[string]*torch.Tensor) *torch.Tensor { return in["a"].Bmm(in["b"]) },
		"einsum": func(in map[string]*torch.Tensor) *torch.Tensor {
			return torch.Einsum("nlc,mgc->nmlg", in["a"], in["b"])
		},
		"unfold": func(in map[string]*torch.Tensor) *torch.Tensor { return in["x"].Unfold(2, 4, 2).Unfold(3, 4, 2) },
	}
	for name, fn := range ops {
		t.Run(name, func(t *testing.T) {
			c, ok := fx[name]
			if !ok {
				t.Fatalf("no fixture %q", name)
			}
			s := torch.NewScope()
			defer s.Close()
			in := map[string]*torch.Tensor{}
			for k, v := range c.Inputs {
				in[k] = v.tensor(s)
				if k != "r" && v.DType == "float64" {
					in[k].SetRequiresGrad(true)
				}
			}
			out := fn(in)
			closeTo(t, "out", out, c.Outputs["out"], 1e-9)
			if err := out.Mul(in["r"]).Sum().Backward(); err != nil {
				t.Fatal(err)
			}
			for k, want := range c.Outputs {
				if len(k) > 5 && k[:5] == "grad_" {
					closeTo(t, k, in[k[5:]].Grad(), want, 1e-9)
				}
			}
		})
	}
}

func TestBatchNormAgainstPyTorch(t *testing.T) {
	fx := loadFixtures(t)
	for _, training := range []bool{true, false} {
		name := "batch_norm_eval"
		if training {
			name = "batch_norm_train"
		}
		t.Run(name, func(t *testing.T) {
			c := fx[name]
			s := torch.NewScope()
			defer s.Close()
			in := map[string]*torch.Tensor{}
			for k, v := range c.Inputs {
				in[k] = v.tensor(s)
			}
			out := torch.BatchNorm(in["x"], in["w"], in["b"], in["rm"], in["rv"], training, 0.1, 1e-5)
			closeTo(t, "out", out, c.Outputs["out"], 1e-9)
			if training {
				// The running statistics are updated in place, with the
				// unbiased batch variance.
				closeTo(t, "running_mean", in["rm"], c.Outputs["rm"], 1e-9)
				closeTo(t, "running_var", in["rv"], c.Outputs["rv"], 1e-9)
			}
		})
	}
}

func TestLossesAgainstPyTorch(t *testing.T) {
	fx := loadFixtures(t)
	s := torch.NewScope()
	defer s.Close()
	ce := fx["cross_entropy"]
	x := ce.Inputs["x"].tensor(s).SetRequiresGrad(true)
	l := torch.CrossEntropy(x, ce.Inputs["t"].tensor(s), torch.ReduceMean)
	closeTo(t, "cross_entropy", l, ce.Outputs["out"], 1e-12)
	if err := l.Backward(); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "cross_entropy grad", x.Grad(), ce.Outputs["grad_x"], 1e-12)

	bce := fx["bce_with_logits"]
	x2 := bce.Inputs["x"].tensor(s).SetRequiresGrad(true)
	l2 := torch.BCEWithLogits(x2, bce.Inputs["y"].tensor(s), torch.ReduceMean)
	closeTo(t, "bce", l2, bce.Outputs["out"], 1e-12)
	if err := l2.Backward(); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "bce grad", x2.Grad(), bce.Outputs["grad_x"], 1e-12)

	mse := fx["mse_loss"]
	a, b := mse.Inputs["a"].tensor(s), mse.Inputs["b"].tensor(s)
	closeTo(t, "mse mean", torch.MSELoss(a, b, torch.ReduceMean), mse.Outputs["out"], 1e-12)
	closeTo(t, "mse sum", torch.MSELoss(a, b, torch.ReduceSum), mse.Outputs["sum"], 1e-12)
}

// TestOptimizersAgainstPyTorch runs three steps of each optimiser on
// loss = sum(c p^2 + d p) and compares the parameters with PyTorch's.
func TestOptimizersAgainstPyTorch(t *testing.T) {
	fx := loadFixtures(t)
	cases := map[string]func(ps []*torch.Tensor) (optim.Optimizer, error){
		"adam": func(ps []*torch.Tensor) (optim.Optimizer, error) {
			return optim.NewAdam(ps, optim.AdamOptions{LR: 0.1, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01})
		},
		"adamw": func(ps []*torch.Tensor) (optim.Optimizer, error) {
			return optim.NewAdam(ps, optim.AdamOptions{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, Decoupled: true})
		},
		"sgd_nesterov": func(ps []*torch.Tensor) (optim.Optimizer, error) {
			return optim.NewSGD(ps, optim.SGDOptions{LR: 0.05, Momentum: 0.9, Nesterov: true, WeightDecay: 0.01})
		},
		"sgd_momentum": func(ps []*torch.Tensor) (optim.Optimizer, error) {
			return optim.NewSGD(ps, optim.SGDOptions{LR: 0.05, Momentum: 0.9, Dampening: 0.1})
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			c := fx[name]
			s := torch.NewScope()
			defer s.Close()
			p := c.Inputs["p"].tensor(nil).SetRequiresGrad(true)
			defer p.Free()
			cc, dd := c.Inputs["c"].tensor(s), c.Inputs["d"].tensor(s)
			opt, err := mk([]*torch.Tensor{p})
			if err != nil {
				t.Fatal(err)
			}
			defer opt.Free()
			for i := 0; i < 3; i++ {
				if err := opt.ZeroGrad(); err != nil {
					t.Fatal(err)
				}
				step := torch.NewScope()
				pp := p.Ref(step)
				loss := cc.Mul(pp).Mul(pp).Add(dd.Mul(pp)).Sum()
				if err := loss.Backward(); err != nil {
					t.Fatal(err)
				}
				step.Close()
				if err := opt.Step(); err != nil {
					t.Fatal(err)
				}
			}
			closeTo(t, name, p, c.Outputs["out"], 1e-12)
		})
	}
}

func TestClipGradNormAgainstPyTorch(t *testing.T) {
	c := loadFixtures(t)["clip_grad_norm"]
	s := torch.NewScope()
	defer s.Close()
	g0, g1 := c.Inputs["g0"].tensor(s), c.Inputs["g1"].tensor(s)
	p0 := torch.ZerosLike(g0).SetRequiresGrad(true)
	p1 := torch.ZerosLike(g1).SetRequiresGrad(true)
	// Give each parameter its fixture gradient through backward of sum(p*g).
	if err := p0.Mul(g0).Sum().Add(p1.Mul(g1).Sum()).Backward(); err != nil {
		t.Fatal(err)
	}
	total, err := optim.ClipGradNorm([]*torch.Tensor{p0, p1}, 1.5)
	if err != nil {
		t.Fatal(err)
	}
	if want := c.Outputs["total"].Data[0]; math.Abs(total-want) > 1e-6*want {
		t.Fatalf("total norm %v, PyTorch %v", total, want)
	}
	closeTo(t, "g0", p0.Grad(), c.Outputs["g0"], 1e-6)
	closeTo(t, "g1", p1.Grad(), c.Outputs["g1"], 1e-6)
}

// TestDoubleGrad checks gradients of gradients (create_graph), as the
// gradient penalty of prior matching needs: g = 3 w x^2, d/dx sum(g^2) = 36 w^2 x^3.
func TestDoubleGrad(t *testing.T) {
	c := loadFixtures(t)["double_grad"]
	s := torch.NewScope()
	defer s.Close()
	x := c.Inputs["x"].tensor(s).SetRequiresGrad(true)
	w := c.Inputs["w"].tensor(s)
	y := x.PowScalar(3).Mul(w).Sum()
	g, err := torch.Grad([]*torch.Tensor{y}, []*torch.Tensor{x}, torch.GradOptions{CreateGraph: true})
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, "grad", g[0], c.Outputs["grad"], 1e-12)
	gg, err := torch.Grad([]*torch.Tensor{g[0].Square().Sum()}, []*torch.Tensor{x}, torch.GradOptions{})
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, "gradgrad", gg[0], c.Outputs["gradgrad"], 1e-12)
	// And against the closed form.
	xs, _ := x.Float64s()
	ws, _ := w.Float64s()
	got, _ := gg[0].Float64s()
	for i := range xs {
		want := 36 * ws[i] * ws[i] * xs[i] * xs[i] * xs[i]
		if math.Abs(got[i]-want) > 1e-9*(1+math.Abs(want)) {
			t.Fatalf("gradgrad[%d] = %v, closed form %v", i, got[i], want)
		}
	}
}
