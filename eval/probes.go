package eval

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// ProbeOptions configure the classifiers trained on frozen features. Zero
// values take the defaults listed with each field.
type ProbeOptions struct {
	Epochs      int     // training epochs (SVM 50, MLP 100); for the linear probe, L-BFGS iterations (500)
	BatchSize   int     // 256
	LR          float64 // Adam learning rate (SVM 1e-3; MLP 1e-4, the paper's)
	C           float64 // inverse L2 strength, as scikit-learn's C (1): the penalty is ||W||^2 / (2 C N)
	K           int     // kNN neighbours (20)
	Temperature float64 // kNN vote weight exp(similarity / T) (0.1)
	Seed        uint64  // initialisation and shuffling
	Runs        int     // SVM runs with different seeds (5)
	// Progress, when set, is called as a probe trains: after each L-BFGS
	// iteration of the linear probe (with its loss), after each epoch of the
	// MLP and SVM probes (loss 0), so that long probes can show progress.
	Progress func(step int, loss float64)
}

// orDefault sets *p to v when it holds the type's zero (an option left out).
func orDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func (o ProbeOptions) with(epochs int, lr float64) ProbeOptions {
	orDefault(&o.Epochs, epochs)
	orDefault(&o.LR, lr)
	orDefault(&o.BatchSize, 256)
	orDefault(&o.C, 1)
	orDefault(&o.K, 20)
	orDefault(&o.Temperature, 0.1)
	orDefault(&o.Runs, 5)
	return o
}

// Result is one probe's score on one feature.
type Result struct {
	Accuracy float64 `json:"accuracy"`      // test accuracy in [0, 1]
	Std      float64 `json:"std,omitempty"` // across runs (SVM)
	Runs     int     `json:"runs,omitempty"`
	// The linear probe's solver: iterations, the largest gradient component
	// at the end, whether it converged and why it stopped.
	Iterations int     `json:"iterations,omitempty"`
	GradMax    float64 `json:"grad_max,omitempty"`
	Converged  *bool   `json:"converged,omitempty"`
	Stop       string  `json:"stop,omitempty"`
}

// standardize returns (x - mean) / std with the training split's statistics
// (constant dimensions are left centred), for train and test features.
func standardize(train, test *torch.Tensor, s *torch.Scope) (*torch.Tensor, *torch.Tensor) {
	mean := train.Ref(s).MeanDims([]int64{0}, true)
	std := train.Ref(s).Std([]int64{0}, false, true)
	std = torch.Where(std.GtScalar(1e-6), std, torch.OnesLike(std))
	return train.Ref(s).Sub(mean).Div(std), test.Ref(s).Sub(mean).Div(std)
}

// moments returns the training features' mean and the reciprocal of their
// standard deviation (1 for constant dimensions), as [D] vectors in s.
// They are computed in float32 over chunks of rows (two passes: the mean,
// then the squared deviations), whatever the features' precision, without a
// float32 copy of the whole matrix.
func moments(x *torch.Tensor, s *torch.Scope) (mean, istd *torch.Tensor) {
	const chunk = 4096
	n := x.Size(0)
	sum := func(f func(c *torch.Tensor) *torch.Tensor) *torch.Tensor {
		acc := torch.Zeros([]int64{x.Size(1)}, torch.Float32, x.Device(), s)
		for start := int64(0); start < n; start += chunk {
			cs := torch.NewScope()
			c := x.Ref(cs).Narrow(0, start, min(chunk, n-start)).To(torch.Float32)
			if err := acc.AddInPlace(f(c).SumDims([]int64{0}, false), 1); err != nil {
				cs.Close()
				return torch.Errored(err)
			}
			cs.Close()
		}
		return acc
	}
	mean = sum(func(c *torch.Tensor) *torch.Tensor { return c }).DivScalar(float64(n))
	std := sum(func(c *torch.Tensor) *torch.Tensor { return c.Sub(mean).Square() }).DivScalar(float64(n)).Sqrt()
	istd = torch.Where(std.GtScalar(1e-6), std, torch.OnesLike(std)).Reciprocal()
	return mean, istd
}

// checkLabels returns the number of classes a probe predicts (the largest
// label plus one) and refuses unlabeled data and a single class.
func checkLabels(y *torch.Tensor) (int64, error) {
	labels, err := y.Int64s()
	if err != nil {
		return 0, err
	}
	if len(labels) == 0 {
		return 0, fmt.Errorf("a probe needs training images: there are none")
	}
	hi, two := int64(-1), false
	for _, l := range labels {
		if l < 0 {
			return 0, fmt.Errorf("the data is unlabeled: probes need class labels")
		}
		two = two || l != labels[0]
		hi = max(hi, l)
	}
	if !two {
		// A probe fitted to one class scores chance on the test split and
		// looks like a collapsed encoder: say what it is instead.
		return 0, fmt.Errorf("the probe's %d training images all have label %d: a probe needs at least two classes "+
			"(--limit-train takes the first images, which in data stored class by class are one class: shuffle the data, or use --labels-per-class)", len(labels), hi)
	}
	return hi + 1, nil
}

// scaler standardises minibatches with the training split's moments, so
// that no standardised copy of a whole feature matrix is ever made.
type scaler struct{ mean, istd *torch.Tensor }

// standardized checks the labels and fits a scaler to the training
// features, in a scope the caller closes: the number of classes, the scope
// and the scaler.
func standardized(xTr, yTr *torch.Tensor) (int64, *torch.Scope, scaler, error) {
	k, err := checkLabels(yTr)
	if err != nil {
		return 0, nil, scaler{}, err
	}
	s := torch.NewScope()
	return k, s, newScaler(xTr, s), nil
}

func newScaler(x *torch.Tensor, s *torch.Scope) scaler {
	m, i := moments(x, s)
	return scaler{m.Unsqueeze(0), i.Unsqueeze(0)}
}

// apply returns (x - mean) / std (x: a minibatch).
func (c scaler) apply(x *torch.Tensor) *torch.Tensor {
	if c.mean == nil {
		return x
	}
	return x.Sub(c.mean).Mul(c.istd)
}

// fit trains layer on (x, y) with Adam, minibatches shuffled from the seed
// and standardised by sc, the learning rate annealed by a cosine to 0, and
// loss(logits, y) plus penalty().
func fit(layer nn.Layer, x, y *torch.Tensor, sc scaler, o ProbeOptions, loss func(logits, y *torch.Tensor) *torch.Tensor, penalty func(*torch.Scope) *torch.Tensor) error {
	opt, err := optim.NewAdam(nn.Parameters(layer), optim.AdamDefaults(o.LR))
	if err != nil {
		return err
	}
	defer opt.Free()
	if err := torch.ManualSeed(o.Seed); err != nil {
		return err
	}
	n := x.Size(0)
	sched := optim.CosineLR{TMax: o.Epochs}
	layer.Train(true)
	defer layer.Train(false)
	for e := 0; e < o.Epochs; e++ {
		opt.SetLR(sched.LR(o.LR, e))
		es := torch.NewScope()
		perm := torch.RandPerm(n, es)
		for start := int64(0); start < n; start += int64(o.BatchSize) {
			m := min(int64(o.BatchSize), n-start)
			if m < 2 && n >= 2 {
				break // BatchNorm needs two samples
			}
			s := torch.NewScope()
			idx := perm.Narrow(0, start, m).To(x.Device()).MoveTo(s)
			l := loss(layer.Forward(sc.apply(x.IndexSelect(0, idx))), y.IndexSelect(0, idx))
			if penalty != nil {
				l = l.Add(penalty(s))
			}
			if err := opt.ZeroGrad(); err != nil {
				s.Close()
				es.Close()
				return err
			}
			if err := l.Backward(); err != nil {
				s.Close()
				es.Close()
				return err
			}
			if err := opt.Step(); err != nil {
				s.Close()
				es.Close()
				return err
			}
			s.Close()
		}
		es.Close()
		if o.Progress != nil {
			o.Progress(e+1, 0)
		}
	}
	return nil
}

// accuracy of layer's argmax on (x standardised by sc, y), in evaluation
// mode, in chunks of 4,096 rows.
func accuracy(layer nn.Layer, x, y *torch.Tensor, sc scaler) (float64, error) {
	layer.Train(false)
	var correct float64
	var err error
	n := x.Size(0)
	torch.NoGrad(func() {
		for start := int64(0); start < n && err == nil; start += 4096 {
			m := min(4096, n-start)
			s := torch.NewScope()
			var c float64
			c, err = layer.Forward(sc.apply(x.Ref(s).Narrow(0, start, m))).Argmax(1, false).Eq(y.Ref(s).Narrow(0, start, m)).Sum().Item()
			correct += c
			s.Close()
		}
	})
	return correct / float64(n), err
}

// LinearProbe is softmax regression on standardised features, minimising
// mean cross-entropy + ||W||^2 / (2 C N), the objective of scikit-learn's
// LogisticRegression(C), to convergence with full-batch L-BFGS.
func LinearProbe(xTr, yTr, xTe, yTe *torch.Tensor, o ProbeOptions) (Result, error) {
	o = o.with(500, 0)
	k, err := checkLabels(yTr)
	if err != nil {
		return Result{}, err
	}
	s := torch.NewScope()
	defer s.Close()
	// The weights act on standardised features, (x - mean) / std, but the
	// standardisation is folded into them (W' = W / std, b' = b - W' mean)
	// instead of materialising a standardised copy of the features: the
	// objective and the solver's path are the same, and the memory is the
	// features' alone (a copy doubled it: 3.5 GB for 60,000 conv features).
	mean, istd := moments(xTr, s)
	xtr := xTr.Ref(s)
	n, d := xtr.Size(0), xtr.Size(1)
	lambda := 1 / (2 * o.C * float64(n))
	ytr := yTr.Ref(s)
	xT := xtr.T() // W X^T runs ~1.6x faster than X W^T for the few rows of W (and its gradient G X is fast too)
	split := func(theta *torch.Tensor) (*torch.Tensor, *torch.Tensor) {
		return theta.Narrow(0, 0, k*d).View(k, d), theta.Narrow(0, k*d, k)
	}
	// logits returns the [N, k] scores of raw features x (given transposed).
	// (Operators on s's tensors alone would add to s at every call: every
	// tensor they need is prepared here.)
	meanCol := mean.Unsqueeze(1)
	logits := func(w, b, xT *torch.Tensor) *torch.Tensor {
		wf := w.Mul(istd)                              // W' = W / std
		bf := b.Sub(wf.Matmul(meanCol).Flatten(0, -1)) // b' = b - W' mean
		if xT.DType() != wf.DType() {
			// Reduced-precision features (bfloat16): the two products with
			// them run in their precision (oneDNN's AMX kernels), the rest
			// of the objective in float32.
			return wf.To(xT.DType()).Matmul(xT).To(torch.Float32).T().Add(bf)
		}
		return wf.Matmul(xT).T().Add(bf)
	}
	f := func(theta *torch.Tensor) (float64, *torch.Tensor, error) {
		fs := torch.NewScope()
		defer fs.Close()
		th := theta.Detach().MoveTo(fs).SetRequiresGrad(true)
		w, b := split(th)
		loss := torch.CrossEntropy(logits(w, b, xT), ytr, torch.ReduceMean).Add(w.Square().Sum().MulScalar(lambda))
		g, err := torch.Grad([]*torch.Tensor{loss}, []*torch.Tensor{th}, torch.GradOptions{})
		if err != nil {
			return 0, nil, err
		}
		v, err := loss.Item()
		return v, g[0].MoveTo(nil), err
	}
	theta := torch.Zeros([]int64{k*d + k}, xtr.Device(), s)
	lo := lbfgsOptions{MaxIter: o.Epochs}
	if o.Progress != nil {
		lo.Progress = func(iter int, loss, _ float64) { o.Progress(iter, loss) }
	}
	sol, err := minimize(f, theta, lo)
	if err != nil {
		return Result{}, err
	}
	w, b := split(theta)
	var acc float64
	torch.NoGrad(func() {
		acc, err = logits(w, b, xTe.Ref(s).T()).Argmax(1, false).Eq(yTe).To(torch.Float64).Mean().Item()
	})
	conv := sol.Converged
	return Result{Accuracy: acc, Iterations: sol.Iterations, GradMax: sol.GradMax, Converged: &conv, Stop: sol.Reason}, err
}

// MLPProbe is the paper's classifier: one hidden layer of 200 units with
// BatchNorm, ReLU and dropout (0.5), trained with Adam (lr 1e-4 by default).
func MLPProbe(xTr, yTr, xTe, yTe *torch.Tensor, o ProbeOptions) (Result, error) {
	o = o.with(100, 1e-4)
	k, s, sc, err := standardized(xTr, yTr)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	if err := torch.ManualSeed(o.Seed); err != nil {
		return Result{}, err
	}
	mlp := nn.NewSequential(nn.NewLinear(xTr.Size(1), 200, true), nn.NewBatchNorm1d(200), nn.ReLU(), nn.NewDropout(0.5), nn.NewLinear(200, k, true))
	defer nn.Free(mlp)
	if err := nn.MoveTo(mlp, xTr.Device()); err != nil {
		return Result{}, err
	}
	ce := func(l, y *torch.Tensor) *torch.Tensor { return torch.CrossEntropy(l, y, torch.ReduceMean) }
	if err := fit(mlp, xTr, yTr, sc, o, ce, nil); err != nil {
		return Result{}, err
	}
	acc, err := accuracy(mlp, xTe, yTe, sc)
	return Result{Accuracy: acc}, err
}

// SVMProbe is a linear SVM: the multi-class hinge loss of Crammer and Singer
// plus ||W||^2 / (2 C N), on standardised features, trained Runs times with
// different seeds; it reports the mean and standard deviation.
func SVMProbe(xTr, yTr, xTe, yTe *torch.Tensor, o ProbeOptions) (Result, error) {
	o = o.with(50, 1e-3)
	k, s, sc, err := standardized(xTr, yTr)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	lambda := 1 / (2 * o.C * float64(xTr.Size(0)))
	var accs []float64
	for r := 0; r < o.Runs; r++ {
		ro := o
		ro.Seed = o.Seed + uint64(r)*7919
		if err := torch.ManualSeed(ro.Seed); err != nil {
			return Result{}, err
		}
		lin := nn.NewLinear(xTr.Size(1), k, true)
		if err := nn.MoveTo(lin, xTr.Device()); err != nil {
			nn.Free(lin)
			return Result{}, err
		}
		hinge := func(l, y *torch.Tensor) *torch.Tensor {
			own := l.Gather(1, y.Unsqueeze(1))                       // [B, 1]
			margins := l.Sub(own).AddScalar(1)                       // 1 + s_j - s_y
			margins = margins.MaskedFill(y.OneHot(k).GtScalar(0), 0) // j != y only
			return margins.AMax([]int64{1}, false).ClampMin(0).Mean()
		}
		pen := func(s *torch.Scope) *torch.Tensor { return lin.Weight.Ref(s).Square().Sum().MulScalar(lambda) }
		if err := fit(lin, xTr, yTr, sc, ro, hinge, pen); err != nil {
			nn.Free(lin)
			return Result{}, err
		}
		acc, err := accuracy(lin, xTe, yTe, sc)
		nn.Free(lin)
		if err != nil {
			return Result{}, err
		}
		accs = append(accs, acc)
	}
	mean, std := meanStd(accs)
	return Result{Accuracy: mean, Std: std, Runs: len(accs)}, nil
}

func meanStd(v []float64) (float64, float64) {
	var m float64
	for _, x := range v {
		m += x
	}
	m /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - m) * (x - m)
	}
	if len(v) < 2 {
		return m, 0
	}
	return m, math.Sqrt(ss / float64(len(v)-1))
}

// KNN classifies each test point by a vote of its K nearest training points
// under cosine similarity, each weighted by exp(similarity / Temperature).
func KNN(xTr, yTr, xTe, yTe *torch.Tensor, o ProbeOptions) (Result, error) {
	o = o.with(0, 0)
	k, err := checkLabels(yTr)
	if err != nil {
		return Result{}, err
	}
	if int64(o.K) > xTr.Size(0) {
		return Result{}, fmt.Errorf("k = %d exceeds the %d training points", o.K, xTr.Size(0))
	}
	var correct float64
	var ferr error
	torch.NoGrad(func() {
		s := torch.NewScope()
		defer s.Close()
		norm := func(x *torch.Tensor) *torch.Tensor {
			return x.Div(x.Square().SumDims([]int64{1}, true).Sqrt().ClampMin(1e-12))
		}
		tr := norm(xTr.Ref(s))
		te := norm(xTe.Ref(s))
		ytr := yTr.Ref(s)
		n := te.Size(0)
		for start := int64(0); start < n; start += 512 {
			m := min(512, n-start)
			cs := torch.NewScope()
			sim := te.Narrow(0, start, m).MoveTo(cs).Matmul(tr.T()) // [m, Ntr]
			vals, idx := sim.TopK(int64(o.K), 1)
			votes := ytr.IndexSelect(0, idx.Flatten(0, -1)).Reshape(m, int64(o.K)).OneHot(k).To(torch.Float32) // [m, K, classes]
			w := vals.DivScalar(o.Temperature).Exp().Unsqueeze(2)
			pred := votes.Mul(w).SumDims([]int64{1}, false).Argmax(1, false)
			c, err := pred.Eq(yTe.Ref(cs).Narrow(0, start, m)).Sum().Item()
			cs.Close()
			if err != nil {
				ferr = err
				return
			}
			correct += c
		}
	})
	if ferr != nil {
		return Result{}, ferr
	}
	return Result{Accuracy: correct / float64(xTe.Size(0))}, nil
}
