package models

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// NewDecoder maps d-dimensional codes to C x H x W images (H and W
// divisible by 4): a linear layer to a 128-channel map of H/4 x W/4, then
// twice a 2x nearest upsampling and a 3x3 convolution, with BatchNorm and
// ReLU between. With tanh the output is an image in [-1, 1] (the MS-SSIM
// measure's decoder, BiGAN's generator); without, it is the last layer's
// raw output (a VAE's or an AAE's logits or means). Upsampling and
// convolution rather than transposed convolutions: libtorch's CPU transposed
// convolution backward is an order of magnitude slower. It is the one
// decoder of the project: evaluation and the baselines share it.
func NewDecoder(d, c, h, w int64, tanh bool) *nn.Sequential {
	h0, w0 := h/4, w/4
	up := func(oh, ow int64) *nn.Func {
		return &nn.Func{Name: "upsample", Fn: func(x *torch.Tensor) *torch.Tensor { return torch.Interpolate(x, oh, ow, torch.Nearest, false) }}
	}
	dec := nn.NewSequential(
		nn.NewLinear(d, 128*h0*w0, false), nn.NewBatchNorm1d(128*h0*w0), nn.ReLU(),
		&nn.Func{Name: "unflatten", Fn: func(x *torch.Tensor) *torch.Tensor { return x.Reshape(-1, 128, h0, w0) }},
		up(2*h0, 2*w0), nn.NewConv2d(128, 64, 3, torch.ConvOptions{Padding: 1}, false), nn.NewBatchNorm2d(64), nn.ReLU(),
		up(h, w), nn.NewConv2d(64, c, 3, torch.ConvOptions{Padding: 1}, true),
	)
	if tanh {
		dec.Append(nn.Tanh())
	}
	return dec
}
