package eval

import (
	"fmt"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// blobs returns n points per class of k well-separated Gaussian clusters in
// d dimensions (class means 6 apart), for train and test.
func blobs(n, k, d int64, seed uint64) (xTr, yTr, xTe, yTe *torch.Tensor) {
	_ = torch.ManualSeed(seed)
	mk := func() (*torch.Tensor, *torch.Tensor) {
		s := torch.NewScope()
		defer s.Close()
		means := torch.Eye(k, d, s).MulScalar(6)
		y := torch.Arange(0, float64(k), 1, torch.Int64, s).Repeat(n)
		x := means.IndexSelect(0, y).Add(torch.Randn([]int64{n * k, d}, s))
		return x.MoveTo(nil), y.MoveTo(nil)
	}
	xTr, yTr = mk()
	xTe, yTe = mk()
	return
}

func freeAll(ts ...*torch.Tensor) {
	for _, t := range ts {
		t.Free()
	}
}

// Every probe classifies well-separated classes perfectly: class means 6
// apart in 8 dimensions with unit noise, so the Bayes error on the 400 test
// points is about 1e-5 per point and any mistake is the probe's.
func TestProbesOnSeparableData(t *testing.T) {
	xTr, yTr, xTe, yTe := blobs(100, 4, 8, 1)
	defer freeAll(xTr, yTr, xTe, yTe)
	for name, p := range allProbes {
		o := probeTestOptions(name)
		r, err := p(xTr, yTr, xTe, yTe, o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Accuracy != 1 {
			t.Errorf("%s: accuracy %v on separable data, want 1", name, r.Accuracy)
		}
		if name == "svm" && (r.Runs != 3 || r.Std != 0) {
			t.Errorf("svm runs %d std %v", r.Runs, r.Std)
		}
	}
}

var allProbes = map[string]func(a, b, c, d *torch.Tensor, o ProbeOptions) (Result, error){
	"linear": LinearProbe, "mlp": MLPProbe, "knn": KNN, "svm": SVMProbe,
}

func probeTestOptions(name string) ProbeOptions {
	o := ProbeOptions{Seed: 1}
	switch name {
	case "mlp":
		o.Epochs, o.LR = 30, 1e-2
	case "svm":
		o.Epochs, o.LR, o.Runs = 40, 0.05, 3
	}
	return o
}

// Training labels of one class are refused by every probe with a message
// that says so: fitted, they score chance and pass for a collapsed encoder
// (the first 10,000 images of data stored class by class are one class).
func TestProbesRefuseOneClass(t *testing.T) {
	xTr, two, xTe, yTe := blobs(50, 2, 4, 5)
	yTr := torch.Zeros([]int64{100}, torch.Int64)
	defer freeAll(xTr, two, yTr, xTe, yTe)
	for name, p := range allProbes {
		_, err := p(xTr, yTr, xTe, yTe, probeTestOptions(name))
		if err == nil || !strings.Contains(err.Error(), "all have label 0") {
			t.Errorf("%s on one class: %v, want an error naming the single label", name, err)
		}
	}
}

// With labels independent of the features, every probe scores chance (1/4)
// on the 1,000 test points, within 4 standard deviations of a binomial
// (+-0.055): a probe that saw the test labels, or scored itself on its
// training data, lands outside.
func TestProbesAtChanceOnNoise(t *testing.T) {
	_ = torch.ManualSeed(2)
	xTr, xTe := torch.Randn([]int64{400, 16}), torch.Randn([]int64{1000, 16})
	yTr, yTe := torch.RandInt(0, 4, []int64{400}), torch.RandInt(0, 4, []int64{1000})
	defer freeAll(xTr, yTr, xTe, yTe)
	bound := 4 * math.Sqrt(0.25*0.75/1000)
	for name, p := range allProbes {
		r, err := p(xTr, yTr, xTe, yTe, probeTestOptions(name))
		if err != nil {
			t.Fatal(err)
		}
		if !(math.Abs(r.Accuracy-0.25) <= bound) {
			t.Errorf("%s: accuracy %v on noise, chance 0.25 +- %.3f", name, r.Accuracy, bound)
		}
	}
}

// The linear probe minimises the regularised cross-entropy: its gradient at
// the solution is zero, so the loss cannot be lowered by a small step.
func TestLinearProbeConverges(t *testing.T) {
	xTr, yTr, xTe, yTe := blobs(30, 3, 5, 3)
	defer freeAll(xTr, yTr, xTe, yTe)
	s := torch.NewScope()
	defer s.Close()
	target := torch.Randn([]int64{5}, torch.Float64, s)
	f := func(theta *torch.Tensor) (float64, *torch.Tensor, error) {
		fs := torch.NewScope()
		defer fs.Close()
		th := theta.Detach().MoveTo(fs).SetRequiresGrad(true)
		// A convex quadratic with a known minimum at target.
		loss := th.Sub(target).Square().Mul(torch.Arange(1, 6, 1, torch.Float64, fs)).Sum()
		g, err := torch.Grad([]*torch.Tensor{loss}, []*torch.Tensor{th}, torch.GradOptions{})
		if err != nil {
			return 0, nil, err
		}
		v, _ := loss.Item()
		return v, g[0].MoveTo(nil), nil
	}
	theta := torch.Zeros([]int64{5}, torch.Float64, s)
	res, err := minimize(f, theta, lbfgsOptions{Tol: 1e-10})
	if err != nil {
		t.Fatal(err)
	}
	loss := res.Loss
	if !res.Converged || res.Iterations == 0 || res.Reason == "" {
		t.Fatalf("not reported as converged: %+v", res)
	}
	got, _ := theta.Float64s()
	want, _ := target.Float64s()
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-6 {
			t.Fatalf("L-BFGS minimum %v, want %v (loss %v)", got, want, loss)
		}
	}
}

func TestPCA2RecoversAxes(t *testing.T) {
	_ = torch.ManualSeed(6)
	s := torch.NewScope()
	defer s.Close()
	// Variance 100 along axis 2, 9 along axis 0, 1 elsewhere.
	scale := torch.FromSlice([]float32{3, 1, 10, 1}, []int64{4}, s)
	x := torch.Randn([]int64{3000, 4}, s).Mul(scale)
	pts, err := PCA2(x)
	if err != nil {
		t.Fatal(err)
	}
	var v0, v1 float64
	for _, p := range pts {
		v0 += p[0] * p[0]
		v1 += p[1] * p[1]
	}
	v0, v1 = v0/3000, v1/3000
	if math.Abs(v0-100) > 10 || math.Abs(v1-9) > 1.5 {
		t.Fatalf("component variances %v, %v; want 100, 9", v0, v1)
	}
}

// At the limit of the loss's precision no step lowers it any more; L-BFGS
// stops after one failed line search instead of retrying it every iteration
// (a 60,000-image probe on float32 features once ran for over 20 minutes
// this way).
func TestLBFGSStopsWhenTheLossCannotDecrease(t *testing.T) {
	evals := 0
	f := func(theta *torch.Tensor) (float64, *torch.Tensor, error) {
		evals++
		return 1, torch.OnesLike(theta), nil // flat loss, a gradient that never vanishes
	}
	theta := torch.Zeros([]int64{4})
	defer theta.Free()
	if _, err := minimize(f, theta, lbfgsOptions{}); err != nil {
		t.Fatal(err)
	}
	if evals > maxHalvings+2 {
		t.Fatalf("%d evaluations of a loss that cannot decrease", evals)
	}
	s := torch.NewScope()
	defer s.Close()
	if v, _ := theta.Ref(s).Abs().Sum().Item(); v != 0 {
		t.Fatalf("theta moved to no benefit (|theta|_1 = %v)", v)
	}
}

// The linear probe agrees with scikit-learn's LogisticRegression on the same
// features within one point (bench/sklearn_probe.py).
func TestLinearProbeMatchesScikitLearn(t *testing.T) {
	testref.NeedSklearn(t)
	// Overlapping classes, so that accuracy is informative (not 100%).
	_ = torch.ManualSeed(7)
	s := torch.NewScope()
	defer s.Close()
	w := torch.Randn([]int64{20, 5}, s)
	mk := func(n int64) (*torch.Tensor, *torch.Tensor) {
		x := torch.Randn([]int64{n, 20}, s)
		y := x.Matmul(w).Add(torch.Randn([]int64{n, 5}, s).MulScalar(2)).Argmax(1, false)
		return x, y
	}
	xTr, yTr := mk(1500)
	xTe, yTe := mk(1000)
	r, err := LinearProbe(xTr, yTr, xTe, yTe, ProbeOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := &Set{Feats: map[string]*torch.Tensor{"f": xTr}, Labels: yTr}
	te := &Set{Feats: map[string]*torch.Tensor{"f": xTe}, Labels: yTe}
	if err := ExportNPY(dir, tr, te); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "../bench/sklearn_probe.py", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	var skl float64
	line := strings.TrimSpace(string(out))
	if _, err := fmt.Sscanf(line, `{"f": %g}`, &skl); err != nil {
		t.Fatalf("scikit-learn printed %q", line)
	}
	t.Logf("dimtorch %.4f, scikit-learn %.4f", r.Accuracy, skl)
	if math.Abs(r.Accuracy-skl) > 0.01 {
		t.Fatalf("dimtorch %.4f vs scikit-learn %.4f", r.Accuracy, skl)
	}
	if _, err := os.Stat(filepath.Join(dir, "train_labels.npy")); err != nil {
		t.Fatal(err)
	}
}
