package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// MIHead maps features into the critic's space of Units dimensions, as the
// original DIM's MI1x1ConvNet: a nonlinear branch (1x1 conv or linear
// without bias, BatchNorm, ReLU, 1x1 conv or linear with bias) plus a linear
// shortcut without bias, followed by LayerNorm over the units. When units >=
// in, the shortcut starts as a noisy identity (U(-0.01, 0.01) with ones on the
// diagonal); otherwise it keeps the layer's default initialisation, as the
// original does. (The branch's last layer has the only bias: a second one in
// the shortcut would be redundant.)
type MIHead struct {
	nn.Base
	In, Units int64
	spatial   bool // 1x1 convolutions over a map, or linear layers over vectors
	block     *nn.Sequential
	shortcut  nn.Layer
	norm      *nn.LayerNorm
}

// NewLocalHead returns the head for a local map of in channels: it maps
// [N, in, H, W] to [N, H*W, units].
func NewLocalHead(in, units int64) *MIHead { return newMIHead(in, units, true) }

// NewGlobalHead returns the head for global vectors: it maps [N, in] to
// [N, units] and [N, M, in] to [N, M, units]. (The original scores a global
// vector as a 1x1 map with the same 1x1-conv network; on a 1x1 map that is
// this network of linear layers.)
func NewGlobalHead(in, units int64) *MIHead { return newMIHead(in, units, false) }

func newMIHead(in, units int64, spatial bool) *MIHead {
	h := &MIHead{In: in, Units: units, spatial: spatial}
	var sc *torch.Tensor
	if spatial {
		h.block = nn.Child(&h.Base, "block", nn.NewSequential(
			nn.NewConv2d(in, units, 1, torch.ConvOptions{}, false), nn.NewBatchNorm2d(units), nn.ReLUInPlace(),
			nn.NewConv2d(units, units, 1, torch.ConvOptions{}, true)))
		c := nn.NewConv2d(in, units, 1, torch.ConvOptions{}, false)
		h.shortcut, sc = nn.Child(&h.Base, "shortcut", c), c.Weight
	} else {
		h.block = nn.Child(&h.Base, "block", nn.NewSequential(
			nn.NewLinear(in, units, false), nn.NewBatchNorm1d(units), nn.ReLUInPlace(), nn.NewLinear(units, units, true)))
		l := nn.NewLinear(in, units, false)
		h.shortcut, sc = nn.Child(&h.Base, "shortcut", l), l.Weight
	}
	if units >= in {
		torch.NoGrad(func() {
			_ = sc.UniformInPlace(-0.01, 0.01)
			s := torch.NewScope()
			defer s.Close()
			eye := torch.Eye(units, in, s)
			if spatial {
				eye = eye.Reshape(units, in, 1, 1)
			}
			_ = sc.CopyFrom(torch.Where(eye.GtScalar(0), eye, sc.Ref(s)))
		})
	}
	h.norm = nn.Child(&h.Base, "norm", nn.NewLayerNorm(units))
	return h
}

// Forward encodes features: a map [N, C, H, W] becomes [N, H*W, units];
// vectors [N, C] become [N, units]; [N, M, C] become [N, M, units]. The
// LayerNorm runs in float32 even under bfloat16 autocast (nn.LayerNorm
// normalises reduced-precision input in its parameters' precision).
func (h *MIHead) Forward(x *torch.Tensor) *torch.Tensor {
	if h.spatial {
		y := h.block.Forward(x).Add(h.shortcut.Forward(x)) // [N, U, H, W]
		return h.norm.Forward(y.Flatten(2, -1).Transpose(1, 2))
	}
	if x.Dim() == 3 {
		n, m := x.Size(0), x.Size(1)
		return h.Forward(x.Reshape(n*m, -1)).Reshape(n, m, -1)
	}
	return h.norm.Forward(h.block.Forward(x).Add(h.shortcut.Forward(x)))
}
