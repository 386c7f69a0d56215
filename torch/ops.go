package torch

/*
#include "shim.h"
*/
import "C"

//go:generate go run ./internal/genops

// The operator codes (opNeg, binAdd, ...) and their names come from ops.def
// through ops_gen.go; the shim's cases for them from shim_ops.h.

import (
	"runtime"
	"unsafe"
)

func (t *Tensor) unary(op int) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(unaryNames[op], C.dt_unary(C.int(op), h, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

func binaryOp(op int, a, b *Tensor) *Tensor {
	defer runtime.KeepAlive(a)
	defer runtime.KeepAlive(b)
	ha, err := a.handle()
	if err != nil {
		return errTensor(err)
	}
	hb, err := b.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(binaryNames[op], C.dt_binary(C.int(op), ha, hb, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(a, b))
}

func (t *Tensor) scalar(op int, s float64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(scalarNames[op], C.dt_scalar_op(C.int(op), h, C.double(s), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Elementwise functions.

func (t *Tensor) Neg() *Tensor        { return t.unary(opNeg) }
func (t *Tensor) Exp() *Tensor        { return t.unary(opExp) }
func (t *Tensor) Log() *Tensor        { return t.unary(opLog) }
func (t *Tensor) Log1p() *Tensor      { return t.unary(opLog1p) }
func (t *Tensor) Expm1() *Tensor      { return t.unary(opExpm1) }
func (t *Tensor) Sigmoid() *Tensor    { return t.unary(opSigmoid) }
func (t *Tensor) LogSigmoid() *Tensor { return t.unary(opLogSigmoid) }
func (t *Tensor) Tanh() *Tensor       { return t.unary(opTanh) }
func (t *Tensor) Relu() *Tensor       { return t.unary(opRelu) }
func (t *Tensor) Gelu() *Tensor       { return t.unary(opGelu) }
func (t *Tensor) Elu() *Tensor        { return t.unary(opElu) }
func (t *Tensor) Sqrt() *Tensor       { return t.unary(opSqrt) }
func (t *Tensor) Rsqrt() *Tensor      { return t.unary(opRsqrt) }
func (t *Tensor) Abs() *Tensor        { return t.unary(opAbs) }
func (t *Tensor) Square() *Tensor     { return t.unary(opSquare) }
func (t *Tensor) Sign() *Tensor       { return t.unary(opSign) }
func (t *Tensor) Floor() *Tensor      { return t.unary(opFloor) }
func (t *Tensor) Ceil() *Tensor       { return t.unary(opCeil) }
func (t *Tensor) Round() *Tensor      { return t.unary(opRound) }
func (t *Tensor) Sin() *Tensor        { return t.unary(opSin) }
func (t *Tensor) Cos() *Tensor        { return t.unary(opCos) }
func (t *Tensor) Erf() *Tensor        { return t.unary(opErf) }
func (t *Tensor) Reciprocal() *Tensor { return t.unary(opReciprocal) }
func (t *Tensor) LogicalNot() *Tensor { return t.unary(opLogicalNot) }
func (t *Tensor) IsNaN() *Tensor      { return t.unary(opIsNaN) }
func (t *Tensor) IsFinite() *Tensor   { return t.unary(opIsFinite) }

// Contiguous returns a tensor with row-major memory layout (t itself shares
// storage when already contiguous).
func (t *Tensor) Contiguous() *Tensor { return t.unary(opContiguous) }

// Detach returns a tensor sharing storage with t but cut from the autograd graph.
func (t *Tensor) Detach() *Tensor { return t.unary(opDetach) }

// Clone returns a copy of t with its own storage (differentiable).
func (t *Tensor) Clone() *Tensor { return t.unary(opClone) }

// T transposes a matrix (a tensor of at most two dimensions).
func (t *Tensor) T() *Tensor { return t.unary(opT) }

// Broadcasting arithmetic and comparisons between tensors.

func (t *Tensor) Add(o *Tensor) *Tensor        { return binaryOp(binAdd, t, o) }
func (t *Tensor) Sub(o *Tensor) *Tensor        { return binaryOp(binSub, t, o) }
func (t *Tensor) Mul(o *Tensor) *Tensor        { return binaryOp(binMul, t, o) }
func (t *Tensor) Div(o *Tensor) *Tensor        { return binaryOp(binDiv, t, o) }
func (t *Tensor) Pow(o *Tensor) *Tensor        { return binaryOp(binPow, t, o) }
func (t *Tensor) Remainder(o *Tensor) *Tensor  { return binaryOp(binRemainder, t, o) }
func (t *Tensor) Maximum(o *Tensor) *Tensor    { return binaryOp(binMaximum, t, o) }
func (t *Tensor) Minimum(o *Tensor) *Tensor    { return binaryOp(binMinimum, t, o) }
func (t *Tensor) Eq(o *Tensor) *Tensor         { return binaryOp(binEq, t, o) }
func (t *Tensor) Ne(o *Tensor) *Tensor         { return binaryOp(binNe, t, o) }
func (t *Tensor) Lt(o *Tensor) *Tensor         { return binaryOp(binLt, t, o) }
func (t *Tensor) Le(o *Tensor) *Tensor         { return binaryOp(binLe, t, o) }
func (t *Tensor) Gt(o *Tensor) *Tensor         { return binaryOp(binGt, t, o) }
func (t *Tensor) Ge(o *Tensor) *Tensor         { return binaryOp(binGe, t, o) }
func (t *Tensor) LogicalAnd(o *Tensor) *Tensor { return binaryOp(binLogicalAnd, t, o) }
func (t *Tensor) LogicalOr(o *Tensor) *Tensor  { return binaryOp(binLogicalOr, t, o) }

// Matmul is matrix multiplication with PyTorch's broadcasting rules.
func (t *Tensor) Matmul(o *Tensor) *Tensor { return binaryOp(binMatmul, t, o) }

// Bmm multiplies batches of matrices: [B,n,m] x [B,m,p] -> [B,n,p].
func (t *Tensor) Bmm(o *Tensor) *Tensor { return binaryOp(binBmm, t, o) }

// Mm multiplies two matrices.
func (t *Tensor) Mm(o *Tensor) *Tensor { return binaryOp(binMm, t, o) }

// Arithmetic and comparisons with a scalar.

func (t *Tensor) AddScalar(s float64) *Tensor { return t.scalar(scAdd, s) }
func (t *Tensor) SubScalar(s float64) *Tensor { return t.scalar(scSub, s) }
func (t *Tensor) MulScalar(s float64) *Tensor { return t.scalar(scMul, s) }
func (t *Tensor) DivScalar(s float64) *Tensor { return t.scalar(scDiv, s) }
func (t *Tensor) PowScalar(s float64) *Tensor { return t.scalar(scPow, s) }
func (t *Tensor) EqScalar(s float64) *Tensor  { return t.scalar(scEq, s) }
func (t *Tensor) NeScalar(s float64) *Tensor  { return t.scalar(scNe, s) }
func (t *Tensor) LtScalar(s float64) *Tensor  { return t.scalar(scLt, s) }
func (t *Tensor) LeScalar(s float64) *Tensor  { return t.scalar(scLe, s) }
func (t *Tensor) GtScalar(s float64) *Tensor  { return t.scalar(scGt, s) }
func (t *Tensor) GeScalar(s float64) *Tensor  { return t.scalar(scGe, s) }

// RemainderScalar returns t mod s with the sign of s, as Python's %.
func (t *Tensor) RemainderScalar(s float64) *Tensor { return t.scalar(scRemainder, s) }

// RSub returns s - t.
func (t *Tensor) RSub(s float64) *Tensor { return t.scalar(scRSub, s) }

// RDiv returns s / t.
func (t *Tensor) RDiv(s float64) *Tensor { return t.scalar(scRDiv, s) }

// RPow returns s ** t.
func (t *Tensor) RPow(s float64) *Tensor { return t.scalar(scRPow, s) }

// Clamp limits values to [min, max].
func (t *Tensor) Clamp(min, max float64) *Tensor { return t.clamp(true, min, true, max) }

// ClampMin limits values from below.
func (t *Tensor) ClampMin(min float64) *Tensor { return t.clamp(true, min, false, 0) }

// ClampMax limits values from above.
func (t *Tensor) ClampMax(max float64) *Tensor { return t.clamp(false, 0, true, max) }

func (t *Tensor) clamp(hasMin bool, min float64, hasMax bool, max float64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("clamp", C.dt_clamp(h, cbool(hasMin), C.double(min), cbool(hasMax), C.double(max), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// LeakyRelu is max(x, 0) + slope * min(x, 0).
func (t *Tensor) LeakyRelu(slope float64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("leaky_relu", C.dt_leaky_relu(h, C.double(slope), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Softplus is log(1 + exp(x)), computed stably (PyTorch's beta 1, threshold 20).
func (t *Tensor) Softplus() *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("softplus", C.dt_softplus(h, 1, 20, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Where picks a where cond is true and b elsewhere (broadcasting).
func Where(cond, a, b *Tensor) *Tensor {
	defer runtime.KeepAlive(cond)
	defer runtime.KeepAlive(a)
	defer runtime.KeepAlive(b)
	if err := firstErr(cond, a, b); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("where", C.dt_where(cond.mustH(), a.mustH(), b.mustH(), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(cond, a, b))
}

// MaskedFill returns t with value wherever mask (bool, broadcastable) is true.
func (t *Tensor) MaskedFill(mask *Tensor, value float64) *Tensor {
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(mask)
	if err := firstErr(t, mask); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("masked_fill", C.dt_masked_fill(t.mustH(), mask.mustH(), C.double(value), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(t, mask))
}

// mustH returns the handle of a tensor already checked by firstErr.
func (t *Tensor) mustH() C.dt_tensor { return C.dt_tensor(t.h) }

// optH returns the handle of an optional tensor (nil stays nil).
func optH(t *Tensor) (C.dt_tensor, error) {
	if t == nil {
		return nil, nil
	}
	return t.handle()
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func int64Ptr(v []int64) *C.int64_t {
	if len(v) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&v[0]))
}

func handles(ts []*Tensor) ([]C.dt_tensor, error) {
	defer runtime.KeepAlive(ts)
	hs := make([]C.dt_tensor, len(ts))
	for i, t := range ts {
		h, err := t.handle()
		if err != nil {
			return nil, err
		}
		hs[i] = h
	}
	return hs, nil
}

// ChannelsLast returns a 4-D tensor with the same values laid out as NHWC in
// memory (PyTorch's channels_last memory format; the shape stays NCHW). oneDNN's
// convolutions run fastest on it, and the results of convolutions, batch norm
// and activations of such tensors keep the layout.
func (t *Tensor) ChannelsLast() *Tensor { return t.unary(opChannelsLast) }

// IsChannelsLast reports whether t is laid out as channels_last.
func (t *Tensor) IsChannelsLast() bool {
	r := t.unary(opIsChannelsLast)
	defer r.Free()
	v, err := r.Item()
	return err == nil && v != 0
}

// ReluInPlace overwrites t with relu(t) and returns it (as a new handle),
// recorded by autograd like PyTorch's relu_: use it where nothing else
// reads t's old values (after a BatchNorm, whose backward needs its input,
// not its output). It saves the result's allocation and a pass over memory.
func (t *Tensor) ReluInPlace() *Tensor { return t.unary(opReluInPlace) }
