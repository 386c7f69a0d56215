package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dimtorch/dimtorch/ann"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/urfave/cli/v2"
)

func indexCommand() *cli.Command {
	return &cli.Command{
		Name:  "index",
		Usage: "approximate nearest-neighbour indexes for a gallery (faiss HNSW or IVF), searched by dimtorch serve --index",
		Subcommands: []*cli.Command{{
			Name:      "build",
			Usage:     "build an index over a .npy gallery and save it beside it (FILE.KIND.faiss with its record FILE.KIND.json)",
			ArgsUsage: " ",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "gallery", Required: true, Usage: "the [N, D] .npy of embeddings (dimtorch embed --out FILE.npy)"},
				&cli.StringFlag{Name: "kind", Value: string(ann.HNSW), Usage: "hnsw (a graph: fast, more memory) or ivf (k-means cells: quicker to build)"},
				&cli.IntFlag{Name: "m", Value: 32, Usage: "HNSW: links a vector"},
				&cli.IntFlag{Name: "ef-construction", Value: 200, Usage: "HNSW: candidates while building (higher: a better graph, a slower build)"},
				&cli.IntFlag{Name: "ef-search", Value: 128, Usage: "HNSW: candidates a query, saved as the default of dimtorch serve --ef-search"},
				&cli.IntFlag{Name: "nlist", Usage: "IVF: cells (default 4·√N)"},
				&cli.IntFlag{Name: "nprobe", Value: 64, Usage: "IVF: cells scanned a query, saved as the default of dimtorch serve --nprobe"},
				&cli.IntFlag{Name: "threads", Usage: "build threads (default: every core)"},
			},
			Action: func(c *cli.Context) error {
				if c.Args().Present() {
					return fmt.Errorf("unexpected arguments %v", c.Args().Slice())
				}
				for _, f := range []string{"m", "ef-construction", "ef-search", "nprobe"} {
					if c.Int(f) < 1 {
						return fmt.Errorf("--%s %d: must be at least 1", f, c.Int(f))
					}
				}
				if c.Int("nlist") < 0 || c.Int("threads") < 0 {
					return fmt.Errorf("--nlist and --threads must not be negative")
				}
				kind := ann.Kind(c.String("kind"))
				if kind != ann.HNSW && kind != ann.IVF {
					return fmt.Errorf("--kind %q: want hnsw or ivf", kind)
				}
				log := logger(c)
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				last := time.Now()
				o := ann.Options{Kind: kind, M: c.Int("m"), EfConstruction: c.Int("ef-construction"), EfSearch: c.Int("ef-search"),
					Nlist: c.Int("nlist"), Nprobe: c.Int("nprobe"), Threads: c.Int("threads"),
					Progress: func(done, total int) {
						if time.Since(last) > 5*time.Second || done == total {
							log.Info().Int("rows", done).Int("of", total).Msg("indexing")
							last = time.Now()
						}
					}}
				meta, err := serve.BuildGalleryIndex(ctx, c.String("gallery"), o)
				if err != nil {
					return err
				}
				ipath, mpath := serve.IndexFiles(c.String("gallery"), kind)
				log.Info().Str("index", ipath).Str("record", mpath).Int("rows", meta.Rows).Int("dim", meta.Dim).
					Interface("params", meta.Params).Float64("seconds", meta.BuildSeconds).Int64("bytes", meta.IndexBytes).Msg("index built")
				return nil
			},
		}},
	}
}
