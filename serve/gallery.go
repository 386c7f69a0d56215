package serve

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dimtorch/dimtorch/internal/npy"
)

// Gallery is a set of named vectors that neighbour queries search, kept
// unit-length so that a dot product is the cosine similarity.
type Gallery struct {
	Names []string
	dim   int
	vecs  []float32 // len(Names) x dim, each row unit-length (or zero)
	root  string    // the folder of images it was embedded from ("": none)
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
		g.vecs = append(g.vecs, unit(r)...)
	}
	return g, nil
}

// LoadGallery reads an [N, D] float32 .npy file (as `dimtorch embed --out
// FILE.npy` writes) and its names: one per line in namesPath, or, when
// namesPath is empty, in FILE.names.txt if it exists, else the row numbers.
func LoadGallery(path, namesPath string) (*Gallery, error) {
	data, shape, err := npy.ReadFloat32(path)
	if err != nil {
		return nil, err
	}
	if len(shape) != 2 {
		return nil, fmt.Errorf("%s: want an [N, D] array of embeddings, got shape %v", path, shape)
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
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = data[i*d : (i+1)*d]
	}
	return NewGallery(names, rows)
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

// Nearest returns the k vectors most similar to q, most similar first.
func (g *Gallery) Nearest(q []float32, k int) []Neighbor {
	u := unit(q)
	k = min(k, g.Len())
	// A bounded selection: keep the k best seen so far, sorted.
	best := make([]Neighbor, 0, k+1)
	for i := 0; i < g.Len(); i++ {
		row := g.vecs[i*g.dim : (i+1)*g.dim]
		var s float32
		for j, x := range row {
			s += x * u[j]
		}
		if len(best) == k && float64(s) <= best[k-1].Similarity {
			continue
		}
		at := sort.Search(len(best), func(j int) bool { return best[j].Similarity < float64(s) })
		best = append(best, Neighbor{})
		copy(best[at+1:], best[at:])
		best[at] = Neighbor{Index: i, Name: g.Names[i], Similarity: float64(s)}
		if len(best) > k {
			best = best[:k]
		}
	}
	return best
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
