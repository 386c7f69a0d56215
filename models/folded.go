package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Folded encoders cut the image into a 7x7 grid of overlapping crops (stride
// half the crop), run a trunk on every crop, fold the per-crop vectors back
// into a 7x7 map (the local features) and continue with a head.

func init() {
	registry["fold-alex64"] = builder{[2]int{64, 64}, "folded AlexNet-style: 7x7 grid of 16x16 crops -> per-crop 256-d trunk -> conv head -> fc1024 -> Y; local 256x7x7", func(c Config) Encoder { return newFoldAlex(c, false) }}
	registry["fold-multi-alex64"] = builder{[2]int{64, 64}, "folded AlexNet-style with a 5x5 map of 25 globals against 49 locals", func(c Config) Encoder { return newFoldAlex(c, true) }}
	registry["fold-resnet32"] = builder{[2]int{32, 32}, "folded ResNet: 7x7 grid of 8x8 crops -> per-crop 512-d bottleneck trunk -> bottleneck head -> fc1024 -> Y; local 512x7x7", newFoldResNet}
}

// Crops cuts x [N, C, H, W] into a grid x grid of crop x crop windows at the
// given stride, as one batch [N*grid*grid, C, crop, crop] (row-major grid).
func Crops(x *torch.Tensor, crop, stride int64) *torch.Tensor {
	n, c := x.Size(0), x.Size(1)
	p := x.Unfold(2, crop, stride).Unfold(3, crop, stride) // [N, C, g, g, crop, crop]
	g := p.Size(2)
	return p.Permute(0, 2, 3, 1, 4, 5).Reshape(n*g*g, c, crop, crop)
}

// FoldBack turns per-crop vectors [N*g*g, D] into a map [N, D, g, g].
func FoldBack(v *torch.Tensor, n, g int64) *torch.Tensor {
	d := v.Size(1)
	return v.Reshape(n, g, g, d).Permute(0, 3, 1, 2).Contiguous()
}

// foldTrunk starts a folded encoder: the crops of the image, the trunk on
// every crop (ending in [*, dim, 1, 1]) and the per-crop vectors folded back
// into the local map, which it returns.
func foldTrunk(e *encoder, crop, stride, dim int64, trunk *nn.Sequential) Value {
	c := e.Op("crops", map[string]int64{"crop": crop, "stride": stride, "grid": 7, "channels": int64(e.cfg.InChannels)}, In)
	v := e.Op("flatten", nil, e.Layer("trunk", trunk, c))
	local := e.Op("foldback", map[string]int64{"grid": 7, "channels": dim}, v)
	e.Output("local", local)
	return local
}

func newFoldAlex(cfg Config, multi bool) Encoder {
	e := &encoder{cfg: cfg}
	ic := int64(cfg.InChannels)
	trunk := convBNReLU(ic, 96, 3, 1, 1)
	trunk.Append(nn.MaxPool2d(2, torch.ConvOptions{})) // 16 -> 8
	for _, l := range convBNReLU(96, 192, 3, 1, 1).Layers {
		trunk.Append(l)
	}
	trunk.Append(nn.MaxPool2d(2, torch.ConvOptions{})) // 8 -> 4
	for _, s := range []*nn.Sequential{convBNReLU(192, 384, 3, 1, 1), convBNReLU(384, 384, 3, 1, 1), convBNReLU(384, 256, 4, 1, 0)} {
		for _, l := range s.Layers {
			trunk.Append(l)
		}
	}
	local := foldTrunk(e, 16, 8, 256, trunk)
	name := "fold-alex64"
	if multi {
		name = "fold-multi-alex64"
		head := convBNReLU(256, 512, 3, 1, 0) // 7 -> 5
		for _, l := range convBNReLU(512, 512, 1, 1, 0).Layers {
			head.Append(l)
		}
		conv := e.Layer("head", head, local)
		e.Output("conv", conv)
		g := e.Op("globals", nil, e.Layer("y", nn.NewConv2d(512, int64(cfg.YDim), 1, torch.ConvOptions{}, true), conv)) // [N, 25, D]
		e.Output("globals", g)
		e.Output("fc", e.Op("flatten", nil, e.Op("gap", nil, conv)))
		e.Output("y", e.Op("meanglobals", nil, g))
	} else {
		head := convBNReLU(256, 512, 3, 1, 1)
		for _, l := range convBNReLU(512, 512, 3, 2, 1).Layers { // 7 -> 4
			head.Append(l)
		}
		conv := e.Layer("head", head, local)
		e.Output("conv", conv)
		fc := e.Layer("fc1", nn.NewSequential(nn.Flatten(), nn.NewLinear(512*4*4, 1024, false), nn.NewBatchNorm1d(1024), nn.ReLUInPlace()), conv)
		e.Output("fc", fc)
		e.Output("y", e.Layer("y", nn.NewLinear(1024, int64(cfg.YDim), true), fc))
	}
	return e.finish(Spec{Name: name, Input: [3]int{cfg.InChannels, 64, 64}, Folded: &Folded{Crop: 16, Stride: 8, Grid: 7}})
}

func newFoldResNet(cfg Config) Encoder {
	e := &encoder{cfg: cfg}
	trunk := convBNReLU(int64(cfg.InChannels), 64, 3, 1, 1)
	trunk.Append(newBottleneck(64, 64, 256, 2))   // 8 -> 4
	trunk.Append(newBottleneck(256, 128, 512, 2)) // 4 -> 2
	trunk.Append(nn.AdaptiveAvgPool2d(1, 1))
	local := foldTrunk(e, 8, 4, 512, trunk)
	conv := e.Layer("head", nn.NewSequential(newBottleneck(512, 256, 1024, 2)), local) // 7 -> 4
	e.Output("conv", conv)
	fc := e.Layer("fc1", nn.NewSequential(nn.AdaptiveAvgPool2d(1, 1), nn.Flatten(), nn.NewLinear(1024, 1024, false), nn.NewBatchNorm1d(1024), nn.ReLUInPlace()), conv)
	e.Output("fc", fc)
	e.Output("y", e.Layer("y", nn.NewLinear(1024, int64(cfg.YDim), true), fc))
	return e.finish(Spec{Name: "fold-resnet32", Input: [3]int{cfg.InChannels, 32, 32}, Folded: &Folded{Crop: 8, Stride: 4, Grid: 7}})
}
