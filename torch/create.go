package torch

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"reflect"
	"runtime"
	"unsafe"
)

// Element is a Go type that maps one-to-one onto a tensor element type.
type Element interface {
	~float32 | ~float64 | ~int64 | ~int32 | ~int16 | ~int8 | ~uint8 | ~bool
}

// DTypeOf returns the tensor element type that matches E.
func DTypeOf[E Element]() DType {
	var z E
	switch reflect.TypeOf(z).Kind() {
	case reflect.Float32:
		return Float32
	case reflect.Float64:
		return Float64
	case reflect.Int64:
		return Int64
	case reflect.Int32:
		return Int32
	case reflect.Int16:
		return Int16
	case reflect.Int8:
		return Int8
	case reflect.Uint8:
		return Uint8
	case reflect.Bool:
		return Bool
	}
	return Invalid
}

func shapeArgs(shape []int64) (*C.int64_t, C.int) {
	if len(shape) == 0 {
		return nil, 0
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0])), C.int(len(shape))
}

func numelOf(shape []int64) (int64, error) {
	n := int64(1)
	for _, s := range shape {
		if s < 0 {
			return 0, fmt.Errorf("negative size %d in shape %v", s, shape)
		}
		n *= s
	}
	return n, nil
}

// FromSlice copies data into a new tensor of the given shape. The element type
// follows E; a DType option converts after the copy, a Device option places
// the tensor, a *Scope option owns it.
func FromSlice[E Element](data []E, shape []int64, opts ...Option) *Tensor {
	dt := DTypeOf[E]()
	o := makeOptions(dt, opts)
	n, err := numelOf(shape)
	if err != nil {
		return errTensor(&Error{Op: "from_slice", Msg: err.Error()})
	}
	if n != int64(len(data)) {
		return errorf("from_slice", "shape %v needs %d elements, slice has %d", shape, n, len(data))
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	sp, nd := shapeArgs(shape)
	var out C.dt_tensor
	if e := cerr("from_slice", C.dt_from_data(p, sp, nd, C.int(dt), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	t := wrap(out, o.scope)
	if o.dtypeSet && o.dtype != dt {
		u := t.To(o.dtype)
		t.Free()
		return u
	}
	return t
}

// Scalar returns a 0-dimensional float32 tensor (or another DType by option).
func Scalar(v float64, opts ...Option) *Tensor { return Full(nil, v, opts...) }

// Data copies the tensor's elements (moved to the CPU, in row-major order) into
// a new slice. The element type must match the tensor's exactly.
func Data[E Element](t *Tensor) ([]E, error) {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	want := DTypeOf[E]()
	if got := DType(C.dt_dtype(h)); got != want {
		return nil, &Error{Op: "data", Msg: fmt.Sprintf("tensor is %v, not %v: convert with To first", got, want)}
	}
	n := int64(C.dt_numel(h))
	out := make([]E, n)
	if n == 0 {
		return out, nil
	}
	if e := cerr("data", C.dt_copy_to(h, unsafe.Pointer(&out[0]), C.size_t(n*int64(want.ElemSize())))); e != nil {
		return nil, e
	}
	return out, nil
}

// Float32s returns the elements converted to float32.
func (t *Tensor) Float32s() ([]float32, error) { return convertedData[float32](t, Float32) }

// Float64s returns the elements converted to float64.
func (t *Tensor) Float64s() ([]float64, error) { return convertedData[float64](t, Float64) }

// Int64s returns the elements converted to int64.
func (t *Tensor) Int64s() ([]int64, error) { return convertedData[int64](t, Int64) }

func convertedData[E Element](t *Tensor, d DType) ([]E, error) {
	if t.DType() == d {
		return Data[E](t)
	}
	c := t.To(d)
	defer c.Free()
	return Data[E](c)
}

// Bytes returns a copy of the raw little-endian element bytes (on the CPU,
// contiguous), whatever the dtype.
func (t *Tensor) Bytes() ([]byte, error) {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	n := int64(C.dt_numel(h)) * int64(DType(C.dt_dtype(h)).ElemSize())
	out := make([]byte, n)
	if n == 0 {
		return out, nil
	}
	if e := cerr("bytes", C.dt_copy_to(h, unsafe.Pointer(&out[0]), C.size_t(n))); e != nil {
		return nil, e
	}
	return out, nil
}

// FromBytes builds a tensor from raw little-endian element bytes.
func FromBytes(b []byte, dtype DType, shape []int64, opts ...Option) *Tensor {
	o := makeOptions(dtype, opts)
	n, err := numelOf(shape)
	if err != nil {
		return errTensor(&Error{Op: "from_bytes", Msg: err.Error()})
	}
	if dtype.ElemSize() == 0 {
		return errorf("from_bytes", "unsupported dtype %v", dtype)
	}
	if n*int64(dtype.ElemSize()) != int64(len(b)) {
		return errorf("from_bytes", "shape %v of %v needs %d bytes, got %d", shape, dtype, n*int64(dtype.ElemSize()), len(b))
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	sp, nd := shapeArgs(shape)
	var out C.dt_tensor
	if e := cerr("from_bytes", C.dt_from_data(p, sp, nd, C.int(dtype), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, o.scope)
}

// Item returns the value of a one-element tensor as a float64.
func (t *Tensor) Item() (float64, error) {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return 0, err
	}
	var v C.double
	if e := cerr("item", C.dt_item(h, &v)); e != nil {
		return 0, e
	}
	return float64(v), nil
}

type factoryFn func(shape *C.int64_t, ndim C.int, dtype, devType, devIndex C.int, out *C.dt_tensor) C.dt_err

func factory(op string, fn factoryFn, shape []int64, opts []Option) *Tensor {
	o := makeOptions(Float32, opts)
	if _, err := numelOf(shape); err != nil {
		return errTensor(&Error{Op: op, Msg: err.Error()})
	}
	sp, nd := shapeArgs(shape)
	var out C.dt_tensor
	if e := cerr(op, fn(sp, nd, C.int(o.dtype), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, o.scope)
}

// Empty returns an uninitialised tensor (float32 unless a DType is given).
func Empty(shape []int64, opts ...Option) *Tensor {
	return factory("empty", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_empty(s, n, d, dt, di, o)
	}, shape, opts)
}

// Zeros returns a tensor of zeros (float32 unless a DType is given).
func Zeros(shape []int64, opts ...Option) *Tensor {
	return factory("zeros", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_zeros(s, n, d, dt, di, o)
	}, shape, opts)
}

// Ones returns a tensor of ones.
func Ones(shape []int64, opts ...Option) *Tensor {
	return factory("ones", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_ones(s, n, d, dt, di, o)
	}, shape, opts)
}

// Rand returns samples from the uniform distribution on [0, 1).
func Rand(shape []int64, opts ...Option) *Tensor {
	return factory("rand", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_rand(s, n, d, dt, di, o)
	}, shape, opts)
}

// Randn returns samples from the standard normal distribution.
func Randn(shape []int64, opts ...Option) *Tensor {
	return factory("randn", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_randn(s, n, d, dt, di, o)
	}, shape, opts)
}

// Full returns a tensor filled with v.
func Full(shape []int64, v float64, opts ...Option) *Tensor {
	return factory("full", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_full(s, n, C.double(v), d, dt, di, o)
	}, shape, opts)
}

// RandInt returns integers drawn uniformly from [low, high) (int64 unless a
// DType is given).
func RandInt(low, high int64, shape []int64, opts ...Option) *Tensor {
	return factory("randint", func(s *C.int64_t, n C.int, d, dt, di C.int, o *C.dt_tensor) C.dt_err {
		return C.dt_randint(C.int64_t(low), C.int64_t(high), s, n, d, dt, di, o)
	}, shape, append([]Option{Int64}, opts...))
}

// RandPerm returns a random permutation of 0..n-1 (int64).
func RandPerm(n int64, opts ...Option) *Tensor {
	o := makeOptions(Int64, opts)
	var out C.dt_tensor
	if e := cerr("randperm", C.dt_randperm(C.int64_t(n), C.int(o.dtype), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, o.scope)
}

// Arange returns the values start, start+step, ... below end (float32 unless
// a DType is given; pass Int64 for indices).
func Arange(start, end, step float64, opts ...Option) *Tensor {
	o := makeOptions(Float32, opts)
	var out C.dt_tensor
	if e := cerr("arange", C.dt_arange(C.double(start), C.double(end), C.double(step), C.int(o.dtype), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, o.scope)
}

// Eye returns the n x m matrix with ones on the diagonal.
func Eye(n, m int64, opts ...Option) *Tensor {
	o := makeOptions(Float32, opts)
	var out C.dt_tensor
	if e := cerr("eye", C.dt_eye(C.int64_t(n), C.int64_t(m), C.int(o.dtype), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, o.scope)
}

// ZerosLike returns zeros with t's shape, dtype and device, in t's scope.
func ZerosLike(t *Tensor) *Tensor {
	if err := t.Err(); err != nil {
		return errTensor(err)
	}
	return Zeros(t.Shape(), t.DType(), t.Device(), t.scope)
}

// OnesLike returns ones with t's shape, dtype and device, in t's scope.
func OnesLike(t *Tensor) *Tensor {
	if err := t.Err(); err != nil {
		return errTensor(err)
	}
	return Ones(t.Shape(), t.DType(), t.Device(), t.scope)
}

// To converts t to another dtype and/or device (a DType and/or Device option).
// The result is a new tensor in t's scope, even when nothing changes.
func (t *Tensor) To(opts ...Option) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	o := makeOptions(DType(C.dt_dtype(h)), append([]Option{t.Device()}, opts...))
	var out C.dt_tensor
	if e := cerr("to", C.dt_to(h, C.int(o.dtype), C.int(o.device.Type), C.int(o.device.Index), &out)); e != nil {
		return errTensor(e)
	}
	s := t.scope
	if o.scope != nil {
		s = o.scope
	}
	return wrap(out, s)
}

// Ref returns a second handle to the same tensor (sharing storage and
// autograd history), owned by scope s or the caller.
func (t *Tensor) Ref(s *Scope) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("ref", C.dt_shallow_clone(h, &out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, s)
}
