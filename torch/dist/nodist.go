//go:build dimtorch_nodist || dimtorch_shim

package dist

import (
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/internal/handle"
)

// Available reports whether this build has c10d.
func Available() bool { return false }

// Group is a process group; this build cannot make one.
type Group struct{}

// New returns ErrUnavailable: this build has no c10d.
func New(cfg Config) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrUnavailable
}

func (g *Group) Rank() int                                  { return 0 }
func (g *Group) World() int                                 { return 1 }
func (g *Group) Close()                                     {}
func (g *Group) AllReduce(op Op, ts ...*torch.Tensor) error { return ErrUnavailable }
func (g *Group) Broadcast(root int, ts ...*torch.Tensor) error {
	return ErrUnavailable
}
func (g *Group) Verify(ts ...*torch.Tensor) error { return ErrUnavailable }
func (g *Group) Barrier() error                   { return ErrUnavailable }
func (g *Group) AllGather(x *torch.Tensor) *torch.Tensor {
	return handle.Failed(ErrUnavailable).(*torch.Tensor)
}

// Reducer averages gradients across ranks; this build cannot make one.
type Reducer struct{}

func (g *Group) NewReducer(params []*torch.Tensor) (*Reducer, error) { return nil, ErrUnavailable }
func (r *Reducer) Prepare() error                                    { return ErrUnavailable }
func (r *Reducer) Close()                                            {}
