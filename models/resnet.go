package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func init() {
	registry["resnet32"] = builder{[2]int{32, 32}, "bottleneck ResNet for 32x32: stem 64, stages 256/512/1024 (s2) -> fc1024 -> Y; local 512x8x8", func(c Config) Encoder { return newResNet(c, "resnet32", 32, 1) }}
	registry["resnet64"] = builder{[2]int{64, 64}, "bottleneck ResNet for 64x64: stem 64 (s2), stages 256/512/1024 (s2) -> fc1024 -> Y; local 512x8x8", func(c Config) Encoder { return newResNet(c, "resnet64", 64, 2) }}
}

// bottleneck is ResNet's 1x1-3x3-1x1 block with a projection shortcut when
// the shape changes.
type bottleneck struct {
	nn.Base
	body     *nn.Sequential
	shortcut *nn.Sequential // nil for the identity
}

func newBottleneck(in, mid, out, stride int64) *bottleneck {
	b := &bottleneck{}
	b.body = nn.Child(&b.Base, "body", nn.NewSequential(
		nn.NewConv2d(in, mid, 1, torch.ConvOptions{}, false), nn.NewBatchNorm2d(mid), nn.ReLUInPlace(),
		nn.NewConv2d(mid, mid, 3, torch.ConvOptions{Stride: stride, Padding: 1}, false), nn.NewBatchNorm2d(mid), nn.ReLUInPlace(),
		nn.NewConv2d(mid, out, 1, torch.ConvOptions{}, false), nn.NewBatchNorm2d(out),
	))
	if in != out || stride != 1 {
		b.shortcut = nn.Child(&b.Base, "shortcut", nn.NewSequential(
			nn.NewConv2d(in, out, 1, torch.ConvOptions{Stride: stride}, false), nn.NewBatchNorm2d(out)))
	}
	return b
}

func (b *bottleneck) Forward(x *torch.Tensor) *torch.Tensor {
	s := x
	if b.shortcut != nil {
		s = b.shortcut.Forward(x)
	}
	return b.body.Forward(x).Add(s).Relu()
}

type resnet struct {
	nn.Base
	spec                         Spec
	cfg                          Config
	stem, stage1, stage2, stage3 nn.Layer
	fc                           *nn.Sequential
	y                            *nn.Linear
}

func newResNet(cfg Config, name string, size int, stemStride int64) Encoder {
	r := &resnet{cfg: cfg}
	r.stem = nn.Child(&r.Base, "stem", convBNReLU(int64(cfg.InChannels), 64, 3, stemStride, 1))
	r.stage1 = nn.Child(&r.Base, "stage1", nn.NewSequential(newBottleneck(64, 64, 256, 2), newBottleneck(256, 64, 256, 1)))
	r.stage2 = nn.Child(&r.Base, "stage2", nn.NewSequential(newBottleneck(256, 128, 512, 2), newBottleneck(512, 128, 512, 1)))
	r.stage3 = nn.Child(&r.Base, "stage3", nn.NewSequential(newBottleneck(512, 256, 1024, 2), newBottleneck(1024, 256, 1024, 1)))
	r.fc = nn.Child(&r.Base, "fc1", linBNReLU(1024, 1024))
	r.y = nn.Child(&r.Base, "y", nn.NewLinear(1024, int64(cfg.YDim), true))
	r.spec = Spec{Name: name, Input: [3]int{cfg.InChannels, size, size}}
	probeSpec(r, &r.spec)
	return r
}

func (r *resnet) Spec() Spec     { return r.spec }
func (r *resnet) Config() Config { return r.cfg }

func (r *resnet) Encode(x *torch.Tensor) Taps {
	var t Taps
	h := r.stage1.Forward(r.stem.Forward(x))
	t.Local = r.stage2.Forward(h)
	t.Conv = r.stage3.Forward(t.Local)
	t.FC = r.fc.Forward(torch.AdaptiveAvgPool2d(t.Conv, 1, 1).Flatten(1, -1))
	t.Y = r.y.Forward(t.FC)
	return t
}
