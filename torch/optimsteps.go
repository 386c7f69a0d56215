package torch

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Optimiser steps, used by package optim: one cgo call updates a whole
// parameter list.

// SetFusedOptimKernel chooses how AdamStep updates dense float32 CPU
// parameters: "auto" (the default, unless DIMTORCH_FUSED_OPTIM=0) takes the
// widest fused kernel this CPU has, "avx512", "avx2" or "scalar" a given one,
// "off" ATen's eight per-tensor operations. A fused kernel reads and writes
// each element once, in one call, split across the intra-op threads (on the
// calling thread in a shim built separately with CMake); the vector kernels
// compute ATen's operations in ATen's order and agree with Debian's libtorch
// bit for bit (the scalar one rounds as ATen's kernels for CPUs without FMA).
// Autograd's version counters of the parameters and moments move as ATen's
// in-place operations move them. It is process-wide.
func SetFusedOptimKernel(name string) error {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if C.dt_set_fused_optim(cs) != 0 {
		return fmt.Errorf("torch: fused optimiser kernel %q: not one of auto, avx512, avx2, scalar, off that this CPU runs", name)
	}
	return nil
}

// FusedOptimKernel names the kernel AdamStep uses for dense float32 CPU
// parameters: "avx512", "avx2", "scalar", or "off". The automatic choice is
// the widest this CPU has that rounds as ATen's kernels do at ATen's level
// (ATenCPUCapability): with fused multiply-adds from "avx2" up, the scalar
// kernel at "default".
func FusedOptimKernel() string { return C.GoString(C.dt_fused_optim_isa()) }

// ATenCPUCapability is the level of ATen's vectorised CPU kernels:
// "default" (plain C++, no fused multiply-adds), "avx2" or "avx512", by
// ATen's rule: ATEN_CPU_CAPABILITY when it names one, else the best the CPU
// has.
func ATenCPUCapability() string {
	return C.GoString(C.dt_aten_cpu_capability())
}

// AdamStep applies one Adam (or AdamW, with decoupled) update at the given
// 1-based step to every parameter that has a gradient; m and v are the first
// and second moment buffers, one per parameter.
func AdamStep(params, m, v []*Tensor, lr, beta1, beta2, eps, weightDecay float64, decoupled bool, step int64) error {
	defer runtime.KeepAlive(params)
	defer runtime.KeepAlive(m)
	defer runtime.KeepAlive(v)
	if len(m) != len(params) || len(v) != len(params) {
		return &Error{Op: "adam", Msg: "one moment buffer per parameter is required"}
	}
	if len(params) == 0 {
		return nil
	}
	hp, err := handles(params)
	if err != nil {
		return err
	}
	hm, err := handles(m)
	if err != nil {
		return err
	}
	hv, err := handles(v)
	if err != nil {
		return err
	}
	return cerr("adam", C.dt_adam_step(&hp[0], &hm[0], &hv[0], C.int(len(hp)), C.double(lr), C.double(beta1),
		C.double(beta2), C.double(eps), C.double(weightDecay), cbool(decoupled), C.int64_t(step)))
}

// SGDStep applies one SGD update; buf holds one momentum buffer per parameter
// (empty when momentum is 0), first marks the first step.
func SGDStep(params, buf []*Tensor, lr, momentum, dampening, weightDecay float64, nesterov, first bool) error {
	defer runtime.KeepAlive(params)
	defer runtime.KeepAlive(buf)
	if len(params) == 0 {
		return nil
	}
	if momentum != 0 && len(buf) != len(params) {
		return &Error{Op: "sgd", Msg: "one momentum buffer per parameter is required"}
	}
	hp, err := handles(params)
	if err != nil {
		return err
	}
	var pb *C.dt_tensor
	if momentum != 0 {
		hb, err := handles(buf)
		if err != nil {
			return err
		}
		pb = &hb[0]
	}
	return cerr("sgd", C.dt_sgd_step(&hp[0], pb, C.int(len(hp)), C.double(lr), C.double(momentum),
		C.double(dampening), C.double(weightDecay), cbool(nesterov), cbool(first)))
}

// ClipGradNorm scales the gradients of params so that their joint 2-norm is
// at most maxNorm and returns the norm before clipping.
func ClipGradNorm(params []*Tensor, maxNorm float64) (float64, error) {
	defer runtime.KeepAlive(params)
	if len(params) == 0 {
		return 0, nil
	}
	hp, err := handles(params)
	if err != nil {
		return 0, err
	}
	var total C.double
	if e := cerr("clip_grad_norm", C.dt_clip_grad_norm(&hp[0], C.int(len(hp)), C.double(maxNorm), &total)); e != nil {
		return 0, e
	}
	return float64(total), nil
}
