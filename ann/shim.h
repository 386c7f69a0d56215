// A plain C interface over the parts of faiss's C++ API that dimtorch
// uses (Debian's libfaiss-dev ships a static libfaiss.a without the
// symbols of faiss's own C API, so this file is the bridge). Every function
// that can fail returns NULL on success or an error message the caller
// frees with free().
#ifndef DIMTORCH_ANN_SHIM_H
#define DIMTORCH_ANN_SHIM_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

// ann_new makes an empty index from a faiss factory string over d
// dimensions, with the L2 metric.
char* ann_new(const char* factory, int d, void** out);
// ann_train trains it (IVF: k-means of the coarse quantiser) on n rows.
char* ann_train(void* ix, int64_t n, const float* x, int threads);
// ann_add adds n rows, numbered from the index's current count.
char* ann_add(void* ix, int64_t n, const float* x, int threads);
// ann_search finds the k nearest of each of n queries: squared L2
// distances and row numbers (-1 where fewer than k were found).
char* ann_search(void* ix, int64_t n, const float* q, int64_t k, float* dist, int64_t* labels, int threads);
// ann_set sets a parameter: "efSearch" or "efConstruction" (HNSW),
// "nprobe" (IVF).
char* ann_set(void* ix, const char* name, int64_t value);
// ann_get reads one back into *value.
char* ann_get(void* ix, const char* name, int64_t* value);
char* ann_write(void* ix, const char* path);
char* ann_read(const char* path, void** out);
int64_t ann_count(void* ix);
int ann_dim(void* ix);
// ann_kind: 1 HNSW, 2 IVF, 0 another kind.
int ann_kind(void* ix);
void ann_free(void* ix);

#ifdef __cplusplus
}
#endif
#endif
