package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimtorch/dimtorch/ann"
	"github.com/dimtorch/dimtorch/internal/npy"
	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/urfave/cli/v2"
)

func benchGalleryCommand() *cli.Command {
	return &cli.Command{
		Name: "gallery",
		Usage: "nearest-neighbour search as `dimtorch serve` runs it: load time, resident memory, per-query p50/p99 and queries/s " +
			"over a gallery of random unit vectors (or --gallery FILE.npy), exact and, with --index, an approximate index's " +
			"build time, memory and recall@k against exact search for each --ef-search or --nprobe",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "n", Value: 1000000, Usage: "random vectors in the gallery"},
			&cli.IntFlag{Name: "dim", Value: 64},
			&cli.StringFlag{Name: "gallery", Usage: "search this .npy of embeddings instead (dimtorch embed --out FILE.npy)"},
			&cli.StringFlag{Name: "queries", Usage: "with --gallery: the queries, a .npy of the same width (e.g. the test split's embeddings); default: gallery rows with noise"},
			&cli.IntFlag{Name: "n-queries", Value: 1000, Usage: "queries (the first of --queries)"},
			&cli.IntFlag{Name: "k", Value: 10},
			&cli.IntFlag{Name: "seed", Value: 1},
			&cli.StringFlag{Name: "index", Value: "exact", Usage: "also measure an approximate index built in memory: hnsw or ivf"},
			&cli.IntFlag{Name: "m", Value: 32, Usage: "HNSW: links a vector"},
			&cli.IntFlag{Name: "ef-construction", Value: 200, Usage: "HNSW: candidates while building"},
			&cli.IntSliceFlag{Name: "ef-search", Value: cli.NewIntSlice(16, 32, 64, 128, 256), Usage: "HNSW: the candidates a query to measure"},
			&cli.IntFlag{Name: "nlist", Usage: "IVF: cells (default 4·√N)"},
			&cli.IntSliceFlag{Name: "nprobe", Value: cli.NewIntSlice(8, 16, 32, 64, 128), Usage: "IVF: the cells scanned a query to measure"},
		},
		Action: func(c *cli.Context) error {
			r := rand.New(rand.NewPCG(uint64(c.Int("seed")), 7))
			path := c.String("gallery")
			k := c.Int("k")
			if k < 1 || c.Int("n-queries") < 1 {
				return fmt.Errorf("--k %d --n-queries %d: both must be at least 1", k, c.Int("n-queries"))
			}
			kind := c.String("index")
			if kind != "exact" && kind != string(ann.HNSW) && kind != string(ann.IVF) {
				return fmt.Errorf("--index %q: want exact, hnsw or ivf", kind)
			}
			if path == "" {
				n, d := c.Int("n"), c.Int("dim")
				if n < 1 || d < 1 {
					return fmt.Errorf("--n %d --dim %d: both must be at least 1", n, d)
				}
				dir, err := os.MkdirTemp("", "dimtorch-gallery-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				path = filepath.Join(dir, "gallery.npy")
				data := randomUnitRows(r, n, d)
				if err := npy.WriteFloat32(path, data, n, d); err != nil {
					return err
				}
				data = nil
				debug.FreeOSMemory() // the generated vectors' memory back to the system before the baseline
			}
			anon0, file0 := residentMiB()
			start := time.Now()
			g, err := serve.LoadGallery(path, "")
			if err != nil {
				return err
			}
			defer g.Close()
			load := time.Since(start)
			queries, qsource, err := benchQueries(c, r, g, path)
			if err != nil {
				return err
			}
			g.Nearest(queries[0], k) // pages in the mapping
			truth := make([][]serve.Neighbor, len(queries))
			exact := measureSearch(queries, func(i int, q []float32) []serve.Neighbor {
				truth[i] = g.Nearest(q, k)
				return truth[i]
			})
			anon1, file1 := residentMiB()
			fmt.Printf("%d x %d gallery (%s), k=%d, %d queries (%s), GOMAXPROCS %d, %s\n",
				g.Len(), g.Dim(), path, k, len(queries), qsource, runtime.GOMAXPROCS(0), sysinfo.Describe())
			fmt.Printf("exact: load (map + norms) %.0f ms; resident memory %+.0f MiB of the process's own, %+.0f MiB of the mapped file (page cache, shared)\n",
				float64(load.Microseconds())/1000, anon1-anon0, file1-file0)
			fmt.Printf("exact: p50 %.3f ms, p99 %.3f ms a query (one at a time); %.0f queries/s one at a time\n", exact.p50, exact.p99, exact.qps)
			if kind == "exact" {
				return nil
			}
			a0, _ := residentMiB()
			ix, how, err := benchIndex(c, path, g.Len(), g.Dim(), ann.Kind(kind))
			if err != nil {
				return err
			}
			defer ix.Close()
			debug.FreeOSMemory()
			a1, _ := residentMiB()
			param, values := "efSearch", c.IntSlice("ef-search")
			if kind == string(ann.IVF) {
				param, values = "nprobe", c.IntSlice("nprobe")
			}
			fmt.Printf("%s; resident memory %+.0f MiB\n", how, a1-a0)
			fmt.Printf("| %s | recall@%d | p50 ms | p99 ms | queries/s one at a time | queries/s, %d at once |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n",
				param, k, runtime.GOMAXPROCS(0))
			fmt.Printf("| exact | 1.000 | %.3f | %.3f | %.0f | – |\n", exact.p50, exact.p99, exact.qps)
			for _, v := range values {
				if err := ix.Set(param, v); err != nil {
					return err
				}
				found := 0
				search := func(i int, q []float32) []serve.Neighbor {
					hits, err := ix.Search(q, k)
					if err != nil {
						panic(err) // the query's width is the index's: a failure here is a bug
					}
					out := make([]serve.Neighbor, len(hits))
					for j, h := range hits {
						out[j] = serve.Neighbor{Index: h.Row, Similarity: h.Similarity}
					}
					return out
				}
				st := measureSearch(queries, func(i int, q []float32) []serve.Neighbor {
					out := search(i, q)
					want := map[int]bool{}
					for _, t := range truth[i] {
						want[t.Index] = true
					}
					for _, h := range out {
						if want[h.Index] {
							found++
						}
					}
					return out
				})
				par := parallelQPS(queries, func(q []float32) { search(0, q) })
				fmt.Printf("| %d | %.3f | %.3f | %.3f | %.0f | %.0f |\n", v, float64(found)/float64(k*len(queries)), st.p50, st.p99, st.qps, par)
			}
			return nil
		},
	}
}

// benchIndex is the index saved beside a --gallery (as dimtorch serve
// --index loads it, checked against its gallery), or one built in memory.
func benchIndex(c *cli.Context, path string, n, dim int, kind ann.Kind) (*ann.Index, string, error) {
	if c.String("gallery") != "" {
		if _, mpath := serve.IndexFiles(path, kind); regularFile(mpath) {
			t0 := time.Now()
			g, err := serve.LoadGallery(path, "")
			if err != nil {
				return nil, "", err
			}
			defer g.Close()
			if err := g.UseIndex(c.Context, serve.IndexOptions{Kind: string(kind)}); err != nil {
				return nil, "", err
			}
			var meta serve.IndexMeta
			b, _ := os.ReadFile(mpath)
			json.Unmarshal(b, &meta)
			return g.DetachIndex(), fmt.Sprintf("%s index (faiss) %v, loaded and checked in %.1f s from %s (%.0f MiB; built in %.0f s by dimtorch index build, %s)",
				kind, meta.Params, time.Since(t0).Seconds(), mpath, float64(meta.IndexBytes)/(1<<20), meta.BuildSeconds, meta.Built.Format("2006-01-02")), nil
		}
	}
	rows, _, release, err := npy.MapFloat32(path)
	if err != nil {
		return nil, "", err
	}
	defer release()
	t0 := time.Now()
	o := ann.Options{Kind: kind, M: c.Int("m"), EfConstruction: c.Int("ef-construction"), Nlist: c.Int("nlist")}
	ix, err := ann.Build(c.Context, rows, dim, o)
	if err != nil {
		return nil, "", err
	}
	o = o.Defaults(n)
	desc := fmt.Sprintf("HNSW M=%d efConstruction=%d", o.M, o.EfConstruction)
	if kind == ann.IVF {
		desc = fmt.Sprintf("IVF nlist=%d", o.Nlist)
	}
	return ix, fmt.Sprintf("%s (faiss): built in memory in %.1f s on %d threads", desc, time.Since(t0).Seconds(), o.Threads), nil
}

func regularFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func randomUnitRows(r *rand.Rand, n, d int) []float32 {
	data := make([]float32, n*d)
	for i := range n {
		row := data[i*d : (i+1)*d]
		var s float64
		for j := range row {
			row[j] = float32(r.NormFloat64())
			s += float64(row[j]) * float64(row[j])
		}
		for j := range row {
			row[j] /= float32(math.Sqrt(s))
		}
	}
	return data
}

// benchQueries are --queries' first rows, or for --gallery its rows at
// random with Gaussian noise of a tenth of their length, or random unit
// vectors.
func benchQueries(c *cli.Context, r *rand.Rand, g *serve.Gallery, path string) ([][]float32, string, error) {
	n, d := c.Int("n-queries"), g.Dim()
	out := make([][]float32, 0, n)
	switch {
	case c.String("queries") != "":
		data, shape, release, err := npy.MapFloat32(c.String("queries"))
		if err != nil {
			return nil, "", err
		}
		defer release()
		if len(shape) != 2 || shape[1] != d {
			return nil, "", fmt.Errorf("--queries %s: shape %v, want [N, %d]", c.String("queries"), shape, d)
		}
		for i := range min(n, shape[0]) {
			out = append(out, append([]float32(nil), data[i*d:(i+1)*d]...))
		}
		return out, "the first rows of " + c.String("queries"), nil
	case c.String("gallery") != "":
		data, _, release, err := npy.MapFloat32(path)
		if err != nil {
			return nil, "", err
		}
		defer release()
		for range n {
			row := data[r.IntN(g.Len())*d:][:d]
			var s float64
			for _, v := range row {
				s += float64(v) * float64(v)
			}
			sigma := 0.1 * math.Sqrt(s/float64(d))
			q := make([]float32, d)
			for j := range q {
				q[j] = row[j] + float32(sigma*r.NormFloat64())
			}
			out = append(out, q)
		}
		return out, "gallery rows at random with noise of a tenth of their length", nil
	}
	data := randomUnitRows(r, n, d)
	for i := range n {
		out = append(out, data[i*d:(i+1)*d])
	}
	return out, "random unit vectors", nil
}

type searchStats struct{ p50, p99, qps float64 }

// measureSearch runs the queries one at a time.
func measureSearch(queries [][]float32, search func(i int, q []float32) []serve.Neighbor) searchStats {
	lat := make([]time.Duration, len(queries))
	all := time.Now()
	for i, q := range queries {
		t0 := time.Now()
		search(i, q)
		lat[i] = time.Since(t0)
	}
	total := time.Since(all)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1e6
	}
	return searchStats{pct(0.5), pct(0.99), float64(len(queries)) / total.Seconds()}
}

// parallelQPS is the queries/s of GOMAXPROCS goroutines sharing the queries.
func parallelQPS(queries [][]float32, search func(q []float32)) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(queries)); i = next.Add(1) - 1 {
				search(queries[i])
			}
		}()
	}
	wg.Wait()
	return float64(len(queries)) / time.Since(start).Seconds()
}

// residentMiB returns the process's resident anonymous memory (its own
// heap and stacks) and resident file-backed memory (mapped files, shared
// with the page cache), from /proc/self/status.
func residentMiB() (anon, file float64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return math.NaN(), math.NaN()
	}
	anon, file = math.NaN(), math.NaN()
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		}
	}
	return anon, file
}
