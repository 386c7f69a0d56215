package torch

/*
#include "shim.h"
*/
import "C"

import "runtime"

func (t *Tensor) reduce(op int, dims []int64, all, keepdim bool) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	n := C.int(len(dims))
	if all {
		n = -1
	}
	var out C.dt_tensor
	if e := cerr(reduceNames[op], C.dt_reduce(C.int(op), h, int64Ptr(dims), n, cbool(keepdim), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Sum adds up all elements (a 0-dimensional result).
func (t *Tensor) Sum() *Tensor { return t.reduce(redSum, nil, true, false) }

// SumDims adds up along dims.
func (t *Tensor) SumDims(dims []int64, keepdim bool) *Tensor {
	return t.reduce(redSum, dims, false, keepdim)
}

// Mean averages all elements.
func (t *Tensor) Mean() *Tensor { return t.reduce(redMean, nil, true, false) }

// MeanDims averages along dims.
func (t *Tensor) MeanDims(dims []int64, keepdim bool) *Tensor {
	return t.reduce(redMean, dims, false, keepdim)
}

// LogSumExp is log(sum(exp(t))) along dims, computed stably.
func (t *Tensor) LogSumExp(dims []int64, keepdim bool) *Tensor {
	return t.reduce(redLogSumExp, dims, false, keepdim)
}

// Max returns the largest element.
func (t *Tensor) Max() *Tensor { return t.reduce(redAmax, nil, true, false) }

// Min returns the smallest element.
func (t *Tensor) Min() *Tensor { return t.reduce(redAmin, nil, true, false) }

// AMax returns the largest values along dims.
func (t *Tensor) AMax(dims []int64, keepdim bool) *Tensor {
	return t.reduce(redAmax, dims, false, keepdim)
}

// AMin returns the smallest values along dims.
func (t *Tensor) AMin(dims []int64, keepdim bool) *Tensor {
	return t.reduce(redAmin, dims, false, keepdim)
}

// Prod multiplies along dims.
func (t *Tensor) Prod(dims []int64, keepdim bool) *Tensor {
	return t.reduce(redProd, dims, false, keepdim)
}

// Var is the variance along dims (unbiased: divided by n-1, or biased: by n).
func (t *Tensor) Var(dims []int64, unbiased, keepdim bool) *Tensor {
	if unbiased {
		return t.reduce(redVar, dims, false, keepdim)
	}
	return t.reduce(redVarBiased, dims, false, keepdim)
}

// Std is the standard deviation along dims.
func (t *Tensor) Std(dims []int64, unbiased, keepdim bool) *Tensor {
	if unbiased {
		return t.reduce(redStd, dims, false, keepdim)
	}
	return t.reduce(redStdBiased, dims, false, keepdim)
}

// MaxDim returns the largest values along dim and their indices.
func (t *Tensor) MaxDim(dim int64, keepdim bool) (values, indices *Tensor) {
	return t.minmax(mmMax, dim, keepdim)
}

// MinDim returns the smallest values along dim and their indices.
func (t *Tensor) MinDim(dim int64, keepdim bool) (values, indices *Tensor) {
	return t.minmax(mmMin, dim, keepdim)
}

func (t *Tensor) minmax(op int, dim int64, keepdim bool) (*Tensor, *Tensor) {
	name := minmaxNames[op]
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err), errTensor(err)
	}
	var v, i C.dt_tensor
	if e := cerr(name, C.dt_minmax_dim(C.int(op), h, C.int64_t(dim), cbool(keepdim), &v, &i)); e != nil {
		return errTensor(e), errTensor(e)
	}
	return wrap(v, t.scope), wrap(i, t.scope)
}

// TopK returns the k largest values along dim (sorted, largest first) and
// their indices.
func (t *Tensor) TopK(k, dim int64) (values, indices *Tensor) { return t.topk(k, dim, true) }

// BottomK returns the k smallest values along dim (sorted) and their indices.
func (t *Tensor) BottomK(k, dim int64) (values, indices *Tensor) { return t.topk(k, dim, false) }

func (t *Tensor) topk(k, dim int64, largest bool) (*Tensor, *Tensor) {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err), errTensor(err)
	}
	var v, i C.dt_tensor
	if e := cerr("topk", C.dt_topk(h, C.int64_t(k), C.int64_t(dim), cbool(largest), &v, &i)); e != nil {
		return errTensor(e), errTensor(e)
	}
	return wrap(v, t.scope), wrap(i, t.scope)
}

// Argmax returns the indices of the largest values along dim.
func (t *Tensor) Argmax(dim int64, keepdim bool) *Tensor {
	return t.argminmax(argMax, dim, false, keepdim)
}

// Argmin returns the indices of the smallest values along dim.
func (t *Tensor) Argmin(dim int64, keepdim bool) *Tensor {
	return t.argminmax(argMin, dim, false, keepdim)
}

// ArgmaxAll returns the flat index of the largest element.
func (t *Tensor) ArgmaxAll() *Tensor { return t.argminmax(argMax, 0, true, false) }

func (t *Tensor) argminmax(op int, dim int64, all, keepdim bool) *Tensor {
	name := argminmaxNames[op]
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(name, C.dt_argminmax(C.int(op), h, C.int64_t(dim), cbool(all), cbool(keepdim), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

func (t *Tensor) dimOp(op int, dim int64) *Tensor {
	name := dimNames[op]
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr(name, C.dt_dim_op(C.int(op), h, C.int64_t(dim), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}

// Softmax normalises exp(t) along dim.
func (t *Tensor) Softmax(dim int64) *Tensor { return t.dimOp(dimSoftmax, dim) }

// LogSoftmax is log(softmax(t)) along dim, computed stably.
func (t *Tensor) LogSoftmax(dim int64) *Tensor { return t.dimOp(dimLogSoftmax, dim) }

// Cumsum is the running sum along dim.
func (t *Tensor) Cumsum(dim int64) *Tensor { return t.dimOp(dimCumsum, dim) }

// Norm is the p-norm of all elements.
func (t *Tensor) Norm(p float64) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("norm", C.dt_norm(h, C.double(p), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, t.scope)
}
