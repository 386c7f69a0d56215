package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func init() {
	registry["basic28"] = builder{[2]int{28, 28}, "MNIST-sized convnet: conv64-conv128 (k5 s2) -> fc1024 -> Y; local 128x7x7", newBasic28}
	registry["dcgan32"] = builder{[2]int{32, 32}, "DCGAN-style 32x32 convnet of the paper's Table 1: conv64-128-256 (k4 s2) -> fc1024 -> Y; local 128x8x8", newDCGAN32}
	registry["basic64"] = builder{[2]int{64, 64}, "64x64 convnet: conv64-128-256-512 (k4 s2) -> fc1024 -> Y; local 256x8x8", newBasic64}
	registry["alex64"] = builder{[2]int{64, 64}, "AlexNet-style 64x64: conv96-192-384-384-192 with pooling -> fc4096-fc4096 -> Y; local 384x15x15", newAlex64}
}

// newConvnet builds a stack of conv stages named conv1, conv2, ... (the
// local tap after stage localAt, counting from 0, the conv tap after the
// last), then fully connected layers fc1, ... and the Y layer.
func newConvnet(cfg Config, name string, in [2]int, stages []*nn.Sequential, localAt int, convOut int64, fcDims ...int64) Encoder {
	e := &encoder{cfg: cfg}
	h := In
	for i, s := range stages {
		h = e.Layer("conv"+itoa(i+1), s, h)
		if i == localAt {
			e.Output("local", h)
		}
	}
	e.Output("conv", h)
	h = e.Op("flatten", nil, h)
	prev := convOut
	for i, d := range fcDims {
		h = e.Layer("fc"+itoa(i+1), linBNReLU(prev, d), h)
		prev = d
	}
	e.Output("fc", h)
	e.Output("y", e.Layer("y", nn.NewLinear(prev, int64(cfg.YDim), true), h))
	return e.finish(Spec{Name: name, Input: [3]int{cfg.InChannels, in[0], in[1]}})
}

func newBasic28(cfg Config) Encoder {
	ic := int64(cfg.InChannels)
	stages := []*nn.Sequential{convBNReLU(ic, 64, 5, 2, 2), convBNReLU(64, 128, 5, 2, 2)}
	return newConvnet(cfg, "basic28", [2]int{28, 28}, stages, 1, 128*7*7, 1024)
}

func newDCGAN32(cfg Config) Encoder {
	ic := int64(cfg.InChannels)
	stages := []*nn.Sequential{convBNReLU(ic, 64, 4, 2, 1), convBNReLU(64, 128, 4, 2, 1), convBNReLU(128, 256, 4, 2, 1)}
	return newConvnet(cfg, "dcgan32", [2]int{32, 32}, stages, 1, 256*4*4, 1024)
}

func newBasic64(cfg Config) Encoder {
	ic := int64(cfg.InChannels)
	stages := []*nn.Sequential{convBNReLU(ic, 64, 4, 2, 1), convBNReLU(64, 128, 4, 2, 1), convBNReLU(128, 256, 4, 2, 1), convBNReLU(256, 512, 4, 2, 1)}
	return newConvnet(cfg, "basic64", [2]int{64, 64}, stages, 2, 512*4*4, 1024)
}

func pool3s2() nn.Layer { return nn.MaxPool2d(3, torch.ConvOptions{Stride: 2}) }

func newAlex64(cfg Config) Encoder {
	ic := int64(cfg.InChannels)
	s1 := convBNReLU(ic, 96, 3, 1, 1)
	s1.Append(pool3s2()) // 64 -> 31
	s2 := convBNReLU(96, 192, 3, 1, 1)
	s2.Append(pool3s2()) // 31 -> 15
	s3 := convBNReLU(192, 384, 3, 1, 1)
	s4 := convBNReLU(384, 384, 3, 1, 1)
	s5 := convBNReLU(384, 192, 3, 1, 1)
	s5.Append(pool3s2()) // 15 -> 7
	return newConvnet(cfg, "alex64", [2]int{64, 64}, []*nn.Sequential{s1, s2, s3, s4, s5}, 2, 192*7*7, 4096, 4096)
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
