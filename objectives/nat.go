package objectives

import (
	"fmt"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// NAT is Noise As Targets (Bojanowski and Joulin, 2017): one fixed target
// per training image, drawn uniformly on the unit sphere of Y's dimension;
// the encoder's Y, scaled to unit length, is pulled towards its image's
// target by the squared distance. The assignment of targets to images is
// learned too: before each step the targets of the batch's images are
// re-assigned among them by the Hungarian method (Assign) to the
// assignment nearest the current codes, the paper's batch-level update.
// Targets and assignment are buffers, so checkpoints keep them.
type NAT struct {
	nn.Base
	targets *torch.Tensor // [images, D]
	assign  *torch.Tensor // int64 [images]: the target of each image
}

func newNAT(spec models.Spec, images int) (*NAT, error) {
	if images < 1 {
		return nil, fmt.Errorf("nat needs the training set's size, got %d images", images)
	}
	n := &NAT{}
	t := torch.Randn([]int64{int64(images), int64(spec.Y)})
	s := torch.NewScope() // the norms are temporaries; the targets are scaled in place
	err := t.DivInPlace(t.Ref(s).Square().SumDims([]int64{1}, true).Sqrt())
	s.Close()
	if err != nil {
		t.Free()
		return nil, err
	}
	n.targets = n.Buffer("targets", t)
	n.assign = n.Buffer("assign", torch.Arange(0, float64(images), 1, torch.Int64))
	return n, built(n)
}

// Loss implements Method.
func (n *NAT) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	taps := enc.Encode(in.X)
	y := taps.Y.To(torch.Float32)
	y = y.Div(y.Square().SumDims([]int64{1}, true).ClampMin(1e-24).Sqrt())
	var t Terms
	c, err := n.reassign(y.Detach(), in.Indices)
	if err != nil {
		t.Total = torch.Errored(err)
		t.NAT = t.Total
		return t, taps
	}
	t.NAT = y.Sub(c).Square().SumDims([]int64{1}, false).Mean()
	t.Total = t.NAT
	return t, taps
}

// reassign re-assigns the targets of the batch's images among them so that
// the sum of squared distances to the codes y is least (for unit vectors:
// the sum of dot products is greatest), records it, and returns each row's
// new target.
func (n *NAT) reassign(y *torch.Tensor, indices []int) (*torch.Tensor, error) {
	b := len(indices)
	if int64(b) != y.Size(0) {
		return nil, fmt.Errorf("nat: %d codes for %d dataset indices", y.Size(0), b)
	}
	s, dev := y.Scope(), y.Device()
	idx := make([]int64, b)
	for i, v := range indices {
		if v < 0 || int64(v) >= n.assign.Size(0) {
			return nil, fmt.Errorf("nat: image %d is outside the %d images the targets were drawn for", v, n.assign.Size(0))
		}
		idx[i] = int64(v)
	}
	it := torch.FromSlice(idx, []int64{int64(b)}, dev, s)
	cur := n.assign.IndexSelect(0, it)
	curs, err := cur.Int64s()
	if err != nil {
		return nil, err
	}
	// In float64, which autocast leaves alone: bfloat16 products would
	// round the costs to three digits.
	cost, err := y.To(torch.Float64).Mm(n.targets.IndexSelect(0, cur).To(torch.Float64).T()).Neg().Float64s()
	if err != nil {
		return nil, err
	}
	cols, err := Assign(cost, b, b)
	if err != nil {
		return nil, err
	}
	next := make([]int64, b)
	for i, j := range cols {
		next[i] = curs[j]
	}
	nt := torch.FromSlice(next, []int64{int64(b)}, dev, s)
	if err := n.assign.CopyFrom(n.assign.Scatter(0, it, nt)); err != nil {
		return nil, err
	}
	return n.targets.IndexSelect(0, nt), nil
}

// Critic implements Method: NAT has none.
func (n *NAT) Critic() Critic { return nil }

// Free implements Method.
func (n *NAT) Free() { nn.Free(n) }
