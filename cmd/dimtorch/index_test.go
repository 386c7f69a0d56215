package main

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/internal/npy"
)

// dimtorch index build writes an index beside a .npy gallery; dimtorch
// serve --index hnsw searches it and answers what exact search answers (a
// small gallery, a wide search); the flags' misuse and a missing index are
// errors that say what to do.
func TestIndexBuildAndServe(t *testing.T) {
	dir := t.TempDir()
	model := exportBasic28(t, dir)
	const n, d = 400, 64
	r := rand.New(rand.NewPCG(5, 6))
	rows := make([]float32, n*d)
	for i := range rows {
		rows[i] = float32(r.NormFloat64())
	}
	gallery := filepath.Join(dir, "g.npy")
	if err := npy.WriteFloat32(gallery, rows, n, d); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run(t, "serve", "--model", model, "--gallery", gallery, "--index", "hnsw"); code == 0 ||
		!strings.Contains(stderr, "dimtorch index build --gallery "+gallery+" --kind hnsw") {
		t.Fatalf("serve without the index: code %d, %s", code, stderr)
	}
	for _, bad := range [][]string{
		{"index", "build", "--gallery", gallery, "--kind", "lsh"},
		{"index", "build", "--gallery", gallery, "--m", "0"},
		{"index", "build", "--gallery", filepath.Join(dir, "missing.npy")},
		{"serve", "--model", model, "--gallery", gallery, "--index", "annoy"},
		{"serve", "--model", model, "--gallery", gallery, "--ef-search", "10"},
		{"serve", "--model", model, "--index", "hnsw"},
	} {
		if _, stderr, code := run(t, bad...); code == 0 || stderr == "" {
			t.Errorf("%v: code %d, %q", bad, code, stderr)
		}
	}
	_, stderr, code := run(t, "--log-format", "json", "index", "build", "--gallery", gallery, "--kind", "hnsw", "--ef-search", "400")
	if code != 0 || !strings.Contains(stderr, `"index built"`) {
		t.Fatalf("index build: code %d, %s", code, stderr)
	}
	for _, f := range []string{"g.hnsw.faiss", "g.hnsw.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	cmd, _, addr, logged := startServe(t, "--model", model, "--gallery", gallery, "--index", "hnsw", "--addr", "127.0.0.1:0", "--threads", "1")
	defer cmd.Process.Kill()
	if !strings.Contains(strings.Join(logged, "\n"), `"index":"hnsw"`) {
		t.Errorf("the log does not say which index serves:\n%s", strings.Join(logged, "\n"))
	}
	img := grayPNGBytes(t)
	resp, err := http.Post("http://"+addr+"/v1/embed", "image/png", bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Embeddings [][]float32 `json:"embeddings"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	resp, err = http.Post("http://"+addr+"/v1/neighbors?k=5", "image/png", bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	var nb struct {
		Results []struct {
			Neighbors []struct {
				Index      int     `json:"index"`
				Similarity float64 `json:"similarity"`
			} `json:"neighbors"`
		} `json:"results"`
	}
	json.NewDecoder(resp.Body).Decode(&nb)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(e.Embeddings) != 1 || len(nb.Results) != 1 || len(nb.Results[0].Neighbors) != 5 {
		t.Fatalf("neighbors: %d %+v", resp.StatusCode, nb)
	}
	q := e.Embeddings[0]
	type scored struct {
		i int
		s float64
	}
	all := make([]scored, n)
	var qn float64
	for _, v := range q {
		qn += float64(v) * float64(v)
	}
	for i := range n {
		var dot, rn float64
		for j, v := range rows[i*d : (i+1)*d] {
			dot += float64(v) * float64(q[j])
			rn += float64(v) * float64(v)
		}
		all[i] = scored{i, dot / math.Sqrt(qn*rn)}
	}
	sort.Slice(all, func(a, b int) bool { return all[a].s > all[b].s })
	for i, got := range nb.Results[0].Neighbors {
		if got.Index != all[i].i || math.Abs(got.Similarity-all[i].s) > 1e-4 {
			t.Fatalf("rank %d: row %d (%.5f), exact row %d (%.5f)", i, got.Index, got.Similarity, all[i].i, all[i].s)
		}
	}
}

// bench gallery --index measures recall against exact search: a wide
// search over a small gallery finds every true neighbour, a one-candidate
// search does not.
func TestBenchGalleryIndex(t *testing.T) {
	out, stderr, code := run(t, "bench", "gallery", "--n", "3000", "--dim", "16", "--n-queries", "50", "--index", "hnsw", "--ef-search", "1,400")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	if !strings.Contains(out, "| 400 | 1.000 |") || strings.Contains(out, "| 1 | 1.000 |") || !strings.Contains(out, "| exact | 1.000 |") {
		t.Fatalf("recall table:\n%s", out)
	}
}

// bench serve --variants: with an API key and tracing on, every request
// succeeds and the collector receives spans.
func TestBenchServeVariants(t *testing.T) {
	out, stderr, code := run(t, "bench", "serve", "--encoder", "basic28", "--channels", "1", "--variants", "key+trace,plain",
		"--concurrency", "2", "--rounds", "1", "--requests", "20", "--duration", "5s", "--threads", "1")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	lines := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 7 && (f[0] == "plain" || f[0] == "key+trace") {
			lines++
			if f[6] != "0" || f[3] == "0" {
				t.Errorf("errors or no requests: %s", l)
			}
		}
	}
	if lines != 4 || strings.Contains(out, "received 0 KiB") || !strings.Contains(out, "the collector received") {
		t.Fatalf("output:\n%s", out)
	}
}
