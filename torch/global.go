package torch

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
)

// Version returns the libtorch version the binding was built against.
func Version() string { return C.GoString(C.dt_torch_version()) }

// ManualSeed seeds libtorch's random generators (CPU and CUDA).
func ManualSeed(seed uint64) error { return cerr("manual_seed", C.dt_manual_seed(C.uint64_t(seed))) }

// RNGState returns a copy of the CPU random generator's state (a uint8
// tensor owned by the caller), for checkpoints that resume exactly.
func RNGState() *Tensor {
	var out C.dt_tensor
	if e := cerr("rng_get_state", C.dt_rng_get_state(&out)); e != nil {
		return errTensor(e)
	}
	return wrap(out, nil)
}

// SetRNGState restores a state returned by RNGState.
func SetRNGState(state *Tensor) error {
	defer runtime.KeepAlive(state)
	h, err := state.handle()
	if err != nil {
		return err
	}
	return cerr("rng_set_state", C.dt_rng_set_state(h))
}

// SetNumThreads sets the number of intra-op threads libtorch uses on the CPU.
func SetNumThreads(n int) error {
	if n < 1 {
		return errors.New("torch: SetNumThreads needs n >= 1")
	}
	C.dt_set_num_threads(C.int(n))
	return nil
}

// SetFlushDenormal makes the CPU treat denormal float32 and float64 values
// (below about 1.2e-38 in float32) as zero, on the calling OS thread and on
// its intra-op threads (x86's FTZ and DAZ; PyTorch's set_flush_denormal).
// Arithmetic on denormals is an order of magnitude slower on x86, and a
// softmax over thousands of confident scores makes many; flushing them
// changes results only where they occur. It reports whether the CPU
// supports it. Call it from the thread that runs the computation (lock it
// with runtime.LockOSThread): it applies to that thread and to its OpenMP
// team, libtorch's intra-op threads (with a separately built shim, -tags
// dimtorch_shim, to the calling thread only).
func SetFlushDenormal(on bool) bool {
	v := 0
	if on {
		v = 1
	}
	return C.dt_set_flush_denormal(C.int(v)) != 0
}

// NumThreads returns the number of intra-op threads.
func NumThreads() int { return int(C.dt_get_num_threads()) }

// CUDAAvailable reports whether libtorch has CUDA support and sees a GPU.
func CUDAAvailable() bool { return C.dt_cuda_is_available() != 0 && C.dt_cuda_device_count() > 0 }

// CUDADeviceCount returns the number of visible GPUs (0 without CUDA).
func CUDADeviceCount() int { return int(C.dt_cuda_device_count()) }

// CUDASynchronize waits until every queued operation on the device has finished.
func CUDASynchronize(device int) error {
	return cerr("cuda_synchronize", C.dt_cuda_synchronize(C.int(device)))
}

// ParallelInfo describes libtorch's threading configuration (OpenMP, MKL).
func ParallelInfo() string {
	s := C.dt_parallel_info()
	defer C.dt_free_str(s)
	return C.GoString(s)
}

// ABIVersion is the version of the C interface of the shim in use; it differs
// from ShimABIVersion only when a stale libdimtorch_shim.so is linked.
func ABIVersion() int { return int(C.dt_abi_version()) }

// ShimABIVersion is the C interface version this Go package was written for.
const ShimABIVersion = C.DT_ABI_VERSION

// Allocator tuning. glibc serves allocations above 128 KiB with fresh mmap
// mappings and returns them on free, so every large activation of every
// training step page-faults its memory in again. Raising the mmap and trim
// thresholds lets those blocks be reused from the heap: on the conv
// benchmark of docs/performance.md this removes about 95% of page faults and a
// fifth to a third of the step time, with the same peak memory. It is
// applied when the package loads unless DIMTORCH_MALLOC_TUNE=0.
const (
	DefaultMmapThreshold = 64 << 20
	DefaultTrimThreshold = 256 << 20
)

var allocatorTuned bool

func init() {
	if os.Getenv("DIMTORCH_MALLOC_TUNE") != "0" {
		allocatorTuned = TuneAllocator(DefaultMmapThreshold, DefaultTrimThreshold)
	}
}

// TuneAllocator sets the C library's mmap and trim thresholds in bytes and
// reports whether it could (only glibc can).
func TuneAllocator(mmapThreshold, trimThreshold int64) bool {
	return C.dt_tune_allocator(C.int64_t(mmapThreshold), C.int64_t(trimThreshold)) != 0
}

// AllocatorTuned reports whether the package tuned the allocator at load time.
func AllocatorTuned() bool { return allocatorTuned }

var fastBF16 = sync.OnceValue(func() bool {
	if !oneDNNCapAllowsBF16() {
		return false
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "flags") {
			f := " " + line + " "
			return strings.Contains(f, " amx_bf16 ") || strings.Contains(f, " avx512_bf16 ")
		}
	}
	return false
})

// FastBFloat16 reports whether this CPU has bfloat16 arithmetic units (Intel
// AMX or AVX512-BF16, from /proc/cpuinfo), where libtorch's bfloat16 matrix
// products and convolutions (oneDNN) run several times faster than float32,
// and oneDNN may use them (ONEDNN_MAX_CPU_ISA, or its older name
// DNNL_MAX_CPU_ISA, does not cap it below AVX512_CORE_BF16).
func FastBFloat16() bool { return fastBF16() }

// oneDNNCapAllowsBF16 reads oneDNN's instruction-set cap: unset or ALL, or a
// level with bfloat16 instructions (AVX512_CORE_BF16, AVX512_CORE_FP16,
// AVX512_CORE_AMX...), allows them.
func oneDNNCapAllowsBF16() bool {
	v := os.Getenv("ONEDNN_MAX_CPU_ISA")
	if v == "" {
		v = os.Getenv("DNNL_MAX_CPU_ISA")
	}
	v = strings.ToUpper(strings.TrimSpace(v))
	return v == "" || v == "ALL" || strings.Contains(v, "BF16") || strings.Contains(v, "FP16") || strings.Contains(v, "AMX")
}
