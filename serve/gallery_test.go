package serve

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/internal/npy"
)

// bruteForce is an independent exact search: float64 cosine similarity of
// every row, sorted.
func bruteForce(rows [][]float32, q []float32, k int) []int {
	norm := func(v []float32) float64 {
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		return math.Sqrt(s)
	}
	type scored struct {
		i int
		s float64
	}
	all := make([]scored, len(rows))
	for i, r := range rows {
		var d float64
		for j := range r {
			d += float64(r[j]) * float64(q[j])
		}
		if n := norm(r); n > 0 {
			d /= n * norm(q)
		} else {
			d = 0
		}
		all[i] = scored{i, d}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].s > all[b].s })
	out := make([]int, min(k, len(all)))
	for i := range out {
		out[i] = all[i].i
	}
	return out
}

// Exact search agrees with a float64 brute force on galleries below and
// above the size where a query is split across the cores, for k from 1 to
// more than the gallery; a .npy gallery is memory-mapped and gives the same.
func TestGalleryExactSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 5000, parallelRows + 1234} {
		const dim = 24
		rows := make([][]float32, n)
		names := make([]string, n)
		for i := range rows {
			rows[i] = make([]float32, dim)
			for j := range rows[i] {
				rows[i][j] = float32(r.NormFloat64())
			}
			names[i] = "v" + string(rune('a'+i%26))
		}
		if n > 3 {
			rows[3] = make([]float32, dim) // a zero row: similarity 0
		}
		g, err := NewGallery(names, rows)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "g.npy")
		flat := make([]float32, 0, n*dim)
		for _, row := range rows {
			flat = append(flat, row...)
		}
		if err := npy.WriteFloat32(path, flat, n, dim); err != nil {
			t.Fatal(err)
		}
		mapped, err := LoadGallery(path, "")
		if err != nil {
			t.Fatal(err)
		}
		for trial := 0; trial < 2; trial++ {
			q := make([]float32, dim)
			for j := range q {
				q[j] = float32(r.NormFloat64())
			}
			order := bruteForce(rows, q, n)
			for _, k := range []int{1, 10, n + 5} {
				want := order[:min(k, n)]
				for name, gg := range map[string]*Gallery{"in memory": g, "mapped": mapped} {
					got := gg.Nearest(q, k)
					if len(got) != len(want) {
						t.Fatalf("n=%d k=%d %s: %d answers, want %d", n, k, name, len(got), len(want))
					}
					for i := range want {
						// float32 products may swap near-ties: compare similarities.
						if got[i].Index != want[i] && math.Abs(got[i].Similarity-cosine(rows[want[i]], q)) > 1e-5 {
							t.Fatalf("n=%d k=%d %s: answer %d is %d (%.6f), want %d (%.6f)", n, k, name, i, got[i].Index, got[i].Similarity, want[i], cosine(rows[want[i]], q))
						}
						if i > 0 && got[i].Similarity > got[i-1].Similarity {
							t.Fatalf("n=%d %s: answers out of order", n, name)
						}
					}
				}
			}
		}
		if err := mapped.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A damaged vector is refused at load, not answered with NaN.
	path := filepath.Join(t.TempDir(), "nan.npy")
	npy.WriteFloat32(path, []float32{1, 2, float32(math.NaN()), 4}, 2, 2)
	if _, err := LoadGallery(path, ""); err == nil || !strings.Contains(err.Error(), "vector 1 (1) has values that are not finite") {
		t.Fatalf("a NaN in the gallery: %v", err)
	}
	os.WriteFile(path, []byte("\x93NUMPY"), 0o644)
	if _, err := LoadGallery(path, ""); err == nil {
		t.Fatal("a truncated .npy loaded")
	}
}

func cosine(a, b []float32) float64 {
	var d, na, nb float64
	for i := range a {
		d += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return d / math.Sqrt(na*nb)
}
