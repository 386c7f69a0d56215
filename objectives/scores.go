package objectives

import (
	"fmt"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// DotScores is the encode-and-dot scorer: given encoded locals [N, L, U] and
// encoded globals [N, M, U] (or [N, U]) it returns all scores
// S[n, k, l, m] = <local[n, l], global[k, m]> as one matrix product, shaped
// [N, N, L, M].
func DotScores(local, global *torch.Tensor) *torch.Tensor {
	if err := local.Err(); err != nil {
		return torch.Errored(err)
	}
	if global.Dim() == 2 {
		global = global.Unsqueeze(1)
	}
	ls, gs := local.Shape(), global.Shape()
	if len(ls) != 3 || len(gs) != 3 || ls[0] != gs[0] || ls[2] != gs[2] {
		return torch.Errored(fmt.Errorf("dot scores need locals [N, L, U] and globals [N, M, U], got %v and %v", ls, gs))
	}
	n, l, u, m := ls[0], ls[1], ls[2], gs[1]
	// local . global^T as a linear layer: in float32 on the CPU it runs on
	// oneDNN's kernels (see torch.SetOneDNNLinear), 2-4x faster here than the
	// BLAS matrix product for these shapes.
	s := torch.Linear(local.Reshape(n*l, u), global.Reshape(n*m, u), nil) // [N*L, N*M]
	return s.Reshape(n, l, n, m).Permute(0, 2, 1, 3)
}

// ConcatScorer is the concat-and-convolve critic: at every local position the
// local feature is concatenated with a global vector and scored by a small
// network of 1x1 convolutions. Because its first layer is linear, the
// concatenation is computed as the sum of a projection of the local map and
// a projection of the global vector, for all N x N pairs at once.
type ConcatScorer struct {
	nn.Base
	local  *nn.Linear
	global *nn.Linear
	hidden *nn.Linear
	out    *nn.Linear
}

// NewConcatScorer returns a critic for local maps of localC channels and
// global vectors of globalD dimensions with the given hidden width.
func NewConcatScorer(localC, globalD, hidden int64) *ConcatScorer {
	c := &ConcatScorer{}
	c.local = nn.Child(&c.Base, "local", nn.NewLinear(localC, hidden, true))
	c.global = nn.Child(&c.Base, "global", nn.NewLinear(globalD, hidden, false))
	c.hidden = nn.Child(&c.Base, "hidden", nn.NewLinear(hidden, hidden, true))
	c.out = nn.Child(&c.Base, "out", nn.NewLinear(hidden, 1, true))
	return c
}

// Scores returns S [N, N, L, 1] for a local map [N, C, H, W] and globals [N, D].
func (c *ConcatScorer) Scores(localMap, y *torch.Tensor) *torch.Tensor {
	n := localMap.Size(0)
	a := c.local.Forward(localMap.Flatten(2, -1).Transpose(1, 2)) // [N, L, Hd]
	b := c.global.Forward(y)                                      // [N, Hd]
	hd := b.Size(1)
	pair := a.Unsqueeze(1).Add(b.Reshape(1, n, 1, hd)).Relu() // [N, N, L, Hd]
	return c.out.Forward(c.hidden.Forward(pair).Relu())       // [N, N, L, 1]
}
