// Fused optimiser kernels for float32 CPU tensors (fused.cc), used by the
// shim's optimiser steps (shim.cc). Internal to the shim: not part of shim.h's
// C interface.
#pragma once

#include <cstdint>
#include <vector>

namespace dimtorch {

// One parameter's dense float32 storage: parameter, gradient and Adam's two
// moment buffers, all with the same strides (so element i of each belongs
// together), n elements.
struct AdamSpan {
  float *p;
  const float *g;
  float *m;
  float *v;
  int64_t n;
};

// The update's constants, each already rounded to float32 as ATen rounds
// scalar operands for float32 tensors.
struct AdamConsts {
  float beta1, one_minus_beta1;  // m = m*beta1 + (1-beta1)*g
  float beta2, one_minus_beta2;  // v = v*beta2 + (1-beta2)*g*g
  float sqrt_bc2;                // denominator: sqrt(v)/sqrt(1-beta2^t) + eps
  float eps;
  float neg_step;      // p += neg_step * m / denominator, neg_step = -lr/(1-beta1^t)
  float weight_decay;  // coupled L2: g = g + weight_decay*p (0: none)
  float decay;         // decoupled (AdamW): p = p*decay first (1: none)
};

// adam_fused updates every span in one pass over its memory (each element's
// parameter, gradient and moments read once, written once), split across
// libtorch's intra-op threads (OpenMP: the shim compiled by cgo; a shim built
// separately with CMake runs it on the calling thread), with the widest of
// AVX-512, AVX2+FMA or plain C++ that this CPU has. Per element it performs
// ATen's operations of dt_adam_step in the same order and precision. Spans
// must not share memory (the caller updates a repeated parameter span by
// span).
void adam_fused(const std::vector<AdamSpan> &spans, const AdamConsts &c);

// adam_fused_isa names the kernel adam_fused uses ("avx512", "avx2" or
// "scalar"): unless adam_fused_use chose another, the widest this CPU has
// that rounds as ATen's kernels do at ATen's level (aten_cpu_capability):
// with fused multiply-adds from AVX2 up, the scalar kernel at ATen's plain C++
// level (ATEN_CPU_CAPABILITY=default).
const char *adam_fused_isa();

// adam_fused_use makes adam_fused use the named kernel ("auto": the choice
// above); false when the name is unknown or the CPU lacks it.
bool adam_fused_use(const char *isa);

// aten_cpu_capability is the level of ATen's vectorised CPU kernels, by
// ATen's own rule: 0 plain C++, 1 AVX2, 2 AVX-512; aten_cpu_capability_name
// names it as ATEN_CPU_CAPABILITY does ("default", "avx2", "avx512").
int aten_cpu_capability();
const char *aten_cpu_capability_name();

}  // namespace dimtorch
