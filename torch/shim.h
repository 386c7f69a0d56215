/*
 * dimtorch's C interface to libtorch.
 *
 * Plain C (no C++ types cross this boundary) so that the implementation,
 * shim.cc, can be compiled into the Go package by cgo (the default) or built
 * on its own as libdimtorch_shim.so against any libtorch (see CMakeLists.txt)
 * and linked by a Go binary built elsewhere with -tags dimtorch_shim.
 *
 * Conventions:
 *   - dt_tensor is an owning handle to one at::Tensor (a reference-counted
 *     view of storage). Every handle returned through an out parameter must be
 *     released with dt_free exactly once.
 *   - Every function that can fail returns NULL on success or a malloc'd,
 *     NUL-terminated error message that the caller frees with dt_free_str.
 *     No C++ exception ever crosses this interface.
 *   - Every integer code (an operator, a mode, a dtype, a device type) is
 *     declared once, in ops.def, which `go generate ./torch` turns into the
 *     Go constants (ops_gen.go) and this side's cases and checks
 *     (shim_ops.h). dtype codes are c10::ScalarType values and device types
 *     c10::DeviceType values, passed on as they are (shim_ops.h checks them
 *     against libtorch's at compile time).
 */
#ifndef DIMTORCH_SHIM_H
#define DIMTORCH_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dt_tensor_s *dt_tensor;
typedef char *dt_err;

#define DT_ABI_VERSION 7

int dt_abi_version(void);
void dt_free(dt_tensor t);
void dt_free_str(char *s);

/* ---- library ---------------------------------------------------------- */
const char *dt_torch_version(void);
dt_err dt_manual_seed(uint64_t seed);
/* The CPU generator's state as a uint8 tensor, and restoring it. */
dt_err dt_rng_get_state(dt_tensor *out);
dt_err dt_rng_set_state(dt_tensor state);
void dt_set_num_threads(int n);
int dt_get_num_threads(void);
/* Flush denormal floats to zero (x86 FTZ and DAZ) on the calling thread and
   on every thread of its intra-op team; 1 if the CPU supports it. */
int dt_set_flush_denormal(int on);
int dt_cuda_is_available(void);
int dt_cuda_device_count(void);
dt_err dt_cuda_synchronize(int device);
char *dt_parallel_info(void);
int dt_grad_enabled(void);
void dt_set_grad_enabled(int enabled);
/* Automatic mixed precision for one device type (CPU or CUDA) on the
 * calling thread: enables or disables it with the given reduced dtype. */
dt_err dt_set_autocast(int device_type, int enabled, int dtype);
/* Sets glibc's mmap and trim thresholds (bytes) so that large tensors reuse
 * heap memory instead of fresh, page-faulting mappings; returns 0 where the C
 * library has no mallopt. */
int dt_tune_allocator(int64_t mmap_threshold, int64_t trim_threshold);
int dt_autocast_enabled(int device_type);

/* ---- metadata ----------------------------------------------------------- */
int dt_dim(dt_tensor t);
void dt_shape(dt_tensor t, int64_t *out); /* out has dt_dim entries */
int dt_dtype(dt_tensor t);
void dt_device(dt_tensor t, int *type, int *index);
int64_t dt_numel(dt_tensor t);
int dt_defined(dt_tensor t);
int dt_requires_grad(dt_tensor t);
int dt_is_leaf(dt_tensor t);
dt_err dt_to_string(dt_tensor t, char **out);

/* ---- creation and data -------------------------------------------------- */
dt_err dt_from_data(const void *data, const int64_t *shape, int ndim, int dtype,
                    int dev_type, int dev_index, dt_tensor *out);
dt_err dt_copy_to(dt_tensor t, void *dst, size_t nbytes);
dt_err dt_item(dt_tensor t, double *out);
dt_err dt_empty(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_zeros(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_ones(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_full(const int64_t *shape, int ndim, double value, int dtype, int dev_type, int dev_index,
               dt_tensor *out);
dt_err dt_rand(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_randn(const int64_t *shape, int ndim, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_randint(int64_t low, int64_t high, const int64_t *shape, int ndim, int dtype, int dev_type,
                  int dev_index, dt_tensor *out);
dt_err dt_randperm(int64_t n, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_arange(double start, double end, double step, int dtype, int dev_type, int dev_index,
                 dt_tensor *out);
dt_err dt_eye(int64_t n, int64_t m, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_to(dt_tensor t, int dtype, int dev_type, int dev_index, dt_tensor *out);
dt_err dt_shallow_clone(dt_tensor t, dt_tensor *out);
/* The memory of a contiguous CPU tensor, and whether this handle is the only
   reference to the tensor and the tensor the only one to its storage. */
dt_err dt_host_memory(dt_tensor t, void **data, int *sole);

/* ---- generic operators ---------------------------------------------------
 * dt_unary, dt_binary, dt_scalar_op, dt_reduce, dt_dim_op, dt_shape_op,
 * dt_inplace and dt_addcop_ select the operator by a code from ops.def, the
 * one table that `go generate ./torch` turns into the Go constants
 * (ops_gen.go) and the shim's cases (shim_ops.h); so do the op and mode
 * arguments below. */
dt_err dt_unary(int op, dt_tensor a, dt_tensor *out);
dt_err dt_binary(int op, dt_tensor a, dt_tensor b, dt_tensor *out);
dt_err dt_scalar_op(int op, dt_tensor a, double s, dt_tensor *out);
dt_err dt_inplace(int op, dt_tensor self, dt_tensor other, double s1, double s2);
dt_err dt_addcop_(int op, dt_tensor self, dt_tensor t1, dt_tensor t2, double value);

dt_err dt_clamp(dt_tensor a, int has_min, double min, int has_max, double max, dt_tensor *out);
dt_err dt_leaky_relu(dt_tensor a, double slope, dt_tensor *out);
dt_err dt_softplus(dt_tensor a, double beta, double threshold, dt_tensor *out);
dt_err dt_where(dt_tensor cond, dt_tensor a, dt_tensor b, dt_tensor *out);
dt_err dt_masked_fill(dt_tensor a, dt_tensor mask, double value, dt_tensor *out);

/* ---- reductions ---------------------------------------------------------- */
/* op: ops.def's reduce kind; ndims < 0 reduces over every dimension. */
dt_err dt_reduce(int op, dt_tensor a, const int64_t *dims, int ndims, int keepdim, dt_tensor *out);
/* op: ops.def's minmax kind; values and indices along dim. */
dt_err dt_minmax_dim(int op, dt_tensor a, int64_t dim, int keepdim, dt_tensor *values,
                     dt_tensor *indices);
/* op: ops.def's argminmax kind; dim ignored when all != 0. */
dt_err dt_argminmax(int op, dt_tensor a, int64_t dim, int all, int keepdim, dt_tensor *out);
/* The k largest (largest != 0) or smallest values along dim, sorted, and their indices. */
dt_err dt_topk(dt_tensor a, int64_t k, int64_t dim, int largest, dt_tensor *values, dt_tensor *indices);
/* op: ops.def's dim kind */
dt_err dt_dim_op(int op, dt_tensor a, int64_t dim, dt_tensor *out);
dt_err dt_norm(dt_tensor a, double p, dt_tensor *out);

/* ---- shape --------------------------------------------------------------- */
/* op: ops.def's shape kind */
dt_err dt_shape_op(int op, dt_tensor a, const int64_t *dims, int ndims, dt_tensor *out);
dt_err dt_transpose(dt_tensor a, int64_t d0, int64_t d1, dt_tensor *out);
dt_err dt_flatten(dt_tensor a, int64_t start, int64_t end, dt_tensor *out);
dt_err dt_squeeze(dt_tensor a, int64_t dim, int all, dt_tensor *out);
dt_err dt_unsqueeze(dt_tensor a, int64_t dim, dt_tensor *out);
dt_err dt_narrow(dt_tensor a, int64_t dim, int64_t start, int64_t length, dt_tensor *out);
dt_err dt_slice(dt_tensor a, int64_t dim, int64_t start, int64_t end, int64_t step, dt_tensor *out);
dt_err dt_select(dt_tensor a, int64_t dim, int64_t index, dt_tensor *out);
dt_err dt_index_select(dt_tensor a, int64_t dim, dt_tensor index, dt_tensor *out);
dt_err dt_gather(dt_tensor a, int64_t dim, dt_tensor index, dt_tensor *out);
dt_err dt_scatter(dt_tensor a, int64_t dim, dt_tensor index, dt_tensor src, dt_tensor *out);
dt_err dt_unfold(dt_tensor a, int64_t dim, int64_t size, int64_t step, dt_tensor *out);
dt_err dt_cat(const dt_tensor *ts, int n, int64_t dim, int stack, dt_tensor *out);
/* outs must hold ceil(size(dim)/split_size) handles; *n receives the count. */
dt_err dt_split(dt_tensor a, int64_t split_size, int64_t dim, dt_tensor *outs, int cap, int *n);
dt_err dt_one_hot(dt_tensor a, int64_t classes, dt_tensor *out);
/* mode: ops.def's pad kind; value fills the constant mode's border. */
dt_err dt_pad(dt_tensor a, const int64_t *pad, int npad, int mode, double value, dt_tensor *out);
dt_err dt_einsum(const char *eq, const dt_tensor *ts, int n, dt_tensor *out);

/* ---- neural-network functions ------------------------------------------- */
dt_err dt_linear(dt_tensor x, dt_tensor w, dt_tensor b, dt_tensor *out);
/* float32 CPU linear layers as 1x1 convolutions on oneDNN (default on where
   libtorch has oneDNN, unless DIMTORCH_ONEDNN_LINEAR=0) */
void dt_set_onednn_linear(int on);
int dt_onednn_linear(void);
/* 1x1 convolutions in bfloat16 on the CPU as matrix products over NHWC rows
   (on by default where libtorch has oneDNN, unless DIMTORCH_LOWP_1X1_MATMUL=0) */
void dt_set_lowp_1x1_matmul(int on);
int dt_lowp_1x1_matmul(void);
dt_err dt_conv2d(dt_tensor x, dt_tensor w, dt_tensor b, const int64_t *stride, const int64_t *padding,
                 const int64_t *dilation, int64_t groups, dt_tensor *out);
dt_err dt_conv_transpose2d(dt_tensor x, dt_tensor w, dt_tensor b, const int64_t *stride,
                           const int64_t *padding, const int64_t *output_padding, int64_t groups,
                           const int64_t *dilation, dt_tensor *out);
dt_err dt_max_pool2d(dt_tensor x, const int64_t *kernel, const int64_t *stride, const int64_t *padding,
                     const int64_t *dilation, int ceil_mode, dt_tensor *out);
dt_err dt_avg_pool2d(dt_tensor x, const int64_t *kernel, const int64_t *stride, const int64_t *padding,
                     int ceil_mode, int count_include_pad, dt_tensor *out);
/* op: ops.def's adaptive kind */
dt_err dt_adaptive_pool2d(int op, dt_tensor x, const int64_t *size, dt_tensor *out);
dt_err dt_batch_norm(dt_tensor x, dt_tensor w, dt_tensor b, dt_tensor running_mean,
                     dt_tensor running_var, int training, double momentum, double eps, dt_tensor *out);
dt_err dt_layer_norm(dt_tensor x, const int64_t *shape, int ndims, dt_tensor w, dt_tensor b, double eps,
                     dt_tensor *out);
dt_err dt_dropout(dt_tensor x, double p, int training, dt_tensor *out);
/* mode: ops.def's interp kind */
dt_err dt_interpolate(dt_tensor x, const int64_t *size, int mode, int align_corners, dt_tensor *out);
/* reduction: ops.def's loss kind */
dt_err dt_cross_entropy(dt_tensor logits, dt_tensor target, int reduction, double label_smoothing,
                        dt_tensor *out);
dt_err dt_mse_loss(dt_tensor a, dt_tensor b, int reduction, dt_tensor *out);
dt_err dt_bce_with_logits(dt_tensor x, dt_tensor y, int reduction, dt_tensor *out);

/* ---- autograd ------------------------------------------------------------ */
dt_err dt_set_requires_grad(dt_tensor t, int r);
/* *out is NULL when the tensor has no gradient. */
dt_err dt_grad(dt_tensor t, dt_tensor *out);
dt_err dt_zero_grad(dt_tensor t);
dt_err dt_backward(dt_tensor t, dt_tensor grad, int retain_graph, int create_graph);
/* outs[i] is NULL where inputs[i] was unused (allow_unused). */
dt_err dt_autograd_grad(const dt_tensor *outputs, int nout, const dt_tensor *grad_outputs,
                        const dt_tensor *inputs, int nin, int retain_graph, int create_graph,
                        int allow_unused, dt_tensor *outs);

/* ---- in-place initialisers ----------------------------------------------- */
/* op: ops.def's init kind: uniform_(a, b), normal_(mean=a, std=b), fill_(a), zero_, bernoulli_(p=a) */
dt_err dt_init_(int op, dt_tensor t, double a, double b);

/* ---- optimiser steps (parameter lists, one call per step) --------------- */
/* Adam: dense float32 CPU parameters whose gradient and moments share their
   strides take a fused single-pass kernel (fused.cc), unless the kernel is
   "off" (also DIMTORCH_FUSED_OPTIM=0); the others ATen's per-tensor
   operations. dt_set_fused_optim takes "auto" (the widest this CPU has that
   rounds as ATen's kernels at ATen's level), "avx512", "avx2", "scalar" or
   "off" and returns 0, or -1 for a name this CPU cannot run;
   dt_fused_optim_isa names the kernel in use. dt_aten_cpu_capability names
   the level of ATen's vectorised kernels (ATEN_CPU_CAPABILITY or the CPU's
   best) as ATEN_CPU_CAPABILITY does: "default" (plain C++), "avx2" or
   "avx512". */
int dt_set_fused_optim(const char *kernel);
const char *dt_fused_optim_isa(void);
const char *dt_aten_cpu_capability(void);
dt_err dt_adam_step(const dt_tensor *params, const dt_tensor *exp_avg, const dt_tensor *exp_avg_sq,
                    int n, double lr, double beta1, double beta2, double eps, double weight_decay,
                    int decoupled, int64_t step);
dt_err dt_sgd_step(const dt_tensor *params, const dt_tensor *momentum_buf, int n, double lr,
                   double momentum, double dampening, double weight_decay, int nesterov, int first);
/* Returns the total 2-norm of the gradients and scales them by min(1, max_norm / total). */
dt_err dt_clip_grad_norm(const dt_tensor *params, int n, double max_norm, double *total);

#ifdef __cplusplus
}
#endif
#endif
