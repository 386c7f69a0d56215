package serve

import (
	"bufio"
	"container/heap"
	"context"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/dimtorch/dimtorch/ann"
	"github.com/dimtorch/dimtorch/internal/npy"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// Gallery is a set of named vectors that neighbour queries search by
// cosine similarity, exactly: every query is scored against every vector
// (a matrix-vector product on gonum's assembly kernels, split across the
// cores for large galleries) and the k best are kept. A gallery loaded
// from .npy is memory-mapped, not copied; Close releases it.
type Gallery struct {
	Names   []string
	dim     int
	vecs    []float32  // len(Names) x dim, as given
	inv     []float32  // 1 / |row| (0 for a zero row)
	root    string     // the folder of images it was embedded from ("": none)
	path    string     // the .npy it was loaded from ("": none)
	index   *ann.Index // searched instead of every vector when set (UseIndex)
	release func() error
}

// File returns the path of image i when the gallery was embedded from a
// folder (GalleryFromDir).
func (g *Gallery) File(i int) (string, bool) {
	if g.root == "" || i < 0 || i >= len(g.Names) {
		return "", false
	}
	return filepath.Join(g.root, g.Names[i]), true
}

// NewGallery takes rows of equal length with their names.
func NewGallery(names []string, rows [][]float32) (*Gallery, error) {
	if len(names) != len(rows) {
		return nil, fmt.Errorf("gallery: %d names for %d vectors", len(names), len(rows))
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gallery: no vectors")
	}
	g := &Gallery{Names: names, dim: len(rows[0]), vecs: make([]float32, 0, len(rows)*len(rows[0]))}
	for i, r := range rows {
		if len(r) != g.dim {
			return nil, fmt.Errorf("gallery: vector %d has %d values, the first has %d", i, len(r), g.dim)
		}
		g.vecs = append(g.vecs, r...)
	}
	if err := g.norms(); err != nil {
		return nil, err
	}
	return g, nil
}

// norms computes the rows' inverse lengths and refuses values that are
// not finite (a damaged file would otherwise poison every answer).
func (g *Gallery) norms() error {
	n := len(g.vecs) / g.dim
	g.inv = make([]float32, n)
	for i := range n {
		var s float64
		for _, x := range g.vecs[i*g.dim : (i+1)*g.dim] {
			s += float64(x) * float64(x)
		}
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Errorf("gallery: vector %d (%s) has values that are not finite", i, g.Names[i])
		}
		if s > 0 {
			g.inv[i] = float32(1 / math.Sqrt(s))
		}
	}
	return nil
}

// Close releases a memory-mapped gallery; searching it afterwards is an
// error of the caller.
func (g *Gallery) Close() error {
	if g == nil {
		return nil
	}
	if g.index != nil {
		g.index.Close()
		g.index = nil
	}
	if g.release == nil {
		return nil
	}
	r := g.release
	g.release = nil
	return r()
}

// LoadGallery reads an [N, D] float32 .npy file (as `dimtorch embed --out
// FILE.npy` writes) and its names: one per line in namesPath, or, when
// namesPath is empty, in FILE.names.txt if it exists, else the row numbers.
func LoadGallery(path, namesPath string) (*Gallery, error) {
	data, shape, release, err := npy.MapFloat32(path)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	if len(shape) != 2 || shape[0] == 0 || shape[1] == 0 {
		return nil, fmt.Errorf("%s: want an [N, D] array of embeddings (N, D > 0), got shape %v", path, shape)
	}
	n, d := shape[0], shape[1]
	if namesPath == "" {
		if p := strings.TrimSuffix(path, filepath.Ext(path)) + ".names.txt"; fileExists(p) {
			namesPath = p
		}
	}
	names := make([]string, 0, n)
	if namesPath != "" {
		f, err := os.Open(namesPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			names = append(names, sc.Text())
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", namesPath, err)
		}
		if len(names) != n {
			return nil, fmt.Errorf("%s has %d names for the %d vectors of %s", namesPath, len(names), n, path)
		}
	} else {
		for i := 0; i < n; i++ {
			names = append(names, fmt.Sprint(i))
		}
	}
	g := &Gallery{Names: names, dim: d, vecs: data, path: path, release: release}
	if err := g.norms(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ok = true
	return g, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Len is the number of vectors; Dim their length.
func (g *Gallery) Len() int { return len(g.Names) }
func (g *Gallery) Dim() int { return g.dim }

// Neighbor is one answer to a query.
type Neighbor struct {
	Index      int     `json:"index"`
	Name       string  `json:"name"`
	Similarity float64 `json:"similarity"` // cosine
}

// Nearest returns the k vectors most similar to q, most similar first
// (ties: the lower index first); with an index (UseIndex), the ones it
// finds, with their exact similarities.
func (g *Gallery) Nearest(q []float32, k int) []Neighbor {
	k = min(k, g.Len())
	if k <= 0 {
		return nil
	}
	if g.index != nil {
		if hits, err := g.index.Search(q, k); err == nil { // a zero query: every similarity 0, as exact search says
			out := make([]Neighbor, len(hits))
			for i, h := range hits {
				out[i] = Neighbor{Index: h.Row, Name: g.Names[h.Row], Similarity: h.Similarity}
			}
			return out
		}
	}
	u := unit(q)
	n := g.Len()
	// Chunks of rows scored and selected on their own: on every core for a
	// large gallery, then merged.
	parts := 1
	if n >= parallelRows {
		parts = min(runtime.GOMAXPROCS(0), n/(parallelRows/2))
	}
	per := (n + parts - 1) / parts
	found := make([][]Neighbor, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*per, min(n, (p+1)*per)
		score := func() { found[p] = g.best(u, lo, hi, k) }
		if parts == 1 {
			score()
			break
		}
		wg.Add(1)
		go func() { defer wg.Done(); score() }()
	}
	wg.Wait()
	all := found[0]
	for _, f := range found[1:] {
		all = append(all, f...)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Similarity != all[j].Similarity {
			return all[i].Similarity > all[j].Similarity
		}
		return all[i].Index < all[j].Index
	})
	all = all[:min(k, len(all))]
	for i := range all {
		all[i].Name = g.Names[all[i].Index]
	}
	return all
}

// parallelRows is the gallery size from which a query is split across the
// cores (below it, the goroutines cost more than they save).
const parallelRows = 1 << 15

// scoreBlock is the rows scored by one matrix-vector product.
const scoreBlock = 4096

// best scores rows lo to hi against the unit query u and keeps the k best
// in a min-heap.
func (g *Gallery) best(u []float32, lo, hi, k int) []Neighbor {
	h := make(neighborHeap, 0, k)
	scores := make([]float32, scoreBlock)
	for b := lo; b < hi; b += scoreBlock {
		m := min(scoreBlock, hi-b)
		blas32.Gemv(blas.NoTrans, 1, blas32.General{Rows: m, Cols: g.dim, Stride: g.dim, Data: g.vecs[b*g.dim : (b+m)*g.dim]},
			blas32.Vector{N: g.dim, Inc: 1, Data: u}, 0, blas32.Vector{N: m, Inc: 1, Data: scores[:m]})
		for i, s := range scores[:m] {
			sim := float64(s * g.inv[b+i])
			if len(h) == k && !h.better(sim, b+i, 0) {
				continue
			}
			if len(h) == k {
				h[0] = Neighbor{Index: b + i, Similarity: sim}
				heap.Fix(&h, 0)
			} else {
				heap.Push(&h, Neighbor{Index: b + i, Similarity: sim})
			}
		}
	}
	return h
}

// neighborHeap keeps the worst of the best at its root.
type neighborHeap []Neighbor

// better reports whether (sim, index) ranks above element i.
func (h neighborHeap) better(sim float64, index, i int) bool {
	return sim > h[i].Similarity || sim == h[i].Similarity && index < h[i].Index
}
func (h neighborHeap) Len() int           { return len(h) }
func (h neighborHeap) Less(i, j int) bool { return h.better(h[j].Similarity, h[j].Index, i) }
func (h neighborHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *neighborHeap) Push(x any)        { *h = append(*h, x.(Neighbor)) }
func (h *neighborHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// GalleryFromDir embeds every PNG and JPEG under dir (named by their paths
// relative to dir) with m, batch images per run. Files that are not
// readable images, or larger than maxPixels, are errors naming the file.
func GalleryFromDir(ctx context.Context, m Model, dir string, maxPixels int64, batch int) (*Gallery, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".png", ".jpg", ".jpeg":
			if !d.IsDir() {
				names = append(names, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("gallery %s: no PNG or JPEG images", dir)
	}
	sort.Strings(names)
	batch = max(1, batch)
	c, h, w := m.InputShape()
	rows := make([][]float32, 0, len(names))
	pixels := make([]float32, 0, batch*c*h*w)
	flush := func() error {
		n := len(pixels) / (c * h * w)
		if n == 0 {
			return nil
		}
		v, err := m.EmbedBatchContext(ctx, pixels, n)
		if err != nil {
			return err
		}
		rows = append(rows, v...)
		pixels = pixels[:0]
		return nil
	}
	for i, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		img, err := decode(b, maxPixels)
		if err != nil {
			return nil, fmt.Errorf("gallery %s: %w", p, err)
		}
		px, err := m.Preprocess(img)
		if err != nil {
			return nil, fmt.Errorf("gallery %s: %w", p, err)
		}
		pixels = append(pixels, px...)
		if (i+1)%batch == 0 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		if rel, err := filepath.Rel(dir, p); err == nil {
			names[i] = rel
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	g, err := NewGallery(names, rows)
	if err != nil {
		return nil, err
	}
	g.root = dir
	return g, nil
}

func unit(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	out := make([]float32, len(v))
	if s == 0 {
		return out
	}
	inv := 1 / math.Sqrt(s)
	for i, x := range v {
		out[i] = float32(float64(x) * inv)
	}
	return out
}
