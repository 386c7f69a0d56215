package objectives

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"os"
	"testing"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// Every estimator against the independent reference (testdata/gen_estimators.py).
func TestEstimatorsAgainstReference(t *testing.T) {
	b, err := os.ReadFile("testdata/estimators.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []struct {
			Shape  []int64            `json:"shape"`
			Scores []float64          `json:"scores"`
			Losses map[string]float64 `json:"losses"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases[0].Losses) != len(Estimators()) {
		t.Fatalf("fixtures cover %d estimators, dimtorch has %d", len(f.Cases[0].Losses), len(Estimators()))
	}
	for _, c := range f.Cases {
		s := torch.NewScope()
		scores := torch.FromSlice(c.Scores, c.Shape, s)
		for name, want := range c.Losses {
			e, err := GetEstimator(name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Loss(scores).Item()
			if err != nil {
				t.Fatalf("%s %v: %v", name, c.Shape, err)
			}
			if math.Abs(got-want) > 1e-10*(1+math.Abs(want)) {
				t.Errorf("%s on %v: %.12g, reference %.12g", name, c.Shape, got, want)
			}
		}
		s.Close()
	}
}

// Closed forms: with all scores equal to c, JSD's loss is
// -(log2 - softplus(-c) - softplus(c) + log2), and DV's is 0.
func TestEstimatorClosedForms(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	c := 0.7
	scores := torch.Full([]int64{3, 3, 2, 1}, c, torch.Float64, s)
	sp := func(x float64) float64 { return math.Log1p(math.Exp(x)) }
	cases := map[string]float64{
		"jsd": -(math.Log(2) - sp(-c) - sp(c) + math.Log(2)),
		"dv":  0,
		"nce": math.Log(1 + 2*2), // one positive among 1 + (N-1)*L equal candidates
		"kl":  -(c - math.Exp(c-1)),
		"x2":  -(c - (c*c/4 + c)),
	}
	for name, want := range cases {
		e, _ := GetEstimator(name)
		got, _ := e.Loss(scores).Item()
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("%s: %v, closed form %v", name, got, want)
		}
	}
	if err := (infoNCE{}).Loss(torch.Zeros([]int64{1, 1, 2, 1}, s)).Err(); err == nil {
		t.Fatal("a batch of one has no negatives: must be an error")
	}
	if _, err := GetEstimator("nope"); err == nil {
		t.Fatal("unknown estimator accepted")
	}
}

func TestDotScoresLayout(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	local := torch.Randn([]int64{3, 4, 5}, torch.Float64, s)
	global := torch.Randn([]int64{3, 2, 5}, torch.Float64, s)
	sc := DotScores(local, global)
	if sh := sc.Shape(); len(sh) != 4 || sh[0] != 3 || sh[1] != 3 || sh[2] != 4 || sh[3] != 2 {
		t.Fatalf("shape %v", sh)
	}
	// S[n, k, l, m] = <local[n, l], global[k, m]>.
	for _, idx := range [][4]int64{{0, 2, 3, 1}, {2, 0, 1, 0}, {1, 1, 0, 1}} {
		got, _ := sc.Select(0, idx[0]).Select(0, idx[1]).Select(0, idx[2]).Select(0, idx[3]).Item()
		want, _ := local.Select(0, idx[0]).Select(0, idx[2]).Mul(global.Select(0, idx[1]).Select(0, idx[3])).Sum().Item()
		if math.Abs(got-want) > 1e-12 {
			t.Fatalf("S%v = %v, want %v", idx, got, want)
		}
	}
}

func TestConcatScorerIsConcatenation(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	c := NewConcatScorer(6, 4, 8)
	defer nn.Free(c)
	m := torch.Randn([]int64{3, 6, 2, 2}, s)
	y := torch.Randn([]int64{3, 4}, s)
	sc := c.Scores(m, y)
	if sh := sc.Shape(); sh[0] != 3 || sh[1] != 3 || sh[2] != 4 || sh[3] != 1 {
		t.Fatalf("shape %v", sh)
	}
	// Recompute one pair as an explicit concatenation through one linear layer.
	n, k, l := int64(2), int64(0), int64(3)
	feat := m.Select(0, n).Flatten(1, -1).Select(1, l)         // [6]
	cat := torch.Cat([]*torch.Tensor{feat, y.Select(0, k)}, 0) // [10]
	w := torch.Cat([]*torch.Tensor{c.local.Weight, c.global.Weight}, 1)
	h := torch.Linear(cat, w, c.local.Bias).Relu()
	want, _ := c.out.Forward(c.hidden.Forward(h).Relu()).Item()
	got, _ := sc.Select(0, n).Select(0, k).Select(0, l).Item()
	if math.Abs(got-want) > 1e-5 {
		t.Fatalf("pair score %v, explicit concatenation %v", got, want)
	}
}

// Each estimator can be optimised: a few Adam steps on a tiny critic over
// correlated pairs lower its loss.
func TestEstimatorsOptimisable(t *testing.T) {
	for _, name := range Estimators() {
		t.Run(name, func(t *testing.T) {
			_ = torch.ManualSeed(1)
			est, _ := GetEstimator(name)
			x := torch.Randn([]int64{16, 8})
			defer x.Free()
			fl := nn.NewLinear(8, 4*6, true) // 4 locals of 6 units
			fg := nn.NewLinear(8, 6, true)
			defer nn.Free(fl)
			defer nn.Free(fg)
			ps := append(nn.Parameters(fl), nn.Parameters(fg)...)
			opt, _ := optim.NewAdam(ps, optim.AdamDefaults(0.01))
			defer opt.Free()
			loss := func() (*torch.Tensor, *torch.Scope) {
				s := torch.NewScope()
				xs := x.Ref(s)
				// Scale down so exp-based estimators start in range.
				return est.Loss(DotScores(fl.Forward(xs).Reshape(16, 4, 6).MulScalar(0.3), fg.Forward(xs).MulScalar(0.3))), s
			}
			l0, s0 := loss()
			first, _ := l0.Item()
			s0.Close()
			for i := 0; i < 30; i++ {
				l, s := loss()
				_ = opt.ZeroGrad()
				if err := l.Backward(); err != nil {
					t.Fatal(err)
				}
				_ = opt.Step()
				s.Close()
			}
			l1, s1 := loss()
			last, _ := l1.Item()
			s1.Close()
			if !(last < first-0.01) {
				t.Fatalf("loss %v -> %v did not fall", first, last)
			}
			// Minimising the loss must teach the critic to score the joint
			// pairs (n == k) above the others: an estimator with positives
			// and negatives swapped also lowers its loss, but by scoring
			// the negatives higher.
			s := torch.NewScope()
			defer s.Close()
			var gap float64
			torch.NoGrad(func() {
				xs := x.Ref(s)
				sc := DotScores(fl.Forward(xs).Reshape(16, 4, 6).MulScalar(0.3), fg.Forward(xs).MulScalar(0.3))
				eye := torch.Eye(16, 16, s).Reshape(16, 16, 1, 1).Expand(sc.Shape()...)
				pos, _ := sc.Mul(eye).Sum().Item()
				all, _ := sc.Sum().Item()
				gap = pos/(16*4) - (all-pos)/(16*15*4)
			})
			if !(gap > 0.1) {
				t.Fatalf("mean positive score minus mean negative score %v after training: the critic did not learn to tell joint pairs", gap)
			}
		})
	}
}

// The discriminator's gradient penalty against its closed form: for a linear
// discriminator D(x) = w.x + b the gradient is w everywhere, so each of
// E||grad D(real)||^2 and E||grad D(fake)||^2 is ||w||^2 and the penalty,
// their mean as in the original code, is ||w||^2; its gradient with respect
// to w is 2w (the penalty is differentiated through the gradient).
func TestGradientPenaltyClosedForm(t *testing.T) {
	for _, weight := range []float64{1, 10, 0} {
		_ = torch.ManualSeed(3)
		prior, err := NewPrior(5, optim.AdamDefaults(1e-3), weight, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		lin := nn.NewLinear(5, 1, true)
		nn.Free(prior.D)
		prior.D = nn.NewSequential(lin)
		s := torch.NewScope()
		w, _ := lin.Weight.Float64s()
		var w2 float64
		for _, v := range w {
			w2 += v * v
		}
		total, adv, gp := prior.DiscriminatorLoss(torch.Randn([]int64{32, 5}, s))
		g, _ := gp.Item()
		tv, _ := total.Item()
		av, _ := adv.Item()
		want := w2
		if weight == 0 {
			want = 0 // not computed
		}
		if !(math.Abs(g-want) <= 1e-6*(1+want)) {
			t.Fatalf("weight %v: penalty %v, closed form ||w||^2 = %v", weight, g, want)
		}
		if !(math.Abs(tv-av-weight*want) <= 1e-5*(1+want)) {
			t.Fatalf("weight %v: total %v = adversarial %v + %v x penalty %v does not hold", weight, tv, av, weight, g)
		}
		if weight == 1 {
			grads, err := torch.Grad([]*torch.Tensor{gp}, []*torch.Tensor{lin.Weight}, torch.GradOptions{})
			if err != nil {
				t.Fatal(err)
			}
			gw, _ := grads[0].Float64s()
			for i := range w {
				if !(math.Abs(gw[i]-2*w[i]) <= 1e-5) {
					t.Fatalf("d penalty / dw = %v, closed form 2w = %v", gw, w)
				}
			}
		}
		s.Close()
		prior.Free()
	}
	if _, err := NewPrior(5, optim.AdamDefaults(1e-3), -1, torch.CPU); err == nil {
		t.Fatal("a negative penalty weight must be refused")
	}
}

// Under bfloat16 autocast the critic's products run in bfloat16 but the
// estimators see float32 scores: the loss equals the float32 estimator on
// the bfloat16 scores to float32 precision (an estimator evaluated in
// bfloat16 is off by about 1e-3 here).
func TestEstimatorsRunInFloat32UnderAutocast(t *testing.T) {
	testref.NeedBF16(t)
	_ = torch.ManualSeed(9)
	spec := models.Spec{Local: [3]int{8, 3, 3}, Y: 16}
	for _, est := range []string{"jsd", "nce", "dv"} {
		d, err := NewDIM(DIMConfig{Mode: "local", Estimator: est, Beta: 1, MIUnits: 16}, spec)
		if err != nil {
			t.Fatal(err)
		}
		s := torch.NewScope()
		l := torch.Randn([]int64{12, 9, 16}, s).To(torch.BFloat16)
		g := torch.Randn([]int64{12, 16}, s).To(torch.BFloat16)
		var loss *torch.Tensor
		if err := torch.AutocastOn(torch.CPU, torch.BFloat16, func() { loss, _ = d.crossViews(l, g, DotScores) }); err != nil {
			t.Fatal(err)
		}
		if loss.DType() != torch.Float32 {
			t.Fatalf("%s: loss in %v under autocast", est, loss.DType())
		}
		e, _ := GetEstimator(est)
		got, _ := loss.Item()
		want, _ := e.Loss(DotScores(l, g).To(torch.Float32)).Item()
		if !(math.Abs(got-want) <= 1e-6*(1+math.Abs(want))) {
			t.Fatalf("%s: loss %v under autocast, float32 estimator on the same scores %v", est, got, want)
		}
		s.Close()
		nn.Free(d)
	}
}

// The prior game: a discriminator step separates prior samples from
// sigmoid(Y) (D(fake) falls), a generator step moves Y so that D(fake) rises;
// neither player's step touches the other's parameters.
func TestPriorGameMovesPlayersOppositely(t *testing.T) {
	_ = torch.ManualSeed(2)
	prior, err := NewPrior(8, optim.AdamOptions{LR: 1e-3, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer prior.Free()
	y := torch.Randn([]int64{64, 8}).MulScalar(0.5).SubScalar(2).SetRequiresGrad(true) // sigmoid(y) near 0.12
	defer y.Free()
	yOpt, _ := optim.NewAdam([]*torch.Tensor{y}, optim.AdamDefaults(0.05))
	defer yOpt.Free()
	dFake := func() float64 {
		var v float64
		torch.NoGrad(func() {
			s := torch.NewScope()
			defer s.Close()
			v, _ = prior.D.Forward(y.Ref(s).Sigmoid()).Mean().Item()
		})
		return v
	}
	snapshot := func(ts []*torch.Tensor) []float64 {
		var out []float64
		for _, p := range ts {
			v, _ := p.Float64s()
			out = append(out, v...)
		}
		return out
	}
	same := func(a, b []float64) bool {
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	before := dFake()
	yBefore := snapshot([]*torch.Tensor{y})
	for i := 0; i < 20; i++ {
		s := torch.NewScope()
		if _, err := prior.Step(y.Ref(s)); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	afterD := dFake()
	if !(afterD < before) {
		t.Fatalf("discriminator steps did not lower D(fake): %v -> %v", before, afterD)
	}
	if !same(yBefore, snapshot([]*torch.Tensor{y})) {
		t.Fatal("the discriminator's step changed the encoder's output")
	}
	dBefore := snapshot(nn.Parameters(prior.D))
	for i := 0; i < 20; i++ {
		s := torch.NewScope()
		_ = yOpt.ZeroGrad()
		if err := prior.GeneratorLoss(y.Ref(s)).Backward(); err != nil {
			t.Fatal(err)
		}
		_ = yOpt.Step()
		s.Close()
	}
	afterG := dFake()
	if !(afterG > afterD) {
		t.Fatalf("generator steps did not raise D(fake): %v -> %v", afterD, afterG)
	}
	if !same(dBefore, snapshot(nn.Parameters(prior.D))) {
		t.Fatal("the generator's step changed the discriminator")
	}
	// The generator's gradients left on D are cleared by the next D step.
	s := torch.NewScope()
	defer s.Close()
	if _, err := prior.Step(y.Ref(s)); err != nil {
		t.Fatal(err)
	}
}

func TestOcclude(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Ones([]int64{5, 2, 8, 8}, s)
	o := Occlude(x, 3)
	zeros, _ := o.EqScalar(0).To(torch.Float64).SumDims([]int64{1, 2, 3}, false).Float64s()
	for i, z := range zeros {
		if z != 2*9 {
			t.Fatalf("image %d: %v zeroed values, want 18", i, z)
		}
	}
}

// Every mode and scorer gives a finite loss that backpropagates, and training
// steps lower it.
func TestDIMModes(t *testing.T) {
	cases := []DIMConfig{
		{Mode: "local", Estimator: "jsd"},
		{Mode: "local", Estimator: "nce", Scorer: "concat"},
		{Mode: "global", Estimator: "dv"},
		{Mode: "local+global", Estimator: "jsd", CoordWeight: 1, Occlusion: true},
		{Mode: "local+global", Estimator: "nce", Views: 2},
	}
	for _, cfg := range cases {
		a, b, g := DefaultWeights(cfg.Mode)
		cfg.Alpha, cfg.Beta, cfg.Gamma = a, b, g
		cfg.MIUnits = 32
		t.Run(fmt.Sprintf("%s/%s/%s/views%d", cfg.Mode, cfg.Estimator, cfg.Scorer, cfg.Views), func(t *testing.T) {
			_ = torch.ManualSeed(3)
			enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer nn.Free(enc)
			d, err := NewDIM(cfg, enc.Spec())
			if err != nil {
				t.Fatal(err)
			}
			defer nn.Free(d)
			prior, _ := NewPrior(int64(enc.Spec().Y), optim.AdamDefaults(1e-4), 1, torch.CPU)
			defer prior.Free()
			ps := append(nn.Parameters(enc), nn.Parameters(d)...)
			opt, _ := optim.NewAdam(ps, optim.AdamOptions{LR: 1e-3, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8})
			defer opt.Free()
			x := torch.Rand([]int64{16, 1, 28, 28}).MulScalar(2).SubScalar(1)
			defer x.Free()
			var first, last float64
			for i := 0; i < 8; i++ {
				s := torch.NewScope()
				terms, _ := d.Loss(enc, x.Ref(s), prior)
				v, err := terms.Total.Item()
				if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("step %d: loss %v, %v", i, v, err)
				}
				main := terms.Local
				if main == nil {
					main = terms.Global
				}
				mv, _ := main.Item()
				if i == 0 {
					first = mv
				}
				last = mv
				_ = opt.ZeroGrad()
				if err := terms.Total.Backward(); err != nil {
					t.Fatal(err)
				}
				_ = opt.Step()
				s.Close()
			}
			if !(last < first) {
				t.Fatalf("MI loss %v -> %v", first, last)
			}
		})
	}
	if _, err := NewDIM(DIMConfig{Mode: "sideways", Estimator: "jsd"}, models.Spec{}); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

// With V views the local loss is the mean over ordered pairs of distinct
// views of the one-view loss of view a's locals against view b's globals,
// computed here pair by pair from the heads.
func TestCrossViewLoss(t *testing.T) {
	_ = torch.ManualSeed(5)
	enc, _ := models.New(models.Config{Name: "basic28", InChannels: 1})
	defer nn.Free(enc)
	for _, est := range []string{"nce", "jsd"} {
		for _, scorer := range []string{"dot", "concat"} {
			cfg := DIMConfig{Mode: "local", Estimator: est, Scorer: scorer, Beta: 1, MIUnits: 16, Views: 3}
			d, err := NewDIM(cfg, enc.Spec())
			if err != nil {
				t.Fatal(err)
			}
			s := torch.NewScope()
			x := torch.Rand([]int64{12, 1, 28, 28}).Ref(s) // 3 views of 4 images
			enc.Train(false)                               // batch statistics would differ between the batches
			d.Train(false)
			terms, _ := d.Loss(enc, x, nil)
			got, err := terms.Local.Item()
			if err != nil {
				t.Fatal(err)
			}
			e, _ := GetEstimator(est)
			want := 0.0
			for a := int64(0); a < 3; a++ {
				for b := int64(0); b < 3; b++ {
					if a == b {
						continue
					}
					la := enc.Encode(x.Narrow(0, a*4, 4)).Local
					yb := enc.Encode(x.Narrow(0, b*4, 4)).Y
					var sc *torch.Tensor
					if d.concat != nil {
						sc = d.concat.Scores(la, yb)
					} else {
						sc = DotScores(d.localHead.Forward(la), d.globalHeadL.Forward(yb))
					}
					v, err := e.Loss(sc).Item()
					if err != nil {
						t.Fatal(err)
					}
					want += v / 6
				}
			}
			enc.Train(true)
			if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
				t.Errorf("%s/%s: cross-view loss %v, pairwise mean %v", est, scorer, got, want)
			}
			// One view of the same 12 images is a different objective.
			one := cfg
			one.Views = 1
			d1, _ := NewDIM(one, enc.Spec())
			if err := nn.LoadStateDict(d1, nn.StateDict(d, ""), ""); err != nil {
				t.Fatal(err)
			}
			t1, _ := d1.Loss(enc, x, nil)
			if v, _ := t1.Local.Item(); v == got {
				t.Errorf("%s/%s: views changed nothing", est, scorer)
			}
			s.Close()
			nn.Free(d)
			nn.Free(d1)
		}
	}
	if err := (&DIMConfig{Mode: "local", Estimator: "nce", Beta: 1, Views: 9}).Validate(); err == nil {
		t.Fatal("9 views accepted")
	}
	d, _ := NewDIM(DIMConfig{Mode: "local", Estimator: "nce", Beta: 1, MIUnits: 8, Views: 2}, enc.Spec())
	defer nn.Free(d)
	x := torch.Rand([]int64{3, 1, 28, 28})
	defer x.Free()
	terms, _ := d.Loss(enc, x, nil)
	if terms.Total.Err() == nil {
		t.Fatal("an odd batch split into 2 views")
	}
}

// ScoreClip divides the scores by sqrt(units), adds 0.05 mean(s^2) and
// soft-clips them before the estimator: checked against that formula on the
// heads' raw scores.
func TestScoreClip(t *testing.T) {
	_ = torch.ManualSeed(6)
	enc, _ := models.New(models.Config{Name: "basic28", InChannels: 1})
	defer nn.Free(enc)
	enc.Train(false)
	cfg := DIMConfig{Mode: "local", Estimator: "nce", Beta: 1, MIUnits: 16, ScoreClip: 0.5}
	d, err := NewDIM(cfg, enc.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(d)
	d.Train(false)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Rand([]int64{6, 1, 28, 28}).Ref(s)
	terms, _ := d.Loss(enc, x, nil)
	got, err := terms.Local.Item()
	if err != nil {
		t.Fatal(err)
	}
	taps := enc.Encode(x)
	raw := DotScores(d.localHead.Forward(taps.Local), d.globalHeadL.Forward(taps.Y)).DivScalar(4)
	e, _ := GetEstimator("nce")
	clipped, _ := e.Loss(raw.DivScalar(0.5).Tanh().MulScalar(0.5)).Item()
	pen, _ := raw.Square().Mean().Item()
	if want := clipped + 0.05*pen; math.Abs(got-want) > 1e-5 {
		t.Fatalf("stabilised loss %v, want %v", got, want)
	}
	if mx, _ := raw.Abs().Max().Item(); !(mx > 0.5) {
		t.Fatalf("the test's scores (max %v) never reach the clip", mx)
	}
	if err := (&DIMConfig{Mode: "local", Estimator: "nce", Beta: 1, ScoreClip: -1}).Validate(); err == nil {
		t.Fatal("negative clip accepted")
	}
}

// Every mode, scorer and task runs under bfloat16 autocast (the global
// critic's LayerNorm once rejected bfloat16 input).
func TestDIMModesBF16(t *testing.T) {
	testref.NeedBF16(t)
	enc, _ := models.New(models.Config{Name: "basic28", InChannels: 1})
	defer nn.Free(enc)
	for _, cfg := range []DIMConfig{
		{Mode: "local", Estimator: "jsd", Beta: 1},
		{Mode: "local", Estimator: "nce", Scorer: "concat", Beta: 1},
		{Mode: "global", Estimator: "dv", Alpha: 1},
		{Mode: "local+global", Estimator: "nce", Alpha: 0.5, Beta: 1, Views: 2, ScoreClip: 10, CoordWeight: 1},
	} {
		cfg.MIUnits = 16
		d, err := NewDIM(cfg, enc.Spec())
		if err != nil {
			t.Fatal(err)
		}
		s := torch.NewScope()
		x := torch.Rand([]int64{8, 1, 28, 28}).Ref(s)
		var terms Terms
		if err := torch.Autocast(torch.BFloat16, func() { terms, _ = d.Loss(enc, x, nil) }); err != nil {
			t.Fatal(err)
		}
		v, err := terms.Total.Item()
		if err != nil || math.IsNaN(v) {
			t.Fatalf("%s/%s: loss %v, %v", cfg.Mode, cfg.Scorer, v, err)
		}
		if err := terms.Total.Backward(); err != nil {
			t.Fatalf("%s/%s: backward: %v", cfg.Mode, cfg.Scorer, err)
		}
		s.Close()
		nn.Free(d)
	}
}

func TestCoordPredictorLearns(t *testing.T) {
	_ = torch.ManualSeed(4)
	c := NewCoordPredictor(16, 8, 4, 4)
	defer nn.Free(c)
	opt, _ := optim.NewAdam(nn.Parameters(c), optim.AdamDefaults(0.01))
	defer opt.Free()
	// Local features that encode position: a position embedding plus noise.
	pe := torch.Randn([]int64{1, 16, 4, 4})
	defer pe.Free()
	var first, last float64
	for i := 0; i < 60; i++ {
		s := torch.NewScope()
		m := pe.Ref(s).Add(torch.Randn([]int64{8, 16, 4, 4}, s).MulScalar(0.1))
		l := c.Loss(m, torch.Randn([]int64{8, 8}, s))
		v, _ := l.Item()
		if i == 0 {
			first = v
		}
		last = v
		_ = opt.ZeroGrad()
		_ = l.Backward()
		_ = opt.Step()
		s.Close()
	}
	// Chance is log 4 + log 4; a learnable map falls well below it.
	if math.Abs(first-2*math.Log(4)) > 0.7 || !(last < 0.5) {
		t.Fatalf("coordinate loss %v -> %v (chance %v)", first, last, 2*math.Log(4))
	}
}

// A diverging prior game stops: a non-finite discriminator loss is an
// ErrNonFinite error and the discriminator is left as it was.
func TestPriorStepRefusesNonFiniteLoss(t *testing.T) {
	prior, err := NewPrior(4, optim.AdamDefaults(1e-3), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer prior.Free()
	s := torch.NewScope()
	defer s.Close()
	before, _ := nn.Parameters(prior.D)[0].Float64s()
	y := torch.FromSlice([]float64{0, 1, math.NaN(), 2, 0, 1, 1, 2}, []int64{2, 4}, torch.Float32, s)
	if _, err := prior.Step(y); !errors.Is(err, ErrNonFinite) {
		t.Fatalf("step on NaN features: %v, want ErrNonFinite", err)
	}
	after, _ := nn.Parameters(prior.D)[0].Float64s()
	for i := range before {
		if before[i] != after[i] {
			t.Fatal("the discriminator was updated from a non-finite loss")
		}
	}
}

// DIM's loss is the weighted sum of its terms: beta x local + alpha x global
// + gamma x prior + the coordinate and cross-view terms' weights x theirs,
// each weight applied once (distinct weights, none 1, so that a weight
// dropped, applied twice or given to another term changes the total).
// bench/mutants.sh ignores beta and squares gamma and expects this test to
// fail.
func TestDIMLossComposition(t *testing.T) {
	_ = torch.ManualSeed(4)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	cfg := DIMConfig{Mode: "local+global", Estimator: "jsd", Alpha: 0.3, Beta: 0.7, Gamma: 0.2, CoordWeight: 0.4,
		CrossView: 0.6, CrossViewTemp: 0.5, Views: 2, MIUnits: 16}
	d, err := NewDIM(cfg, enc.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(d)
	prior, err := NewPrior(int64(enc.Spec().Y), optim.AdamDefaults(1e-4), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer prior.Free()
	s := torch.NewScope()
	defer s.Close()
	x := torch.Rand([]int64{8, 1, 28, 28}, s).MulScalar(2).SubScalar(1) // 2 views of 4 images
	terms, _ := d.Loss(enc, x, prior)
	want := 0.0
	for _, c := range []struct {
		name string
		v    *torch.Tensor
		w    float64
	}{{"local", terms.Local, cfg.Beta}, {"global", terms.Global, cfg.Alpha}, {"prior", terms.Prior, cfg.Gamma},
		{"coord", terms.Coord, cfg.CoordWeight}, {"cross-view", terms.CrossView, cfg.CrossView}} {
		if c.v == nil {
			t.Fatalf("no %s term", c.name)
		}
		v, err := c.v.Item()
		if err != nil || !(math.Abs(v) > 1e-3) {
			t.Fatalf("%s term %v (%v): too small to show its weight", c.name, v, err)
		}
		want += c.w * v
	}
	got, err := terms.Total.Item()
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
		t.Errorf("total %.7g, the weighted sum of the terms %.7g", got, want)
	}
}

// With --score-clip the step reports the penalty on the squared scores
// that Local includes: 0.05 mean(s^2) of the scores scaled by
// 1/sqrt(units), recomputed here from the MI heads; without it, no such
// term.
func TestScorePenaltyReported(t *testing.T) {
	_ = torch.ManualSeed(5)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Rand([]int64{4, 1, 28, 28}, s).MulScalar(2).SubScalar(1)
	for _, clip := range []float64{0, 10} {
		d, err := NewDIM(DIMConfig{Mode: "local", Estimator: "nce", Beta: 1, MIUnits: 16, ScoreClip: clip}, enc.Spec())
		if err != nil {
			t.Fatal(err)
		}
		terms, taps := d.Loss(enc, x, nil)
		if clip == 0 {
			if terms.ScorePenalty != nil {
				t.Fatal("a score penalty without --score-clip")
			}
			nn.Free(d)
			continue
		}
		got, err := terms.ScorePenalty.Item()
		if err != nil {
			t.Fatal(err)
		}
		sc := DotScores(d.localHead.Forward(taps.Local), d.globalHeadL.Forward(taps.Y)).MulScalar(1 / math.Sqrt(16))
		want, err := sc.Square().Mean().MulScalar(0.05).Item()
		nn.Free(d)
		if err != nil {
			t.Fatal(err)
		}
		if !(want > 0) || math.Abs(got-want) > 1e-5*want {
			t.Fatalf("score penalty %v, recomputed %v", got, want)
		}
	}
	if TermIndex("score_penalty") < 0 {
		t.Fatal("score_penalty is not a declared term")
	}
}
