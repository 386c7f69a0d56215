//go:build !dimtorch_shim

// dimtorch's C shim over ATen and autograd: the implementation of shim.h.
//
// Only ATen and the autograd entry point are included (not the C++ frontend's
// torch/torch.h), which keeps this translation unit's compile time short and
// limits it to API that is stable across libtorch 1.13 and 2.x.
//
// The build constraint above keeps cgo from compiling this file when the Go
// package links a separately built libdimtorch_shim.so instead.

#include "shim.h"
#include "fused.h"
#include "shim_try.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

// The codes of ops.def: the generic operators' cases, and the compile-time
// checks that the dtype and device-type codes are libtorch's (after ATen's
// headers, which they name).
#include "shim_ops.h"

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#include <atomic>
#include <cstdlib>
#include <mutex>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

namespace {

inline at::Tensor &T(dt_tensor t) { return *reinterpret_cast<at::Tensor *>(t); }

inline dt_tensor wrap(at::Tensor t) { return reinterpret_cast<dt_tensor>(new at::Tensor(std::move(t))); }

inline at::Tensor opt(dt_tensor t) { return t ? T(t) : at::Tensor(); }

using dimtorch::dup;

// dtype and device-type codes are libtorch's own values (ops.def's valued
// kinds, checked in shim_ops.h), so they are cast as they are.
inline at::ScalarType scalar_type(int dtype) { return static_cast<at::ScalarType>(dtype); }
inline c10::DeviceType device_type(int dev_type) { return static_cast<c10::DeviceType>(dev_type); }
inline at::Device device(int dev_type, int dev_index) {
  return at::Device(device_type(dev_type), static_cast<c10::DeviceIndex>(dev_index));
}

at::TensorOptions options(int dtype, int dev_type, int dev_index) {
  return at::TensorOptions().dtype(scalar_type(dtype)).device(device(dev_type, dev_index));
}

at::IntArrayRef ints(const int64_t *p, int n) { return at::IntArrayRef(p, static_cast<size_t>(n)); }

std::vector<at::Tensor> tensors(const dt_tensor *ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(ts[i] ? T(ts[i]) : at::Tensor());
  return v;
}

// An integral value stays integral for integer tensors, so that in-place
// arithmetic on them (e.g. a step counter) does not fail to cast a double.
at::Scalar scalar_for(const at::Tensor &t, double v) {
  if (!t.is_floating_point() && !t.is_complex() && v == static_cast<double>(static_cast<int64_t>(v)))
    return at::Scalar(static_cast<int64_t>(v));
  return at::Scalar(v);
}

// The at::Reduction of a loss reduction code (ops.def's loss kind).
int64_t reduction(int code) {
  switch (code) {
    DT_LOSS_CASES
    default: throw std::runtime_error("unknown loss reduction code " + std::to_string(code));
  }
}

}  // namespace

// Every entry point runs its body inside TRY ... CATCH so that no C++
// exception unwinds into Go: libtorch's message is returned instead.
#define TRY DT_TRY
#define CATCH DT_CATCH("libtorch")

// prod_dims reduces d one dimension at a time (libtorch's prod takes one),
// from the last so that the indices stay valid.
static at::Tensor prod_dims(const at::Tensor &a, at::IntArrayRef d, bool k) {
  at::Tensor r = a;
  std::vector<int64_t> sorted(d.begin(), d.end());
  for (auto &x : sorted)
    if (x < 0) x += a.dim();
  std::sort(sorted.begin(), sorted.end());
  for (auto it = sorted.rbegin(); it != sorted.rend(); ++it) r = at::prod(r, *it, k);
  return r;
}

extern "C" {

int dt_abi_version(void) { return DT_ABI_VERSION; }
void dt_free(dt_tensor t) { delete reinterpret_cast<at::Tensor *>(t); }
void dt_free_str(char *s) { std::free(s); }

// ---- library ------------------------------------------------------------

const char *dt_torch_version(void) {
#ifdef TORCH_VERSION
  return TORCH_VERSION;
#else
  return "unknown";
#endif
}

dt_err dt_manual_seed(uint64_t seed) {
  TRY
  at::manual_seed(seed);
  CATCH
}

dt_err dt_rng_get_state(dt_tensor *out) {
  TRY
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  *out = wrap(gen.get_state());
  CATCH
}

dt_err dt_rng_set_state(dt_tensor state) {
  TRY
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(T(state));
  CATCH
}

void dt_set_num_threads(int n) { at::set_num_threads(n); }
int dt_get_num_threads(void) { return at::get_num_threads(); }

int dt_set_flush_denormal(int on) {
  bool ok = at::globalContext().setFlushDenormal(on != 0);
  if (!ok) return 0;
#ifdef _OPENMP
  // The setting is per thread: run it on every thread of the OpenMP team
  // that this thread's parallel regions use, libtorch's intra-op threads
  // (the same libgomp; threads created later inherit it). Built without
  // OpenMP (a shim for another libtorch), only this thread is set.
#pragma omp parallel num_threads(at::get_num_threads())
  at::globalContext().setFlushDenormal(on != 0);
#endif
  return 1;
}
int dt_cuda_is_available(void) { return at::hasCUDA() ? 1 : 0; }

int dt_cuda_device_count(void) {
  try {
    return at::hasCUDA() ? static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()) : 0;
  } catch (...) {
    return 0;
  }
}

dt_err dt_cuda_synchronize(int device) {
  TRY
  if (at::hasCUDA()) {
    // A device-to-host copy of one element waits for the device's queue.
    auto t = at::zeros({1}, at::TensorOptions().device(at::Device(at::kCUDA, device)));
    (void)t.cpu();
  }
  CATCH
}

char *dt_parallel_info(void) {
  try {
    return dup(at::get_parallel_info());
  } catch (...) {
    return dup("unavailable");
  }
}

int dt_grad_enabled(void) { return c10::GradMode::is_enabled() ? 1 : 0; }
void dt_set_grad_enabled(int enabled) { c10::GradMode::set_enabled(enabled != 0); }

// libtorch 2.4 replaced the per-device autocast setters by ones that take the
// device type; 1.13 to 2.3 have one function per device.
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
#define DT_AUTOCAST_BY_DEVICE 1
#endif

dt_err dt_set_autocast(int type, int enabled, int dtype) {
  TRY
  const at::ScalarType st = scalar_type(dtype);
  const c10::DeviceType dev = device_type(type);
  if (dev == at::kCPU) {
#ifdef DT_AUTOCAST_BY_DEVICE
    at::autocast::set_autocast_dtype(at::kCPU, st);
    at::autocast::set_autocast_enabled(at::kCPU, enabled != 0);
#else
    at::autocast::set_autocast_cpu_dtype(st);
    at::autocast::set_cpu_enabled(enabled != 0);
#endif
  } else if (dev == at::kCUDA) {
#ifdef DT_AUTOCAST_BY_DEVICE
    at::autocast::set_autocast_dtype(at::kCUDA, st);
    at::autocast::set_autocast_enabled(at::kCUDA, enabled != 0);
#else
    at::autocast::set_autocast_gpu_dtype(st);
    at::autocast::set_enabled(enabled != 0);
#endif
  } else {
    throw std::invalid_argument("autocast: unsupported device type " + std::to_string(type));
  }
  if (!enabled) at::autocast::clear_cache();
  CATCH
}

int dt_tune_allocator(int64_t mmap_threshold, int64_t trim_threshold) {
#if defined(__GLIBC__)
  int a = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold));
  int b = mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold));
  return a && b;
#else
  (void)mmap_threshold;
  (void)trim_threshold;
  return 0;
#endif
}

int dt_autocast_enabled(int type) {
  const c10::DeviceType dev = device_type(type);
#ifdef DT_AUTOCAST_BY_DEVICE
  if (dev == at::kCPU) return at::autocast::is_autocast_enabled(at::kCPU) ? 1 : 0;
  if (dev == at::kCUDA) return at::autocast::is_autocast_enabled(at::kCUDA) ? 1 : 0;
#else
  if (dev == at::kCPU) return at::autocast::is_cpu_enabled() ? 1 : 0;
  if (dev == at::kCUDA) return at::autocast::is_enabled() ? 1 : 0;
#endif
  return 0;
}

// ---- metadata -------------------------------------------------------------

int dt_dim(dt_tensor t) { return static_cast<int>(T(t).dim()); }
void dt_shape(dt_tensor t, int64_t *out) {
  auto s = T(t).sizes();
  for (size_t i = 0; i < s.size(); i++) out[i] = s[i];
}
int dt_dtype(dt_tensor t) { return static_cast<int>(T(t).scalar_type()); }
void dt_device(dt_tensor t, int *type, int *index) {
  auto d = T(t).device();
  *type = static_cast<int>(d.type());
  *index = d.has_index() ? d.index() : 0;
}
int64_t dt_numel(dt_tensor t) { return T(t).numel(); }
int dt_defined(dt_tensor t) { return T(t).defined() ? 1 : 0; }
int dt_requires_grad(dt_tensor t) { return T(t).requires_grad() ? 1 : 0; }
int dt_is_leaf(dt_tensor t) { return T(t).is_leaf() ? 1 : 0; }

dt_err dt_to_string(dt_tensor t, char **out) {
  TRY
  std::ostringstream ss;
  ss << T(t);
  *out = dup(ss.str());
  CATCH
}

// ---- creation and data ------------------------------------------------------

dt_err dt_from_data(const void *data, const int64_t *shape, int ndim, int dtype, int dev_type,
                    int dev_index, dt_tensor *out) {
  TRY
  auto cpu = at::empty(ints(shape, ndim), options(dtype, static_cast<int>(at::kCPU), 0));
  if (cpu.numel() > 0) std::memcpy(cpu.data_ptr(), data, cpu.nbytes());
  if (device_type(dev_type) != at::kCPU) cpu = cpu.to(device(dev_type, dev_index));
  *out = wrap(cpu);
  CATCH
}

dt_err dt_copy_to(dt_tensor t, void *dst, size_t nbytes) {
  TRY
  auto c = T(t).detach().to(at::kCPU).contiguous();
  if (c.nbytes() != nbytes)
    throw std::runtime_error("copy_to: destination holds " + std::to_string(nbytes) + " bytes, tensor " +
                             std::to_string(c.nbytes()));
  if (nbytes) std::memcpy(dst, c.data_ptr(), nbytes);
  CATCH
}

dt_err dt_item(dt_tensor t, double *out) {
  TRY
  *out = T(t).item<double>();
  CATCH
}

#define FACTORY(name, expr)                                                                        \
  dt_err name(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index, dt_tensor *out) { \
    TRY auto o = options(dtype, dev_type, dev_index);                                             \
    *out = wrap(expr);                                                                             \
    CATCH                                                                                          \
  }
FACTORY(dt_empty, at::empty(ints(shape, ndim), o))
FACTORY(dt_zeros, at::zeros(ints(shape, ndim), o))
FACTORY(dt_ones, at::ones(ints(shape, ndim), o))
FACTORY(dt_rand, at::rand(ints(shape, ndim), o))
FACTORY(dt_randn, at::randn(ints(shape, ndim), o))
#undef FACTORY

dt_err dt_full(const int64_t *shape, int ndim, double value, int dtype, int dev_type, int dev_index,
               dt_tensor *out) {
  TRY
  *out = wrap(at::full(ints(shape, ndim), value, options(dtype, dev_type, dev_index)));
  CATCH
}

dt_err dt_randint(int64_t low, int64_t high, const int64_t *shape, int ndim, int dtype, int dev_type,
                  int dev_index, dt_tensor *out) {
  TRY
  *out = wrap(at::randint(low, high, ints(shape, ndim), options(dtype, dev_type, dev_index)));
  CATCH
}

dt_err dt_randperm(int64_t n, int dtype, int dev_type, int dev_index, dt_tensor *out) {
  TRY
  *out = wrap(at::randperm(n, options(dtype, dev_type, dev_index)));
  CATCH
}

dt_err dt_arange(double start, double end, double step, int dtype, int dev_type, int dev_index,
                 dt_tensor *out) {
  TRY
  *out = wrap(at::arange(start, end, step, options(dtype, dev_type, dev_index)));
  CATCH
}

dt_err dt_eye(int64_t n, int64_t m, int dtype, int dev_type, int dev_index, dt_tensor *out) {
  TRY
  *out = wrap(at::eye(n, m, options(dtype, dev_type, dev_index)));
  CATCH
}

dt_err dt_to(dt_tensor t, int dtype, int dev_type, int dev_index, dt_tensor *out) {
  TRY
  *out = wrap(T(t).to(device(dev_type, dev_index), scalar_type(dtype)));
  CATCH
}

dt_err dt_shallow_clone(dt_tensor t, dt_tensor *out) {
  TRY
  *out = wrap(T(t));
  CATCH
}

dt_err dt_host_memory(dt_tensor t, void **data, int *sole) {
  TRY
  const at::Tensor &x = T(t);
  if (!x.device().is_cpu() || !x.is_contiguous() || x.is_view())
    throw std::runtime_error("host_memory: needs a contiguous CPU tensor that is not a view");
  *data = x.data_ptr();
  // One reference to the tensor (this handle's) and one to its storage (the
  // tensor's): no other handle, view or saved-for-backward copy can read it.
  *sole = x.use_count() == 1 && x.storage().use_count() == 1;
  CATCH
}

// ---- generic operators ----------------------------------------------------------
// The cases come from ops.def through shim_ops.h (go generate ./torch), as do
// the Go constants that choose them (ops_gen.go).

dt_err dt_unary(int op, dt_tensor a_, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  at::Tensor r;
  switch (op) {
    DT_UNARY_CASES
    default: throw std::runtime_error("unknown unary op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_binary(int op, dt_tensor a_, dt_tensor b_, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  const at::Tensor &b = T(b_);
  at::Tensor r;
  switch (op) {
    DT_BINARY_CASES
    default: throw std::runtime_error("unknown binary op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_scalar_op(int op, dt_tensor a_, double sv, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  const at::Scalar s = scalar_for(a, sv);
  at::Tensor r;
  switch (op) {
    DT_SCALAR_CASES
    default: throw std::runtime_error("unknown scalar op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_inplace(int op, dt_tensor self_, dt_tensor other_, double s1, double s2) {
  TRY
  at::Tensor &self = T(self_);
  const at::Tensor other = other_ ? T(other_) : at::Tensor();
  switch (op) {
    DT_INPLACE_CASES
    default: throw std::runtime_error("unknown in-place op code " + std::to_string(op));
  }
  CATCH
}

dt_err dt_addcop_(int op, dt_tensor self_, dt_tensor t1_, dt_tensor t2_, double value) {
  TRY
  at::Tensor &self = T(self_);
  const at::Tensor &t1 = T(t1_);
  const at::Tensor &t2 = T(t2_);
  switch (op) {
    DT_ADDC_CASES
    default: throw std::runtime_error("unknown addc op code " + std::to_string(op));
  }
  CATCH
}

dt_err dt_clamp(dt_tensor a, int has_min, double min, int has_max, double max, dt_tensor *out) {
  TRY
  c10::optional<at::Scalar> lo, hi;
  if (has_min) lo = min;
  if (has_max) hi = max;
  *out = wrap(at::clamp(T(a), lo, hi));
  CATCH
}

dt_err dt_leaky_relu(dt_tensor a, double slope, dt_tensor *out) {
  TRY
  *out = wrap(at::leaky_relu(T(a), slope));
  CATCH
}

dt_err dt_softplus(dt_tensor a, double beta, double threshold, dt_tensor *out) {
  TRY
  *out = wrap(at::softplus(T(a), beta, threshold));
  CATCH
}

dt_err dt_where(dt_tensor cond, dt_tensor a, dt_tensor b, dt_tensor *out) {
  TRY
  *out = wrap(at::where(T(cond), T(a), T(b)));
  CATCH
}

dt_err dt_masked_fill(dt_tensor a, dt_tensor mask, double value, dt_tensor *out) {
  TRY
  *out = wrap(at::masked_fill(T(a), T(mask), value));
  CATCH
}

// ---- reductions ---------------------------------------------------------------------

dt_err dt_reduce(int op, dt_tensor a_, const int64_t *dims, int ndims, int keepdim, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  std::vector<int64_t> all;
  if (ndims < 0) {
    for (int64_t i = 0; i < a.dim(); i++) all.push_back(i);
    dims = all.data();
    ndims = static_cast<int>(all.size());
  }
  at::IntArrayRef d = ints(dims, ndims);
  bool k = keepdim != 0;
  at::Tensor r;
  switch (op) {
    DT_REDUCE_CASES
    default: throw std::runtime_error("unknown reduction code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_minmax_dim(int op, dt_tensor a_, int64_t dim, int keepdim, dt_tensor *values, dt_tensor *indices) {
  TRY
  const at::Tensor &a = T(a_);
  const bool k = keepdim != 0;
  std::tuple<at::Tensor, at::Tensor> r;
  switch (op) {
    DT_MINMAX_CASES
    default: throw std::runtime_error("unknown min/max op code " + std::to_string(op));
  }
  *values = wrap(std::get<0>(r));
  *indices = wrap(std::get<1>(r));
  CATCH
}

dt_err dt_argminmax(int op, dt_tensor a_, int64_t dim, int all, int keepdim, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  c10::optional<int64_t> d;
  if (!all) d = dim;
  const bool k = keepdim != 0;
  at::Tensor r;
  switch (op) {
    DT_ARGMINMAX_CASES
    default: throw std::runtime_error("unknown argmin/argmax op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_topk(dt_tensor a, int64_t k, int64_t dim, int largest, dt_tensor *values, dt_tensor *indices) {
  TRY
  auto r = at::topk(T(a), k, dim, largest != 0, true);
  *values = wrap(std::get<0>(r));
  *indices = wrap(std::get<1>(r));
  CATCH
}

dt_err dt_dim_op(int op, dt_tensor a_, int64_t dim, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  at::Tensor r;
  switch (op) {
    DT_DIM_CASES
    default: throw std::runtime_error("unknown dim op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_norm(dt_tensor a, double p, dt_tensor *out) {
  TRY
  *out = wrap(at::norm(T(a), p));
  CATCH
}

// ---- shape ---------------------------------------------------------------------------

dt_err dt_shape_op(int op, dt_tensor a_, const int64_t *dims, int ndims, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  at::IntArrayRef d = ints(dims, ndims);
  at::Tensor r;
  switch (op) {
    DT_SHAPE_CASES
    default: throw std::runtime_error("unknown shape op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_transpose(dt_tensor a, int64_t d0, int64_t d1, dt_tensor *out) {
  TRY
  *out = wrap(T(a).transpose(d0, d1));
  CATCH
}

dt_err dt_flatten(dt_tensor a, int64_t start, int64_t end, dt_tensor *out) {
  TRY
  *out = wrap(T(a).flatten(start, end));
  CATCH
}

dt_err dt_squeeze(dt_tensor a, int64_t dim, int all, dt_tensor *out) {
  TRY
  *out = wrap(all ? T(a).squeeze() : T(a).squeeze(dim));
  CATCH
}

dt_err dt_unsqueeze(dt_tensor a, int64_t dim, dt_tensor *out) {
  TRY
  *out = wrap(T(a).unsqueeze(dim));
  CATCH
}

dt_err dt_narrow(dt_tensor a, int64_t dim, int64_t start, int64_t length, dt_tensor *out) {
  TRY
  *out = wrap(T(a).narrow(dim, start, length));
  CATCH
}

dt_err dt_slice(dt_tensor a, int64_t dim, int64_t start, int64_t end, int64_t step, dt_tensor *out) {
  TRY
  *out = wrap(T(a).slice(dim, start, end, step));
  CATCH
}

dt_err dt_select(dt_tensor a, int64_t dim, int64_t index, dt_tensor *out) {
  TRY
  *out = wrap(T(a).select(dim, index));
  CATCH
}

dt_err dt_index_select(dt_tensor a, int64_t dim, dt_tensor index, dt_tensor *out) {
  TRY
  *out = wrap(at::index_select(T(a), dim, T(index)));
  CATCH
}

dt_err dt_gather(dt_tensor a, int64_t dim, dt_tensor index, dt_tensor *out) {
  TRY
  *out = wrap(at::gather(T(a), dim, T(index)));
  CATCH
}

dt_err dt_scatter(dt_tensor a, int64_t dim, dt_tensor index, dt_tensor src, dt_tensor *out) {
  TRY
  *out = wrap(at::scatter(T(a), dim, T(index), T(src)));
  CATCH
}

dt_err dt_unfold(dt_tensor a, int64_t dim, int64_t size, int64_t step, dt_tensor *out) {
  TRY
  *out = wrap(T(a).unfold(dim, size, step));
  CATCH
}

dt_err dt_cat(const dt_tensor *ts, int n, int64_t dim, int stack, dt_tensor *out) {
  TRY
  auto v = tensors(ts, n);
  *out = wrap(stack ? at::stack(v, dim) : at::cat(v, dim));
  CATCH
}

dt_err dt_split(dt_tensor a, int64_t split_size, int64_t dim, dt_tensor *outs, int cap, int *n) {
  TRY
  auto parts = at::split(T(a), split_size, dim);
  if (static_cast<int>(parts.size()) > cap) throw std::runtime_error("split: too many parts");
  for (size_t i = 0; i < parts.size(); i++) outs[i] = wrap(parts[i]);
  *n = static_cast<int>(parts.size());
  CATCH
}

dt_err dt_one_hot(dt_tensor a, int64_t classes, dt_tensor *out) {
  TRY
  *out = wrap(at::one_hot(T(a), classes));
  CATCH
}

dt_err dt_pad(dt_tensor a_, const int64_t *pad, int npad, int mode, double value, dt_tensor *out) {
  TRY
  const at::Tensor &a = T(a_);
  at::IntArrayRef p = ints(pad, npad);
  at::Tensor r;
  switch (mode) {
    DT_PAD_CASES
    default: throw std::runtime_error("pad: unknown mode");
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_einsum(const char *eq, const dt_tensor *ts, int n, dt_tensor *out) {
  TRY
  *out = wrap(at::einsum(eq, tensors(ts, n)));
  CATCH
}

// ---- neural-network functions ----------------------------------------------------------

// env_on reads a kernel switch from the environment: on unless the
// variable is "0".
static int env_on(const char *name) {
  const char *e = std::getenv(name);
  return (e != nullptr && std::string(e) == "0") ? 0 : 1;
}

// Linear layers in float32 on the CPU run as 1x1 convolutions over [M, K, 1, 1]
// views: libtorch sends those to oneDNN's JIT kernels, where at::linear goes to
// the BLAS it was built with (OpenBLAS in Debian's build): 2x to 4x slower for
// most shapes of DIM's layers on AVX-512, faster for a few very wide ones
// (forward and backward, bench/linear_kernels.py). Same maths, other rounding; off with
// dt_set_onednn_linear(0) or DIMTORCH_ONEDNN_LINEAR=0. Under autocast (bfloat16)
// at::linear already runs on oneDNN and is left alone.
static int onednn_linear_state() {
  static const int from_env = env_on("DIMTORCH_ONEDNN_LINEAR");
  return from_env;
}
static std::atomic<int> g_onednn_linear{-1};  // -1: not set, follow the environment

void dt_set_onednn_linear(int on) { g_onednn_linear.store(on != 0 ? 1 : 0); }

int dt_onednn_linear(void) {
  int v = g_onednn_linear.load();
  return (v < 0 ? onednn_linear_state() : v) != 0 && at::hasMKLDNN() ? 1 : 0;
}

dt_err dt_linear(dt_tensor x, dt_tensor w, dt_tensor b, dt_tensor *out) {
  TRY
  const at::Tensor &xx = T(x);
  const at::Tensor &ww = T(w);
  if (xx.dim() >= 2 && ww.dim() == 2 && xx.device().is_cpu() && ww.device().is_cpu() &&
      xx.scalar_type() == at::kFloat && ww.scalar_type() == at::kFloat && xx.size(-1) == ww.size(1) &&
      xx.numel() > 0 && dt_autocast_enabled(static_cast<int>(at::kCPU)) == 0 && dt_onednn_linear() != 0) {
    std::vector<int64_t> sizes = xx.sizes().vec();
    const int64_t k = sizes.back();
    at::Tensor y = at::conv2d(xx.reshape({-1, k, 1, 1}), ww.reshape({ww.size(0), k, 1, 1}), opt(b));
    sizes.back() = ww.size(0);
    *out = wrap(y.reshape(sizes));
    return nullptr;
  }
  *out = wrap(at::linear(xx, ww, opt(b)));
  CATCH
}

// 1x1 convolutions in bfloat16 on the CPU (the MI heads' layers under
// autocast) run as matrix products over the [N*H*W, C] rows of the NHWC
// input: oneDNN's bfloat16 matmul (AMX where the CPU has it) computes the
// forward and backward passes 2.2x to 4.3x faster than its bfloat16 1x1
// convolution for DIM's head shapes (bench/conv_kernels.py). An NCHW input
// gets an NCHW output. Same maths, bfloat16 products with float32
// accumulation either way; off with dt_set_lowp_1x1_matmul(0) or
// DIMTORCH_LOWP_1X1_MATMUL=0. In float32 the convolution is the faster one
// and is kept.
static std::atomic<int> g_lowp_1x1{-1};  // -1: not set, follow the environment

void dt_set_lowp_1x1_matmul(int on) { g_lowp_1x1.store(on != 0 ? 1 : 0); }

int dt_lowp_1x1_matmul(void) {
  static const int from_env = env_on("DIMTORCH_LOWP_1X1_MATMUL");
  int v = g_lowp_1x1.load();
  return (v < 0 ? from_env : v) != 0 && at::hasMKLDNN() ? 1 : 0;
}

static bool cpu_autocast_bf16() {
#ifdef DT_AUTOCAST_BY_DEVICE
  return at::autocast::is_autocast_enabled(at::kCPU) && at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
#else
  return at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
#endif
}

static bool lowp_1x1(const at::Tensor &x, const at::Tensor &w, const int64_t *stride, const int64_t *padding,
                     const int64_t *dilation, int64_t groups) {
  return x.dim() == 4 && w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1 && groups == 1 && stride[0] == 1 &&
         stride[1] == 1 && padding[0] == 0 && padding[1] == 0 && dilation[0] == 1 && dilation[1] == 1 &&
         x.size(1) == w.size(1) && x.numel() > 0 && x.device().is_cpu() && w.device().is_cpu() &&
         (x.scalar_type() == at::kBFloat16 || cpu_autocast_bf16()) && dt_lowp_1x1_matmul() != 0;
}

dt_err dt_conv2d(dt_tensor x, dt_tensor w, dt_tensor b, const int64_t *stride, const int64_t *padding,
                 const int64_t *dilation, int64_t groups, dt_tensor *out) {
  TRY
  const at::Tensor &xx = T(x);
  const at::Tensor &ww = T(w);
  if (lowp_1x1(xx, ww, stride, padding, dilation, groups)) {
    const int64_t n = xx.size(0), c = xx.size(1), h = xx.size(2), wd = xx.size(3), o = ww.size(0);
    at::Tensor rows = xx.permute({0, 2, 3, 1}).reshape({-1, c});  // a view when x is channels_last
    at::Tensor y = at::linear(rows, ww.reshape({o, c}), opt(b)).reshape({n, h, wd, o}).permute({0, 3, 1, 2});
    // channels_last strides as they come; an NCHW input gets an NCHW output, as from the convolution
    *out = wrap(xx.is_contiguous(at::MemoryFormat::ChannelsLast) ? y : y.contiguous());
    return nullptr;
  }
  *out = wrap(at::conv2d(T(x), T(w), opt(b), ints(stride, 2), ints(padding, 2), ints(dilation, 2), groups));
  CATCH
}

dt_err dt_conv_transpose2d(dt_tensor x, dt_tensor w, dt_tensor b, const int64_t *stride,
                           const int64_t *padding, const int64_t *output_padding, int64_t groups,
                           const int64_t *dilation, dt_tensor *out) {
  TRY
  *out = wrap(at::conv_transpose2d(T(x), T(w), opt(b), ints(stride, 2), ints(padding, 2),
                                   ints(output_padding, 2), groups, ints(dilation, 2)));
  CATCH
}

dt_err dt_max_pool2d(dt_tensor x, const int64_t *kernel, const int64_t *stride, const int64_t *padding,
                     const int64_t *dilation, int ceil_mode, dt_tensor *out) {
  TRY
  *out = wrap(at::max_pool2d(T(x), ints(kernel, 2), ints(stride, 2), ints(padding, 2), ints(dilation, 2),
                             ceil_mode != 0));
  CATCH
}

dt_err dt_avg_pool2d(dt_tensor x, const int64_t *kernel, const int64_t *stride, const int64_t *padding,
                     int ceil_mode, int count_include_pad, dt_tensor *out) {
  TRY
  *out = wrap(at::avg_pool2d(T(x), ints(kernel, 2), ints(stride, 2), ints(padding, 2), ceil_mode != 0,
                             count_include_pad != 0));
  CATCH
}

dt_err dt_adaptive_pool2d(int op, dt_tensor x_, const int64_t *size_, dt_tensor *out) {
  TRY
  const at::Tensor &x = T(x_);
  at::IntArrayRef size = ints(size_, 2);
  at::Tensor r;
  switch (op) {
    DT_ADAPTIVE_CASES
    default: throw std::runtime_error("unknown adaptive pooling op code " + std::to_string(op));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_batch_norm(dt_tensor x, dt_tensor w, dt_tensor b, dt_tensor running_mean, dt_tensor running_var,
                     int training, double momentum, double eps, dt_tensor *out) {
  TRY
  *out = wrap(at::batch_norm(T(x), opt(w), opt(b), opt(running_mean), opt(running_var), training != 0,
                             momentum, eps, /*cudnn_enabled=*/true));
  CATCH
}

dt_err dt_layer_norm(dt_tensor x, const int64_t *shape, int ndims, dt_tensor w, dt_tensor b, double eps,
                     dt_tensor *out) {
  TRY
  *out = wrap(at::layer_norm(T(x), ints(shape, ndims), opt(w), opt(b), eps));
  CATCH
}

dt_err dt_dropout(dt_tensor x, double p, int training, dt_tensor *out) {
  TRY
  *out = wrap(at::dropout(T(x), p, training != 0));
  CATCH
}

dt_err dt_interpolate(dt_tensor x_, const int64_t *size_, int mode, int align_corners, dt_tensor *out) {
  TRY
  const at::Tensor &x = T(x_);
  at::IntArrayRef size = ints(size_, 2);
  const bool align = align_corners != 0;
  at::Tensor r;
  switch (mode) {
    DT_INTERP_CASES
    default: throw std::runtime_error("unknown interpolation mode " + std::to_string(mode));
  }
  *out = wrap(r);
  CATCH
}

dt_err dt_cross_entropy(dt_tensor logits, dt_tensor target, int red, double label_smoothing, dt_tensor *out) {
  TRY
  *out = wrap(at::cross_entropy_loss(T(logits), T(target), {}, reduction(red), -100, label_smoothing));
  CATCH
}

dt_err dt_mse_loss(dt_tensor a, dt_tensor b, int red, dt_tensor *out) {
  TRY
  *out = wrap(at::mse_loss(T(a), T(b), reduction(red)));
  CATCH
}

dt_err dt_bce_with_logits(dt_tensor x, dt_tensor y, int red, dt_tensor *out) {
  TRY
  *out = wrap(at::binary_cross_entropy_with_logits(T(x), T(y), {}, {}, reduction(red)));
  CATCH
}

// ---- autograd -------------------------------------------------------------------------------

dt_err dt_set_requires_grad(dt_tensor t, int r) {
  TRY
  T(t).set_requires_grad(r != 0);
  CATCH
}

dt_err dt_grad(dt_tensor t, dt_tensor *out) {
  TRY
  const at::Tensor &g = T(t).grad();
  *out = g.defined() ? wrap(g) : nullptr;
  CATCH
}

dt_err dt_zero_grad(dt_tensor t) {
  TRY
  T(t).mutable_grad().reset();
  CATCH
}

dt_err dt_backward(dt_tensor t, dt_tensor grad, int retain_graph, int create_graph) {
  TRY
  c10::optional<bool> keep;
  if (retain_graph) keep = true;
  T(t).backward(opt(grad), keep, create_graph != 0);
  CATCH
}

dt_err dt_autograd_grad(const dt_tensor *outputs, int nout, const dt_tensor *grad_outputs,
                        const dt_tensor *inputs, int nin, int retain_graph, int create_graph,
                        int allow_unused, dt_tensor *outs) {
  TRY
  auto outv = tensors(outputs, nout);
  std::vector<at::Tensor> gov;
  if (grad_outputs) gov = tensors(grad_outputs, nout);
  auto inv = tensors(inputs, nin);
  c10::optional<bool> keep;
  if (retain_graph) keep = true;
  auto gs = torch::autograd::grad(outv, inv, gov, keep, create_graph != 0, allow_unused != 0);
  for (int i = 0; i < nin; i++) outs[i] = gs[i].defined() ? wrap(gs[i]) : nullptr;
  CATCH
}

// ---- in-place initialisers --------------------------------------------------------------------

dt_err dt_init_(int op, dt_tensor t_, double a, double b) {
  TRY
  at::NoGradGuard guard;
  at::Tensor &t = T(t_);
  switch (op) {
    DT_INIT_CASES
    default: throw std::runtime_error("unknown init op code " + std::to_string(op));
  }
  CATCH
}

// ---- optimiser steps: one call per step over the parameter list ----------------------

static int fused_optim_env() {
  static const int from_env = env_on("DIMTORCH_FUSED_OPTIM");
  return from_env;
}
static std::atomic<int> g_fused_optim{-1};  // -1: not set, follow the environment

int dt_set_fused_optim(const char *kernel) {
  if (std::string(kernel) == "off") {
    g_fused_optim.store(0);
    return 0;
  }
  if (!dimtorch::adam_fused_use(kernel)) return -1;
  g_fused_optim.store(1);
  return 0;
}

static bool fused_optim_on() {
  int v = g_fused_optim.load();
  return (v < 0 ? fused_optim_env() : v) != 0;
}

const char *dt_fused_optim_isa(void) { return fused_optim_on() ? dimtorch::adam_fused_isa() : "off"; }

const char *dt_aten_cpu_capability(void) { return dimtorch::aten_cpu_capability_name(); }

// fusable: dense float32 CPU tensors of one shape whose strides agree on
// every dimension longer than 1 (a dimension of size 1 moves no element), so
// that their storages line up element for element.
static bool fusable(const at::Tensor &p, const at::Tensor &g, const at::Tensor &m, const at::Tensor &v) {
  for (const at::Tensor *t : {&p, &g, &m, &v}) {
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_non_overlapping_and_dense() ||
        t->sizes() != p.sizes())
      return false;
    for (int64_t d = 0; d < p.dim(); d++)
      if (p.size(d) > 1 && t->stride(d) != p.stride(d)) return false;
  }
  return true;
}

dt_err dt_adam_step(const dt_tensor *params, const dt_tensor *exp_avg, const dt_tensor *exp_avg_sq, int n,
                    double lr, double beta1, double beta2, double eps, double weight_decay, int decoupled,
                    int64_t step) {
  TRY
  at::NoGradGuard guard;
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const bool fuse = fused_optim_on();
  std::vector<dimtorch::AdamSpan> spans;
  std::vector<at::Tensor> fused;  // p, m, v of each span: their versions move as ATen's in-place ops move them
  std::unordered_set<const void *> seen;
  bool repeated = false;  // a parameter listed twice is updated twice, one update after the other
  for (int i = 0; i < n; i++) {
    at::Tensor &p = T(params[i]);
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    at::Tensor &m = T(exp_avg[i]);
    at::Tensor &v = T(exp_avg_sq[i]);
    if (fuse && fusable(p, g, m, v)) {
      spans.push_back({p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
                       p.numel()});
      repeated = repeated || !seen.insert(p.data_ptr()).second;
      fused.insert(fused.end(), {p, m, v});
      continue;
    }
    if (weight_decay != 0) {
      if (decoupled)
        p.mul_(1.0 - lr * weight_decay);
      else
        g = g.add(p, weight_decay);
    }
    m.mul_(beta1).add_(g, 1.0 - beta1);
    v.mul_(beta2).addcmul_(g, g, 1.0 - beta2);
    at::Tensor denom = (v.sqrt() / std::sqrt(bc2)).add_(eps);
    p.addcdiv_(m, denom, -lr / bc1);
  }
  if (!spans.empty()) {
    // The scalars as ATen rounds them for float32 tensors.
    dimtorch::AdamConsts c;
    c.beta1 = static_cast<float>(beta1);
    c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
    c.beta2 = static_cast<float>(beta2);
    c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
    c.sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
    c.eps = static_cast<float>(eps);
    c.neg_step = static_cast<float>(-lr / bc1);
    c.weight_decay = decoupled ? 0.0f : static_cast<float>(weight_decay);
    c.decay = decoupled ? static_cast<float>(1.0 - lr * weight_decay) : 1.0f;
    if (repeated) {
      for (const dimtorch::AdamSpan &sp : spans) dimtorch::adam_fused({sp}, c);
    } else {
      dimtorch::adam_fused(spans, c);
    }
    // A graph that saved one of these tensors now fails at backward ("modified
    // by an inplace operation"), as it would after ATen's in-place update.
    for (const at::Tensor &t : fused) torch::autograd::impl::bump_version(t);
  }
  CATCH
}

dt_err dt_sgd_step(const dt_tensor *params, const dt_tensor *momentum_buf, int n, double lr, double momentum,
                   double dampening, double weight_decay, int nesterov, int first) {
  TRY
  at::NoGradGuard guard;
  for (int i = 0; i < n; i++) {
    at::Tensor &p = T(params[i]);
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    if (weight_decay != 0) g = g.add(p, weight_decay);
    if (momentum != 0) {
      at::Tensor &buf = T(momentum_buf[i]);
      if (first)
        buf.copy_(g);
      else
        buf.mul_(momentum).add_(g, 1.0 - dampening);
      g = nesterov ? g.add(buf, momentum) : buf;
    }
    p.add_(g, -lr);
  }
  CATCH
}

dt_err dt_clip_grad_norm(const dt_tensor *params, int n, double max_norm, double *total) {
  TRY
  at::NoGradGuard guard;
  std::vector<at::Tensor> norms;
  for (int i = 0; i < n; i++) {
    const at::Tensor &g = T(params[i]).grad();
    if (g.defined()) norms.push_back(at::norm(g.detach(), 2).to(at::kFloat).to(at::kCPU));
  }
  if (norms.empty()) {
    *total = 0;
    return nullptr;
  }
  double t = at::norm(at::stack(norms), 2).item<double>();
  *total = t;
  double coef = max_norm / (t + 1e-6);
  if (coef < 1.0) {
    for (int i = 0; i < n; i++) {
      at::Tensor g = T(params[i]).grad();
      if (g.defined()) g.mul_(coef);
    }
  }
  CATCH
}

}  // extern "C"
