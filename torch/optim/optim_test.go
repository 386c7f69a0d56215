package optim_test

import (
	"math"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/optim"
)

func grads(t *testing.T, p *torch.Tensor, g []float64) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	gt := torch.FromSlice(g, p.Shape(), s)
	pp := p.Ref(s)
	if err := pp.Mul(gt).Sum().Backward(); err != nil {
		t.Fatal(err)
	}
}

// One Adam step from zero state has the closed form
// p - lr * g / (|g| + eps) (bias correction makes m-hat = g, v-hat = g^2).
func TestAdamFirstStepClosedForm(t *testing.T) {
	p0 := []float64{1, -2, 0.5}
	g := []float64{0.3, -4, 1e-3}
	p := torch.FromSlice(append([]float64(nil), p0...), []int64{3}).SetRequiresGrad(true)
	defer p.Free()
	opt, err := optim.NewAdam([]*torch.Tensor{p}, optim.AdamOptions{LR: 0.01, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8})
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	grads(t, p, g)
	if err := opt.Step(); err != nil {
		t.Fatal(err)
	}
	got, _ := p.Float64s()
	for i := range p0 {
		want := p0[i] - 0.01*g[i]/(math.Abs(g[i])+1e-8)
		if math.Abs(got[i]-want) > 1e-12 {
			t.Fatalf("p[%d] = %v, closed form %v", i, got[i], want)
		}
	}
}

// One SGD step with momentum from zero state is p - lr * (g + wd * p).
func TestSGDFirstStepClosedForm(t *testing.T) {
	p0 := []float64{1, -2}
	g := []float64{0.5, 3}
	p := torch.FromSlice(append([]float64(nil), p0...), []int64{2}).SetRequiresGrad(true)
	defer p.Free()
	opt, err := optim.NewSGD([]*torch.Tensor{p}, optim.SGDOptions{LR: 0.1, Momentum: 0.9, WeightDecay: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	grads(t, p, g)
	if err := opt.Step(); err != nil {
		t.Fatal(err)
	}
	got, _ := p.Float64s()
	for i := range p0 {
		want := p0[i] - 0.1*(g[i]+0.01*p0[i])
		if math.Abs(got[i]-want) > 1e-12 {
			t.Fatalf("p[%d] = %v, closed form %v", i, got[i], want)
		}
	}
}

// Saving and restoring the state continues exactly where it stopped.
func TestAdamStateRoundTrip(t *testing.T) {
	mk := func() (*torch.Tensor, *optim.Adam) {
		p := torch.FromSlice([]float64{1, 2, 3}, []int64{3}).SetRequiresGrad(true)
		a, err := optim.NewAdam([]*torch.Tensor{p}, optim.AdamDefaults(0.1))
		if err != nil {
			t.Fatal(err)
		}
		return p, a
	}
	p1, a1 := mk()
	p2, a2 := mk()
	defer func() { p1.Free(); p2.Free(); a1.Free(); a2.Free() }()
	for i := 0; i < 3; i++ {
		_ = a1.ZeroGrad()
		grads(t, p1, []float64{1, -1, 2})
		_ = a1.Step()
	}
	// Copy parameters and state into the second optimiser.
	var err error
	torch.NoGrad(func() { err = p2.CopyFrom(p1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.LoadState(a1.State()); err != nil {
		t.Fatal(err)
	}
	if a2.Steps() != 3 {
		t.Fatalf("restored step %d", a2.Steps())
	}
	for _, pa := range []struct {
		p *torch.Tensor
		a *optim.Adam
	}{{p1, a1}, {p2, a2}} {
		_ = pa.a.ZeroGrad()
		grads(t, pa.p, []float64{0.5, 0.5, -3})
		_ = pa.a.Step()
	}
	v1, _ := p1.Float64s()
	v2, _ := p2.Float64s()
	for i := range v1 {
		if v1[i] != v2[i] {
			t.Fatalf("resumed optimiser diverged: %v vs %v", v2, v1)
		}
	}
}

func TestOptimizerOptionErrors(t *testing.T) {
	p := torch.Zeros([]int64{2}).SetRequiresGrad(true)
	defer p.Free()
	if _, err := optim.NewAdam([]*torch.Tensor{p}, optim.AdamOptions{}); err == nil {
		t.Fatal("Adam without a learning rate must fail")
	}
	if _, err := optim.NewAdam([]*torch.Tensor{p}, optim.AdamOptions{LR: 1, Beta1: 1, Beta2: 0.9, Eps: 1e-8}); err == nil {
		t.Fatal("beta1 = 1 must fail")
	}
	if _, err := optim.NewSGD([]*torch.Tensor{p}, optim.SGDOptions{LR: 1, Nesterov: true}); err == nil {
		t.Fatal("Nesterov without momentum must fail")
	}
}

func TestSchedulesClosedForm(t *testing.T) {
	cases := []struct {
		name  string
		s     optim.Schedule
		epoch int
		want  float64
	}{
		{"step before", optim.StepLR{StepSize: 10, Gamma: 0.5}, 9, 1},
		{"step after", optim.StepLR{StepSize: 10, Gamma: 0.5}, 25, 0.25},
		{"multistep", optim.MultiStepLR{Milestones: []int{3, 8}, Gamma: 0.1}, 8, 0.01},
		{"multistep between", optim.MultiStepLR{Milestones: []int{3, 8}, Gamma: 0.1}, 5, 0.1},
		{"cosine start", optim.CosineLR{TMax: 10, EtaMin: 0.1}, 0, 1},
		{"cosine middle", optim.CosineLR{TMax: 10, EtaMin: 0.1}, 5, 0.55},
		{"cosine end", optim.CosineLR{TMax: 10, EtaMin: 0.1}, 10, 0.1},
		{"cosine past end", optim.CosineLR{TMax: 10, EtaMin: 0.1}, 30, 0.1},
	}
	for _, c := range cases {
		if got := c.s.LR(1, c.epoch); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// Zero means zero: beta1 = 0 is Adam without momentum, whose update is
// lr * g / (sqrt(v_hat) + eps) with v the second moment; a zero beta2 or
// eps, or beta1 without beta2, is refused rather than replaced.
func TestAdamZeroBeta1(t *testing.T) {
	p := torch.FromSlice([]float64{1, -2}, []int64{2}).SetRequiresGrad(true)
	defer p.Free()
	a, err := optim.NewAdam([]*torch.Tensor{p}, optim.AdamOptions{LR: 0.1, Beta1: 0, Beta2: 0.9, Eps: 1e-8})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free()
	g1, g2 := []float64{2, -1}, []float64{-1, 3}
	want, _ := p.Float64s()
	for k, g := range [][]float64{g1, g2} {
		_ = a.ZeroGrad()
		grads(t, p, g)
		if err := a.Step(); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			var v float64
			if k == 0 {
				v = 0.1 * g1[i] * g1[i] / (1 - 0.9)
			} else {
				v = (0.9*0.1*g1[i]*g1[i] + 0.1*g2[i]*g2[i]) / (1 - 0.81)
			}
			want[i] -= 0.1 * g[i] / (math.Sqrt(v) + 1e-8)
		}
	}
	got, _ := p.Float64s()
	for i := range got {
		if !(math.Abs(got[i]-want[i]) <= 1e-12) {
			t.Fatalf("p = %v, closed form %v", got, want)
		}
	}
	for _, o := range []optim.AdamOptions{
		{LR: 0.1, Beta1: 0.5, Eps: 1e-8},    // beta2 forgotten
		{LR: 0.1, Beta1: 0.9, Beta2: 0.999}, // eps forgotten
		{LR: 0.1, Beta1: -0.1, Beta2: 0.999, Eps: 1e-8},
	} {
		if _, err := optim.NewAdam([]*torch.Tensor{p}, o); err == nil {
			t.Fatalf("%+v accepted", o)
		}
	}
}

// Adam in float32 follows the float64 computation to float32 rounding:
// three steps on a 100,003-element parameter, with L2 weight decay and with
// decoupled (AdamW) decay.
func TestAdamFloat32MatchesFloat64(t *testing.T) {
	for _, o := range []optim.AdamOptions{
		{LR: 0.01, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01},
		{LR: 0.01, Beta1: 0.9, Beta2: 0.99, Eps: 1e-6, WeightDecay: 0.1, Decoupled: true},
		optim.AdamDefaults(0.003),
	} {
		_ = torch.ManualSeed(5)
		s := torch.NewScope()
		p0 := torch.Randn([]int64{100003}, torch.Float64, s)
		gs := []*torch.Tensor{torch.Randn([]int64{100003}, torch.Float64, s), torch.Randn([]int64{100003}, torch.Float64, s).MulScalar(1e-3), torch.Randn([]int64{100003}, torch.Float64, s)}
		run := func(dt torch.DType) []float64 {
			p := p0.To(dt).Detach().MoveTo(nil).SetRequiresGrad(true)
			defer p.Free()
			a, err := optim.NewAdam([]*torch.Tensor{p}, o)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Free()
			for _, g := range gs {
				_ = a.ZeroGrad()
				st := torch.NewScope()
				if err := p.Ref(st).Mul(g.To(dt)).Sum().Backward(); err != nil {
					t.Fatal(err)
				}
				st.Close()
				if err := a.Step(); err != nil {
					t.Fatal(err)
				}
			}
			v, _ := p.Float64s()
			return v
		}
		f32, f64 := run(torch.Float32), run(torch.Float64)
		for i := range f64 {
			if !(math.Abs(f32[i]-f64[i]) <= 2e-6*(1+math.Abs(f64[i]))) {
				t.Fatalf("%+v: element %d: float32 %v, float64 %v", o, i, f32[i], f64[i])
			}
		}
		s.Close()
	}
}

// The fused Adam kernels (the default for dense float32 CPU parameters) and
// ATen's per-tensor operations compute the same update: bit for bit for the
// vector kernels (ATen's own kernels on this CPU are vectorised with fused
// multiply-adds where the fused kernels use them), to float32 rounding for the
// scalar one. Three steps over parameters of awkward sizes (not multiples of a
// vector or of a work chunk), one in channels_last layout and one in float64
// (which takes ATen's path in both runs), with L2 and with decoupled weight
// decay; every kernel this CPU runs.
func TestFusedAdamMatchesATen(t *testing.T) {
	if torch.FusedOptimKernel() == "off" {
		t.Skip("DIMTORCH_FUSED_OPTIM=0")
	}
	defer func() { _ = torch.SetFusedOptimKernel("auto") }()
	if err := torch.SetFusedOptimKernel("sse"); err == nil {
		t.Fatal("an unknown kernel was accepted")
	}
	if err := torch.SetFusedOptimKernel("auto"); err != nil {
		t.Fatal(err)
	}
	if auto, aten := torch.FusedOptimKernel(), torch.ATenCPUCapability(); (auto == "scalar") != (aten == "default") {
		t.Fatalf("the automatic choice is %s with ATen at %s: it must round as ATen does", auto, aten)
	}
	shapes := [][]int64{{100003}, {7}, {64, 3, 4, 4}, {1000, 37}, {5}}
	for _, o := range []optim.AdamOptions{
		optim.AdamDefaults(1e-3),
		{LR: 0.01, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01},
		{LR: 0.01, Beta1: 0.9, Beta2: 0.99, Eps: 1e-6, WeightDecay: 0.1, Decoupled: true},
	} {
		_ = torch.ManualSeed(11)
		s := torch.NewScope()
		var p0 []*torch.Tensor
		var gs [][]*torch.Tensor
		for i, sh := range shapes {
			dt := torch.Float32
			if i == len(shapes)-1 {
				dt = torch.Float64
			}
			p0 = append(p0, torch.Randn(sh, dt, s))
			var g []*torch.Tensor
			for k := 0; k < 3; k++ {
				g = append(g, torch.Randn(sh, dt, s).MulScalar(math.Pow(10, float64(-2*k))))
			}
			gs = append(gs, g)
		}
		run := func(kernel string) [][]float32 {
			if err := torch.SetFusedOptimKernel(kernel); err != nil {
				t.Fatal(err)
			}
			if got := torch.FusedOptimKernel(); got != kernel {
				t.Fatalf("kernel %q in use after choosing %q", got, kernel)
			}
			var ps []*torch.Tensor
			for i, p := range p0 {
				q := p.Clone().MoveTo(nil)
				if len(shapes[i]) == 4 {
					cl := q.ChannelsLast().MoveTo(nil)
					q.Free()
					q = cl
				}
				ps = append(ps, q.SetRequiresGrad(true))
			}
			defer func() {
				for _, p := range ps {
					p.Free()
				}
			}()
			a, err := optim.NewAdam(ps, o)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Free()
			for k := 0; k < 3; k++ {
				_ = a.ZeroGrad()
				st := torch.NewScope()
				for i, p := range ps {
					if err := p.Ref(st).Mul(gs[i][k]).Sum().Backward(); err != nil {
						t.Fatal(err)
					}
				}
				st.Close()
				if err := a.Step(); err != nil {
					t.Fatal(err)
				}
			}
			if !ps[2].IsChannelsLast() {
				t.Fatal("the channels_last parameter lost its layout")
			}
			var out [][]float32
			st := torch.NewScope()
			defer st.Close()
			for _, p := range ps {
				v, err := p.Ref(st).Contiguous().Float32s()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, v)
			}
			return out
		}
		aten := run("off")
		// ATen's kernels use fused multiply-adds from AVX2 up; at its plain
		// C++ level (ATEN_CPU_CAPABILITY=default) they do not. The kernels
		// that round as ATen does must match it bit for bit, the others to
		// float32 rounding.
		atenFMA := torch.ATenCPUCapability() != "default"
		// The fused path must really run: a kernel that rounds otherwise than
		// ATen (the scalar one against FMA, or a vector one against plain C++)
		// differs from it in the last bits of some float32 element.
		other := "scalar"
		if !atenFMA {
			other = "avx2"
		}
		if torch.SetFusedOptimKernel("avx2") == nil {
			diff := run(other)
			differs := false
			for i := 0; i < len(aten)-1 && !differs; i++ {
				for j := range aten[i] {
					if aten[i][j] != diff[i][j] {
						differs = true
						break
					}
				}
			}
			if !differs {
				t.Fatalf("%+v: the %s kernel matches ATen (level %s) everywhere: is the fused path taken at all?", o, other, torch.ATenCPUCapability())
			}
		}
		for _, kernel := range []string{"avx512", "avx2", "scalar"} {
			if torch.SetFusedOptimKernel(kernel) != nil {
				t.Logf("this CPU has no %s", kernel)
				continue
			}
			fused := run(kernel)
			exact := (kernel == "scalar") != atenFMA
			for i := range aten {
				for j := range aten[i] {
					f, a := fused[i][j], aten[i][j]
					same := math.Float32bits(f) == math.Float32bits(a)
					if !exact {
						same = math.Abs(float64(f-a)) <= 1e-6*(1+math.Abs(float64(a)))
					}
					if !same {
						t.Fatalf("%+v, %s kernel, ATen at %s: parameter %d %v element %d: fused %v, ATen %v", o, kernel, torch.ATenCPUCapability(), i, shapes[i], j, f, a)
					}
				}
			}
		}
		s.Close()
	}
}

// A graph that saved a parameter cannot backpropagate after an Adam step
// updated it in place ("modified by an inplace operation"), with the fused
// kernel as with ATen's operations: the step moves autograd's version
// counters.
func TestAdamStepInvalidatesSavedParameters(t *testing.T) {
	defer func() { _ = torch.SetFusedOptimKernel("auto") }()
	for _, kernel := range []string{"auto", "off"} {
		if err := torch.SetFusedOptimKernel(kernel); err != nil {
			t.Fatal(err)
		}
		s := torch.NewScope()
		p := torch.Randn([]int64{40}, s).SetRequiresGrad(true)
		a, err := optim.NewAdam([]*torch.Tensor{p}, optim.AdamDefaults(1e-3))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Square().Sum().Backward(); err != nil {
			t.Fatal(err)
		}
		saved := p.Mul(p).Sum() // saves p for its backward pass
		if err := a.Step(); err != nil {
			t.Fatal(err)
		}
		if err := saved.Backward(); err == nil || !strings.Contains(err.Error(), "inplace") {
			t.Errorf("kernel %s: backward through a graph that saved the updated parameter: %v", kernel, err)
		}
		a.Free()
		s.Close()
	}
}
