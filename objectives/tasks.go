package objectives

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// CoordPredictor is the coordinate-prediction task: from the local feature
// at each position concatenated with the image's global vector, predict the
// position's row and column (two classifications, cross-entropy).
type CoordPredictor struct {
	nn.Base
	local, global *nn.Linear
	out           *nn.Linear
	h, w          int64
}

// NewCoordPredictor returns the task's network for a local map of localC
// channels and h x w positions, and globals of globalD dimensions.
func NewCoordPredictor(localC, globalD, h, w int64) *CoordPredictor {
	c := &CoordPredictor{h: h, w: w}
	c.local = nn.Child(&c.Base, "local", nn.NewLinear(localC, 256, true))
	c.global = nn.Child(&c.Base, "global", nn.NewLinear(globalD, 256, false))
	c.out = nn.Child(&c.Base, "out", nn.NewLinear(256, h+w, true))
	return c
}

// Loss returns the mean cross-entropy of predicting each position's row and
// column from [local, global].
func (c *CoordPredictor) Loss(localMap, y *torch.Tensor) *torch.Tensor {
	n := localMap.Size(0)
	l := c.h * c.w
	hidden := c.local.Forward(localMap.Flatten(2, -1).Transpose(1, 2)).Add(c.global.Forward(y).Unsqueeze(1)).Relu()
	logits := c.out.Forward(hidden).Reshape(n*l, c.h+c.w) // [N*L, H+W]
	pos := torch.Arange(0, float64(l), 1, torch.Int64, localMap.Device(), localMap.Scope()).Repeat(n)
	rows := pos.DivScalar(float64(c.w)).Floor().To(torch.Int64)
	cols := pos.RemainderScalar(float64(c.w))
	rowLoss := torch.CrossEntropy(logits.Narrow(1, 0, c.h), rows, torch.ReduceMean)
	colLoss := torch.CrossEntropy(logits.Narrow(1, c.h, c.w), cols, torch.ReduceMean)
	return rowLoss.Add(colLoss)
}

// Occlude returns x with one random square block per image set to 0 (the
// middle of the [-1, 1] range). The block's side is size pixels.
func Occlude(x *torch.Tensor, size int64) *torch.Tensor {
	sh := x.Shape()
	if len(sh) != 4 {
		return torch.Errored(x.Err())
	}
	n, h, w := sh[0], sh[2], sh[3]
	s := x.Scope()
	dev := x.Device()
	top := torch.RandInt(0, h-size+1, []int64{n, 1, 1, 1}, dev, s)
	left := torch.RandInt(0, w-size+1, []int64{n, 1, 1, 1}, dev, s)
	rows := torch.Arange(0, float64(h), 1, torch.Int64, dev, s).Reshape(1, 1, h, 1)
	cols := torch.Arange(0, float64(w), 1, torch.Int64, dev, s).Reshape(1, 1, 1, w)
	in := rows.Ge(top).LogicalAnd(rows.Lt(top.AddScalar(float64(size)))).
		LogicalAnd(cols.Ge(left)).LogicalAnd(cols.Lt(left.AddScalar(float64(size))))
	return x.MaskedFill(in, 0)
}
