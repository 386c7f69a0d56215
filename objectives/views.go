package objectives

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
)

// multiView scores locals against globals across the augmented views of a
// batch, for DIM with --views and for multi-scale DIM (AMDIM): the views'
// count, the score stabilisation (--score-clip) and the data-parallel
// gather of the negatives.
type multiView struct {
	views int64   // 0 or 1: one view
	clip  float64 // > 0: AMDIM's score stabilisation; 0: raw scores
	units int     // the critic's space (scores are divided by its square root when clipping)
	// allGather, when set, concatenates a tensor's rows over the ranks of
	// a data-parallel job, differentiably (see DIM.Gather).
	allGather func(*torch.Tensor) *torch.Tensor
}

// loss returns the estimator's loss on the scores of locals against
// globals. With one view that is the paper's objective; with V views it is
// the mean over the V*(V-1) ordered pairs of distinct views (a, b) of the
// loss of view a's locals against view b's globals, so that an image's
// other views are never its negatives.
//
// Scores reach the estimator (and the clipping) in float32 whatever the
// precision of the forward pass: under bfloat16 autocast the critic's matrix
// products run in bfloat16, but softplus, exp and logsumexp over thousands
// of scores would lose the loss's low bits in bfloat16's 8-bit mantissa,
// so the losses are computed in float32, as mixed-precision practice does.
//
// With clipping it also returns the penalty on the squared scores that the
// loss includes (nil without).
func (m multiView) loss(est Estimator, local, global *torch.Tensor, score func(l, g *torch.Tensor) *torch.Tensor) (loss, penalty *torch.Tensor) {
	if m.allGather != nil {
		local, global = m.gather(local), m.gather(global)
	}
	scores := func(l, g *torch.Tensor) *torch.Tensor { return score(l, g).To(torch.Float32) }
	c := m.clip
	if c <= 0 {
		return m.pairs(est, local, global, scores), nil
	}
	var penalties []*torch.Tensor
	scale := 1 / math.Sqrt(float64(m.units))
	loss = m.pairs(est, local, global, func(l, g *torch.Tensor) *torch.Tensor {
		s := scores(l, g).MulScalar(scale)
		penalties = append(penalties, s.Square().Mean().MulScalar(0.05))
		return s.DivScalar(c).Tanh().MulScalar(c)
	})
	for _, p := range penalties {
		p = p.DivScalar(float64(len(penalties)))
		loss = loss.Add(p)
		if penalty == nil {
			penalty = p
		} else {
			penalty = penalty.Add(p)
		}
	}
	return loss, penalty
}

// gather concatenates x's rows over the ranks, keeping the view-major layout
// that pairs expects: [V*N, ...] on each of W ranks becomes [V*W*N, ...].
func (m multiView) gather(x *torch.Tensor) *torch.Tensor {
	g := m.allGather(x)
	v := m.views
	if v <= 1 || g.Err() != nil {
		return g
	}
	sh := x.Shape()
	w := g.Size(0) / sh[0]
	n := sh[0] / v
	inner := append([]int64{w, v, n}, sh[1:]...)
	return g.Reshape(inner...).Transpose(0, 1).Contiguous().Reshape(append([]int64{v * w * n}, sh[1:]...)...)
}

// pairs is loss without score stabilisation, with estimator est.
func (m multiView) pairs(est Estimator, local, global *torch.Tensor, scores func(l, g *torch.Tensor) *torch.Tensor) *torch.Tensor {
	v := m.views
	if v <= 1 {
		return est.Loss(scores(local, global))
	}
	if err := local.Err(); err != nil {
		return torch.Errored(err)
	}
	if local.Size(0)%v != 0 || global.Size(0) != local.Size(0) {
		return torch.Errored(fmt.Errorf("%d views need a batch that is a multiple of %d with as many globals as locals; got %d locals and %d globals", v, v, local.Size(0), global.Size(0)))
	}
	n := local.Size(0) / v
	var sum *torch.Tensor
	for a := int64(0); a < v; a++ {
		for b := int64(0); b < v; b++ {
			if a == b {
				continue
			}
			l := est.Loss(scores(local.Narrow(0, a*n, n), global.Narrow(0, b*n, n)))
			if sum == nil {
				sum = l
			} else {
				sum = sum.Add(l)
			}
		}
	}
	return sum.DivScalar(float64(v * (v - 1)))
}
