package torch

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import "runtime"

import "unsafe"

func (t *Tensor) shapeOp(op int, dims []int64) *Tensor {
	name := shapeNames[op]
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(name, C.dt_shape_op(C.int(op), h, int64Ptr(dims), C.int(len(dims)), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Reshape returns t with a new shape (one size may be -1), sharing storage
// when possible.
func (t *Tensor) Reshape(shape ...int64) *Tensor { return t.shapeOp(shReshape, shape) }

// View is Reshape that never copies: it fails on incompatible strides.
func (t *Tensor) View(shape ...int64) *Tensor { return t.shapeOp(shView, shape) }

// Permute reorders the dimensions.
func (t *Tensor) Permute(dims ...int64) *Tensor { return t.shapeOp(shPermute, dims) }

// Expand broadcasts size-1 dimensions to the given sizes without copying
// (-1 keeps a size).
func (t *Tensor) Expand(sizes ...int64) *Tensor { return t.shapeOp(shExpand, sizes) }

// Repeat tiles the tensor reps[i] times along dimension i.
func (t *Tensor) Repeat(reps ...int64) *Tensor { return t.shapeOp(shRepeat, reps) }

// Flip reverses the order of elements along dims.
func (t *Tensor) Flip(dims ...int64) *Tensor { return t.shapeOp(shFlip, dims) }

// Transpose swaps two dimensions.
func (t *Tensor) Transpose(d0, d1 int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("transpose", C.dt_transpose(h, C.int64_t(d0), C.int64_t(d1), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Flatten merges dimensions start..end (inclusive; -1 is the last).
func (t *Tensor) Flatten(start, end int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("flatten", C.dt_flatten(h, C.int64_t(start), C.int64_t(end), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Squeeze removes dimension dim if its size is 1.
func (t *Tensor) Squeeze(dim int64) *Tensor { return t.squeeze(dim, false) }

// SqueezeAll removes every dimension of size 1.
func (t *Tensor) SqueezeAll() *Tensor { return t.squeeze(0, true) }

func (t *Tensor) squeeze(dim int64, all bool) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("squeeze", C.dt_squeeze(h, C.int64_t(dim), cbool(all), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Unsqueeze inserts a dimension of size 1 at dim.
func (t *Tensor) Unsqueeze(dim int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("unsqueeze", C.dt_unsqueeze(h, C.int64_t(dim), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Narrow returns the view of length elements from start along dim.
func (t *Tensor) Narrow(dim, start, length int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("narrow", C.dt_narrow(h, C.int64_t(dim), C.int64_t(start), C.int64_t(length), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Slice returns the view start:end:step along dim, as Python's slicing.
func (t *Tensor) Slice(dim, start, end, step int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("slice", C.dt_slice(h, C.int64_t(dim), C.int64_t(start), C.int64_t(end), C.int64_t(step), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Select returns the view at index along dim, with that dimension removed.
func (t *Tensor) Select(dim, index int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("select", C.dt_select(h, C.int64_t(dim), C.int64_t(index), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// IndexSelect picks the entries at index (int64, 1-D) along dim.
func (t *Tensor) IndexSelect(dim int64, index *Tensor) *Tensor {
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(index)
	if err := firstErr(t, index); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("index_select", C.dt_index_select(t.mustH(), C.int64_t(dim), index.mustH(), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(t, index))
}

// Gather picks out[i][j] = t[index[i][j]][j] (for dim 0) and so on.
func (t *Tensor) Gather(dim int64, index *Tensor) *Tensor {
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(index)
	if err := firstErr(t, index); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("gather", C.dt_gather(t.mustH(), C.int64_t(dim), index.mustH(), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(t, index))
}

// Scatter returns a copy of t with src written at index along dim.
func (t *Tensor) Scatter(dim int64, index, src *Tensor) *Tensor {
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(index)
	defer runtime.KeepAlive(src)
	if err := firstErr(t, index, src); err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("scatter", C.dt_scatter(t.mustH(), C.int64_t(dim), index.mustH(), src.mustH(), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(t, index, src))
}

// Unfold returns all windows of the given size and step along dim, as a new
// last dimension (a view).
func (t *Tensor) Unfold(dim, size, step int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("unfold", C.dt_unfold(h, C.int64_t(dim), C.int64_t(size), C.int64_t(step), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Cat joins tensors along an existing dimension.
func Cat(ts []*Tensor, dim int64) *Tensor { return catStack(ts, dim, false) }

// Stack joins tensors along a new dimension.
func Stack(ts []*Tensor, dim int64) *Tensor { return catStack(ts, dim, true) }

func catStack(ts []*Tensor, dim int64, stack bool) *Tensor {
	defer runtime.KeepAlive(ts)
	name := "cat"
	if stack {
		name = "stack"
	}
	if len(ts) == 0 {
		return errorf(name, "no tensors")
	}
	hs, err := handles(ts)
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(name, C.dt_cat(&hs[0], C.int(len(hs)), C.int64_t(dim), cbool(stack), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(ts...))
}

// Split cuts t into pieces of splitSize along dim (the last may be smaller).
func (t *Tensor) Split(splitSize, dim int64) ([]*Tensor, error) {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	size := t.Size(int(dim))
	if size < 0 || splitSize <= 0 {
		return nil, &Error{Op: "split", Msg: "invalid dimension or split size"}
	}
	capacity := int((size + splitSize - 1) / splitSize)
	if capacity == 0 {
		capacity = 1
	}
	outs := make([]C.dt_tensor, capacity)
	var n C.int
	if e := cerr("split", C.dt_split(h, C.int64_t(splitSize), C.int64_t(dim), &outs[0], C.int(capacity), &n)); e != nil {
		return nil, e
	}
	res := make([]*Tensor, int(n))
	for i := range res {
		res[i] = wrap(outs[i], t.scope)
	}
	return res, nil
}

// OneHot encodes int64 class indices as a one-hot int64 tensor with a new last
// dimension of the given number of classes.
func (t *Tensor) OneHot(classes int64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("one_hot", C.dt_one_hot(h, C.int64_t(classes), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// PadMode selects how Pad fills the border: PadConstant, PadReflect,
// PadReplicate or PadCircular (ops.def, ops_gen.go).
type PadMode int

// Pad pads the last dimensions: pad lists (before, after) pairs starting from
// the last dimension, as torch.nn.functional.pad.
func (t *Tensor) Pad(pad []int64, mode PadMode, value float64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("pad", C.dt_pad(h, int64Ptr(pad), C.int(len(pad)), C.int(mode), C.double(value), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Einsum evaluates an Einstein summation such as "nlc,nmc->nlm".
func Einsum(equation string, ts ...*Tensor) *Tensor {
	if len(ts) == 0 {
		return errorf("einsum", "no operands")
	}
	hs, err := handles(ts)
	if err != nil {
		return errTensor(err)
	}
	eq := C.CString(equation)
	defer C.free(unsafe.Pointer(eq))
	var out C.dt_tensor
	if e := cerr("einsum", C.dt_einsum(eq, &hs[0], C.int(len(hs)), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, scopeOf(ts...))
}
