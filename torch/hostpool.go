package torch

// #include "shim.h"
import "C"

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"unsafe"
)

// HostPool hands out CPU tensors of one shape for the caller to fill in
// place, and gives a tensor's memory out again once nothing but the pool
// refers to it: no other handle, view, or copy saved for a backward pass.
//
// It is for data loaders. A fresh tensor's pages cost the kernel a fault
// each on first touch, and libtorch maps every allocation over 32 MB afresh
// (glibc's largest mmap threshold): in the shard loader at 224x224 (38 MB
// batches of 64 colour images) on a 2-core AMD EPYC VM, a CPU profile had
// copying each batch into a new tensor at 136 ms, more than decoding its 64
// JPEGs, and with pooled tensors the loader ran 2.3 times as fast
// (docs/data.md). A reused tensor pays for its pages once.
//
// Get and Close may be called from several goroutines. Memory handed out
// stays valid while the caller's tensor or the pool holds it; Close frees
// the pool's references, and tensors already handed out live on.
type HostPool[E Element] struct {
	mu     sync.Mutex
	shape  []int64
	max    int
	held   []*Tensor
	closed bool
}

// NewHostPool returns a pool of tensors of the given shape, keeping at most
// max of them (the batches a consumer may hold at once, plus those in
// flight: more are allocated when all are in use, and not kept).
func NewHostPool[E Element](shape []int64, max int) *HostPool[E] {
	return &HostPool[E]{shape: slices.Clone(shape), max: max}
}

// Get returns a CPU tensor of the given shape, owned by the caller, and its
// memory, valid while the tensor is. The contents are unspecified: a reused
// tensor holds what was last written. A shape other than the pool's gets a
// tensor that is not pooled.
func (p *HostPool[E]) Get(shape []int64) (*Tensor, []E, error) {
	if p == nil || !slices.Equal(shape, p.shape) {
		t := Empty(shape, DTypeOf[E]())
		mem, _, err := hostMemory[E](t)
		if err != nil {
			t.Free()
			return nil, nil, err
		}
		return t, mem, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.held {
		mem, sole, err := hostMemory[E](h)
		if err != nil {
			return nil, nil, err
		}
		if sole {
			r := h.Ref(nil)
			if err := r.Err(); err != nil {
				return nil, nil, err
			}
			return r, mem, nil
		}
	}
	t := Empty(shape, DTypeOf[E]())
	mem, _, err := hostMemory[E](t)
	if err != nil {
		t.Free()
		return nil, nil, err
	}
	if !p.closed && len(p.held) < p.max {
		if r := t.Ref(nil); r.Err() == nil {
			p.held = append(p.held, r)
		}
	}
	return t, mem, nil
}

// Close frees the pool's references; tensors handed out stay valid.
func (p *HostPool[E]) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.held {
		h.Free()
	}
	p.held, p.closed = nil, true
}

// hostMemory returns t's memory as a slice and whether t's handle is the
// only reference to it.
func hostMemory[E Element](t *Tensor) ([]E, bool, error) {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return nil, false, err
	}
	if d := t.DType(); d != DTypeOf[E]() {
		return nil, false, errors.New("torch: host pool: tensor of " + d.String() + ", not " + DTypeOf[E]().String())
	}
	var data unsafe.Pointer
	var sole C.int
	if e := cerr("host_memory", C.dt_host_memory(h, &data, &sole)); e != nil {
		return nil, false, e
	}
	n := t.Numel()
	if n == 0 {
		return nil, sole != 0, nil
	}
	return unsafe.Slice((*E)(data), n), sole != 0, nil
}
