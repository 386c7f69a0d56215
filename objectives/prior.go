package objectives

import (
	"errors"
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// Prior is prior matching as a two-player game. Its discriminator
// (d -> 1000 -> 200 -> 1, ReLU) learns to tell samples of the uniform prior on
// [0, 1]^d from sigmoid(Y) (DIM's; with Gaussian, samples of N(0, I) from Y
// itself, the adversarial autoencoder's), with a gradient penalty: the mean of the penalties
// on real and on fake inputs, as the original code has it
// (0.5 * (gp_real + gp_fake)), weighted by GPWeight (0: no penalty). It has
// its own optimiser and step. The encoder plays the non-saturating
// generator: it minimises softplus(-D(sigmoid(Y))).
type Prior struct {
	D        *nn.Sequential
	Opt      optim.Optimizer
	GPWeight float64 // weight of the gradient penalty; 0 turns it off
	Dim      int64
	// Gaussian makes the prior a standard normal on Y itself, the
	// adversarial autoencoder's; otherwise it is DIM's uniform prior on
	// [0, 1]^d against sigmoid(Y).
	Gaussian bool
	// Sample, when set, draws the prior's samples in place of libtorch's
	// generator (tests use it to hand the draws to a reference).
	Sample  func(shape []int64, like *torch.Tensor) *torch.Tensor
	dparams []*torch.Tensor
}

// CriticLosses are a critic's terms of one step: the prior game's
// discriminator or BiGAN's.
type CriticLosses struct {
	D     float64 `term:"d_loss" label:"discriminator"` // the critic's loss (without penalty)
	GP    float64 `term:"grad_penalty"`                 // its gradient penalty
	HasGP bool    // whether the critic has a gradient penalty
}

// NewPrior builds the discriminator for d-dimensional Y on device dev and
// its Adam.
func NewPrior(d int64, opts optim.AdamOptions, gpWeight float64, dev torch.Device) (*Prior, error) {
	if !(gpWeight >= 0) || math.IsInf(gpWeight, 0) {
		return nil, fmt.Errorf("prior: the gradient penalty's weight must be finite and non-negative, got %v", gpWeight)
	}
	p := &Prior{GPWeight: gpWeight, Dim: d}
	p.D = nn.NewSequential(nn.NewLinear(d, 1000, true), nn.ReLU(), nn.NewLinear(1000, 200, true), nn.ReLU(), nn.NewLinear(200, 1, true))
	if err := nn.FirstError(p.D); err != nil {
		return nil, err
	}
	if err := nn.MoveTo(p.D, dev); err != nil {
		nn.Free(p.D)
		return nil, err
	}
	p.dparams = nn.Parameters(p.D)
	opt, err := optim.NewAdam(p.dparams, opts)
	if err != nil {
		nn.Free(p.D)
		return nil, err
	}
	p.Opt = opt
	return p, nil
}

// Free releases the discriminator and its optimiser state.
func (p *Prior) Free() {
	p.Opt.Free()
	nn.Free(p.D)
}

// DiscriminatorLoss returns the discriminator's loss for one batch of Y
// (detached: the encoder is not updated by it), and its two parts: the
// adversarial loss softplus(-D(real)) + softplus(D(fake)) (batch means) and
// the unweighted penalty 0.5 (E||grad D(real)||^2 + E||grad D(fake)||^2)
// (zero, and not computed, when GPWeight is 0).
//
// Real and fake samples go through D as one batch of 2B rows, and one
// gradient call gives every row's input gradient: D has no batch
// statistics, so each row's output and gradient are what separate passes
// would give, and the mean of the squared gradient norms over the 2B rows is
// the mean of the two halves' means. That is one forward, one backward and
// one double-backward pass instead of four forwards and two gradient calls
// (on 2 cores the prior game's share of a basic28 step fell from about 150 ms to
// about 95 ms).
func (p *Prior) DiscriminatorLoss(y *torch.Tensor) (total, adv, gp *torch.Tensor) {
	fake := p.squash(y.Detach().To(torch.Float32)) // float32 even when Y came from a bfloat16 forward
	real := p.sample(fake)
	b := fake.Size(0)
	x := torch.Cat([]*torch.Tensor{real, fake}, 0)
	if p.GPWeight != 0 {
		x = x.SetRequiresGrad(true)
	}
	out := p.D.Forward(x)
	adv = out.Narrow(0, 0, b).Neg().Softplus().Mean().Add(out.Narrow(0, b, b).Softplus().Mean())
	if p.GPWeight == 0 {
		return adv, adv, torch.Zeros(nil, fake.Device(), fake.Scope())
	}
	g, err := torch.Grad([]*torch.Tensor{out.Sum()}, []*torch.Tensor{x}, torch.GradOptions{CreateGraph: true, RetainGraph: true})
	if err != nil {
		return torch.Errored(err), adv, torch.Errored(err)
	}
	gp = g[0].Square().SumDims([]int64{1}, false).Mean()
	return adv.Add(gp.MulScalar(p.GPWeight)), adv, gp
}

// ErrNonFinite reports a loss or gradient of the prior game that became NaN
// or infinite.
var ErrNonFinite = errors.New("non-finite value")

// Step trains the discriminator one step on a batch of Y and returns its
// losses. It clears the discriminator's gradients first, so gradients left by
// the encoder's generator loss never reach this update.
func (p *Prior) Step(y *torch.Tensor) (CriticLosses, error) {
	p.trainD(true)
	if err := p.Opt.ZeroGrad(); err != nil {
		return CriticLosses{}, err
	}
	total, adv, gp := p.DiscriminatorLoss(y)
	l := CriticLosses{HasGP: p.GPWeight != 0}
	var err error
	if l.D, err = adv.Item(); err != nil {
		return l, fmt.Errorf("prior discriminator: %w", err)
	}
	if l.GP, err = gp.Item(); err != nil {
		return l, fmt.Errorf("prior discriminator: %w", err)
	}
	// The checks come after the backward pass: in a data-parallel job it
	// averages the gradients over the ranks, so that every rank sees a
	// non-finite gradient norm when one rank's loss is not finite, and
	// every rank stops here.
	if err := total.Backward(); err != nil {
		return l, fmt.Errorf("prior discriminator: %w", err)
	}
	// A finite loss can still give an infinite gradient; stepping on it would
	// wreck the discriminator without a trace.
	norm, err := optim.GradNorm(p.dparams)
	if err != nil {
		return l, fmt.Errorf("prior discriminator: %w", err)
	}
	if !finite(l.D) || !finite(l.GP) || !finite(norm) {
		return l, fmt.Errorf("prior discriminator: %w: loss %v, gradient penalty %v, gradient norm %v", ErrNonFinite, l.D, l.GP, norm)
	}
	if err := p.Opt.Step(); err != nil {
		return l, err
	}
	return l, p.Opt.ZeroGrad()
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// GeneratorLoss is the encoder's side: softplus(-D(sigmoid(Y))) (with
// Gaussian: softplus(-D(Y))), minimised when the discriminator takes the
// codes for prior samples. Under bfloat16
// autocast D runs in bfloat16 and the loss in float32, like DIM's estimators.
//
// The discriminator's weights take no gradient from this loss: the
// encoder's backward pass would compute it only for Step to discard it (it
// clears them and turns them back on), so they are marked as not requiring
// gradients until then; the gradient still flows through D to Y.
func (p *Prior) GeneratorLoss(y *torch.Tensor) *torch.Tensor {
	p.trainD(false)
	return p.D.Forward(p.squash(y)).To(torch.Float32).Neg().Softplus().Mean()
}

// squash maps Y to the prior's space: sigmoid(Y) for the uniform prior,
// Y itself for the Gaussian.
func (p *Prior) squash(y *torch.Tensor) *torch.Tensor {
	if p.Gaussian {
		return y
	}
	return y.Sigmoid()
}

// sample draws one prior sample per row of like.
func (p *Prior) sample(like *torch.Tensor) *torch.Tensor {
	switch {
	case p.Sample != nil:
		return p.Sample(like.Shape(), like)
	case p.Gaussian:
		return torch.Randn(like.Shape(), like.Device(), like.Scope())
	}
	return torch.Rand(like.Shape(), like.Device(), like.Scope())
}

// trainD turns gradients of the discriminator's weights on or off.
func (p *Prior) trainD(on bool) {
	for _, w := range p.dparams {
		w.SetRequiresGrad(on)
	}
}
