package torch

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
)

// RequiresGrad reports whether autograd records operations on t.
func (t *Tensor) RequiresGrad() bool {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return false
	}
	return C.dt_requires_grad(h) != 0
}

// IsLeaf reports whether t was created by the user rather than by an
// operation recorded by autograd.
func (t *Tensor) IsLeaf() bool {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return false
	}
	return C.dt_is_leaf(h) != 0
}

// SetRequiresGrad turns gradient recording on or off for a leaf tensor and
// returns t (carrying an error if it failed, e.g. on a non-leaf or an integer
// tensor).
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	if e := cerr("requires_grad", C.dt_set_requires_grad(h, cbool(on))); e != nil {
		return errTensor(e)
	}
	return t
}

// Grad returns the accumulated gradient of t (a new handle sharing the
// gradient's storage, in t's scope), or nil when there is none.
func (t *Tensor) Grad() *Tensor {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return errTensor(err)
	}
	var out C.dt_tensor
	if e := cerr("grad", C.dt_grad(h, &out)); e != nil {
		return errTensor(e)
	}
	if out == nil {
		return nil
	}
	return wrap(out, t.scope)
}

// ZeroGrad drops t's gradient (PyTorch's zero_grad(set_to_none=True)).
func (t *Tensor) ZeroGrad() error {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return err
	}
	return cerr("zero_grad", C.dt_zero_grad(h))
}

// Backward computes the gradient of a scalar t with respect to every leaf that
// requires it, accumulating into their Grad.
func (t *Tensor) Backward() error { return t.BackwardWith(nil, false, false) }

// BackwardWith is Backward with an explicit output gradient (nil for a
// scalar), keeping the graph for another pass, and/or recording the backward
// pass itself for higher-order gradients.
func (t *Tensor) BackwardWith(grad *Tensor, retainGraph, createGraph bool) error {
	defer runtime.KeepAlive(t)
	defer runtime.KeepAlive(grad)
	h, err := t.handle()
	if err != nil {
		return err
	}
	hg, err := optH(grad)
	if err != nil {
		return err
	}
	return cerr("backward", C.dt_backward(h, hg, cbool(retainGraph), cbool(createGraph)))
}

// GradOptions control Grad.
type GradOptions struct {
	GradOutputs []*Tensor // one per output; nil means ones for scalar outputs
	RetainGraph bool      // keep the graph for another backward pass
	CreateGraph bool      // record the gradient computation (gradients of gradients)
	AllowUnused bool      // return nil for inputs the outputs do not depend on
}

// Grad returns d(sum of outputs)/d(input) for each input without touching
// their Grad fields, as torch.autograd.grad. Results join the outputs' scope.
func Grad(outputs, inputs []*Tensor, o GradOptions) ([]*Tensor, error) {
	defer runtime.KeepAlive(outputs)
	defer runtime.KeepAlive(inputs)
	if len(outputs) == 0 || len(inputs) == 0 {
		return nil, &Error{Op: "autograd.grad", Msg: "needs at least one output and one input"}
	}
	ho, err := handles(outputs)
	if err != nil {
		return nil, err
	}
	hi, err := handles(inputs)
	if err != nil {
		return nil, err
	}
	var pgo *C.dt_tensor
	if o.GradOutputs != nil {
		if len(o.GradOutputs) != len(outputs) {
			return nil, &Error{Op: "autograd.grad", Msg: "GradOutputs needs one tensor per output"}
		}
		hg := make([]C.dt_tensor, len(outputs))
		for i, g := range o.GradOutputs {
			if hg[i], err = optH(g); err != nil {
				return nil, err
			}
		}
		pgo = &hg[0]
	}
	outs := make([]C.dt_tensor, len(inputs))
	if e := cerr("autograd.grad", C.dt_autograd_grad(&ho[0], C.int(len(ho)), pgo, &hi[0], C.int(len(hi)),
		cbool(o.RetainGraph || o.CreateGraph), cbool(o.CreateGraph), cbool(o.AllowUnused), &outs[0])); e != nil {
		return nil, e
	}
	s := scopeOf(outputs...)
	res := make([]*Tensor, len(inputs))
	for i, h := range outs {
		if h != nil {
			res[i] = wrap(h, s)
		}
	}
	return res, nil
}

// NoGrad runs fn with gradient recording off, as PyTorch's torch.no_grad().
// Grad mode belongs to the OS thread in libtorch, so the goroutine stays on
// its thread while fn runs; fn must not hand tensor work to other goroutines
// and expect it to run without gradients.
func NoGrad(fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := C.dt_grad_enabled()
	C.dt_set_grad_enabled(0)
	defer C.dt_set_grad_enabled(prev)
	fn()
}

// Autocast runs fn with automatic mixed precision on the CPU in dtype
// (BFloat16): matrix products and convolutions run in dtype,
// precision-sensitive operators stay in float32. It is AutocastOn(CPU, ...).
func Autocast(dtype DType, fn func()) error { return AutocastOn(CPU, dtype, fn) }

// AutocastOn runs fn with automatic mixed precision in dtype for the
// operators that run on dev's device type (CPU or CUDA; libtorch keeps one
// setting per device type, so a CUDA model needs AutocastOn(CUDA(i), ...)).
// Like NoGrad it pins the goroutine to its thread while fn runs.
func AutocastOn(dev Device, dtype DType, fn func()) error {
	if dev.Type != CPUDevice && dev.Type != CUDADevice {
		return &Error{Op: "autocast", Msg: fmt.Sprintf("no autocast for device %v", dev)}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dt := C.int(dev.Type)
	prev := C.dt_autocast_enabled(dt)
	if e := cerr("autocast", C.dt_set_autocast(dt, 1, C.int(dtype))); e != nil {
		return e
	}
	defer func() { _ = cerr("autocast", C.dt_set_autocast(dt, prev, C.int(dtype))) }()
	fn()
	return nil
}
