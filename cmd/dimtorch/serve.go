package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	d := serve.DefaultConfig() // every default is serve's
	return &cli.Command{
		Name:  "serve",
		Usage: "an HTTP service that embeds images with an exported encoder and finds their nearest neighbours in a gallery",
		Description: "POST /v1/embed and POST /v1/neighbors?k=N take a PNG or JPEG body, a multipart form of images or JSON " +
			"{\"images\": [base64, ...]}; GET /healthz, /readyz and /metrics (Prometheus). SIGTERM or Ctrl-C finish the " +
			"requests in flight and exit 0. See docs/serving.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "the exported encoder (.onnx, from dimtorch export)"},
			&cli.StringFlag{Name: "gallery", Usage: "images to search: a directory of PNG/JPEG files (embedded at start-up) or FILE.npy of embeddings (dimtorch embed --out FILE.npy)"},
			&cli.StringFlag{Name: "gallery-names", Usage: "names of a .npy gallery's rows, one per line (default FILE.names.txt beside it, else row numbers)"},
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "address to listen on (port 0: any free port, logged)"},
			&cli.IntFlag{Name: "threads", Value: runtime.NumCPU(), Usage: "onnxruntime intra-op threads"},
			&cli.BoolFlag{Name: "batching", Value: d.Batching, Usage: "micro-batching: concurrent requests share model runs (--batching=false: each runs on its own)"},
			&cli.IntFlag{Name: "runners", Value: d.Runners, Usage: "batches run at once (on 2 cores: --runners 2 --threads 1 measured fastest)"},
			&cli.IntFlag{Name: "max-batch", Value: d.MaxBatch, Usage: "images per model run"},
			&cli.DurationFlag{Name: "max-wait", Value: d.MaxWait, Usage: "how long a batch waits to fill"},
			&cli.IntFlag{Name: "max-queue", Value: d.MaxQueue, Usage: "images accepted and not yet answered before requests get 429 (default 8 x --max-batch, at least --max-images)"},
			&cli.Int64Flag{Name: "max-body", Value: d.MaxBody, Usage: "bytes per request"},
			&cli.Int64Flag{Name: "max-pixels", Value: d.MaxPixels, Usage: "width x height of one image, checked before decoding"},
			&cli.IntFlag{Name: "max-images", Value: d.MaxImages, Usage: "images per request"},
			&cli.DurationFlag{Name: "read-header-timeout", Value: d.ReadHeaderTimeout},
			&cli.DurationFlag{Name: "read-timeout", Value: d.ReadTimeout},
			&cli.DurationFlag{Name: "write-timeout", Value: d.WriteTimeout},
			&cli.DurationFlag{Name: "idle-timeout", Value: d.IdleTimeout},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: d.ShutdownTimeout, Usage: "how long requests in flight may finish after SIGTERM"},
			&cli.BoolFlag{Name: "spin", Usage: "let onnxruntime's threads spin between runs (faster back-to-back runs, less CPU left to the HTTP side)"},
			&cli.StringFlag{Name: "onnxruntime-lib", Usage: "path of the onnxruntime library"},
		},
		Action: func(c *cli.Context) error {
			log := logger(c)
			for _, name := range []string{"threads", "runners", "max-batch", "max-images", "max-queue"} {
				if c.IsSet(name) && c.Int(name) < 1 {
					return fmt.Errorf("--%s %d: must be at least 1", name, c.Int(name))
				}
			}
			for _, name := range []string{"max-body", "max-pixels"} {
				if c.Int64(name) < 1 {
					return fmt.Errorf("--%s %d: must be at least 1", name, c.Int64(name))
				}
			}
			if c.Duration("max-wait") < 0 {
				return fmt.Errorf("--max-wait %v: must not be negative", c.Duration("max-wait"))
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			start := time.Now()
			m, err := embed.Open(c.String("model"), embed.Options{Library: c.String("onnxruntime-lib"), Threads: c.Int("threads"), NoSpin: !c.Bool("spin")})
			if err != nil {
				return err
			}
			defer m.Close()
			var g *serve.Gallery
			if p := c.String("gallery"); p != "" {
				if st, err := os.Stat(p); err != nil {
					return fmt.Errorf("--gallery: %w", err)
				} else if st.IsDir() {
					g, err = serve.GalleryFromDir(ctx, m, p, c.Int64("max-pixels"), c.Int("max-batch"))
					if err != nil {
						return err
					}
				} else if strings.EqualFold(filepath.Ext(p), ".npy") {
					if g, err = serve.LoadGallery(p, c.String("gallery-names")); err != nil {
						return err
					}
				} else {
					return fmt.Errorf("--gallery %s: want a directory of images or a .npy file", p)
				}
			}
			loaded := time.Since(start)
			cfg := serve.Config{
				Batching: c.Bool("batching"), Runners: c.Int("runners"), MaxBatch: c.Int("max-batch"), MaxWait: c.Duration("max-wait"), MaxQueue: c.Int("max-queue"),
				MaxBody: c.Int64("max-body"), MaxPixels: c.Int64("max-pixels"), MaxImages: c.Int("max-images"),
				ReadHeaderTimeout: c.Duration("read-header-timeout"), ReadTimeout: c.Duration("read-timeout"),
				WriteTimeout: c.Duration("write-timeout"), IdleTimeout: c.Duration("idle-timeout"),
				ShutdownTimeout: c.Duration("shutdown-timeout"), Log: log,
			}
			s, err := serve.New(m, g, cfg)
			if err != nil {
				return err
			}
			s.ObserveModelLoad(loaded)
			prep, recorded := m.Preprocessing()
			steps := make([]string, len(prep.Resize))
			for i, r := range prep.Resize {
				steps[i] = r.String()
			}
			// recorded false: an export older than the preprocessing record, fed by the rule for its "data".
			ev := log.Info().Str("model", c.String("model")).Int("dim", m.Dim()).Dur("load", loaded).
				Strs("resize", steps).Bool("preprocessing_recorded", recorded)
			if g != nil {
				ev = ev.Int("gallery", g.Len())
			}
			ev.Msg("model loaded")
			l, err := net.Listen("tcp", c.String("addr"))
			if err != nil {
				var op *net.OpError
				if errors.As(err, &op) && errors.Is(err, syscall.EADDRINUSE) {
					return fmt.Errorf("--addr %s is in use: stop the other server or choose another port", c.String("addr"))
				}
				return fmt.Errorf("--addr %s: %w", c.String("addr"), err)
			}
			return s.Serve(ctx, l)
		},
	}
}
