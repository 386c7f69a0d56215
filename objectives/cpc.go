package objectives

import (
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// CPC is contrastive predictive coding on images (van den Oord et al.,
// 2018): the encoder's local map is the grid of patch codes z (for the
// folded encoders, codes of overlapping crops encoded one by one, as in the
// paper; for the plain convnets, the positions of the map with their
// overlapping receptive fields), an autoregressive context network (two
// 3x3 convolutions of the map's width, masked so that the context at row i
// sees rows i-4 to i only) summarises each position's row and the rows
// above, and for k = 1..K a linear map W_k predicts the code k rows below
// from the context. infoNCE scores
// each prediction against the true code and, as negatives, the codes of
// every other position and image of the batch at the same offset; the loss
// is the mean over k. With skip > 0 the offsets are skip+1..skip+K: when
// receptive fields overlap, the nearest rows' codes share input pixels with
// the context's newest row, an easier task. CPC trains the layers up to the
// local tap: the layers above it (fc and Y; on the deeper encoders also
// conv) get no gradient.
type CPC struct {
	nn.Base
	context       *nn.Sequential
	predict       *nn.Conv2d // 1x1: K predictions of C channels
	skip, rows, c int64
}

// causal is a 3x3 convolution whose output at row i sees input rows i-2 to
// i only: the map is padded by two rows above and a column on each side,
// and the convolution has no padding of its own.
func causal(in, out int64) *nn.Sequential {
	return nn.NewSequential(&nn.Func{Name: "causal_pad", Fn: func(x *torch.Tensor) *torch.Tensor {
		return x.Pad([]int64{1, 1, 2, 0}, torch.PadConstant, 0) // left, right, top, bottom
	}}, nn.NewConv2d(in, out, 3, torch.ConvOptions{}, true), nn.ReLU())
}

func newCPC(spec models.Spec, skip, rows int64) (*CPC, error) {
	c := int64(spec.Local[0])
	p := &CPC{skip: skip, rows: rows, c: c}
	p.context = nn.Child(&p.Base, "context", nn.NewSequential(causal(c, c), causal(c, c)))
	p.predict = nn.Child(&p.Base, "predict", nn.NewConv2d(c, rows*c, 1, torch.ConvOptions{}, true))
	return p, built(p)
}

// Loss implements Method.
func (p *CPC) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	taps := enc.Encode(in.X)
	z := taps.Local
	h := z.Size(2)
	pred := p.predict.Forward(p.context.Forward(z))
	rows := func(t *torch.Tensor) *torch.Tensor { // [N, C, h, W] -> [N*h*W, C]
		return t.Permute(0, 2, 3, 1).Reshape(-1, p.c)
	}
	var sum *torch.Tensor
	for j := int64(0); j < p.rows; j++ {
		k := p.skip + 1 + j // the offset predicted by W_j
		guess := rows(pred.Narrow(1, j*p.c, p.c).Narrow(2, 0, h-k))
		truth := rows(z.Narrow(2, k, h-k))
		scores := guess.Mm(truth.T()).To(torch.Float32)
		labels := torch.Arange(0, float64(scores.Size(0)), 1, torch.Int64, z.Device(), z.Scope())
		l := torch.CrossEntropy(scores, labels, torch.ReduceMean)
		if sum == nil {
			sum = l
		} else {
			sum = sum.Add(l)
		}
	}
	var t Terms
	t.CPC = sum.DivScalar(float64(p.rows))
	t.Total = t.CPC
	return t, taps
}

// Critic implements Method: CPC has none.
func (p *CPC) Critic() Critic { return nil }

// Free implements Method.
func (p *CPC) Free() { nn.Free(p) }
