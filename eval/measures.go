package eval

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// MeasureOptions configure NDM and MINE. Zero values: 1000 steps, batch 256,
// Adam lr 1e-4, moving-average rate 0.01 (MINE).
type MeasureOptions struct {
	Steps     int
	BatchSize int
	LR        float64
	EMA       float64
	Seed      uint64
	Progress  func(step int) // called after each training step, when set
}

func (o MeasureOptions) withDefaults() MeasureOptions {
	orDefault(&o.Steps, 1000)
	orDefault(&o.BatchSize, 256)
	orDefault(&o.LR, 1e-4)
	orDefault(&o.EMA, 0.01)
	return o
}

func critic(in int64) *nn.Sequential {
	return nn.NewSequential(nn.NewLinear(in, 1000, true), nn.ReLU(), nn.NewLinear(1000, 200, true), nn.ReLU(), nn.NewLinear(200, 1, true))
}

// shuffleDims permutes every column of y [B, d] independently across the
// batch: a sample from the product of the marginals of Y's dimensions.
func shuffleDims(y *torch.Tensor) *torch.Tensor {
	b, d := y.Size(0), y.Size(1)
	cols := make([]*torch.Tensor, d)
	for j := range cols {
		cols[j] = torch.RandPerm(b, y.Scope())
	}
	return y.Gather(0, torch.Stack(cols, 1))
}

// dvBound is E_P[T] - log E_Q[exp T].
func dvBound(tp, tq *torch.Tensor) *torch.Tensor {
	n := float64(tq.Numel())
	return tp.Mean().Sub(tq.Flatten(0, -1).LogSumExp([]int64{0}, false).SubScalar(math.Log(n)))
}

func sampleRows(x *torch.Tensor, b int64, s *torch.Scope) *torch.Tensor {
	n := x.Size(0)
	idx := torch.RandInt(0, n, []int64{b}, s)
	return x.Ref(s).IndexSelect(0, idx)
}

// movingAverage is MINE's running mean of E_Q[exp T]: the first value, then
// an exponential moving average at the given rate.
type movingAverage struct {
	rate, value float64
	started     bool
}

func (m *movingAverage) add(v float64) float64 {
	if !m.started {
		m.value, m.started = v, true
	} else {
		m.value = (1-m.rate)*m.value + m.rate*v
	}
	return m.value
}

// mineSurrogate returns the loss whose gradient is MINE's bias-corrected
// gradient of the negated Donsker-Varadhan bound, for statistics tj on joint
// pairs and tm on marginal pairs: -(mean(tj) - mean(exp tm) / ma), where ma
// is the moving average of mean(exp tm) updated with this batch. Its
// gradient through tm is exp(tm) / (B ma), where the bound's own would be
// exp(tm) / (B mean(exp tm)): the batch's mean in the denominator is what
// biases the plain gradient.
func mineSurrogate(tj, tm *torch.Tensor, ma *movingAverage) (*torch.Tensor, error) {
	et := tm.Exp().Mean()
	etv, err := et.Item()
	if err != nil {
		return nil, err
	}
	return tj.Mean().Sub(et.DivScalar(ma.add(etv))).Neg(), nil
}

// trainSteps takes o.Steps optimiser steps on the loss that step builds in
// its scope (closed after each step), reporting progress.
func trainSteps(name string, opt optim.Optimizer, o MeasureOptions, step func(s *torch.Scope) (*torch.Tensor, error)) error {
	for i := 0; i < o.Steps; i++ {
		s := torch.NewScope()
		loss, err := step(s)
		if err == nil {
			err = opt.ZeroGrad()
		}
		if err == nil {
			err = loss.Backward()
		}
		if err == nil {
			err = opt.Step()
		}
		s.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if o.Progress != nil {
			o.Progress(i + 1)
		}
	}
	return nil
}

// NDM is the neural dependency measure: a discriminator learns to tell Y
// from Y with each dimension shuffled across the batch, and NDM is its
// Donsker-Varadhan estimate of KL(P(Y) || prod_j P(Y_j)) on held-out Y.
// Near 0: the dimensions are independent; larger: more dependence.
func NDM(yTrain, yTest *torch.Tensor, o MeasureOptions) (float64, error) {
	o = o.withDefaults()
	if err := torch.ManualSeed(o.Seed); err != nil {
		return 0, err
	}
	s0 := torch.NewScope()
	defer s0.Close()
	tr, te := standardize(yTrain, yTest, s0)
	d := critic(tr.Size(1))
	defer nn.Free(d)
	opt, err := optim.NewAdam(nn.Parameters(d), optim.AdamDefaults(o.LR))
	if err != nil {
		return 0, err
	}
	defer opt.Free()
	if err := trainSteps("ndm", opt, o, func(s *torch.Scope) (*torch.Tensor, error) {
		y := sampleRows(tr, int64(o.BatchSize), s)
		return dvBound(d.Forward(y), d.Forward(shuffleDims(y))).Neg(), nil
	}); err != nil {
		return 0, err
	}
	var v float64
	torch.NoGrad(func() {
		v, err = dvBound(d.Forward(te), d.Forward(shuffleDims(te))).Item()
	})
	return v, err
}

// MINE estimates I(X; Y) in nats between images (flattened) and their
// representations with the statistics network T(x, y) of Belghazi et al.
// (2018), trained on the Donsker-Varadhan bound with the moving-average
// correction of the gradient's bias: the log-mean-exp term's gradient is
// divided by a running mean of E_Q[exp T] instead of the batch's own.
// It reports the bound on held-out pairs.
func MINE(xTrain, yTrain, xTest, yTest *torch.Tensor, o MeasureOptions) (float64, error) {
	o = o.withDefaults()
	if err := torch.ManualSeed(o.Seed); err != nil {
		return 0, err
	}
	s0 := torch.NewScope()
	defer s0.Close()
	xtr, xte := standardize(xTrain.Flatten(1, -1), xTest.Flatten(1, -1), s0)
	ytr, yte := standardize(yTrain, yTest, s0)
	t := critic(xtr.Size(1) + ytr.Size(1))
	defer nn.Free(t)
	opt, err := optim.NewAdam(nn.Parameters(t), optim.AdamDefaults(o.LR))
	if err != nil {
		return 0, err
	}
	defer opt.Free()
	stat := func(x, y *torch.Tensor) *torch.Tensor { return t.Forward(torch.Cat([]*torch.Tensor{x, y}, 1)) }
	n := xtr.Size(0)
	ma := movingAverage{rate: o.EMA}
	if err := trainSteps("mine", opt, o, func(s *torch.Scope) (*torch.Tensor, error) {
		idx := torch.RandInt(0, n, []int64{int64(o.BatchSize)}, s)
		x, y := xtr.Ref(s).IndexSelect(0, idx), ytr.Ref(s).IndexSelect(0, idx)
		yMarg := y.IndexSelect(0, torch.RandPerm(int64(o.BatchSize), s))
		return mineSurrogate(stat(x, y), stat(x, yMarg), &ma)
	}); err != nil {
		return 0, err
	}
	var v float64
	torch.NoGrad(func() {
		s := torch.NewScope()
		defer s.Close()
		perm := torch.RandPerm(xte.Size(0), s)
		v, err = dvBound(stat(xte, yte), stat(xte, yte.IndexSelect(0, perm))).Item()
	})
	return v, err
}
