package torch

/*
#include "shim.h"
*/
import "C"

import "runtime"

import "unsafe"

// In-place operators modify t's storage and return an error; they are
// recorded by autograd like PyTorch's trailing-underscore methods, so use them
// on leaves that require gradients only inside NoGrad.

func (t *Tensor) inplace(op int, o *Tensor, s1, s2 float64) error {
	name := inplaceNames[op]
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(o)
	h, err := t.handle()
	if err != nil {
		return err
	}
	var ho C.dt_tensor
	if inplaceTakesTensor[op] {
		// A nil or freed operand is an error (the C side would dereference it).
		if ho, err = o.handle(); err != nil {
			return &Error{Op: name, Msg: "operand: " + err.Error(), cause: err}
		}
	}
	return cerr(name, C.dt_inplace(C.int(op), h, ho, C.double(s1), C.double(s2)))
}

// AddInPlace does t += alpha * o.
func (t *Tensor) AddInPlace(o *Tensor, alpha float64) error {
	return t.inplace(ipAdd, o, alpha, 0)
}

// SubInPlace does t -= alpha * o.
func (t *Tensor) SubInPlace(o *Tensor, alpha float64) error {
	return t.inplace(ipSub, o, alpha, 0)
}

// MulInPlace does t *= o.
func (t *Tensor) MulInPlace(o *Tensor) error { return t.inplace(ipMul, o, 0, 0) }

// DivInPlace does t /= o.
func (t *Tensor) DivInPlace(o *Tensor) error { return t.inplace(ipDiv, o, 0, 0) }

// MulScalarInPlace does t *= s.
func (t *Tensor) MulScalarInPlace(s float64) error { return t.inplace(ipMulScalar, nil, s, 0) }

// DivScalarInPlace does t /= s.
func (t *Tensor) DivScalarInPlace(s float64) error { return t.inplace(ipDivScalar, nil, s, 0) }

// AddScalarInPlace does t += s.
func (t *Tensor) AddScalarInPlace(s float64) error { return t.inplace(ipAddScalar, nil, s, 0) }

// CopyFrom copies src's values into t (broadcasting, converting dtype and device).
func (t *Tensor) CopyFrom(src *Tensor) error { return t.inplace(ipCopy, src, 0, 0) }

// ClampInPlace limits t's values to [min, max].
func (t *Tensor) ClampInPlace(min, max float64) error {
	return t.inplace(ipClamp, nil, min, max)
}

// SqrtInPlace replaces t by its square root.
func (t *Tensor) SqrtInPlace() error { return t.inplace(ipSqrt, nil, 0, 0) }

// LerpInPlace does t += weight * (end - t), the update of an exponential moving average.
func (t *Tensor) LerpInPlace(end *Tensor, weight float64) error {
	return t.inplace(ipLerp, end, weight, 0)
}

// AddcmulInPlace does t += value * t1 * t2.
func (t *Tensor) AddcmulInPlace(t1, t2 *Tensor, value float64) error {
	return t.addc(addcMul, t1, t2, value)
}

// AddcdivInPlace does t += value * t1 / t2.
func (t *Tensor) AddcdivInPlace(t1, t2 *Tensor, value float64) error {
	return t.addc(addcDiv, t1, t2, value)
}

func (t *Tensor) addc(op int, t1, t2 *Tensor, v float64) error {
	name := addcNames[op]
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(t1)
	defer runtime.KeepAlive(t2)
	if err := firstErr(t, t1, t2); err != nil {
		return err
	}
	return cerr(name, C.dt_addcop_(C.int(op), t.mustH(), t1.mustH(), t2.mustH(), C.double(v)))
}

func (t *Tensor) initOp(op int, a, b float64) error {
	name := initNames[op]
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return err
	}
	return cerr(name, C.dt_init_(C.int(op), h, C.double(a), C.double(b)))
}

// UniformInPlace fills t with samples from U(lo, hi), without recording gradients.
func (t *Tensor) UniformInPlace(lo, hi float64) error { return t.initOp(initUniform, lo, hi) }

// NormalInPlace fills t with samples from N(mean, std^2), without recording gradients.
func (t *Tensor) NormalInPlace(mean, std float64) error { return t.initOp(initNormal, mean, std) }

// FillInPlace sets every element to v, without recording gradients.
func (t *Tensor) FillInPlace(v float64) error { return t.initOp(initFill, v, 0) }

// ZeroInPlace sets every element to 0, without recording gradients.
func (t *Tensor) ZeroInPlace() error { return t.initOp(initZero, 0, 0) }

// BernoulliInPlace fills t with 1 with probability p and 0 otherwise.
func (t *Tensor) BernoulliInPlace(p float64) error { return t.initOp(initBernoulli, p, 0) }

// Replace makes t refer to src's tensor and frees what t held, so that every
// holder of the *Tensor t (an optimiser, a module) sees the new value. src is
// consumed: it must not be used afterwards.
func (t *Tensor) Replace(src *Tensor) error {
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(src)
	if t == nil {
		return &Error{Op: "replace", Msg: "nil tensor"}
	}
	hs, err := src.handle()
	if err != nil {
		return err
	}
	if src.scope != nil {
		src.scope.remove(src)
	}
	// Move src's handle into t (it stays alive) and free what t held.
	src.h = nil
	old := t.h
	t.h = unsafe.Pointer(hs)
	t.err = nil
	if old != nil {
		C.dt_free(C.dt_tensor(old))
		liveTensors.Add(-1)
	}
	return nil
}
