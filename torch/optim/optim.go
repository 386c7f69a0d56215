// Package optim provides optimisers (Adam/AdamW, SGD with momentum and
// Nesterov), learning-rate schedules and gradient-norm clipping for
// parameters from package nn. Each Step is one call into libtorch for the
// whole parameter list.
package optim

import (
	"fmt"
	"math"
	"strconv"

	"github.com/dimtorch/dimtorch/torch"
)

// Optimizer updates parameters from their gradients.
type Optimizer interface {
	// Step applies one update using the parameters' current gradients;
	// parameters without a gradient are skipped.
	Step() error
	// ZeroGrad drops every parameter's gradient.
	ZeroGrad() error
	// LR returns the current learning rate; SetLR changes it (for schedules).
	LR() float64
	SetLR(lr float64)
	// State returns the optimiser's state tensors by name (for checkpoints),
	// owned by the optimiser; LoadState restores it.
	State() map[string]*torch.Tensor
	LoadState(map[string]*torch.Tensor) error
	// Free releases the state tensors (not the parameters).
	Free()
}

func zeroGrads(ps []*torch.Tensor) error {
	for _, p := range ps {
		if err := p.ZeroGrad(); err != nil {
			return err
		}
	}
	return nil
}

// AdamOptions configure Adam. Every field means what it says, zero included:
// Beta1 0 is Adam without momentum; a zero LR, Beta2 or Eps is rejected
// rather than replaced. AdamDefaults gives PyTorch's defaults.
type AdamOptions struct {
	LR           float64
	Beta1, Beta2 float64 // PyTorch: 0.9, 0.999
	Eps          float64 // PyTorch: 1e-8
	WeightDecay  float64
	Decoupled    bool // AdamW: decay the weights directly instead of adding to the gradient
}

// AdamDefaults returns PyTorch's Adam settings (betas 0.9 and 0.999, eps
// 1e-8, no weight decay) with the given learning rate.
func AdamDefaults(lr float64) AdamOptions {
	return AdamOptions{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// Adam is the optimiser of Kingma and Ba (2015), or AdamW with Decoupled.
type Adam struct {
	opts   AdamOptions
	params []*torch.Tensor
	m, v   []*torch.Tensor
	step   int64
	stepT  *torch.Tensor // the step count as a tensor, for State
}

// NewAdam returns Adam over params. It fails on a non-positive learning rate,
// beta1 outside [0, 1), beta2 outside (0, 1), a non-positive epsilon or a
// negative weight decay (see AdamDefaults).
func NewAdam(params []*torch.Tensor, o AdamOptions) (*Adam, error) {
	switch {
	case !(o.LR > 0):
		return nil, fmt.Errorf("optim: Adam needs a positive learning rate, got %v", o.LR)
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return nil, fmt.Errorf("optim: Adam beta1 must lie in [0, 1), got %v", o.Beta1)
	case !(o.Beta2 > 0 && o.Beta2 < 1):
		return nil, fmt.Errorf("optim: Adam beta2 must lie in (0, 1), got %v (optim.AdamDefaults gives PyTorch's 0.999)", o.Beta2)
	case !(o.Eps > 0):
		return nil, fmt.Errorf("optim: Adam eps must be positive, got %v (optim.AdamDefaults gives PyTorch's 1e-8)", o.Eps)
	case !(o.WeightDecay >= 0):
		return nil, fmt.Errorf("optim: Adam weight decay must be non-negative, got %v", o.WeightDecay)
	}
	a := &Adam{opts: o, params: params}
	for _, p := range params {
		if err := p.Err(); err != nil {
			return nil, fmt.Errorf("optim: Adam: %w", err)
		}
		a.m = append(a.m, torch.ZerosLike(p))
		a.v = append(a.v, torch.ZerosLike(p))
	}
	return a, nil
}

// Step implements Optimizer.
func (a *Adam) Step() error {
	if len(a.params) == 0 {
		return nil
	}
	a.step++
	o := a.opts
	return torch.AdamStep(a.params, a.m, a.v, o.LR, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.Decoupled, a.step)
}

// ZeroGrad implements Optimizer.
func (a *Adam) ZeroGrad() error { return zeroGrads(a.params) }

// LR implements Optimizer.
func (a *Adam) LR() float64 { return a.opts.LR }

// SetLR implements Optimizer.
func (a *Adam) SetLR(lr float64) { a.opts.LR = lr }

// Steps returns the number of steps taken.
func (a *Adam) Steps() int64 { return a.step }

// State implements Optimizer: "exp_avg.i", "exp_avg_sq.i" and "step".
func (a *Adam) State() map[string]*torch.Tensor {
	st := map[string]*torch.Tensor{"step": stepTensor(&a.stepT, a.step)}
	for i := range a.params {
		st["exp_avg."+strconv.Itoa(i)] = a.m[i]
		st["exp_avg_sq."+strconv.Itoa(i)] = a.v[i]
	}
	return st
}

// LoadState implements Optimizer.
func (a *Adam) LoadState(st map[string]*torch.Tensor) error {
	step, err := loadStep(st)
	if err != nil {
		return err
	}
	for i := range a.params {
		if err := copyState(a.m[i], st, "exp_avg."+strconv.Itoa(i)); err != nil {
			return err
		}
		if err := copyState(a.v[i], st, "exp_avg_sq."+strconv.Itoa(i)); err != nil {
			return err
		}
	}
	a.step = step
	return nil
}

// Free implements Optimizer.
func (a *Adam) Free() {
	for i := range a.m {
		a.m[i].Free()
		a.v[i].Free()
	}
	a.stepT.Free()
}

// stepTensor keeps *t, an int64 scalar owned by the optimiser, equal to step.
func stepTensor(t **torch.Tensor, step int64) *torch.Tensor {
	if *t == nil {
		*t = torch.Zeros(nil, torch.Int64)
	}
	_ = (*t).FillInPlace(float64(step))
	return *t
}

func loadStep(st map[string]*torch.Tensor) (int64, error) {
	t, ok := st["step"]
	if !ok {
		return 0, fmt.Errorf("optim: state has no step")
	}
	v, err := t.Item()
	if err != nil {
		return 0, fmt.Errorf("optim: state step: %w", err)
	}
	return int64(v), nil
}

func copyState(dst *torch.Tensor, st map[string]*torch.Tensor, name string) error {
	src, ok := st[name]
	if !ok {
		return fmt.Errorf("optim: state has no %s", name)
	}
	if fmt.Sprint(src.Shape()) != fmt.Sprint(dst.Shape()) {
		return fmt.Errorf("optim: state %s has shape %v, parameter %v", name, src.Shape(), dst.Shape())
	}
	if err := dst.CopyFrom(src); err != nil {
		return fmt.Errorf("optim: state %s: %w", name, err)
	}
	return nil
}

// SGDOptions configure SGD.
type SGDOptions struct {
	LR          float64
	Momentum    float64
	Dampening   float64
	WeightDecay float64
	Nesterov    bool
}

// SGD is stochastic gradient descent with optional (Nesterov) momentum, with
// PyTorch's update rule.
type SGD struct {
	opts   SGDOptions
	params []*torch.Tensor
	buf    []*torch.Tensor
	step   int64
	stepT  *torch.Tensor
}

// NewSGD returns SGD over params. Nesterov needs momentum > 0 and no dampening.
func NewSGD(params []*torch.Tensor, o SGDOptions) (*SGD, error) {
	switch {
	case !(o.LR > 0):
		return nil, fmt.Errorf("optim: SGD needs a positive learning rate, got %v", o.LR)
	case o.Momentum < 0 || o.WeightDecay < 0:
		return nil, fmt.Errorf("optim: SGD momentum and weight decay must be non-negative")
	case o.Nesterov && (o.Momentum <= 0 || o.Dampening != 0):
		return nil, fmt.Errorf("optim: Nesterov momentum needs momentum > 0 and zero dampening")
	}
	s := &SGD{opts: o, params: params}
	for _, p := range params {
		if err := p.Err(); err != nil {
			return nil, fmt.Errorf("optim: SGD: %w", err)
		}
		if o.Momentum != 0 {
			s.buf = append(s.buf, torch.ZerosLike(p))
		}
	}
	return s, nil
}

// Step implements Optimizer.
func (s *SGD) Step() error {
	if len(s.params) == 0 {
		return nil
	}
	o := s.opts
	err := torch.SGDStep(s.params, s.buf, o.LR, o.Momentum, o.Dampening, o.WeightDecay, o.Nesterov, s.step == 0)
	s.step++
	return err
}

// ZeroGrad implements Optimizer.
func (s *SGD) ZeroGrad() error { return zeroGrads(s.params) }

// LR implements Optimizer.
func (s *SGD) LR() float64 { return s.opts.LR }

// SetLR implements Optimizer.
func (s *SGD) SetLR(lr float64) { s.opts.LR = lr }

// State implements Optimizer: "momentum_buffer.i" and "step".
func (s *SGD) State() map[string]*torch.Tensor {
	st := map[string]*torch.Tensor{"step": stepTensor(&s.stepT, s.step)}
	for i, b := range s.buf {
		st["momentum_buffer."+strconv.Itoa(i)] = b
	}
	return st
}

// LoadState implements Optimizer.
func (s *SGD) LoadState(st map[string]*torch.Tensor) error {
	step, err := loadStep(st)
	if err != nil {
		return err
	}
	for i, b := range s.buf {
		if err := copyState(b, st, "momentum_buffer."+strconv.Itoa(i)); err != nil {
			return err
		}
	}
	s.step = step
	return nil
}

// Free implements Optimizer.
func (s *SGD) Free() {
	for _, b := range s.buf {
		b.Free()
	}
	s.stepT.Free()
}

// ClipGradNorm scales the gradients of params so that their joint 2-norm is
// at most maxNorm, and returns the norm before clipping.
func ClipGradNorm(params []*torch.Tensor, maxNorm float64) (float64, error) {
	return torch.ClipGradNorm(params, maxNorm)
}

// GradNorm returns the joint 2-norm of the gradients of params (parameters
// without a gradient count as zero), without changing them: NaN or +Inf when
// any gradient is not finite.
func GradNorm(params []*torch.Tensor) (float64, error) {
	return torch.ClipGradNorm(params, math.Inf(1))
}

// Schedule maps an epoch (or step) index to a learning rate.
type Schedule interface {
	LR(base float64, epoch int) float64
}

// StepLR multiplies the rate by Gamma every StepSize epochs.
type StepLR struct {
	StepSize int
	Gamma    float64
}

// LR implements Schedule.
func (s StepLR) LR(base float64, epoch int) float64 {
	if s.StepSize <= 0 {
		return base
	}
	return base * math.Pow(s.Gamma, float64(epoch/s.StepSize))
}

// MultiStepLR multiplies the rate by Gamma at each milestone epoch.
type MultiStepLR struct {
	Milestones []int
	Gamma      float64
}

// LR implements Schedule.
func (s MultiStepLR) LR(base float64, epoch int) float64 {
	n := 0
	for _, m := range s.Milestones {
		if epoch >= m {
			n++
		}
	}
	return base * math.Pow(s.Gamma, float64(n))
}

// CosineLR anneals from the base rate to EtaMin over TMax epochs (PyTorch's
// CosineAnnealingLR closed form), staying at EtaMin afterwards.
type CosineLR struct {
	TMax   int
	EtaMin float64
}

// LR implements Schedule.
func (s CosineLR) LR(base float64, epoch int) float64 {
	if s.TMax <= 0 {
		return base
	}
	if epoch > s.TMax {
		epoch = s.TMax
	}
	return s.EtaMin + (base-s.EtaMin)*(1+math.Cos(math.Pi*float64(epoch)/float64(s.TMax)))/2
}
