// Package handle lets dimtorch's other cgo packages under torch/ (torch/dist)
// pass tensors to their C code without package torch exporting its handles:
// package torch fills in these functions when it loads.
package handle

import "unsafe"

var (
	// Of returns the C handle (a dt_tensor, that is an at::Tensor*) of a
	// *torch.Tensor, or the error that prevents its use. The tensor must be
	// kept alive (runtime.KeepAlive) while the handle is in use.
	Of func(t any) (unsafe.Pointer, error)
	// Adopt takes ownership of a new C handle as a *torch.Tensor in the
	// youngest scope among operands (*torch.Tensor values), as operators do.
	Adopt func(h unsafe.Pointer, operands ...any) any
	// Failed returns a *torch.Tensor that carries err.
	Failed func(err error) any
)
