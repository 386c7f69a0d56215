package ann

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

func randomRows(n, d int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 3))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// exact is the k most similar rows by cosine, in float64.
func exact(rows []float32, d int, q []float32, k int) []Hit {
	var qn float64
	for _, v := range q {
		qn += float64(v) * float64(v)
	}
	hits := make([]Hit, 0, len(rows)/d)
	for i := 0; i < len(rows)/d; i++ {
		var dot, rn float64
		for j, v := range rows[i*d : (i+1)*d] {
			dot += float64(v) * float64(q[j])
			rn += float64(v) * float64(v)
		}
		hits = append(hits, Hit{Row: i, Similarity: dot / math.Sqrt(qn*rn)})
	}
	sort.Slice(hits, func(a, b int) bool { return hits[a].Similarity > hits[b].Similarity })
	return hits[:k]
}

// recall is the share of the true k nearest that the index found.
func recall(t *testing.T, ix *Index, rows []float32, d int, queries []float32, k int) float64 {
	t.Helper()
	found := 0
	for i := 0; i < len(queries)/d; i++ {
		q := queries[i*d : (i+1)*d]
		got, err := ix.Search(q, k)
		if err != nil {
			t.Fatal(err)
		}
		want := map[int]bool{}
		for _, h := range exact(rows, d, q, k) {
			want[h.Row] = true
		}
		for _, h := range got {
			if want[h.Row] {
				found++
			}
		}
	}
	return float64(found) / float64(k*len(queries)/d)
}

func TestHNSWRecallAndExactSimilarities(t *testing.T) {
	const n, d, k = 3000, 16, 10
	rows := randomRows(n, d, 1)
	ix, err := Build(context.Background(), rows, d, Options{Kind: HNSW, M: 16, EfSearch: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if ix.Len() != n || ix.Dim() != d || ix.Kind() != HNSW {
		t.Fatalf("index of %d x %d %s", ix.Len(), ix.Dim(), ix.Kind())
	}
	queries := randomRows(100, d, 2)
	if r := recall(t, ix, rows, d, queries, k); r < 0.95 {
		t.Fatalf("recall@10 %.3f at efSearch 64 over 3000 rows", r)
	}
	// A narrower search finds less: the parameter reaches faiss.
	if err := ix.Set("efSearch", 1); err != nil {
		t.Fatal(err)
	}
	if r := recall(t, ix, rows, d, queries, k); r > 0.9 {
		t.Fatalf("recall@10 %.3f at efSearch 1: the parameter did not take", r)
	}
	if v, err := ix.Get("efSearch"); err != nil || v != 1 {
		t.Fatalf("efSearch read back %d, %v", v, err)
	}
	// The similarities of the rows found are the exact cosines, best first.
	ix.Set("efSearch", 64)
	q := queries[:d]
	got, _ := ix.Search(q, k)
	for i, h := range got {
		want := exact(rows[h.Row*d:(h.Row+1)*d], d, q, 1)[0].Similarity
		if math.Abs(h.Similarity-want) > 1e-5 {
			t.Fatalf("hit %d (row %d): similarity %v, exact %v", i, h.Row, h.Similarity, want)
		}
		if i > 0 && h.Similarity > got[i-1].Similarity+1e-6 {
			t.Fatalf("hits out of order: %v", got)
		}
	}
}

func TestIVFScanningEveryCellIsExact(t *testing.T) {
	const n, d, k = 4000, 8, 10
	rows := randomRows(n, d, 3)
	ix, err := Build(context.Background(), rows, d, Options{Kind: IVF, Nlist: 40, Nprobe: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if nl, _ := ix.Get("nlist"); nl != 40 {
		t.Fatalf("nlist %d", nl)
	}
	queries := randomRows(50, d, 4)
	low := recall(t, ix, rows, d, queries, k)
	if err := ix.Set("nprobe", 40); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		q := queries[i*d : (i+1)*d]
		got, err := ix.Search(q, k)
		if err != nil {
			t.Fatal(err)
		}
		want := exact(rows, d, q, k)
		for j := range want {
			if got[j].Row != want[j].Row || math.Abs(got[j].Similarity-want[j].Similarity) > 1e-5 {
				t.Fatalf("query %d, hit %d: %+v, exact %+v", i, j, got[j], want[j])
			}
		}
	}
	if low > 0.95 {
		t.Fatalf("recall@10 %.3f scanning 2 cells of 40: the search is not approximate", low)
	}
}

func TestSaveLoad(t *testing.T) {
	const n, d = 1000, 12
	rows := randomRows(n, d, 5)
	dir := t.TempDir()
	for _, kind := range []Kind{HNSW, IVF} {
		ix, err := Build(context.Background(), rows, d, Options{Kind: kind, Nlist: 10, Nprobe: 3, EfSearch: 40})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, string(kind)+".faiss")
		if err := ix.Save(p); err != nil {
			t.Fatal(err)
		}
		back, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if back.Kind() != kind || back.Len() != n || back.Dim() != d {
			t.Fatalf("%s read back as %s, %d x %d", kind, back.Kind(), back.Len(), back.Dim())
		}
		param := map[Kind]string{HNSW: "efSearch", IVF: "nprobe"}[kind]
		a, _ := ix.Get(param)
		b, _ := back.Get(param)
		if a != b {
			t.Fatalf("%s: %s %d saved, %d loaded", kind, param, a, b)
		}
		q := rows[:d]
		x, _ := ix.Search(q, 5)
		y, _ := back.Search(q, 5)
		if len(x) != 5 || len(y) != 5 {
			t.Fatalf("%d and %d hits", len(x), len(y))
		}
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s: hit %d %+v before saving, %+v after", kind, i, x[i], y[i])
			}
		}
		if x[0].Row != 0 || math.Abs(x[0].Similarity-1) > 1e-5 {
			t.Fatalf("a row's own nearest is %+v", x[0])
		}
		ix.Close()
		back.Close()
		if _, err := back.Search(q, 5); err == nil {
			t.Fatal("a closed index searched")
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	rows := randomRows(100, 4, 6)
	for name, c := range map[string]struct {
		rows []float32
		d    int
		o    Options
		want string
	}{
		"ragged":     {rows[:10], 4, Options{Kind: HNSW}, "not rows of 4"},
		"kind":       {rows, 4, Options{Kind: "lsh"}, `index kind "lsh"`},
		"nlist":      {rows, 4, Options{Kind: IVF, Nlist: 101}, "out of range"},
		"zero row":   {append(append([]float32{}, rows[:8]...), 0, 0, 0, 0), 4, Options{Kind: HNSW}, "row 2 is zero"},
		"negative M": {rows, 4, Options{Kind: HNSW, M: -1}, "out of range"},
	} {
		if _, err := Build(ctx, c.rows, c.d, c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, c.want)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Build(cancelled, rows, 4, Options{Kind: HNSW}); err != context.Canceled {
		t.Errorf("cancelled build: %v", err)
	}
	ix, err := Build(ctx, rows, 4, Options{Kind: HNSW})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if _, err := ix.Search([]float32{1, 2}, 3); err == nil {
		t.Error("a query of the wrong length searched")
	}
	if _, err := ix.Search([]float32{0, 0, 0, 0}, 3); err == nil {
		t.Error("a zero query searched")
	}
	if err := ix.Set("nprobe", 3); err == nil || !strings.Contains(err.Error(), "no parameter nprobe") {
		t.Errorf("nprobe on HNSW: %v", err)
	}
	if h, err := ix.Search(rows[:4], 1000); err != nil || len(h) != 100 {
		t.Errorf("k above the rows: %d hits, %v", len(h), err)
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "ix.faiss")
	if err := ix.Save(p); err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(p)
	for name, b := range map[string][]byte{
		"truncated": whole[:len(whole)/2],
		"garbage":   []byte(strings.Repeat("not an index ", 50)),
		"empty":     {},
	} {
		bad := filepath.Join(dir, name)
		os.WriteFile(bad, b, 0o644)
		if _, err := Load(bad); err == nil {
			t.Errorf("%s file loaded", name)
		} else if !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: the error does not name the file: %v", name, err)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestConcurrentSearchesAndClose(t *testing.T) {
	rows := randomRows(2000, 8, 7)
	ix, err := Build(context.Background(), rows, 8, Options{Kind: HNSW})
	if err != nil {
		t.Fatal(err)
	}
	var wg, started sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			ready := sync.OnceFunc(started.Done)
			defer ready() // a goroutine that stops early does not hold the Close back
			for i := range 200 {
				if i == 50 {
					ready() // 50 searches checked, the rest race the Close
				}
				r := (g*200 + i) % 2000
				h, err := ix.Search(rows[r*8:(r+1)*8], 1)
				if err != nil {
					return // closed under us: an error, never a crash
				}
				if h[0].Row != r {
					t.Errorf("row %d's nearest is %d", r, h[0].Row)
					return
				}
			}
		}()
	}
	started.Wait()
	ix.Close()
	wg.Wait()
}
