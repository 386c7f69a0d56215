#include "shim.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <exception>
#include <stdexcept>
#include <string>

#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

namespace {

char* fail(const char* what) { return strdup(what); }

// threadsScope runs faiss's OpenMP regions on n threads from the calling
// thread (the setting is per thread) and restores the previous setting.
struct threadsScope {
  int old;
  explicit threadsScope(int n) : old(omp_get_max_threads()) {
    if (n > 0) omp_set_num_threads(n);
  }
  ~threadsScope() { omp_set_num_threads(old); }
};

template <typename F>
char* guard(F f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("faiss: unknown C++ exception");
  }
}

faiss::Index* idx(void* p) { return static_cast<faiss::Index*>(p); }

}  // namespace

extern "C" {

char* ann_new(const char* factory, int d, void** out) {
  return guard([&] { *out = faiss::index_factory(d, factory, faiss::METRIC_L2); });
}

char* ann_train(void* ix, int64_t n, const float* x, int threads) {
  threadsScope t(threads);
  return guard([&] { idx(ix)->train(n, x); });
}

char* ann_add(void* ix, int64_t n, const float* x, int threads) {
  threadsScope t(threads);
  return guard([&] { idx(ix)->add(n, x); });
}

char* ann_search(void* ix, int64_t n, const float* q, int64_t k, float* dist, int64_t* labels, int threads) {
  threadsScope t(threads);
  return guard([&] { idx(ix)->search(n, q, k, dist, labels); });
}

char* ann_set(void* ix, const char* name, int64_t value) {
  return guard([&] {
    std::string p(name);
    if (auto* h = dynamic_cast<faiss::IndexHNSW*>(idx(ix))) {
      if (p == "efSearch") {
        h->hnsw.efSearch = static_cast<int>(value);
        return;
      }
      if (p == "efConstruction") {
        h->hnsw.efConstruction = static_cast<int>(value);
        return;
      }
    }
    if (auto* v = faiss::ivflib::try_extract_index_ivf(idx(ix))) {
      if (p == "nprobe") {
        v->nprobe = static_cast<size_t>(value);
        return;
      }
    }
    throw std::runtime_error("this index has no parameter " + p);
  });
}

char* ann_get(void* ix, const char* name, int64_t* value) {
  return guard([&] {
    std::string p(name);
    if (auto* h = dynamic_cast<faiss::IndexHNSW*>(idx(ix))) {
      if (p == "efSearch") {
        *value = h->hnsw.efSearch;
        return;
      }
      if (p == "efConstruction") {
        *value = h->hnsw.efConstruction;
        return;
      }
    }
    if (auto* v = faiss::ivflib::try_extract_index_ivf(idx(ix))) {
      if (p == "nprobe") {
        *value = static_cast<int64_t>(v->nprobe);
        return;
      }
      if (p == "nlist") {
        *value = static_cast<int64_t>(v->nlist);
        return;
      }
    }
    throw std::runtime_error("this index has no parameter " + p);
  });
}

char* ann_write(void* ix, const char* path) {
  return guard([&] { faiss::write_index(idx(ix), path); });
}

char* ann_read(const char* path, void** out) {
  return guard([&] { *out = faiss::read_index(path); });
}

int64_t ann_count(void* ix) { return idx(ix)->ntotal; }
int ann_dim(void* ix) { return idx(ix)->d; }

int ann_kind(void* ix) {
  if (dynamic_cast<faiss::IndexHNSW*>(idx(ix))) return 1;
  if (faiss::ivflib::try_extract_index_ivf(idx(ix))) return 2;
  return 0;
}

void ann_free(void* ix) { delete idx(ix); }

}  // extern "C"
