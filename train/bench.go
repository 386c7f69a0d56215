package train

import (
	"fmt"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Bench runs the trainer's own step (Trainer.step: the method's loss, the
// optimiser's step, the critic's) on batches the caller makes, so that
// `dimtorch bench train` times what `dimtorch train` runs. It reads no data
// and writes nothing: no loader, run directory, metrics or online probe.
type Bench struct {
	t     *Trainer
	index []int
}

// NewBench builds the run's networks and optimisers from cfg's seed, as
// New does, for batches of images of cfg.Encoder.InChannels channels (it
// must be set: there is no data to take it from).
func NewBench(cfg Config) (*Bench, error) {
	cfg.derive()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Encoder.InChannels < 1 {
		return nil, fmt.Errorf("bench: --in-channels must be set (there is no data to take it from)")
	}
	cfg.Method.Resolve(cfg.Encoder.InChannels)
	t, err := setUp(cfg, Options{})
	if err != nil {
		return nil, err
	}
	if err := t.buildNetworks(cfg.BatchSize, 1, 0); err != nil {
		t.Close()
		return nil, err
	}
	b := &Bench{t: t, index: make([]int, cfg.BatchSize)}
	for i := range b.index {
		b.index[i] = i
	}
	return b, nil
}

// Spec is the encoder's.
func (b *Bench) Spec() models.Spec { return b.t.enc.Spec() }

// Parameters are what the encoder's optimiser trains, in its order.
func (b *Bench) Parameters() []*torch.Tensor {
	return append(nn.Parameters(b.t.enc), nn.Parameters(b.t.method)...)
}

// OnBackward calls f after each step's backward pass, before the
// optimiser's step (nil: no call).
func (b *Bench) OnBackward(f func() error) { b.t.afterBackward = f }

// Step runs one training step on x ([views*batch, C, H, W] in [-1, 1], in
// the configured layout; borrowed, not freed) and returns the loss and, for
// methods with a critic, the critic's loss.
func (b *Bench) Step(x *torch.Tensor) (loss float64, critic *float64, err error) {
	t := b.t
	t.opt.SetLR(t.cfg.LR)
	v, err := t.step(&datasets.Batch{X: x.Ref(nil), Indices: b.index})
	if err != nil {
		return 0, nil, err
	}
	t.state.Step++
	if i := objectives.TermIndex("d_loss"); v.has[i] {
		d := v.terms[i]
		critic = &d
	}
	return v.loss, critic, nil
}

// Close releases the networks and optimisers.
func (b *Bench) Close() { b.t.Close() }
