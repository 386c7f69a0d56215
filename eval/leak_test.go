package eval

import (
	"context"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/datasets/datasetstest"
	"github.com/dimtorch/dimtorch/torch"
)

// liveRecorder samples torch.LiveTensors at each progress call.
type liveRecorder struct{ live []int64 }

func (r *liveRecorder) record() { r.live = append(r.live, torch.LiveTensors()) }

// flat fails when the live handles grow between the warm-up-th sample and
// the last: an iterative method must free each iteration's temporaries.
func (r *liveRecorder) flat(t *testing.T, name string, warmup int) {
	t.Helper()
	if len(r.live) < warmup+5 {
		t.Fatalf("%s: only %d progress calls (want at least %d)", name, len(r.live), warmup+5)
	}
	first, last := r.live[warmup], r.live[len(r.live)-1]
	lo, hi := first, first
	for _, v := range r.live[warmup:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	if last > first || hi-lo > 4 {
		t.Fatalf("%s: live tensors grow across iterations: %d at sample %d, %d at the last (range %d..%d; all: %v)",
			name, first, warmup, last, lo, hi, r.live)
	}
}

// noisy returns features and labels with little structure, so that solvers
// need many iterations.
func noisy(n, d, k int64, seed uint64) (xTr, yTr, xTe, yTe *torch.Tensor) {
	_ = torch.ManualSeed(seed)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn([]int64{2 * n, d}, s)
	y := x.Narrow(1, 0, 1).Flatten(0, -1).GtScalar(0).To(torch.Int64).Add(torch.RandInt(0, k-1, []int64{2 * n}, s))
	return x.Narrow(0, 0, n).Contiguous().MoveTo(nil), y.Narrow(0, 0, n).Contiguous().MoveTo(nil),
		x.Narrow(0, n, n).Contiguous().MoveTo(nil), y.Narrow(0, n, n).Contiguous().MoveTo(nil)
}

// Every probe's training loop keeps the number of live tensors flat: the
// old scope rule (a result joins its first operand's scope) kept each
// minibatch of a long-lived feature matrix, and each L-BFGS iteration's
// dot products, alive until the probe ended.
func TestProbesDoNotLeakAcrossIterations(t *testing.T) {
	xTr, yTr, xTe, yTe := noisy(600, 150, 4, 3)
	defer freeAll(xTr, yTr, xTe, yTe)
	// Features in a long-lived scope, as eval's command keeps them.
	long := torch.NewScope()
	defer long.Close()
	xs, ys := xTr.Ref(long), yTr.Ref(long)
	cases := []struct {
		name   string
		probe  func(a, b, c, d *torch.Tensor, o ProbeOptions) (Result, error)
		o      ProbeOptions
		warmup int
	}{
		// L-BFGS's history fills over its first 10 iterations.
		{"linear", LinearProbe, ProbeOptions{Epochs: 40, C: 1e6}, 12},
		{"mlp", MLPProbe, ProbeOptions{Epochs: 8, BatchSize: 64}, 1},
		{"svm", SVMProbe, ProbeOptions{Epochs: 8, BatchSize: 64, Runs: 1}, 1},
	}
	collectGarbage() // leaks of earlier tests must not be freed while counting
	for _, c := range cases {
		var r liveRecorder
		c.o.Progress = func(int, float64) { r.record() }
		before := torch.LiveTensors()
		res, err := c.probe(xs, ys, xTe, yTe, c.o)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		r.flat(t, c.name, c.warmup)
		if after := torch.LiveTensors(); after != before {
			t.Fatalf("%s: %d live tensors before, %d after", c.name, before, after)
		}
		if c.name == "linear" && (res.Iterations == 0 || res.Converged == nil) {
			t.Fatalf("linear probe reports no convergence: %+v", res)
		}
	}
}

// NDM, MINE and the MS-SSIM decoder keep the live tensors flat too.
func TestMeasuresDoNotLeakAcrossSteps(t *testing.T) {
	_ = torch.ManualSeed(6)
	long := torch.NewScope()
	defer long.Close()
	x := torch.Randn([]int64{400, 1, 16, 16}, long)
	y := x.Flatten(1, -1).Narrow(1, 0, 4).Add(torch.Randn([]int64{400, 4}, long).MulScalar(0.1))
	xa, xb, ya, yb := x.Narrow(0, 0, 200), x.Narrow(0, 200, 200), y.Narrow(0, 0, 200), y.Narrow(0, 200, 200)

	var r liveRecorder
	o := MeasureOptions{Steps: 30, BatchSize: 32, Seed: 1, Progress: func(int) { r.record() }}
	if _, err := NDM(ya, yb, o); err != nil {
		t.Fatal(err)
	}
	r.flat(t, "ndm", 1)

	r = liveRecorder{}
	if _, err := MINE(xa, ya, xb, yb, o); err != nil {
		t.Fatal(err)
	}
	r.flat(t, "mine", 1)

	r = liveRecorder{}
	imgs := x.Tanh()
	if _, _, err := ReconstructionMSSSIM(ya, imgs.Narrow(0, 0, 200), yb, imgs.Narrow(0, 200, 200),
		DecoderOptions{Epochs: 8, BatchSize: 32, Seed: 1, Progress: func(int) { r.record() }}); err != nil {
		t.Fatal(err)
	}
	r.flat(t, "decoder", 1)
}

// Wide features kept in bfloat16 (eval --feature-dtype): every probe runs on
// them and scores as it does on the same features in float32.
func TestProbesOnBFloat16Features(t *testing.T) {
	xTr, yTr, xTe, yTe := blobs(100, 4, 600, 7)
	defer freeAll(xTr, yTr, xTe, yTe)
	s := torch.NewScope()
	defer s.Close()
	bTr, bTe := xTr.Ref(s).To(torch.BFloat16), xTe.Ref(s).To(torch.BFloat16)
	probes := map[string]func(a, b, c, d *torch.Tensor, o ProbeOptions) (Result, error){
		"linear": LinearProbe, "mlp": MLPProbe, "knn": KNN, "svm": SVMProbe,
	}
	for name, p := range probes {
		o := ProbeOptions{Seed: 1, Epochs: 10, Runs: 1}
		if name == "linear" {
			o = ProbeOptions{}
		}
		f32, err := p(xTr, yTr, xTe, yTe, o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b16, err := p(bTr, yTr, bTe, yTe, o)
		if err != nil {
			t.Fatalf("%s on bfloat16 features: %v", name, err)
		}
		if d := b16.Accuracy - f32.Accuracy; d > 0.02 || d < -0.02 {
			t.Errorf("%s: accuracy %.4f on bfloat16 features, %.4f on float32", name, b16.Accuracy, f32.Accuracy)
		}
	}
	// Noisy labels: the two precisions find the same classifier to within a
	// few test points.
	nTr, nyTr, nTe, nyTe := noisy(800, 600, 3, 8)
	defer freeAll(nTr, nyTr, nTe, nyTe)
	f32, err := LinearProbe(nTr, nyTr, nTe, nyTe, ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b16, err := LinearProbe(nTr.Ref(s).To(torch.BFloat16), nyTr, nTe.Ref(s).To(torch.BFloat16), nyTe, ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := b16.Accuracy - f32.Accuracy; d > 0.01 || d < -0.01 {
		t.Fatalf("linear probe: float32 %.4f, bfloat16 %.4f", f32.Accuracy, b16.Accuracy)
	}
}

// wideSource gives a 600-dimensional "conv" feature and a 4-dimensional
// "y" from the pixels, to test how Extract stores them.
type wideSource struct{}

func (wideSource) Name() string { return "wide" }
func (wideSource) Features(x *torch.Tensor, taps []string) (map[string]*torch.Tensor, error) {
	f := x.Flatten(1, -1)
	return map[string]*torch.Tensor{"conv": f.Repeat(1, 1).Narrow(1, 0, 600).MulScalar(3.3), "y": f.Narrow(1, 0, 4)}, nil
}

// Extract keeps features in float32 by default, and wide ones in bfloat16
// (within its rounding) when asked; narrow ones stay float32.
func TestExtractPrecision(t *testing.T) {
	dir := t.TempDir()
	if err := datasetstest.WriteMNISTLike(dir, 300, 10, 1); err != nil {
		t.Fatal(err)
	}
	d, err := datasets.Open("mnist", datasets.Train, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer datasets.Close(d)
	ctx := context.Background()
	f32, err := Extract(ctx, wideSource{}, d, ExtractOptions{Taps: []string{"conv", "y"}})
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Free()
	b16, err := Extract(ctx, wideSource{}, d, ExtractOptions{Taps: []string{"conv", "y"}, WideBFloat16: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b16.Free()
	if f32.Feats["conv"].DType() != torch.Float32 || f32.Feats["y"].DType() != torch.Float32 {
		t.Fatalf("default precision: conv %v, y %v (want float32)", f32.Feats["conv"].DType(), f32.Feats["y"].DType())
	}
	if b16.Feats["conv"].DType() != torch.BFloat16 || b16.Feats["y"].DType() != torch.Float32 {
		t.Fatalf("wide bfloat16: conv %v, y %v (want bfloat16, float32)", b16.Feats["conv"].DType(), b16.Feats["y"].DType())
	}
	s := torch.NewScope()
	defer s.Close()
	a, b := f32.Feats["conv"].Ref(s), b16.Feats["conv"].Ref(s).To(torch.Float32)
	rel, err := a.Sub(b).Abs().Max().Div(a.Abs().Max()).Item()
	if err != nil || rel > 1.0/128 || f32.Len() != 300 {
		t.Fatalf("bfloat16 features differ from float32 by %v relative (%v), %d rows", rel, err, f32.Len())
	}
}
