package main

import (
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
	"time"

	"github.com/dimtorch/dimtorch/internal/npy"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/urfave/cli/v2"
)

func benchGalleryCommand() *cli.Command {
	return &cli.Command{
		Name: "gallery",
		Usage: "exact nearest-neighbour search as `dimtorch serve` runs it: load time, resident memory and per-query p50/p99 " +
			"over a gallery of random unit vectors (or --gallery FILE.npy)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "n", Value: 1000000, Usage: "random vectors in the gallery"},
			&cli.IntFlag{Name: "dim", Value: 64},
			&cli.StringFlag{Name: "gallery", Usage: "search this .npy of embeddings instead (dimtorch embed --out FILE.npy); queries are its own rows, perturbed"},
			&cli.IntFlag{Name: "queries", Value: 200},
			&cli.IntFlag{Name: "k", Value: 10},
			&cli.IntFlag{Name: "seed", Value: 1},
		},
		Action: func(c *cli.Context) error {
			r := rand.New(rand.NewPCG(uint64(c.Int("seed")), 7))
			path := c.String("gallery")
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
			queries := make([][]float32, c.Int("queries"))
			for i := range queries {
				q := make([]float32, g.Dim())
				for j := range q {
					q[j] = float32(r.NormFloat64())
				}
				queries[i] = q
			}
			g.Nearest(queries[0], c.Int("k")) // pages in the mapping
			lat := make([]time.Duration, len(queries))
			all := time.Now()
			for i, q := range queries {
				t0 := time.Now()
				g.Nearest(q, c.Int("k"))
				lat[i] = time.Since(t0)
			}
			total := time.Since(all)
			anon1, file1 := residentMiB()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			fmt.Printf("exact search, %d x %d gallery (%s), k=%d, %d queries one at a time, GOMAXPROCS %d\n",
				g.Len(), g.Dim(), path, c.Int("k"), len(queries), runtime.GOMAXPROCS(0))
			fmt.Printf("load (map + norms) %.0f ms; resident memory: %+.0f MiB of the process's own, %+.0f MiB of the mapped file (page cache, shared)\n",
				float64(load.Microseconds())/1000, anon1-anon0, file1-file0)
			fmt.Printf("p50 %.2f ms, p99 %.2f ms, %.0f queries/s\n", pct(0.5), pct(0.99), float64(len(queries))/total.Seconds())
			return nil
		},
	}
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
