//go:build !dimtorch_nodist && !dimtorch_shim

package dist

/*
#cgo CXXFLAGS: -std=c++17 -O2 -DUSE_C10D_GLOO -I/usr/include/torch/csrc/api/include -I${SRCDIR}/include -Wno-deprecated-declarations -Wno-unused-parameter
#cgo LDFLAGS: -ltorch -ltorch_cpu -lc10
#include <stdlib.h>
#include "dist.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/internal/handle"
)

// Available reports whether this build has c10d.
func Available() bool { return true }

// Group is a Gloo process group: this process and its peers. Its methods
// must be called in the same order on every rank (they are collectives), from
// one goroutine at a time.
type Group struct {
	mu          sync.Mutex
	p           C.dt_pg
	rank, world int
	bucketBytes int64
}

// New joins the job cfg describes: rank 0 serves the rendezvous store at
// MasterAddr:MasterPort, every rank connects to it and to each other. It
// returns when all World ranks have joined, or fails after cfg.Timeout.
func New(cfg Config) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.BucketBytes == 0 {
		cfg.BucketBytes = 25 << 20
	}
	host := ""
	if cfg.Iface == "" {
		var err error
		if host, err = bindHost(cfg.MasterAddr, cfg.MasterPort); err != nil {
			return nil, err
		}
	}
	cm, ch, ci := C.CString(cfg.MasterAddr), C.CString(host), C.CString(cfg.Iface)
	defer C.free(unsafe.Pointer(cm))
	defer C.free(unsafe.Pointer(ch))
	defer C.free(unsafe.Pointer(ci))
	g := &Group{rank: cfg.Rank, world: cfg.World, bucketBytes: cfg.BucketBytes}
	if err := cerr("rendezvous", C.dt_pg_new(cm, C.int(cfg.MasterPort), C.int(cfg.Rank), C.int(cfg.World),
		C.int64_t(cfg.Timeout.Milliseconds()), ci, ch, &g.p)); err != nil {
		return nil, fmt.Errorf("rank %d of %d joining %s:%d: %w", cfg.Rank, cfg.World, cfg.MasterAddr, cfg.MasterPort, err)
	}
	return g, nil
}

// Rank is this process's rank; World the number of processes. A nil
// *Group stands for a job of one process: rank 0 of 1.
func (g *Group) Rank() int {
	if g == nil {
		return 0
	}
	return g.rank
}

// World is the number of processes in the job (1 for a nil *Group).
func (g *Group) World() int {
	if g == nil {
		return 1
	}
	return g.world
}

// Close leaves the group.
func (g *Group) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p != nil {
		C.dt_pg_free(g.p)
		g.p = nil
	}
}

func cerr(op string, msg C.dt_err) error {
	if msg == nil {
		return nil
	}
	defer C.dt_free_str(msg)
	s := strings.TrimSpace(C.GoString(msg))
	return fmt.Errorf("%s: %s", op, s)
}

// handles returns the C handles of ts; keep ts alive while they are used.
func handles(ts []*torch.Tensor) ([]C.dt_tensor, error) {
	hs := make([]C.dt_tensor, len(ts))
	for i, t := range ts {
		h, err := handle.Of(t)
		if err != nil {
			return nil, err
		}
		hs[i] = C.dt_tensor(h)
	}
	return hs, nil
}

func (g *Group) collective(op string, ts []*torch.Tensor, call func(p C.dt_pg, hs *C.dt_tensor, n C.int) C.dt_err) error {
	defer runtime.KeepAlive(ts)
	if len(ts) == 0 {
		return nil
	}
	hs, err := handles(ts)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p == nil {
		return fmt.Errorf("%s: the process group is closed", op)
	}
	return cerr(op, call(g.p, &hs[0], C.int(len(hs))))
}

// AllReduce reduces each tensor in place across ranks with op.
func (g *Group) AllReduce(op Op, ts ...*torch.Tensor) error {
	return g.collective("all-reduce", ts, func(p C.dt_pg, hs *C.dt_tensor, n C.int) C.dt_err {
		return C.dt_pg_allreduce(p, hs, n, C.int(op))
	})
}

// Broadcast overwrites each tensor with root's.
func (g *Group) Broadcast(root int, ts ...*torch.Tensor) error {
	return g.collective("broadcast", ts, func(p C.dt_pg, hs *C.dt_tensor, n C.int) C.dt_err {
		return C.dt_pg_broadcast(p, hs, n, C.int(root))
	})
}

// Verify fails on every rank unless all ranks pass tensors of the same
// number, shapes and dtypes (models built from different configurations).
func (g *Group) Verify(ts ...*torch.Tensor) error {
	return g.collective("verify parameters", ts, func(p C.dt_pg, hs *C.dt_tensor, n C.int) C.dt_err {
		return C.dt_pg_verify(p, hs, n)
	})
}

// Barrier returns when every rank has called it.
func (g *Group) Barrier() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p == nil {
		return fmt.Errorf("barrier: the process group is closed")
	}
	return cerr("barrier", C.dt_pg_barrier(g.p))
}

// AllGather returns every rank's x concatenated along dimension 0 in rank
// order (all ranks' x must have the same shape). It is differentiable: the
// backward pass sums the gradient over ranks and hands each rank its slice,
// so a loss computed on the gathered tensor trains every rank's network.
// Reduced-precision tensors (bfloat16 under autocast, which Gloo does not
// carry) travel as float32 and come back in their own dtype. The group must
// stay open until the backward pass is done. The result joins x's scope; it
// carries the error if the collective fails.
func (g *Group) AllGather(x *torch.Tensor) *torch.Tensor {
	defer runtime.KeepAlive(x)
	h, err := handle.Of(x)
	if err != nil {
		return x
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.p == nil {
		return handle.Failed(fmt.Errorf("all-gather: the process group is closed")).(*torch.Tensor)
	}
	var out C.dt_tensor
	if err := cerr("all-gather", C.dt_pg_all_gather(g.p, C.dt_tensor(h), &out)); err != nil {
		return handle.Failed(err).(*torch.Tensor)
	}
	return handle.Adopt(unsafe.Pointer(out), x).(*torch.Tensor)
}

// Reducer averages the gradients of a fixed list of parameters across ranks
// during the backward pass: DDP's C++ engine (c10d::Reducer), with DDP's
// buckets (the first 1 MiB, then the group's bucket size) all-reduced as soon
// as their gradients are ready. Call Prepare before every backward pass
// whose gradients must be averaged; every parameter must then receive a
// gradient in that pass.
type Reducer struct {
	g *Group
	r C.dt_reducer
}

// NewReducer registers the reducer's hooks on params (which must stay
// alive and keep their shapes until Close).
func (g *Group) NewReducer(params []*torch.Tensor) (*Reducer, error) {
	defer runtime.KeepAlive(params)
	if len(params) == 0 {
		return nil, fmt.Errorf("reducer: no parameters")
	}
	hs, err := handles(params)
	if err != nil {
		return nil, fmt.Errorf("reducer: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r := &Reducer{g: g}
	if err := cerr("reducer", C.dt_reducer_new(g.p, &hs[0], C.int(len(hs)), C.int64_t(g.bucketBytes), &r.r)); err != nil {
		return nil, err
	}
	return r, nil
}

// Prepare arms the reducer for the next backward pass.
func (r *Reducer) Prepare() error {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.r == nil {
		return fmt.Errorf("reducer: closed")
	}
	return cerr("reducer", C.dt_reducer_prepare(r.r))
}

// Close removes the reducer's hooks.
func (r *Reducer) Close() {
	if r == nil {
		return
	}
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.r != nil {
		C.dt_reducer_free(r.r)
		r.r = nil
	}
}
