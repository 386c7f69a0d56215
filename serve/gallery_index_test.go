package serve

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/ann"
	"github.com/dimtorch/dimtorch/internal/npy"
)

func randomGallery(t *testing.T, dir string, n, d int, seed uint64) (string, [][]float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 9))
	rows := make([][]float32, n)
	flat := make([]float32, 0, n*d)
	for i := range rows {
		rows[i] = make([]float32, d)
		for j := range rows[i] {
			rows[i][j] = float32(r.NormFloat64())
		}
		flat = append(flat, rows[i]...)
	}
	p := filepath.Join(dir, "gallery.npy")
	if err := npy.WriteFloat32(p, flat, n, d); err != nil {
		t.Fatal(err)
	}
	return p, rows
}

// An index saved beside a .npy gallery is found, checked and searched: its
// answers are the exact search's (a small gallery, a wide search), with the
// same similarities; the search parameters given at load replace the saved
// ones.
func TestGalleryIndexBesideNpy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p, rows := randomGallery(t, dir, 2000, 16, 1)
	for _, kind := range []ann.Kind{ann.HNSW, ann.IVF} {
		meta, err := BuildGalleryIndex(ctx, p, ann.Options{Kind: kind, EfSearch: 200, Nlist: 20, Nprobe: 20})
		if err != nil {
			t.Fatal(err)
		}
		ipath, mpath := IndexFiles(p, kind)
		if meta.Rows != 2000 || meta.Dim != 16 || meta.IndexSHA256 == "" || !fileExists(ipath) || !fileExists(mpath) {
			t.Fatalf("%s: record %+v", kind, meta)
		}
		g, err := LoadGallery(p, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := g.UseIndex(ctx, IndexOptions{Kind: string(kind)}); err != nil {
			t.Fatal(err)
		}
		if g.Index() == nil || g.Index().Kind() != kind {
			t.Fatalf("%s: no index in use", kind)
		}
		exact, _ := LoadGallery(p, "")
		for i := 0; i < 50; i++ {
			q := rows[(i*37)%len(rows)]
			got, want := g.Nearest(q, 10), exact.Nearest(q, 10)
			if len(got) != 10 {
				t.Fatalf("%s: %d neighbours", kind, len(got))
			}
			for j := range want {
				if got[j].Index != want[j].Index || got[j].Name != want[j].Name || math.Abs(got[j].Similarity-want[j].Similarity) > 1e-5 {
					t.Fatalf("%s, query %d, rank %d: %+v, exact %+v", kind, i, j, got[j], want[j])
				}
			}
		}
		exact.Close()
		g.Close()
		// A narrower search given at load takes effect.
		g, _ = LoadGallery(p, "")
		o := IndexOptions{Kind: string(kind), EfSearch: 3}
		param := "efSearch"
		if kind == ann.IVF {
			o, param = IndexOptions{Kind: string(kind), Nprobe: 1}, "nprobe"
		}
		if err := g.UseIndex(ctx, o); err != nil {
			t.Fatal(err)
		}
		if v, _ := g.Index().Get(param); v != max(o.EfSearch, o.Nprobe) {
			t.Fatalf("%s: %s %d after asking for %d", kind, param, v, max(o.EfSearch, o.Nprobe))
		}
		g.Close()
	}
}

// An index that does not belong to its gallery, is damaged or missing is
// refused with the reason and the command that rebuilds it.
func TestGalleryIndexRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p, _ := randomGallery(t, dir, 500, 8, 2)
	use := func() error {
		g, err := LoadGallery(p, "")
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		return g.UseIndex(ctx, IndexOptions{Kind: "hnsw"})
	}
	if err := use(); err == nil || !strings.Contains(err.Error(), "dimtorch index build --gallery "+p+" --kind hnsw") {
		t.Fatalf("missing index: %v", err)
	}
	if _, err := BuildGalleryIndex(ctx, p, ann.Options{Kind: ann.HNSW}); err != nil {
		t.Fatal(err)
	}
	if err := use(); err != nil {
		t.Fatal(err)
	}
	ipath, mpath := IndexFiles(p, ann.HNSW)
	good, _ := os.ReadFile(ipath)
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0xff
	os.WriteFile(ipath, bad, 0o644)
	if err := use(); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("damaged index: %v", err)
	}
	os.WriteFile(ipath, good, 0o644)
	// The same shape, other vectors: the gallery was re-embedded.
	randomGallery(t, dir, 500, 8, 3)
	if err := use(); err == nil || !strings.Contains(err.Error(), "another version") {
		t.Fatalf("index of another gallery: %v", err)
	}
	// Another shape.
	randomGallery(t, dir, 400, 8, 2)
	if err := use(); err == nil || !strings.Contains(err.Error(), "the gallery "+p+" is 400 x 8") {
		t.Fatalf("index of another shape: %v", err)
	}
	os.WriteFile(mpath, []byte("{"), 0o644)
	if err := use(); err == nil || !strings.Contains(err.Error(), "not a dimtorch gallery index record") {
		t.Fatalf("damaged record: %v", err)
	}
	g, _ := LoadGallery(p, "")
	defer g.Close()
	if err := g.UseIndex(ctx, IndexOptions{Kind: "lsh"}); err == nil || !strings.Contains(err.Error(), "want one of exact, hnsw, ivf") {
		t.Fatalf("unknown kind: %v", err)
	}
}

// A gallery made in memory (a folder embedded at start-up) builds its index
// when asked.
func TestGalleryIndexInMemory(t *testing.T) {
	_, rows := randomGallery(t, t.TempDir(), 300, 8, 4)
	names := make([]string, len(rows))
	for i := range names {
		names[i] = filepath.Join("img", string(rune('a'+i%26))+".png")
	}
	g, err := NewGallery(names, rows)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.UseIndex(context.Background(), IndexOptions{Kind: "ivf", Nprobe: 1000}); err != nil {
		t.Fatal(err)
	}
	got := g.Nearest(rows[5], 3)
	want := bruteForce(rows, rows[5], 3)
	for i := range want {
		if got[i].Index != want[i] || got[i].Name != names[want[i]] {
			t.Fatalf("rank %d: %+v, exact row %d", i, got[i], want[i])
		}
	}
}
