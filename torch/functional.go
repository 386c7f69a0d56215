package torch

/*
#include "shim.h"
*/
import "C"

import "runtime"

// Reduction selects how a loss combines per-element values: ReduceMean (the
// zero value), ReduceNone or ReduceSum (ops.def, ops_gen.go).
type Reduction int

// code is r's code for the shim: any value but the three is the mean.
func (r Reduction) code() C.int {
	switch r {
	case ReduceMean, ReduceNone, ReduceSum:
		return C.int(r)
	}
	return C.int(ReduceMean)
}

// ConvOptions are the geometry of a 2-D convolution or pooling window. Zero
// values mean PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1.
// Each value applies to both height and width.
type ConvOptions struct {
	Stride, Padding, Dilation, Groups int64
	OutputPadding                     int64 // transposed convolutions only
}

func (o ConvOptions) pairs() (stride, padding, dilation, outPad [2]int64, groups int64) {
	s, d, g := o.Stride, o.Dilation, o.Groups
	if s == 0 {
		s = 1
	}
	if d == 0 {
		d = 1
	}
	if g == 0 {
		g = 1
	}
	return [2]int64{s, s}, [2]int64{o.Padding, o.Padding}, [2]int64{d, d}, [2]int64{o.OutputPadding, o.OutputPadding}, g
}

// Linear computes x W^T + b; b may be nil. Shapes: x [..., in], w [out, in], b [out].
func Linear(x, w, b *Tensor) *Tensor {
	defer runtime.KeepAlive(x)
	defer runtime.KeepAlive(w)
	defer runtime.KeepAlive(b)
	if err := firstErr(x, w); err != nil {
		return errTensor(err)
	}
	hb, err := optH(b)
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("linear", C.dt_linear(x.mustH(), w.mustH(), hb, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(x, w, b))
}

// SetOneDNNLinear chooses how Linear runs in float32 on the CPU: on (the
// default where libtorch has oneDNN, unless DIMTORCH_ONEDNN_LINEAR=0) as a
// 1x1 convolution on oneDNN's kernels, off as at::linear on the BLAS
// libtorch was built with. The results agree to float32 rounding; the
// oneDNN path was 2x to 4x faster for most of DIM's layer shapes on AVX-512
// with Debian's libtorch (OpenBLAS), slower for a few very wide ones
// (bench/linear_kernels.py). It is process-wide.
func SetOneDNNLinear(on bool) {
	v := 0
	if on {
		v = 1
	}
	C.dt_set_onednn_linear(C.int(v))
}

// OneDNNLinear reports whether float32 CPU Linear layers run on oneDNN.
func OneDNNLinear() bool { return C.dt_onednn_linear() != 0 }

// SetLowPrecision1x1Matmul chooses how 1x1 convolutions (stride 1, no
// padding, one group) run in bfloat16 on the CPU, under autocast or on
// bfloat16 inputs: on (the default where libtorch has oneDNN, unless
// DIMTORCH_LOWP_1X1_MATMUL=0) as a matrix product over the NHWC rows of the
// input, off as oneDNN's convolution. The results agree to bfloat16 rounding;
// forward and backward, the matrix product was 2.2x to 4.3x faster for the
// MI heads' shapes on a CPU with AMX (bench/conv_kernels.py). It is
// process-wide.
func SetLowPrecision1x1Matmul(on bool) {
	v := 0
	if on {
		v = 1
	}
	C.dt_set_lowp_1x1_matmul(C.int(v))
}

// LowPrecision1x1Matmul reports whether bfloat16 1x1 convolutions on the CPU
// run as matrix products.
func LowPrecision1x1Matmul() bool { return C.dt_lowp_1x1_matmul() != 0 }

// Conv2d convolves x [N, C, H, W] with w [O, C/groups, kH, kW]; b [O] may be nil.
func Conv2d(x, w, b *Tensor, o ConvOptions) *Tensor {
	defer runtime.KeepAlive(x)
	defer runtime.KeepAlive(w)
	defer runtime.KeepAlive(b)
	if err := firstErr(x, w); err != nil {
		return errTensor(err)
	}
	hb, err := optH(b)
	if err != nil {
		return errTensor(err)
	}
	s, p, d, _, g := o.pairs()
	var out C.dt_tensor
	if e := cerr("conv2d", C.dt_conv2d(x.mustH(), w.mustH(), hb, int64Ptr(s[:]), int64Ptr(p[:]), int64Ptr(d[:]), C.int64_t(g), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(x, w, b))
}

// ConvTranspose2d is the transposed convolution; w is [C, O/groups, kH, kW].
func ConvTranspose2d(x, w, b *Tensor, o ConvOptions) *Tensor {
	defer runtime.KeepAlive(x)
	defer runtime.KeepAlive(w)
	defer runtime.KeepAlive(b)
	if err := firstErr(x, w); err != nil {
		return errTensor(err)
	}
	hb, err := optH(b)
	if err != nil {
		return errTensor(err)
	}
	s, p, d, op, g := o.pairs()
	var out C.dt_tensor
	if e := cerr("conv_transpose2d", C.dt_conv_transpose2d(x.mustH(), w.mustH(), hb, int64Ptr(s[:]), int64Ptr(p[:]), int64Ptr(op[:]), C.int64_t(g), int64Ptr(d[:]), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(x, w, b))
}

// MaxPool2d takes the maximum over kernel x kernel windows. A zero Stride in o
// means stride = kernel, as in PyTorch.
func MaxPool2d(x *Tensor, kernel int64, o ConvOptions) *Tensor {
	defer runtime.KeepAlive(x)
	h, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	if o.Stride == 0 {
		o.Stride = kernel
	}
	s, p, d, _, _ := o.pairs()
	k := [2]int64{kernel, kernel}
	var out C.dt_tensor
	if e := cerr("max_pool2d", C.dt_max_pool2d(h, int64Ptr(k[:]), int64Ptr(s[:]), int64Ptr(p[:]), int64Ptr(d[:]), 0, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, x.scope)
}

// AvgPool2d averages over kernel x kernel windows (padding counted, as PyTorch's default).
func AvgPool2d(x *Tensor, kernel int64, o ConvOptions) *Tensor {
	defer runtime.KeepAlive(x)
	h, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	if o.Stride == 0 {
		o.Stride = kernel
	}
	s, p, _, _, _ := o.pairs()
	k := [2]int64{kernel, kernel}
	var out C.dt_tensor
	if e := cerr("avg_pool2d", C.dt_avg_pool2d(h, int64Ptr(k[:]), int64Ptr(s[:]), int64Ptr(p[:]), 0, 1, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, x.scope)
}

// AdaptiveAvgPool2d averages into an outH x outW map.
func AdaptiveAvgPool2d(x *Tensor, outH, outW int64) *Tensor {
	return adaptive(adaptiveAvg, x, outH, outW)
}

// AdaptiveMaxPool2d takes maxima into an outH x outW map.
func AdaptiveMaxPool2d(x *Tensor, outH, outW int64) *Tensor {
	return adaptive(adaptiveMax, x, outH, outW)
}

func adaptive(op int, x *Tensor, oh, ow int64) *Tensor {
	defer runtime.KeepAlive(x)
	h, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	sz := [2]int64{oh, ow}
	var out C.dt_tensor
	if e := cerr(adaptiveNames[op], C.dt_adaptive_pool2d(C.int(op), h, int64Ptr(sz[:]), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, x.scope)
}

// BatchNorm normalises over every dimension but 1. In training it uses the
// batch's statistics and updates runningMean/runningVar in place (when given)
// with the momentum; in evaluation it uses the running statistics. w, b and
// the running tensors may be nil.
func BatchNorm(x, w, b, runningMean, runningVar *Tensor, training bool, momentum, eps float64) *Tensor {
	defer runtime.KeepAlive(x)
	defer runtime.KeepAlive(w)
	defer runtime.KeepAlive(b)
	defer runtime.KeepAlive(runningMean)
	defer runtime.KeepAlive(runningVar)
	hx, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	var hs [4]C.dt_tensor
	for i, t := range []*Tensor{w, b, runningMean, runningVar} {
		if hs[i], err = optH(t); err != nil {
			return errTensor(err)
		}
	}
	var out C.dt_tensor
	if e := cerr("batch_norm", C.dt_batch_norm(hx, hs[0], hs[1], hs[2], hs[3], cbool(training), C.double(momentum), C.double(eps), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(x, w, b))
}

// LayerNorm normalises over the trailing dimensions given by shape; w and b
// (of that shape) may be nil.
func LayerNorm(x *Tensor, shape []int64, w, b *Tensor, eps float64) *Tensor {
	defer runtime.KeepAlive(x)
	defer runtime.KeepAlive(w)
	defer runtime.KeepAlive(b)
	hx, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	hw, err := optH(w)
	if err != nil {
		return errTensor(err)
	}
	hb, err := optH(b)
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("layer_norm", C.dt_layer_norm(hx, int64Ptr(shape), C.int(len(shape)), hw, hb, C.double(eps), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(x, w, b))
}

// Dropout zeroes elements with probability p and scales the rest by 1/(1-p)
// when training; it returns x unchanged (a new handle) otherwise.
func Dropout(x *Tensor, p float64, training bool) *Tensor {
	defer runtime.KeepAlive(x)
	h, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("dropout", C.dt_dropout(h, C.double(p), cbool(training), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, x.scope)
}

// InterpMode selects the interpolation of Interpolate: Nearest or Bilinear
// (ops.def, ops_gen.go).
type InterpMode int

// Interpolate resizes x [N, C, H, W] to [N, C, h, w].
func Interpolate(x *Tensor, h, w int64, mode InterpMode, alignCorners bool) *Tensor {
	defer runtime.KeepAlive(x)
	hx, err := x.handle()
	if err != nil {
		return errTensor(err)
	}
	sz := [2]int64{h, w}
	var out C.dt_tensor
	if e := cerr("interpolate", C.dt_interpolate(hx, int64Ptr(sz[:]), C.int(mode), cbool(alignCorners), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, x.scope)
}

// CrossEntropy is the softmax cross-entropy of logits [N, K] (or [N, K, ...])
// against int64 class targets [N] (or [N, ...]).
func CrossEntropy(logits, target *Tensor, r Reduction) *Tensor {
	return CrossEntropySmoothed(logits, target, r, 0)
}

// CrossEntropySmoothed is CrossEntropy with label smoothing.
func CrossEntropySmoothed(logits, target *Tensor, r Reduction, smoothing float64) *Tensor {
	defer runtime.KeepAlive(logits)
	defer runtime.KeepAlive(target)
	if err := firstErr(logits, target); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("cross_entropy", C.dt_cross_entropy(logits.mustH(), target.mustH(), r.code(), C.double(smoothing), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(logits, target))
}

// MSELoss is the squared error between a and b.
func MSELoss(a, b *Tensor, r Reduction) *Tensor {
	defer runtime.KeepAlive(a)
	defer runtime.KeepAlive(b)
	if err := firstErr(a, b); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("mse_loss", C.dt_mse_loss(a.mustH(), b.mustH(), r.code(), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(a, b))
}

// BCEWithLogits is the binary cross-entropy of sigmoid(x) against targets y
// in [0, 1], computed stably from the logits.
func BCEWithLogits(x, y *Tensor, r Reduction) *Tensor {
	defer runtime.KeepAlive(x)
	defer runtime.KeepAlive(y)
	if err := firstErr(x, y); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("bce_with_logits", C.dt_bce_with_logits(x.mustH(), y.mustH(), r.code(), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(x, y))
}
