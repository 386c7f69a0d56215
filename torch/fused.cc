//go:build !dimtorch_shim

// Fused optimiser kernels (fused.h). ATen's Adam is eight element-wise
// operations per parameter (mul_, add_, mul_, addcmul_, sqrt, div, add_,
// addcdiv_), each a pass over memory, two of them allocating a temporary: about
// 21 reads and writes of every element, plus the dispatch and threading of each
// operation. This loop reads a parameter, its gradient and both moments once
// and writes three of them once, split across the intra-op threads; per element
// it does ATen's arithmetic in ATen's order (a fused multiply-add where ATen's
// vectorised kernels use one), so the results match ATen's bit for bit on the
// same instruction set (TestFusedAdamMatchesATen).
//
// The shim is compiled for the baseline x86-64; the AVX-512 and AVX2 kernels
// carry their own target attributes and are chosen at run time.

#include "fused.h"

// Rounding as ATen's separate operations round: no multiply and add fused
// beyond the fused multiply-adds written below (GCC's GNU modes would
// otherwise contract across the intrinsics).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DIMTORCH_X86 1
#endif

namespace dimtorch {
namespace {

// Elements per work item: large enough to amortise the loop set-up, small
// enough that a model's parameters split evenly across threads.
constexpr int64_t kChunk = 1 << 15;

struct Item {
  const AdamSpan *s;
  int64_t begin, end;
};

// One element, as ATen's kernels for CPUs without AVX2 compute it (no fused
// multiply-adds).
inline void adam_scalar(float &p, float g, float &m, float &v, const AdamConsts &c) {
  if (c.weight_decay != 0.0f) g = g + c.weight_decay * p;
  if (c.decay != 1.0f) p = p * c.decay;
  m = m * c.beta1 + c.one_minus_beta1 * g;
  v = v * c.beta2 + c.one_minus_beta2 * g * g;
  const float d = std::sqrt(v) / c.sqrt_bc2 + c.eps;
  p = p + c.neg_step * m / d;
}

void run_scalar(const Item &it, const AdamConsts &c) {
  const AdamSpan &s = *it.s;
  for (int64_t i = it.begin; i < it.end; i++) adam_scalar(s.p[i], s.g[i], s.m[i], s.v[i], c);
}

#ifdef DIMTORCH_X86
__attribute__((target("avx512f"))) void run_avx512(const Item &it, const AdamConsts &c) {
  const AdamSpan &s = *it.s;
  const __m512 b1 = _mm512_set1_ps(c.beta1), omb1 = _mm512_set1_ps(c.one_minus_beta1);
  const __m512 b2 = _mm512_set1_ps(c.beta2), omb2 = _mm512_set1_ps(c.one_minus_beta2);
  const __m512 sb2 = _mm512_set1_ps(c.sqrt_bc2), eps = _mm512_set1_ps(c.eps);
  const __m512 step = _mm512_set1_ps(c.neg_step), wd = _mm512_set1_ps(c.weight_decay);
  const __m512 decay = _mm512_set1_ps(c.decay);
  const bool coupled = c.weight_decay != 0.0f, decoupled = c.decay != 1.0f;
  for (int64_t i = it.begin; i < it.end; i += 16) {
    const int64_t left = it.end - i;
    const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    __m512 p = _mm512_maskz_loadu_ps(k, s.p + i);
    __m512 g = _mm512_maskz_loadu_ps(k, s.g + i);
    __m512 m = _mm512_maskz_loadu_ps(k, s.m + i);
    __m512 v = _mm512_maskz_loadu_ps(k, s.v + i);
    if (coupled) g = _mm512_fmadd_ps(p, wd, g);
    if (decoupled) p = _mm512_mul_ps(p, decay);
    m = _mm512_fmadd_ps(g, omb1, _mm512_mul_ps(m, b1));
    v = _mm512_fmadd_ps(_mm512_mul_ps(omb2, g), g, _mm512_mul_ps(v, b2));
    const __m512 d = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), sb2), eps);
    p = _mm512_add_ps(_mm512_div_ps(_mm512_mul_ps(step, m), d), p);
    _mm512_mask_storeu_ps(s.p + i, k, p);
    _mm512_mask_storeu_ps(s.m + i, k, m);
    _mm512_mask_storeu_ps(s.v + i, k, v);
  }
}

__attribute__((target("avx2,fma"))) void run_avx2(const Item &it, const AdamConsts &c) {
  const AdamSpan &s = *it.s;
  const __m256 b1 = _mm256_set1_ps(c.beta1), omb1 = _mm256_set1_ps(c.one_minus_beta1);
  const __m256 b2 = _mm256_set1_ps(c.beta2), omb2 = _mm256_set1_ps(c.one_minus_beta2);
  const __m256 sb2 = _mm256_set1_ps(c.sqrt_bc2), eps = _mm256_set1_ps(c.eps);
  const __m256 step = _mm256_set1_ps(c.neg_step), wd = _mm256_set1_ps(c.weight_decay);
  const __m256 decay = _mm256_set1_ps(c.decay);
  const bool coupled = c.weight_decay != 0.0f, decoupled = c.decay != 1.0f;
  int64_t i = it.begin;
  for (; i + 8 <= it.end; i += 8) {
    __m256 p = _mm256_loadu_ps(s.p + i);
    __m256 g = _mm256_loadu_ps(s.g + i);
    __m256 m = _mm256_loadu_ps(s.m + i);
    __m256 v = _mm256_loadu_ps(s.v + i);
    if (coupled) g = _mm256_fmadd_ps(p, wd, g);
    if (decoupled) p = _mm256_mul_ps(p, decay);
    m = _mm256_fmadd_ps(g, omb1, _mm256_mul_ps(m, b1));
    v = _mm256_fmadd_ps(_mm256_mul_ps(omb2, g), g, _mm256_mul_ps(v, b2));
    const __m256 d = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), sb2), eps);
    p = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(step, m), d), p);
    _mm256_storeu_ps(s.p + i, p);
    _mm256_storeu_ps(s.m + i, m);
    _mm256_storeu_ps(s.v + i, v);
  }
  run_scalar(Item{it.s, i, it.end}, c);
}
#endif

using Kernel = void (*)(const Item &, const AdamConsts &);

struct Choice {
  Kernel run;
  const char *isa;
  bool fma;  // rounds as ATen's vectorised kernels (fused multiply-adds)
};

// The kernels this CPU can run, widest first.
std::vector<Choice> available() {
  std::vector<Choice> out;
#ifdef DIMTORCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) out.push_back({run_avx512, "avx512", true});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back({run_avx2, "avx2", true});
#endif
  out.push_back({run_scalar, "scalar", false});
  return out;
}

const std::vector<Choice> &kernels() {
  static const std::vector<Choice> all = available();
  return all;
}

// The automatic choice: the widest kernel that rounds as ATen's kernels do
// at ATen's level (with ATen at its plain C++ level, the scalar kernel).
int auto_choice() {
  const std::vector<Choice> &all = kernels();
  const bool aten_fma = aten_cpu_capability() > 0;
  for (size_t i = 0; i < all.size(); i++)
    if (all[i].fma == aten_fma) return static_cast<int>(i);
  return static_cast<int>(all.size()) - 1;
}

std::atomic<int> g_choice{-1};  // index into kernels(); -1: not chosen yet (auto)

const Choice &chosen() {
  int i = g_choice.load();
  return kernels()[i < 0 ? auto_choice() : i];
}

}  // namespace

int aten_cpu_capability() {
  static const int level = [] {
    // ATen 1.13's rule (ATen/native/DispatchStub.cpp): the environment
    // variable when it names a level, else the best level the CPU has.
    if (const char *e = std::getenv("ATEN_CPU_CAPABILITY")) {
      if (std::strcmp(e, "avx512") == 0) return 2;
      if (std::strcmp(e, "avx2") == 0) return 1;
      if (std::strcmp(e, "default") == 0) return 0;
    }
#ifdef DIMTORCH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
      return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
  }();
  return level;
}

const char *aten_cpu_capability_name() {
  static const char *const names[] = {"default", "avx2", "avx512"};  // by level
  return names[aten_cpu_capability()];
}

void adam_fused(const std::vector<AdamSpan> &spans, const AdamConsts &c) {
  std::vector<Item> items;
  for (const AdamSpan &s : spans)
    for (int64_t b = 0; b < s.n; b += kChunk) items.push_back(Item{&s, b, std::min(s.n, b + kChunk)});
  const Kernel run = chosen().run;
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) run(items[i], c);
  });
}

const char *adam_fused_isa() { return chosen().isa; }

bool adam_fused_use(const char *isa) {
  const std::vector<Choice> &all = kernels();
  const std::string want(isa);
  for (size_t i = 0; i < all.size(); i++) {
    if (want == all[i].isa) {
      g_choice.store(static_cast<int>(i));
      return true;
    }
  }
  if (want == "auto") {
    g_choice.store(-1);
    return true;
  }
  return false;
}

}  // namespace dimtorch
