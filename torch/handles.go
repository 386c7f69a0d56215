package torch

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/dimtorch/dimtorch/torch/internal/handle"
)

func init() {
	handle.Of = func(x any) (unsafe.Pointer, error) {
		t, ok := x.(*Tensor)
		if !ok {
			return nil, fmt.Errorf("torch: handle of %T", x)
		}
		h, err := t.handle()
		return unsafe.Pointer(h), err
	}
	handle.Adopt = func(h unsafe.Pointer, operands ...any) any {
		ts := make([]*Tensor, 0, len(operands))
		for _, o := range operands {
			if t, ok := o.(*Tensor); ok {
				ts = append(ts, t)
			}
		}
		return wrap(C.dt_tensor(h), scopeOf(ts...))
	}
	handle.Failed = func(err error) any { return errTensor(err) }
}
