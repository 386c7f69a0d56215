package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// The AMDIM encoders (Bachman, Hjelm and Buchwalter, 2019, "Learning
// Representations by Maximizing Mutual Information Across Views"): a
// residual network whose convolutions are unpadded, so that each position of
// its 7x7 and 5x5 maps sees a controlled patch of the image, ending in a 1x1
// map. Multi-scale DIM (objectives, method amdim) predicts the 7x7 map (the
// local tap) and the 5x5 map (the conv tap) from the global vector Y, and
// the 5x5 map from itself.
//
// Layers, for width w (--width) and depth d (--depth: residual units per
// block), as AMDIM's 32x32 encoder:
//
//	stem     3x3 conv (bias) + ReLU           32 -> 30 (amdim28: padding 2, 28 -> 30)
//	res1     residual unit, 1x1, w            30
//	block1   residual units, 4x4 stride 2, 2w 30 -> 14
//	block2   residual units, 2x2 stride 2, 4w 14 -> 7
//	bn7      BatchNorm                        7x7: the local tap
//	block3   residual units, 3x3, 4w          7 -> 5: the conv tap
//	block4   residual units, 3x3, 4w          5 -> 3
//	head     residual unit, 3x3, 8w           3 -> 1
//	bn1      BatchNorm, flattened             the fc tap (8w)
//	y        linear                           Y
//
// A residual unit is AMDIM's: conv kxk stride s (no bias) -> BatchNorm ->
// ReLU -> 1x1 conv (no bias, zero at initialisation, so each unit starts as
// its shortcut), plus a shortcut without parameters: k x k average pooling
// with the same stride, its channels padded with zeros to the unit's width.
// A block is one such unit followed by d-1 units of 1x1.
func init() {
	registry["amdim28"] = builder{[2]int{28, 28}, "AMDIM's residual encoder for 28x28 (unpadded convolutions after a padded stem): local 4w x 7x7, conv 4w x 5x5, fc 8w; --width w (default 32), --depth (default 1)",
		func(c Config) Encoder { return newAMDIM(c, "amdim28", 28, 2) }}
	registry["amdim32"] = builder{[2]int{32, 32}, "AMDIM's residual encoder for 32x32 (unpadded convolutions): local 4w x 7x7, conv 4w x 5x5, fc 8w; --width w (default 32), --depth (default 1)",
		func(c Config) Encoder { return newAMDIM(c, "amdim32", 32, 0) }}
}

// The AMDIM encoders' defaults for a width or depth of 0.
const (
	amdimWidth = 32
	amdimDepth = 1
)

// newResUnit returns AMDIM's residual unit from in to out channels (out >=
// in) with a k x k convolution of the given stride.
func newResUnit(in, out, k, stride int64) *Net {
	u := &Net{}
	first := nn.NewConv2d(in, out, k, torch.ConvOptions{Stride: stride}, false)
	last := nn.NewConv2d(out, out, 1, torch.ConvOptions{}, false) // drawn after first, as PyTorch would
	torch.NoGrad(func() { _ = last.Weight.ZeroInPlace() })
	body := u.Layer("body", nn.NewSequential(first, nn.NewBatchNorm2d(out), nn.ReLUInPlace(), last), In)
	short := In
	if k > 1 || stride > 1 {
		short = u.Layer("pool", nn.AvgPool2d(k, torch.ConvOptions{Stride: stride}), In)
	}
	if out > in {
		short = u.Op("padchannels", map[string]int64{"channels": out - in}, short)
	}
	u.Op("add", nil, body, short)
	return u
}

// newResBlock is a unit of k x k and stride s followed by depth-1 units of 1x1.
func newResBlock(in, out, k, stride int64, depth int) *nn.Sequential {
	s := nn.NewSequential(newResUnit(in, out, k, stride))
	for i := 1; i < depth; i++ {
		s.Append(newResUnit(out, out, 1, 1))
	}
	return s
}

func newAMDIM(cfg Config, name string, size int, stemPad int64) Encoder {
	w := int64(cfg.Width)
	if w <= 0 {
		w = amdimWidth
	}
	d := cfg.Depth
	if d <= 0 {
		d = amdimDepth
	}
	e := &encoder{cfg: cfg}
	h := e.Layer("stem", nn.NewSequential(nn.NewConv2d(int64(cfg.InChannels), w, 3, torch.ConvOptions{Padding: stemPad}, true), nn.ReLUInPlace()), In)
	h = e.Layer("res1", newResUnit(w, w, 1, 1), h)
	h = e.Layer("block1", newResBlock(w, 2*w, 4, 2, d), h)
	h = e.Layer("block2", newResBlock(2*w, 4*w, 2, 2, d), h)
	local := e.Layer("bn7", nn.NewBatchNorm2d(4*w), h)
	e.Output("local", local)
	conv := e.Layer("block3", newResBlock(4*w, 4*w, 3, 1, d), local)
	e.Output("conv", conv)
	h = e.Layer("block4", newResBlock(4*w, 4*w, 3, 1, d), conv)
	h = e.Layer("head", newResUnit(4*w, 8*w, 3, 1), h)
	fc := e.Op("flatten", nil, e.Layer("bn1", nn.NewBatchNorm2d(8*w), h))
	e.Output("fc", fc)
	e.Output("y", e.Layer("y", nn.NewLinear(8*w, int64(cfg.YDim), true), fc))
	return e.finish(Spec{Name: name, Input: [3]int{cfg.InChannels, size, size}})
}
