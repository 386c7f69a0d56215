// Package torch is dimtorch's binding to libtorch: tensors, operators,
// autograd and safetensors I/O, in PyTorch's vocabulary. Its subpackages nn
// and optim provide modules and optimisers on top of it.
//
// # Ownership
//
// A *Tensor owns one reference to a libtorch tensor (which may share storage
// with others, as views do in PyTorch). The C memory is released
// deterministically, in one of two ways:
//
//   - Scopes. A tensor created with the option s (a *Scope) belongs to s, and
//     so does every tensor computed from it. When an operator's operands
//     belong to different scopes, its result joins the youngest of them (the
//     one created last): with scopes nested like the calls that create them,
//     that is the innermost, shortest-lived one, so a result never outlives
//     any of its scoped operands' scopes, whatever the order of the operands
//     (x.IndexSelect(0, idx) with a long-lived x and a per-batch idx lives in
//     the batch's scope). Operands without a scope do not count. s.Close
//     frees them all at once. A training step therefore looks like
//
//     s := torch.NewScope()
//     x := torch.FromSlice(batch, shape, s) // x and all results from x are in s
//     loss := model.Forward(x).Mean()
//     err := loss.Backward()
//     s.Close()
//
//   - Free. A tensor with no scope (a parameter, a buffer, a result of
//     operators whose operands have no scope) is owned by the caller, who calls
//     Free when done. MoveTo moves a tensor into another scope, or out of every
//     scope.
//
// Finalizers are only a safety net for unscoped tensors that were never freed;
// FinalizedTensors counts how often it caught one, and LiveTensors counts the
// handles alive now, so tests can prove that nothing leaks.
//
// # Errors
//
// Operators never panic and never abort the process. A failure in libtorch (a
// shape mismatch, a wrong dtype, a tensor on the wrong device) yields a
// tensor that carries an *Error with libtorch's message; every operator on
// such a tensor returns at once with the same error, so a whole forward pass
// can be written without checks and the error read once at the end, from Err,
// Item, Backward or the Data functions.
//
// # Threads
//
// Tensors may be used from several goroutines as long as each tensor is used
// by one goroutine at a time. Grad mode and autocast are per-thread settings in
// libtorch; NoGrad and Autocast pin the calling goroutine to its thread while
// they run.
package torch

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Error is a failure reported by libtorch or detected by the binding.
type Error struct {
	Op    string // the operator that failed, e.g. "matmul"
	Msg   string // libtorch's message, without its C++ backtrace
	cause error
}

func (e *Error) Error() string { return "torch: " + e.Op + ": " + e.Msg }

// Unwrap returns the cause the binding recognised (ErrFreed for a tensor used
// after it was freed), so that errors.Is(err, torch.ErrFreed) holds.
func (e *Error) Unwrap() error { return e.cause }

// ErrFreed is the cause carried by a tensor used after Free or after its
// scope was closed.
var ErrFreed = errors.New("tensor used after it was freed")

// Tensor is a handle to a libtorch tensor. The zero value and nil are not
// valid tensors; operators on them return a tensor carrying an error.
type Tensor struct {
	h     unsafe.Pointer // C.dt_tensor; nil once freed
	err   error
	scope *Scope
}

var (
	liveTensors      atomic.Int64
	finalizedTensors atomic.Int64
)

// LiveTensors reports how many tensor handles are alive (not yet freed).
func LiveTensors() int64 { return liveTensors.Load() }

// FinalizedTensors reports how many unscoped tensors were freed by the
// garbage collector instead of by Free or a Scope: each one is a leak that
// the safety net caught.
func FinalizedTensors() int64 { return finalizedTensors.Load() }

func finalize(t *Tensor) {
	defer runtime.KeepAlive(t)
	if p := atomic.SwapPointer(&t.h, nil); p != nil {
		C.dt_free(C.dt_tensor(p))
		liveTensors.Add(-1)
		finalizedTensors.Add(1)
	}
}

// wrap takes ownership of a fresh C handle and places it in scope s (or with
// the caller when s is nil).
func wrap(h C.dt_tensor, s *Scope) *Tensor {
	t := &Tensor{h: unsafe.Pointer(h)}
	liveTensors.Add(1)
	if s != nil {
		s.add(t)
	} else {
		runtime.SetFinalizer(t, finalize)
	}
	return t
}

// errTensor returns a tensor that carries err and owns no C memory.
func errTensor(err error) *Tensor { return &Tensor{err: err} }

// cerr converts a C error string (which it frees) into an *Error.
func cerr(op string, msg C.dt_err) error {
	if msg == nil {
		return nil
	}
	s := C.GoString(msg)
	C.dt_free_str(msg)
	return &Error{Op: op, Msg: s}
}

// Errorf returns a tensor carrying a binding-level error for op.
func errorf(op, format string, args ...any) *Tensor {
	return errTensor(&Error{Op: op, Msg: fmt.Sprintf(format, args...)})
}

// handle returns the C handle or the error that prevents its use.
func (t *Tensor) handle() (C.dt_tensor, error) {
	defer runtime.KeepAlive(t)
	if t == nil {
		return nil, &Error{Op: "tensor", Msg: "nil tensor"}
	}
	if t.err != nil {
		return nil, t.err
	}
	p := atomic.LoadPointer(&t.h)
	if p == nil {
		return nil, &Error{Op: "tensor", Msg: ErrFreed.Error(), cause: ErrFreed}
	}
	return C.dt_tensor(p), nil
}

// Err returns the error this tensor carries, or nil for a valid tensor. A
// freed tensor reports ErrFreed (wrapped in an *Error).
func (t *Tensor) Err() error {
	_, err := t.handle()
	return err
}

// Free releases the tensor's C memory now. It is safe to call more than once
// and on tensors that carry errors. A tensor in a scope may be freed early; the
// scope then skips it.
func (t *Tensor) Free() {
	defer runtime.KeepAlive(t)
	if t == nil {
		return
	}
	if p := atomic.SwapPointer(&t.h, nil); p != nil {
		C.dt_free(C.dt_tensor(p))
		liveTensors.Add(-1)
	}
}

// Scope returns the scope that owns t, or nil when the caller owns it.
func (t *Tensor) Scope() *Scope {
	if t == nil {
		return nil
	}
	return t.scope
}

// MoveTo transfers ownership of t to scope s, or to the caller when s is nil,
// and returns t. Use it to keep a result computed inside a step's scope.
func (t *Tensor) MoveTo(s *Scope) *Tensor {
	if t == nil || t.err != nil || t.scope == s {
		return t
	}
	if t.scope != nil {
		t.scope.remove(t)
	} else {
		runtime.SetFinalizer(t, nil)
	}
	if s != nil {
		s.add(t)
	} else {
		runtime.SetFinalizer(t, finalize)
	}
	return t
}

// Scope owns a group of tensors and frees them together. Its methods are
// safe for concurrent use (several goroutines may add results to one scope
// and one may close it), but a tensor must not be used while another
// goroutine closes or resets its scope, as with Free.
type Scope struct {
	mu      sync.Mutex
	tensors []*Tensor
	closed  bool
	seq     uint64 // creation order: results join the youngest operand scope
}

var scopeSeq atomic.Uint64

// NewScope returns an empty scope, younger than every scope created before.
func NewScope() *Scope { return &Scope{seq: scopeSeq.Add(1)} }

func (s *Scope) add(t *Tensor) {
	s.mu.Lock()
	if s.closed {
		// A closed scope cannot own anything: the tensor falls back to the
		// caller with the finalizer as its safety net.
		s.mu.Unlock()
		runtime.SetFinalizer(t, finalize)
		return
	}
	t.scope = s
	s.tensors = append(s.tensors, t)
	s.mu.Unlock()
}

func (s *Scope) remove(t *Tensor) {
	s.mu.Lock()
	for i, u := range s.tensors {
		if u == t {
			last := len(s.tensors) - 1
			s.tensors[i] = s.tensors[last]
			s.tensors[last] = nil
			s.tensors = s.tensors[:last]
			break
		}
	}
	t.scope = nil
	s.mu.Unlock()
}

// Len reports how many tensors the scope holds.
func (s *Scope) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tensors)
}

// Close frees every tensor in the scope. Tensors created from the scope's
// tensors afterwards are owned by the caller. Close is idempotent.
func (s *Scope) Close() {
	s.mu.Lock()
	ts := s.tensors
	s.tensors = nil
	s.closed = true
	s.mu.Unlock()
	for _, t := range ts {
		t.Free()
		t.scope = nil
	}
}

// Reset frees every tensor in the scope and leaves it open for reuse, which
// suits a loop that runs one training step per iteration.
func (s *Scope) Reset() {
	s.mu.Lock()
	ts := s.tensors
	s.tensors = make([]*Tensor, 0, len(ts))
	s.mu.Unlock()
	for _, t := range ts {
		t.Free()
		t.scope = nil
	}
}

// scopeOf returns the scope an operator's result joins: the youngest (most
// recently created) scope among ts, or nil when none of ts has a scope.
func scopeOf(ts ...*Tensor) *Scope {
	var s *Scope
	for _, t := range ts {
		if t != nil && t.scope != nil && (s == nil || t.scope.seq > s.seq) {
			s = t.scope
		}
	}
	return s
}

// firstErr returns the first handle error among ts.
func firstErr(ts ...*Tensor) error {
	for _, t := range ts {
		if _, err := t.handle(); err != nil {
			return err
		}
	}
	return nil
}

// Shape returns the tensor's sizes, or nil if it carries an error.
func (t *Tensor) Shape() []int64 {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return nil
	}
	n := int(C.dt_dim(h))
	out := make([]int64, n)
	if n > 0 {
		C.dt_shape(h, (*C.int64_t)(unsafe.Pointer(&out[0])))
	}
	return out
}

// Dim returns the number of dimensions (-1 for an invalid tensor).
func (t *Tensor) Dim() int {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return -1
	}
	return int(C.dt_dim(h))
}

// Size returns the size of dimension d (negative d counts from the end), or
// -1 if d is out of range or the tensor is invalid.
func (t *Tensor) Size(d int) int64 {
	s := t.Shape()
	if d < 0 {
		d += len(s)
	}
	if d < 0 || d >= len(s) {
		return -1
	}
	return s[d]
}

// Numel returns the number of elements (-1 for an invalid tensor).
func (t *Tensor) Numel() int64 {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return -1
	}
	return int64(C.dt_numel(h))
}

// DType returns the element type (Invalid for an invalid tensor).
func (t *Tensor) DType() DType {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return Invalid
	}
	return DType(C.dt_dtype(h))
}

// Device returns where the tensor lives.
func (t *Tensor) Device() Device {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return Device{}
	}
	var typ, idx C.int
	C.dt_device(h, &typ, &idx)
	return Device{Type: DeviceType(typ), Index: int(idx)}
}

// String prints the values the way PyTorch does, or the error.
func (t *Tensor) String() string {
	defer runtime.KeepAlive(t)
	h, err := t.handle()
	if err != nil {
		return fmt.Sprintf("Tensor(error: %v)", err)
	}
	var s *C.char
	if e := cerr("print", C.dt_to_string(h, &s)); e != nil {
		return fmt.Sprintf("Tensor(error: %v)", e)
	}
	defer C.dt_free_str(s)
	return C.GoString(s)
}

// Errored returns a tensor that carries err, for code that builds on this
// package and reports failures the same way the operators do.
func Errored(err error) *Tensor {
	if err == nil {
		err = &Error{Op: "tensor", Msg: "unknown error"}
	}
	return errTensor(err)
}
