// Package ann is approximate nearest-neighbour search by cosine
// similarity: faiss's HNSW graph and inverted-file (IVF) indexes, linked
// from Debian's libfaiss-dev through a small C++ shim (shim.cc), behind a Go
// API that normalises the vectors, checks every argument and turns faiss's
// C++ exceptions into errors.
//
// The index stores unit vectors under the L2 metric, which ranks them as
// cosine similarity does (|u - v|^2 = 2 - 2 cos(u, v)); a search returns
// the rows with their exact cosine similarity to the query (both indexes
// keep the vectors uncompressed: only the choice of candidates is
// approximate). A file written by Save is faiss's own format, read back by
// Load; serve.Gallery keeps one beside its .npy and checks it belongs there.
package ann

/*
#cgo CXXFLAGS: -std=c++17 -O2 -fopenmp -Wno-deprecated-declarations
#cgo LDFLAGS: -l:libfaiss.a -lblas -llapack -fopenmp
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"unsafe"
)

// Kind names an index structure.
type Kind string

const (
	// HNSW is a hierarchical navigable small-world graph (Malkov and
	// Yashunin, 2018): M links a vector; EfSearch candidates a query.
	HNSW Kind = "hnsw"
	// IVF partitions the vectors into Nlist cells by k-means and scans the
	// Nprobe cells nearest a query.
	IVF Kind = "ivf"
)

// Options configure Build. Zero values take the defaults.
type Options struct {
	Kind           Kind
	M              int // HNSW: links a vector (default 32)
	EfConstruction int // HNSW: candidates while building (default 200)
	EfSearch       int // HNSW: candidates a query (default 128)
	Nlist          int // IVF: cells (default 4·√n, at most n/39)
	Nprobe         int // IVF: cells scanned a query (default 64)
	Threads        int // build threads (default: every core)
	// Progress, when set, is told the rows added so far.
	Progress func(done, total int)
}

// Defaults are Options' zero values filled in for n vectors.
func (o Options) Defaults(n int) Options {
	if o.M == 0 {
		o.M = 32
	}
	if o.EfConstruction == 0 {
		o.EfConstruction = 200
	}
	if o.EfSearch == 0 {
		o.EfSearch = 128
	}
	if o.Nlist == 0 {
		o.Nlist = max(1, min(int(4*math.Sqrt(float64(n))), n/39))
	}
	if o.Nprobe == 0 {
		o.Nprobe = 64
	}
	if o.Threads == 0 {
		o.Threads = runtime.NumCPU()
	}
	return o
}

// factory is the faiss index_factory string.
func (o Options) factory() (string, error) {
	switch o.Kind {
	case HNSW:
		return fmt.Sprintf("HNSW%d,Flat", o.M), nil
	case IVF:
		return fmt.Sprintf("IVF%d,Flat", o.Nlist), nil
	}
	return "", fmt.Errorf("ann: index kind %q: want %q or %q", o.Kind, HNSW, IVF)
}

// Index is a built or loaded index. Searches may run concurrently; Close
// waits for them.
type Index struct {
	mu   sync.RWMutex
	p    unsafe.Pointer
	dim  int
	n    int
	kind Kind
}

func errOf(msg *C.char) error {
	if msg == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(msg))
	return errors.New("faiss: " + C.GoString(msg))
}

// addChunk is the rows normalised and added at a time (Build's
// cancellation and progress points).
const addChunk = 1 << 16

// Build indexes the n = len(rows)/dim rows of rows (row-major; they need
// not be unit length: each is normalised; a zero row is refused). IVF
// trains its cells on up to 64 rows a cell, taken at an even stride.
// Cancelling ctx stops it between chunks of rows.
func Build(ctx context.Context, rows []float32, dim int, o Options) (*Index, error) {
	if dim < 1 || len(rows) == 0 || len(rows)%dim != 0 {
		return nil, fmt.Errorf("ann: %d values are not rows of %d", len(rows), dim)
	}
	n := len(rows) / dim
	o = o.Defaults(n)
	if o.M < 2 || o.EfConstruction < 1 || o.EfSearch < 1 || o.Nlist < 1 || o.Nlist > n || o.Nprobe < 1 {
		return nil, fmt.Errorf("ann: M %d, efConstruction %d, efSearch %d, nlist %d (of %d rows), nprobe %d: out of range",
			o.M, o.EfConstruction, o.EfSearch, o.Nlist, n, o.Nprobe)
	}
	f, err := o.factory()
	if err != nil {
		return nil, err
	}
	cf := C.CString(f)
	defer C.free(unsafe.Pointer(cf))
	ix := &Index{dim: dim, kind: o.Kind}
	if err := errOf(C.ann_new(cf, C.int(dim), &ix.p)); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			ix.Close()
		}
	}()
	switch o.Kind {
	case HNSW:
		if err := ix.Set("efConstruction", o.EfConstruction); err != nil {
			return nil, err
		}
		if err := ix.Set("efSearch", o.EfSearch); err != nil {
			return nil, err
		}
	case IVF:
		stride := max(1, n/(64*o.Nlist))
		sample := make([]float32, 0, (n/stride+1)*dim)
		for i := 0; i < n; i += stride {
			sample = append(sample, rows[i*dim:(i+1)*dim]...)
		}
		normalise(sample, dim)
		if err := errOf(C.ann_train(ix.p, C.int64_t(len(sample)/dim), (*C.float)(&sample[0]), C.int(o.Threads))); err != nil {
			return nil, err
		}
		if err := ix.Set("nprobe", o.Nprobe); err != nil {
			return nil, err
		}
	}
	for i := range n {
		zero := true
		for _, v := range rows[i*dim : (i+1)*dim] {
			if v != 0 {
				zero = false
				break
			}
		}
		if zero {
			return nil, fmt.Errorf("ann: row %d is zero: it has no direction to search by", i)
		}
	}
	buf := make([]float32, min(n, addChunk)*dim)
	for lo := 0; lo < n; lo += addChunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hi := min(n, lo+addChunk)
		b := buf[:(hi-lo)*dim]
		copy(b, rows[lo*dim:hi*dim])
		normalise(b, dim)
		if err := errOf(C.ann_add(ix.p, C.int64_t(hi-lo), (*C.float)(&b[0]), C.int(o.Threads))); err != nil {
			return nil, err
		}
		if o.Progress != nil {
			o.Progress(hi, n)
		}
	}
	ix.n = n
	ok = true
	return ix, nil
}

// normalise scales each row of x to unit length (zero rows stay zero).
func normalise(x []float32, dim int) {
	for i := 0; i < len(x); i += dim {
		r := x[i : i+dim]
		var s float64
		for _, v := range r {
			s += float64(v) * float64(v)
		}
		if s > 0 {
			inv := float32(1 / math.Sqrt(s))
			for j := range r {
				r[j] *= inv
			}
		}
	}
}

// Load reads an index that Save wrote.
func Load(path string) (*Index, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	ix := &Index{}
	if err := errOf(C.ann_read(cp, &ix.p)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ix.dim, ix.n = int(C.ann_dim(ix.p)), int(C.ann_count(ix.p))
	switch C.ann_kind(ix.p) {
	case 1:
		ix.kind = HNSW
	case 2:
		ix.kind = IVF
	default:
		ix.Close()
		return nil, fmt.Errorf("%s: a faiss index, but neither HNSW nor IVF", path)
	}
	return ix, nil
}

// Save writes the index to path atomically: a temporary file in the same
// folder, synced, renamed over path.
func (ix *Index) Save(path string) error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.p == nil {
		return errClosed
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)
	ct := C.CString(tmp)
	defer C.free(unsafe.Pointer(ct))
	if err := errOf(C.ann_write(ix.p, ct)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if f, err = os.Open(tmp); err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

var errClosed = errors.New("ann: the index is closed")

// Kind, Len and Dim describe the index.
func (ix *Index) Kind() Kind { return ix.kind }
func (ix *Index) Len() int   { return ix.n }
func (ix *Index) Dim() int   { return ix.dim }

// Set sets a search or build parameter: "efSearch" and "efConstruction"
// (HNSW), "nprobe" (IVF). Not while searches run.
func (ix *Index) Set(name string, value int) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.p == nil {
		return errClosed
	}
	if value < 1 {
		return fmt.Errorf("ann: %s %d: want at least 1", name, value)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return errOf(C.ann_set(ix.p, cn, C.int64_t(value)))
}

// Get reads a parameter back ("nlist" too, for IVF).
func (ix *Index) Get(name string) (int, error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.p == nil {
		return 0, errClosed
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var v C.int64_t
	if err := errOf(C.ann_get(ix.p, cn, &v)); err != nil {
		return 0, err
	}
	return int(v), nil
}

// Hit is one answer: a row and its cosine similarity to the query.
type Hit struct {
	Row        int
	Similarity float64
}

// Search returns up to k rows most similar to q, most similar first, on
// the calling thread.
func (ix *Index) Search(q []float32, k int) ([]Hit, error) {
	if len(q) != ix.dim {
		return nil, fmt.Errorf("ann: a query of %d values for an index of %d", len(q), ix.dim)
	}
	k = min(k, ix.n)
	if k <= 0 {
		return nil, nil
	}
	u := append([]float32(nil), q...)
	normalise(u, ix.dim)
	if u[0] == 0 && slices.Max(u) == 0 && slices.Min(u) == 0 {
		return nil, errors.New("ann: the query is zero: it has no direction to search by")
	}
	dist := make([]float32, k)
	labels := make([]int64, k)
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.p == nil {
		return nil, errClosed
	}
	if err := errOf(C.ann_search(ix.p, 1, (*C.float)(&u[0]), C.int64_t(k), (*C.float)(&dist[0]), (*C.int64_t)(&labels[0]), 1)); err != nil {
		return nil, err
	}
	hits := make([]Hit, 0, k)
	for i, l := range labels {
		if l < 0 {
			break
		}
		hits = append(hits, Hit{Row: int(l), Similarity: 1 - float64(dist[i])/2})
	}
	return hits, nil
}

// Close frees the index after the searches in progress.
func (ix *Index) Close() error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.p != nil {
		C.ann_free(ix.p)
		ix.p = nil
	}
	return nil
}
