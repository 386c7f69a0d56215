//go:build !dimtorch_nodist && !dimtorch_shim

// c10d for dimtorch: see dist.h. Compiled by cgo into package dist (Debian's
// libtorch-dev and libgloo-dev); built without it under -tags dimtorch_nodist.

#include "dist.h"
#include "../shim_try.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

// The checks that ops.def's allreduce codes are c10d::ReduceOp's (after
// c10d's headers, which they name).
#include "dist_ops.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

struct dt_pg_s {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;   // gradients (the Reducer), parameters, flags
  c10::intrusive_ptr<c10d::ProcessGroupGloo> aux;  // features gathered inside the autograd graph
};

struct dt_reducer_s {
  std::unique_ptr<c10d::Reducer> r;
};

namespace {

inline at::Tensor &T(dt_tensor t) { return *reinterpret_cast<at::Tensor *>(t); }
inline dt_tensor wrap(at::Tensor t) { return reinterpret_cast<dt_tensor>(new at::Tensor(std::move(t))); }

using dimtorch::dup;

std::vector<at::Tensor> tensors(const dt_tensor *ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(T(ts[i]));
  return v;
}

c10::intrusive_ptr<c10d::ProcessGroupGloo> new_gloo(const c10::intrusive_ptr<c10d::Store> &store, int rank, int world,
                                                std::chrono::milliseconds timeout, const std::string &host,
                                                const std::string &iface) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  if (!iface.empty())
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
}

// The ranks' tensors concatenated along dim 0; the backward pass sums the
// gradient over ranks and returns this rank's slice.
struct AllGather : public torch::autograd::Function<AllGather> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, int64_t pgp) {
    auto *p = reinterpret_cast<dt_pg_s *>(pgp);
    int world = p->aux->getSize();
    ctx->saved_data["pg"] = pgp;
    ctx->saved_data["n"] = x.size(0);
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    // Gloo has no bfloat16: reduced precision travels as float32.
    at::Tensor send = x.is_floating_point() && x.element_size() < 4 ? x.to(at::kFloat) : x;
    std::vector<at::Tensor> in{send.contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int i = 0; i < world; i++) out[0].push_back(at::empty_like(in[0]));
    p->aux->allgather(out, in)->wait();
    return at::cat(out[0], 0).to(x.scalar_type());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto *p = reinterpret_cast<dt_pg_s *>(ctx->saved_data["pg"].toInt());
    int64_t n = ctx->saved_data["n"].toInt();
    auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    at::Tensor gr = grads[0];
    gr = gr.is_floating_point() && gr.element_size() < 4 ? gr.to(at::kFloat) : gr.clone();
    std::vector<at::Tensor> g{gr.contiguous()};
    p->aux->allreduce(g)->wait();
    return {g[0].narrow(0, p->aux->getRank() * n, n).to(dtype), at::Tensor()};
  }
};

// Drops the Reducer's "Grad strides do not match bucket view strides"
// warning and passes every other warning on. The mismatch it reports is
// between two equivalent layouts of 1x1 convolution weights in
// channels-last (strides differ only on dimensions of size 1); the Reducer
// copies the gradient into its bucket either way.
class StrideWarningFilter : public c10::WarningHandler {
 public:
  explicit StrideWarningFilter(c10::WarningHandler *next) : next_(next) {}
  void process(const c10::SourceLocation &loc, const std::string &msg, const bool verbatim) override {
    if (msg.find("Grad strides do not match bucket view strides") != std::string::npos) return;
    next_->process(loc, msg, verbatim);
  }

 private:
  c10::WarningHandler *next_;
};

// Installs the filter on the calling thread (libtorch's warning handler is
// per thread; the CPU backward pass runs on the thread that starts it).
void filter_stride_warning() {
  static thread_local bool installed = false;
  if (installed) return;
  installed = true;
  c10::Warning::set_warning_handler(new StrideWarningFilter(c10::Warning::get_warning_handler()));
}

}  // namespace

#define TRY DT_TRY
#define CATCH DT_CATCH("c10d")

extern "C" {

dt_err dt_pg_new(const char *host, int port, int rank, int world, int64_t timeout_ms, const char *iface,
                 const char *bind_host, dt_pg *out) {
  TRY
  std::chrono::milliseconds timeout(timeout_ms);
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = world;
  so.waitWorkers = false;
  so.timeout = timeout;
  auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
  // Every rank must agree on the world size before Gloo connects (a
  // mismatch would otherwise wait out the whole timeout).
  std::string ws = std::to_string(world);
  if (rank == 0) {
    store->set("dimtorch/world_size", std::vector<uint8_t>(ws.begin(), ws.end()));
  } else {
    auto v = store->get("dimtorch/world_size");
    std::string theirs(v.begin(), v.end());
    if (theirs != ws)
      throw std::runtime_error("this worker was started with a world size of " + ws + " but rank 0 with " + theirs);
  }
  auto p = std::make_unique<dt_pg_s>();
  p->store = store;
  std::string h(bind_host ? bind_host : ""), ifc(iface ? iface : "");
  p->pg = new_gloo(c10::make_intrusive<c10d::PrefixStore>("dimtorch/pg", store), rank, world, timeout, h, ifc);
  p->aux = new_gloo(c10::make_intrusive<c10d::PrefixStore>("dimtorch/aux", store), rank, world, timeout, h, ifc);
  *out = p.release();
  CATCH
}

void dt_pg_free(dt_pg pg) {
  try {
    delete pg;
  } catch (...) {
  }
}

dt_err dt_pg_allreduce(dt_pg pg, dt_tensor *ts, int n, int op) {
  TRY
  auto v = tensors(ts, n);
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp(static_cast<c10d::ReduceOp::RedOpType>(op));
  for (auto &t : v) {
    std::vector<at::Tensor> one{t};
    pg->pg->allreduce(one, o)->wait();
  }
  CATCH
}

dt_err dt_pg_broadcast(dt_pg pg, dt_tensor *ts, int n, int root) {
  TRY
  auto v = tensors(ts, n);
  c10d::BroadcastOptions o;
  o.rootRank = root;
  for (auto &t : v) {
    // Gloo broadcasts contiguous memory; a channels-last parameter is
    // broadcast through a contiguous copy.
    at::Tensor c = t.is_contiguous() ? t : t.contiguous();
    std::vector<at::Tensor> one{c};
    pg->pg->broadcast(one, o)->wait();
    if (!c.is_same(t)) {
      at::NoGradGuard ng;
      t.copy_(c);
    }
  }
  CATCH
}

dt_err dt_pg_barrier(dt_pg pg) {
  TRY
  pg->pg->barrier()->wait();
  CATCH
}

dt_err dt_pg_verify(dt_pg pg, dt_tensor *ts, int n) {
  TRY
  c10::intrusive_ptr<c10d::ProcessGroup> base = pg->pg;
  c10d::verify_params_across_processes(base, tensors(ts, n), c10::nullopt);
  CATCH
}

dt_err dt_pg_all_gather(dt_pg pg, dt_tensor x, dt_tensor *out) {
  TRY
  *out = wrap(AllGather::apply(T(x), reinterpret_cast<int64_t>(pg)));
  CATCH
}

dt_err dt_reducer_new(dt_pg pg, dt_tensor *params, int n, int64_t bucket_bytes, dt_reducer *out) {
  TRY
  auto ps = tensors(params, n);
  for (size_t i = 0; i < ps.size(); i++)
    if (!ps[i].requires_grad())
      throw std::runtime_error("parameter " + std::to_string(i) + " does not require gradients: the Reducer cannot watch it");
  std::vector<bool> sparse(ps.size(), false);
  std::vector<std::vector<size_t>> idx;
  std::vector<size_t> limits;
  std::tie(idx, limits) = c10d::compute_bucket_assignment_by_size(
      ps, {static_cast<size_t>(c10d::kDefaultFirstBucketBytes), static_cast<size_t>(bucket_bytes)}, sparse);
  // As DDP: buckets in reverse order of the parameters, the order in which
  // the backward pass produces their gradients.
  std::reverse(idx.begin(), idx.end());
  std::reverse(limits.begin(), limits.end());
  c10::intrusive_ptr<c10d::ProcessGroup> base = pg->pg;
  auto r = std::make_unique<dt_reducer_s>();
  r->r = std::make_unique<c10d::Reducer>(ps, idx, limits, base, sparse, bucket_bytes, /*find_unused=*/false,
                                         /*gradient_as_bucket_view=*/false,
                                         std::unordered_map<size_t, std::string>{}, c10d::kDefaultFirstBucketBytes);
  *out = r.release();
  CATCH
}

dt_err dt_reducer_prepare(dt_reducer r) {
  TRY
  // After the first backward pass the buckets are rebuilt once in the order
  // the gradients arrived (rank 0's order, broadcast); later calls return
  // at once.
  filter_stride_warning();
  r->r->rebuild_buckets();
  r->r->prepare_for_forward();
  r->r->prepare_for_backward({});
  CATCH
}

void dt_reducer_free(dt_reducer r) {
  try {
    delete r;
  } catch (...) {
  }
}

}  // extern "C"
