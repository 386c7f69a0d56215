package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func init() {
	registry["resnet32"] = builder{[2]int{32, 32}, "bottleneck ResNet for 32x32: stem 64, stages 256/512/1024 (s2) -> fc1024 -> Y; local 512x8x8", func(c Config) Encoder { return newResNet(c, "resnet32", 32, 1) }}
	registry["resnet64"] = builder{[2]int{64, 64}, "bottleneck ResNet for 64x64: stem 64 (s2), stages 256/512/1024 (s2) -> fc1024 -> Y; local 512x8x8", func(c Config) Encoder { return newResNet(c, "resnet64", 64, 2) }}
}

// newBottleneck returns ResNet's 1x1-3x3-1x1 block, with a projection
// shortcut when the shape changes. The shortcut runs before the body, as it
// always has, which keeps the gradients bit for bit what they were (autograd
// sums the input's gradient in that order); the body is registered first,
// which keeps the parameters' order.
func newBottleneck(in, mid, out, stride int64) *Net {
	b := &Net{}
	body := nn.Child(&b.Base, "body", nn.NewSequential(
		nn.NewConv2d(in, mid, 1, torch.ConvOptions{}, false), nn.NewBatchNorm2d(mid), nn.ReLUInPlace(),
		nn.NewConv2d(mid, mid, 3, torch.ConvOptions{Stride: stride, Padding: 1}, false), nn.NewBatchNorm2d(mid), nn.ReLUInPlace(),
		nn.NewConv2d(mid, out, 1, torch.ConvOptions{}, false), nn.NewBatchNorm2d(out),
	))
	short := In
	if in != out || stride != 1 {
		short = b.Layer("shortcut", nn.NewSequential(
			nn.NewConv2d(in, out, 1, torch.ConvOptions{Stride: stride}, false), nn.NewBatchNorm2d(out)), In)
	}
	b.Op("relu", nil, b.Op("add", nil, b.Apply(body, In), short))
	return b
}

func newResNet(cfg Config, name string, size int, stemStride int64) Encoder {
	e := &encoder{cfg: cfg}
	h := e.Layer("stem", convBNReLU(int64(cfg.InChannels), 64, 3, stemStride, 1), In)
	h = e.Layer("stage1", nn.NewSequential(newBottleneck(64, 64, 256, 2), newBottleneck(256, 64, 256, 1)), h)
	local := e.Layer("stage2", nn.NewSequential(newBottleneck(256, 128, 512, 2), newBottleneck(512, 128, 512, 1)), h)
	e.Output("local", local)
	conv := e.Layer("stage3", nn.NewSequential(newBottleneck(512, 256, 1024, 2), newBottleneck(1024, 256, 1024, 1)), local)
	e.Output("conv", conv)
	pooled := e.Op("flatten", nil, e.Op("gap", nil, conv))
	fc := e.Layer("fc1", linBNReLU(1024, 1024), pooled)
	e.Output("fc", fc)
	e.Output("y", e.Layer("y", nn.NewLinear(1024, int64(cfg.YDim), true), fc))
	return e.finish(Spec{Name: name, Input: [3]int{cfg.InChannels, size, size}})
}
