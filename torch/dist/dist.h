/*
 * dimtorch's C interface to c10d, libtorch's distributed engine: a TCPStore
 * rendezvous, Gloo process groups, collectives and DDP's gradient Reducer.
 * Same conventions as ../shim.h: handles out, errors returned as malloc'd
 * strings (free with dt_free_str), no C++ exception crosses the interface.
 */
#ifndef DIMTORCH_DIST_H
#define DIMTORCH_DIST_H

#include "../shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dt_pg_s *dt_pg;
typedef struct dt_reducer_s *dt_reducer;

/* Rendezvous at host:port (rank 0 serves the store there) and connect a Gloo
 * process group of world ranks. timeout_ms bounds the rendezvous and every
 * collective. Gloo's traffic goes through the network interface iface, or
 * when iface is "" the one holding the address bind_host. */
dt_err dt_pg_new(const char *host, int port, int rank, int world, int64_t timeout_ms, const char *iface,
                 const char *bind_host, dt_pg *out);
void dt_pg_free(dt_pg pg);
/* In-place collectives on a list of tensors (one call, coalesced where Gloo
 * allows). op: ops.def's allreduce kind (c10d::ReduceOp values, checked in
 * dist_ops.h). */
dt_err dt_pg_allreduce(dt_pg pg, dt_tensor *ts, int n, int op);
dt_err dt_pg_broadcast(dt_pg pg, dt_tensor *ts, int n, int root);
dt_err dt_pg_barrier(dt_pg pg);
/* Fails unless every rank holds tensors of the same number, shapes and
 * dtypes (c10d::verify_params_across_processes). */
dt_err dt_pg_verify(dt_pg pg, dt_tensor *ts, int n);
/* The ranks' x concatenated along dim 0 in rank order, differentiable: the
 * gradient of x is the sum over ranks of the gradient of its slice. Runs on a
 * second process group so that it never interleaves with the Reducer's
 * traffic. */
dt_err dt_pg_all_gather(dt_pg pg, dt_tensor x, dt_tensor *out);

/* DDP's Reducer over params: after dt_reducer_prepare, the next backward pass
 * averages their gradients across ranks in buckets, overlapped with the
 * backward pass; the gradients are averaged when backward returns. */
dt_err dt_reducer_new(dt_pg pg, dt_tensor *params, int n, int64_t bucket_bytes, dt_reducer *out);
dt_err dt_reducer_prepare(dt_reducer r);
void dt_reducer_free(dt_reducer r);

#ifdef __cplusplus
}
#endif
#endif
