// Stand-in for a header that Debian's libtorch-dev 1.13 does not ship:
// c10d/reducer.hpp includes it for two pointer types only (the Reducer
// holds a shared pointer and an atomic raw pointer to a distributed-autograd
// context, and names the context's gradient-callback type). Declaring the
// class is enough and keeps the Reducer's layout exactly libtorch's; dimtorch
// never uses distributed autograd (RPC). Only on the include path of
// package dist; a libtorch named in CGO_CXXFLAGS comes first, so its real
// header wins where it has one.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor &)>;
};

using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
