package train

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// probe is the online monitor: a linear classifier trained during
// pretraining on detached Y, with its own optimiser. Its accuracy is an
// online probe, reported as such; `dimtorch eval` gives offline probes on
// the frozen encoder.
type probe struct {
	lin           *nn.Linear
	opt           *optim.Adam
	correct, seen int64
}

func newProbe(in, classes int64, lr float64, dev torch.Device) (*probe, error) {
	p := &probe{lin: nn.NewLinear(in, classes, true)}
	if err := nn.FirstError(p.lin); err != nil {
		return nil, err
	}
	if err := nn.MoveTo(p.lin, dev); err != nil {
		return nil, err
	}
	opt, err := optim.NewAdam(nn.Parameters(p.lin), optim.AdamDefaults(lr))
	if err != nil {
		return nil, err
	}
	p.opt = opt
	return p, nil
}

func (p *probe) free() {
	p.opt.Free()
	nn.Free(p.lin)
}

// step trains on one batch of features (detached here) and counts its
// training accuracy before the update. Unlabeled batches (label -1) are
// skipped.
//
// In a data-parallel job red averages the gradient over the ranks; a rank
// whose batch is unlabeled then still takes part, with a zero gradient.
func (p *probe) step(feat, labels *torch.Tensor, red *dist.Reducer) error {
	v, err := labels.Min().Item()
	if err != nil {
		return err
	}
	if v < 0 && red == nil {
		return nil
	}
	logits := p.lin.Forward(feat.Detach().To(torch.Float32))
	loss := logits.Sum().MulScalar(0)
	if v >= 0 {
		if err := p.count(logits, labels); err != nil {
			return err
		}
		loss = torch.CrossEntropy(logits, labels, torch.ReduceMean)
	}
	if err := p.opt.ZeroGrad(); err != nil {
		return err
	}
	if red != nil {
		if err := red.Prepare(); err != nil {
			return err
		}
	}
	if err := loss.Backward(); err != nil {
		return err
	}
	return p.opt.Step()
}

func (p *probe) count(logits, labels *torch.Tensor) error {
	c, err := logits.Argmax(1, false).Eq(labels).Sum().Item()
	if err != nil {
		return err
	}
	p.correct += int64(c)
	p.seen += labels.Size(0)
	return nil
}

func (p *probe) reset() { p.correct, p.seen = 0, 0 }
