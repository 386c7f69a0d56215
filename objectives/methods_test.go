package objectives

import (
	"encoding/json"
	"fmt"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/internal/npy"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// newTestMethod builds basic28 on images of ch channels and a method on it.
func newTestMethod(t *testing.T, mc MethodConfig, ch, images int) (models.Encoder, Method) {
	t.Helper()
	enc, err := models.New(models.Config{Name: "basic28", InChannels: ch, YDim: 16})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMethod(mc, DIMConfig{GPWeight: 1}, Env{Spec: enc.Spec(), Images: images, Adam: optim.AdamOptions{LR: 1e-3, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8},
		Device: torch.CPU, World: 1})
	if err != nil {
		nn.Free(enc)
		t.Fatal(err)
	}
	return enc, m
}

// leafEncoder runs an encoder and hands its taps on as independent leaves
// of the graph, so that the gradients with respect to each tap mean what
// the reference's do (in the encoder, Y depends on fc, which depends on
// the local map).
type leafEncoder struct{ models.Encoder }

func (e leafEncoder) Encode(x *torch.Tensor) models.Taps {
	var t models.Taps
	torch.NoGrad(func() { t = e.Encoder.Encode(x) })
	leaf := func(v *torch.Tensor) *torch.Tensor { return v.Detach().Contiguous().SetRequiresGrad(true) }
	t.Local, t.FC, t.Y = leaf(t.Local), leaf(t.FC), leaf(t.Y)
	t.Conv = t.Local
	return t
}

// recorder is a noise hook that keeps what it drew.
type recorder struct{ drawn []*torch.Tensor }

func (r *recorder) draw(shape []int64, like *torch.Tensor) *torch.Tensor {
	v := torch.Randn(shape, like.Device(), like.Scope())
	r.drawn = append(r.drawn, v)
	return v
}

func writeTensor(t *testing.T, path string, x *torch.Tensor) {
	t.Helper()
	shape := x.Shape()
	dims := make([]int, len(shape))
	for i, s := range shape {
		dims[i] = int(s)
	}
	var err error
	if x.DType() == torch.Int64 {
		var v []int64
		if v, err = x.Int64s(); err == nil {
			err = npy.WriteInt64(path, v, dims...)
		}
	} else {
		var v []float32
		if v, err = x.Detach().To(torch.Float32).Contiguous().Float32s(); err == nil {
			err = npy.WriteFloat32(path, v, dims...)
		}
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Every baseline's loss (and its critic's) against an independent plain
// PyTorch computation (testdata/methods_ref.py) from the same weights,
// taps and noise: the VAE's ELBO under both likelihoods, the AAE's
// reconstruction, generator loss, discriminator loss and gradient penalty,
// BiGAN's two sides, NAT's Hungarian re-assignment (against SciPy) and
// distance, and CPC's infoNCE over the masked context's predictions.
func TestMethodsAgainstPyTorch(t *testing.T) {
	testref.NeedPyTorch(t)
	testref.NeedSciPy(t)
	cases := []struct {
		name string
		mc   MethodConfig
		ch   int
	}{
		{"vae-bernoulli", MethodConfig{Name: "vae", Likelihood: "bernoulli"}, 1},
		{"vae-gaussian", MethodConfig{Name: "vae", Likelihood: "gaussian"}, 3},
		{"aae", MethodConfig{Name: "aae", Likelihood: "bernoulli"}, 1},
		{"aae-gaussian", MethodConfig{Name: "aae", Likelihood: "gaussian"}, 3},
		{"bigan", MethodConfig{Name: "bigan"}, 1},
		{"nat", MethodConfig{Name: "nat"}, 1},
		{"cpc", MethodConfig{Name: "cpc", CPCRows: 2}, 1},
		{"cpc-skip", MethodConfig{Name: "cpc", CPCRows: 2, CPCSkip: 2}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := torch.ManualSeed(7); err != nil {
				t.Fatal(err)
			}
			const n, images = 8, 20
			enc, m := newTestMethod(t, c.mc, c.ch, images)
			defer nn.Free(enc)
			defer m.Free()
			s := torch.NewScope()
			defer s.Close()
			dir := t.TempDir()
			var lik likelihood
			switch mm := m.(type) {
			case *VAE:
				lik = mm.lik
			case *AAE:
				lik = mm.lik
			}
			if lik.logScale != nil { // away from its initial value, so that it matters
				torch.NoGrad(func() { _ = lik.logScale.FillInPlace(-0.7) })
			}
			x := torch.Rand([]int64{n, int64(c.ch), 28, 28}, s).MulScalar(2).AddScalar(-1)
			indices := []int{3, 17, 0, 9, 12, 5, 19, 8}
			var noise, real recorder
			switch mm := m.(type) {
			case *VAE:
				mm.Noise = noise.draw
			case *BiGAN:
				mm.Noise = noise.draw
			case *AAE:
				mm.prior.Sample = real.draw
			case *NAT:
				// The assignment starts scrambled, as after some training.
				perm := torch.RandPerm(images, s)
				if err := mm.assign.CopyFrom(perm); err != nil {
					t.Fatal(err)
				}
			}
			var before []int64
			if nat, ok := m.(*NAT); ok {
				before, _ = nat.assign.Int64s()
			}
			for k, v := range nn.StateDict(m, "") {
				writeTensor(t, filepath.Join(dir, "p."+k+".npy"), v)
			}
			if cr := m.Critic(); cr != nil {
				for k, v := range nn.StateDict(cr.Net(), "") {
					writeTensor(t, filepath.Join(dir, "p."+cr.Name()+"."+k+".npy"), v)
				}
			}
			terms, taps := m.Loss(leafEncoder{enc}, Input{X: x, Indices: indices})
			tapNames := []string{"y", "fc", "local"}
			grads, err := torch.Grad([]*torch.Tensor{terms.Total}, []*torch.Tensor{taps.Y, taps.FC, taps.Local},
				torch.GradOptions{RetainGraph: true, AllowUnused: true})
			if err != nil {
				t.Fatal(err)
			}
			// The encoder's loss trains the encoder and the method's
			// networks, never the critic's weights.
			if err := terms.Total.Backward(); err != nil {
				t.Fatal(err)
			}
			if cr := m.Critic(); cr != nil {
				for _, p := range cr.Net().NamedParameters() {
					if g := p.Tensor.Grad(); g != nil && g.Err() == nil {
						t.Fatalf("the critic's %s has a gradient from the encoder's loss", p.Name)
					}
				}
			}
			got := map[string]float64{}
			for name, v := range map[string]*torch.Tensor{"total": terms.Total, "recon": terms.Recon, "kl": terms.KL, "prior": terms.Prior,
				"adversarial": terms.Adversarial, "nat": terms.NAT, "cpc": terms.CPC} {
				if v != nil {
					f, err := v.Item()
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					got[name] = f
				}
			}
			if cr := m.Critic(); cr != nil {
				pl, err := cr.Step()
				if err != nil {
					t.Fatal(err)
				}
				got["d_loss"] = pl.D
				if c.mc.Name == "aae" {
					got["grad_penalty"] = pl.GP
				}
			}
			writeTensor(t, filepath.Join(dir, "x.npy"), x)
			writeTensor(t, filepath.Join(dir, "y.npy"), taps.Y)
			writeTensor(t, filepath.Join(dir, "fc.npy"), taps.FC)
			writeTensor(t, filepath.Join(dir, "local.npy"), taps.Local)
			idx := make([]int64, len(indices))
			for i, v := range indices {
				idx[i] = int64(v)
			}
			if err := npy.WriteInt64(filepath.Join(dir, "indices.npy"), idx, len(idx)); err != nil {
				t.Fatal(err)
			}
			for _, r := range []struct {
				name string
				rec  recorder
			}{{"noise", noise}, {"real", real}} {
				if len(r.rec.drawn) > 1 {
					t.Fatalf("%s drawn %d times", r.name, len(r.rec.drawn))
				}
				if len(r.rec.drawn) == 1 {
					writeTensor(t, filepath.Join(dir, r.name+".npy"), r.rec.drawn[0])
				}
			}
			mc := c.mc
			_ = mc.Validate()
			cfg, _ := json.Marshal(map[string]any{"method": mc.Name, "likelihood": mc.Likelihood, "rows": mc.CPCRows, "skip": mc.CPCSkip})
			if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := exec.Command("/usr/bin/python3", "testdata/methods_ref.py", dir).Output()
			if err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					t.Fatalf("reference: %v\n%s", err, ee.Stderr)
				}
				t.Fatal(err)
			}
			var want map[string]any
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatalf("reference output %q: %v", b, err)
			}
			for k, wv := range want {
				if k == "assign" {
					continue
				}
				w := wv.(float64)
				g, ok := got[k]
				if !ok {
					t.Errorf("%s: dimtorch has no %s", c.name, k)
					continue
				}
				if math.Abs(g-w) > 2e-5*(1+math.Abs(w)) {
					t.Errorf("%s %s: dimtorch %.7g, PyTorch %.7g", c.name, k, g, w)
				}
			}
			if len(got) != len(want)-btoi(want["assign"] != nil) {
				t.Errorf("dimtorch reports %v, the reference %v", keys(got), want)
			}
			for i, name := range tapNames {
				checkRefGrad(t, dir, name, grads[i], false)
			}
			if a, ok := want["assign"]; ok {
				cur, err := m.(*NAT).assign.IndexSelect(0, torch.FromSlice(idx, []int64{int64(len(idx))}, s)).Int64s()
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(cur) != fmt.Sprint(a) {
					t.Errorf("assignment %v, SciPy's %v", cur, a)
				}
				// Images outside the batch keep their targets, and the
				// assignment stays a permutation.
				after, _ := m.(*NAT).assign.Int64s()
				inBatch := map[int]bool{}
				for _, i := range indices {
					inBatch[i] = true
				}
				seen := map[int64]bool{}
				for i, v := range after {
					if !inBatch[i] && v != before[i] {
						t.Errorf("image %d outside the batch moved from target %d to %d", i, before[i], v)
					}
					seen[v] = true
				}
				if len(seen) != images {
					t.Errorf("the assignment is no longer a permutation: %v", after)
				}
			}
		})
	}
}

// checkRefGrad compares a gradient with the reference's ref_grad_NAME.npy
// in dir (within 1e-4 of the largest value): both or neither must exist,
// and with nonzero each must not be all zeros.
func checkRefGrad(t *testing.T, dir, name string, grad *torch.Tensor, nonzero bool) {
	t.Helper()
	ref, _, err := npy.ReadFloat32(filepath.Join(dir, "ref_grad_"+name+".npy"))
	if (grad == nil) != (err != nil) {
		t.Fatalf("gradient with respect to %s: dimtorch has one: %v, the reference: %v", name, grad != nil, err == nil)
	}
	if grad == nil {
		return
	}
	g, err := grad.Contiguous().Float32s()
	if err != nil || len(g) != len(ref) {
		t.Fatalf("gradient with respect to %s: %d values, the reference %d (%v)", name, len(g), len(ref), err)
	}
	var scale, diff float64
	for j := range g {
		scale = math.Max(scale, math.Abs(float64(ref[j])))
		diff = math.Max(diff, math.Abs(float64(g[j]-ref[j])))
	}
	if (nonzero && scale == 0) || diff > 1e-4*scale+1e-7 {
		t.Errorf("gradient with respect to %s: differs from PyTorch's by %g (largest value %g)", name, diff, scale)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func keys(m map[string]float64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// BiGAN's players each improve against the other held fixed: steps of the
// discriminator alone lower its loss, steps of the encoder and generator
// alone lower theirs.
func TestBiGANPlayers(t *testing.T) {
	if err := torch.ManualSeed(3); err != nil {
		t.Fatal(err)
	}
	enc, m := newTestMethod(t, MethodConfig{Name: "bigan"}, 1, 0)
	defer nn.Free(enc)
	defer m.Free()
	s := torch.NewScope()
	defer s.Close()
	x := torch.Rand([]int64{16, 1, 28, 28}, s).MulScalar(2).AddScalar(-1)
	step := func(s *torch.Scope) (float64, float64) {
		terms, _ := m.Loss(enc, Input{X: x.Ref(s)})
		a, err := terms.Total.Item()
		if err != nil {
			t.Fatal(err)
		}
		pl, err := m.Critic().Step()
		if err != nil {
			t.Fatal(err)
		}
		return a, pl.D
	}
	// The discriminator alone.
	var first, last float64
	for i := 0; i < 12; i++ {
		s := torch.NewScope()
		_, d := step(s)
		s.Close()
		if i == 0 {
			first = d
		}
		last = d
	}
	if !(last < first-0.1) {
		t.Fatalf("the discriminator alone went from %.4f to %.4f", first, last)
	}
	// The encoder and generator alone.
	opt, err := optim.NewAdam(append(nn.Parameters(enc), nn.Parameters(m)...), optim.AdamOptions{LR: 1e-3, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8})
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	for i := 0; i < 12; i++ {
		s := torch.NewScope()
		terms, _ := m.Loss(enc, Input{X: x.Ref(s)})
		a, err := terms.Total.Item()
		if err != nil {
			t.Fatal(err)
		}
		if err := opt.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		if err := terms.Total.Backward(); err != nil {
			t.Fatal(err)
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if i == 0 {
			first = a
		}
		last = a
	}
	if !(last < first-0.1) {
		t.Fatalf("the encoder and generator alone went from %.4f to %.4f", first, last)
	}
}

// Under bfloat16 autocast every baseline's loss and its critic's step are
// finite and close to float32's, and the backward pass runs.
func TestMethodsBF16(t *testing.T) {
	testref.NeedBF16(t)
	for _, name := range []string{"vae", "aae", "bigan", "nat", "cpc"} {
		t.Run(name, func(t *testing.T) {
			if err := torch.ManualSeed(5); err != nil {
				t.Fatal(err)
			}
			enc, m := newTestMethod(t, MethodConfig{Name: name}, 1, 16)
			defer nn.Free(enc)
			defer m.Free()
			s := torch.NewScope()
			defer s.Close()
			x := torch.Rand([]int64{16, 1, 28, 28}, s).MulScalar(2).AddScalar(-1)
			idx := make([]int, 16)
			for i := range idx {
				idx[i] = i
			}
			loss := func(bf16 bool) (float64, *torch.Tensor) {
				if err := torch.ManualSeed(9); err != nil {
					t.Fatal(err)
				}
				var terms Terms
				f := func() { terms, _ = m.Loss(enc, Input{X: x, Indices: idx}) }
				if bf16 {
					if err := torch.Autocast(torch.BFloat16, f); err != nil {
						t.Fatal(err)
					}
				} else {
					f()
				}
				v, err := terms.Total.Item()
				if err != nil {
					t.Fatal(err)
				}
				if terms.Total.DType() != torch.Float32 {
					t.Fatalf("the loss is %v, want float32", terms.Total.DType())
				}
				return v, terms.Total
			}
			f32, _ := loss(false)
			b16, total := loss(true) // the critic keeps this call's tensors
			if math.IsNaN(b16) || math.Abs(b16-f32) > 0.05*(1+math.Abs(f32)) {
				t.Fatalf("bf16 loss %v, float32 %v", b16, f32)
			}
			if err := total.Backward(); err != nil {
				t.Fatal(err)
			}
			if c := m.Critic(); c != nil {
				if _, err := c.Step(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// CPC's context at row i depends on rows 0..i of the patch codes only:
// changing every row below i leaves the context of rows 0..i exactly as it
// was, and changing row i changes it.
func TestCPCContextIsCausal(t *testing.T) {
	if err := torch.ManualSeed(11); err != nil {
		t.Fatal(err)
	}
	p, err := newCPC(models.Spec{Local: [3]int{8, 7, 7}}, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Free()
	s := torch.NewScope()
	defer s.Close()
	z := torch.Randn([]int64{2, 8, 7, 7}, s)
	base := p.context.Forward(z)
	for i := int64(0); i < 6; i++ {
		below := torch.Randn([]int64{2, 8, 6 - i, 7}, s)
		changed := torch.Cat([]*torch.Tensor{z.Narrow(2, 0, i+1), below}, 2)
		d, err := p.context.Forward(changed).Narrow(2, 0, i+1).Sub(base.Narrow(2, 0, i+1)).Abs().Max().Item()
		if err != nil {
			t.Fatal(err)
		}
		if d != 0 {
			t.Fatalf("rows below %d change the context of rows 0..%d by %g", i, i, d)
		}
		row := torch.Cat([]*torch.Tensor{z.Narrow(2, 0, i), torch.Randn([]int64{2, 8, 1, 7}, s), z.Narrow(2, i+1, 6-i)}, 2)
		if d, _ := p.context.Forward(row).Narrow(2, i, 1).Sub(base.Narrow(2, i, 1)).Abs().Max().Item(); d == 0 {
			t.Fatalf("row %d does not reach its own context", i)
		}
	}
}

// A method that cannot be built is reported as an error and a nil Method
// (not a nil pointer inside the interface, which a caller's Free would
// dereference).
func TestNewMethodErrors(t *testing.T) {
	for _, c := range []struct {
		mc  MethodConfig
		dim DIMConfig
		env Env
	}{
		{MethodConfig{Name: "dim"}, DIMConfig{Mode: "sideways"}, Env{}},
		{MethodConfig{Name: "gan"}, DIMConfig{}, Env{}},
		{MethodConfig{Name: "vae", Likelihood: "poisson"}, DIMConfig{}, Env{}},
		{MethodConfig{Name: "nat"}, DIMConfig{}, Env{Images: 0}},
		{MethodConfig{Name: "cpc", CPCRows: 7}, DIMConfig{}, Env{Spec: models.Spec{Name: "basic28", Local: [3]int{128, 7, 7}}}},
	} {
		m, err := NewMethod(c.mc, c.dim, c.env)
		if err == nil || m != nil {
			t.Errorf("%+v: method %v, error %v", c.mc, m, err)
		}
	}
}
