package torch

import (
	"fmt"
	"os"
	"sync"
)

// BF16Supported reports whether bfloat16 autocast can train on dev: nil, or
// an error that says why not and what to do. On the CPU, libtorch 1.13 sends
// bfloat16 convolutions to oneDNN whenever the CPU has AVX-512 (avx512bw, vl
// and dq), and oneDNN has bfloat16 convolution kernels only from AVX-512 up
// (native with AVX512-BF16 or AMX, emulated with AVX-512 alone). Where they
// are missing (an AVX2-only CPU, or oneDNN capped below AVX-512 with
// ONEDNN_MAX_CPU_ISA) the first bfloat16 convolution of a training step
// would fail with oneDNN's words; this check runs one small convolution, a
// matrix product and their backward pass under autocast instead, once per
// process, so a command can refuse --bf16 before it starts. It uses no
// random numbers, so it leaves the seed's sequence alone.
func BF16Supported(dev Device) error {
	if dev.Type != CPUDevice {
		return nil // CUDA: libtorch's own kernels, on every GPU it supports
	}
	bf16Once.Do(func() { bf16Err = probeBF16() })
	return bf16Err
}

var (
	bf16Once sync.Once
	bf16Err  error
)

func probeBF16() error {
	s := NewScope()
	defer s.Close()
	x := Arange(0, 2*3*6*6, 1, s).Reshape(2, 3, 6, 6).DivScalar(100).SetRequiresGrad(true)
	w := Full([]int64{4, 3, 3, 3}, 0.01, s).SetRequiresGrad(true)
	w2 := Full([]int64{4, 4, 3, 3}, 0.01, s).ChannelsLast().SetRequiresGrad(true)
	l := Full([]int64{5, 4 * 4 * 4}, 0.01, s).SetRequiresGrad(true)
	var y *Tensor
	err := Autocast(BFloat16, func() {
		h := Conv2d(x, w, nil, ConvOptions{Stride: 1})
		h = Conv2d(h.ChannelsLast(), w2, nil, ConvOptions{Padding: 1}) // the NHWC kernels too
		y = Linear(h.Flatten(1, -1), l, nil).Sum()
	})
	if err == nil {
		err = y.Err()
	}
	if err == nil {
		err = y.Backward()
	}
	if err == nil {
		return nil
	}
	isa := ""
	for _, name := range []string{"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"} {
		if v := os.Getenv(name); v != "" {
			isa = fmt.Sprintf(" (%s=%s caps it)", name, v)
			break
		}
	}
	return fmt.Errorf("bfloat16 autocast cannot train on this CPU: oneDNN%s has no bfloat16 convolution kernels for it "+
		"(they need AVX-512; native bfloat16 with AVX512-BF16 or AMX); train in float32 (without --bf16). "+
		"libtorch said: %v", isa, err)
}
