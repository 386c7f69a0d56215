// Package nn provides neural-network modules on top of package torch, in
// PyTorch's vocabulary: Linear, Conv2d, BatchNorm, LayerNorm, Sequential and
// so on, with named parameters and buffers, train/eval modes and the standard
// initialisations.
//
// A module owns its parameters and buffers (tensors with no scope); Free
// releases them. Forward results join the scope of the input, so a training
// step that creates its batch in a scope frees every activation when the
// scope closes.
package nn

import (
	"fmt"
	"sort"
	"strings"

	"github.com/dimtorch/dimtorch/torch"
)

// Module is anything with parameters, buffers and a training mode.
type Module interface {
	// NamedParameters returns the trainable tensors, with dotted names, in
	// registration order.
	NamedParameters() []Named
	// NamedBuffers returns non-trainable state (e.g. BatchNorm statistics).
	NamedBuffers() []Named
	// Train switches training mode on (true) or evaluation mode on (false),
	// for the module and all its children.
	Train(on bool)
	// Training reports the mode.
	Training() bool
}

// Layer is a Module with a single-input forward pass.
type Layer interface {
	Module
	Forward(x *torch.Tensor) *torch.Tensor
}

// Named is a tensor with its dotted name, e.g. "conv1.weight".
type Named struct {
	Name   string
	Tensor *torch.Tensor
}

type child struct {
	name string
	m    Module
}

// Base implements Module's bookkeeping; embed it in a module struct and
// register parameters, buffers and children in the constructor.
type Base struct {
	eval bool // the zero value is in training mode, as PyTorch's modules

	params   []Named
	buffers  []Named
	children []child
}

// Param registers a trainable tensor (turning on its gradient) and returns it.
func (b *Base) Param(name string, t *torch.Tensor) *torch.Tensor {
	t = t.SetRequiresGrad(true)
	b.params = append(b.params, Named{name, t})
	return t
}

// Buffer registers non-trainable state and returns it.
func (b *Base) Buffer(name string, t *torch.Tensor) *torch.Tensor {
	b.buffers = append(b.buffers, Named{name, t})
	return t
}

// Child registers a submodule and returns it.
func Child[M Module](b *Base, name string, m M) M {
	b.children = append(b.children, child{name, m})
	m.Train(!b.eval)
	return m
}

// childModules returns the registered submodules (see Walk).
func (b *Base) childModules() []child { return b.children }

// Walk calls fn for m and every module below it, depth first in
// registration order, with dotted names ("" for m itself). Modules that do
// not embed Base are visited but not descended into.
func Walk(m Module, fn func(name string, m Module)) {
	walk("", m, fn)
}

func walk(name string, m Module, fn func(string, Module)) {
	fn(name, m)
	p, ok := m.(interface{ childModules() []child })
	if !ok {
		return
	}
	for _, c := range p.childModules() {
		n := c.name
		if name != "" {
			n = name + "." + c.name
		}
		walk(n, c.m, fn)
	}
}

// NamedParameters implements Module.
func (b *Base) NamedParameters() []Named {
	out := append([]Named(nil), b.params...)
	for _, c := range b.children {
		for _, p := range c.m.NamedParameters() {
			out = append(out, Named{c.name + "." + p.Name, p.Tensor})
		}
	}
	return out
}

// NamedBuffers implements Module.
func (b *Base) NamedBuffers() []Named {
	out := append([]Named(nil), b.buffers...)
	for _, c := range b.children {
		for _, p := range c.m.NamedBuffers() {
			out = append(out, Named{c.name + "." + p.Name, p.Tensor})
		}
	}
	return out
}

// Train implements Module.
func (b *Base) Train(on bool) {
	b.eval = !on
	for _, c := range b.children {
		c.m.Train(on)
	}
}

// Training implements Module.
func (b *Base) Training() bool { return !b.eval }

// Parameters returns m's trainable tensors.
func Parameters(m Module) []*torch.Tensor {
	ps := m.NamedParameters()
	out := make([]*torch.Tensor, len(ps))
	for i, p := range ps {
		out[i] = p.Tensor
	}
	return out
}

// NumParameters counts the trainable scalars of m.
func NumParameters(m Module) int64 {
	var n int64
	for _, p := range m.NamedParameters() {
		n += p.Tensor.Numel()
	}
	return n
}

// StateDict returns m's parameters and buffers by name (the same tensors, not
// copies), ready for torch.SaveSafetensors under an optional prefix.
func StateDict(m Module, prefix string) map[string]*torch.Tensor {
	out := map[string]*torch.Tensor{}
	for _, p := range m.NamedParameters() {
		out[prefix+p.Name] = p.Tensor
	}
	for _, p := range m.NamedBuffers() {
		out[prefix+p.Name] = p.Tensor
	}
	return out
}

// LoadStateDict copies tensors named prefix+name from sd into m's parameters
// and buffers. Every one of m's tensors must be present with the same shape;
// names in sd outside prefix are ignored, and names under prefix that m does
// not have are an error.
func LoadStateDict(m Module, sd map[string]*torch.Tensor, prefix string) error {
	own := StateDict(m, prefix)
	var missing, mismatched []string
	for name, dst := range own {
		src, ok := sd[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if !sameShape(dst.Shape(), src.Shape()) {
			mismatched = append(mismatched, fmt.Sprintf("%s: checkpoint %v, model %v", name, src.Shape(), dst.Shape()))
		}
	}
	var unexpected []string
	for name := range sd {
		if strings.HasPrefix(name, prefix) {
			if _, ok := own[name]; !ok {
				unexpected = append(unexpected, name)
			}
		}
	}
	if len(missing)+len(mismatched)+len(unexpected) > 0 {
		sort.Strings(missing)
		sort.Strings(mismatched)
		sort.Strings(unexpected)
		var parts []string
		if len(missing) > 0 {
			parts = append(parts, "missing: "+strings.Join(missing, ", "))
		}
		if len(mismatched) > 0 {
			parts = append(parts, "wrong shape: "+strings.Join(mismatched, "; "))
		}
		if len(unexpected) > 0 {
			parts = append(parts, "unexpected: "+strings.Join(unexpected, ", "))
		}
		return fmt.Errorf("load state: %s", strings.Join(parts, "; "))
	}
	var err error
	torch.NoGrad(func() {
		for name, dst := range own {
			if err = dst.CopyFrom(sd[name]); err != nil {
				err = fmt.Errorf("load state: %s: %w", name, err)
				return
			}
		}
	})
	return err
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// MoveTo moves every parameter and buffer of m to device d in place (holders
// of the tensors see the moved ones). Call it before creating an optimiser.
func MoveTo(m Module, d torch.Device) error {
	return replaceEach(m, func(t *torch.Tensor) *torch.Tensor {
		if t.Device() == d {
			return nil
		}
		return t.To(d)
	})
}

// ToChannelsLast lays every 4-D parameter and buffer of m (convolution
// weights) out as channels_last (NHWC) in place, which with channels_last
// inputs lets oneDNN run the convolutions without layout conversions. Values
// and shapes are unchanged; call it before creating an optimiser.
func ToChannelsLast(m Module) error {
	return replaceEach(m, func(t *torch.Tensor) *torch.Tensor {
		if t.Dim() != 4 || t.IsChannelsLast() {
			return nil
		}
		return t.ChannelsLast()
	})
}

// replaceEach replaces, without gradients, every parameter and buffer of m
// by f of its detached value (nil: leave it), keeping each *Tensor (so that
// holders see the new value) and the parameters' requires_grad.
func replaceEach(m Module, f func(*torch.Tensor) *torch.Tensor) error {
	var err error
	one := func(t *torch.Tensor, grad bool) {
		if err != nil {
			return
		}
		det := t.Detach()
		u := f(det)
		det.Free()
		if u == nil {
			return
		}
		if grad {
			u = u.SetRequiresGrad(true)
		}
		err = t.Replace(u)
	}
	torch.NoGrad(func() {
		for _, p := range m.NamedParameters() {
			one(p.Tensor, true)
		}
		for _, b := range m.NamedBuffers() {
			one(b.Tensor, false)
		}
	})
	return err
}

// Free releases every parameter and buffer of m.
func Free(m Module) {
	for _, p := range m.NamedParameters() {
		p.Tensor.Free()
	}
	for _, b := range m.NamedBuffers() {
		b.Tensor.Free()
	}
}

// FirstError returns the first error carried by a parameter or buffer, which
// is where a constructor reports bad arguments.
func FirstError(m Module) error {
	for _, p := range m.NamedParameters() {
		if err := p.Tensor.Err(); err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	for _, b := range m.NamedBuffers() {
		if err := b.Tensor.Err(); err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
	}
	return nil
}
