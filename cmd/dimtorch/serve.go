package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func serveCommand() *cli.Command {
	d := serve.DefaultConfig() // every default is serve's
	return &cli.Command{
		Name:  "serve",
		Usage: "an HTTP service that embeds images with an exported encoder and finds their nearest neighbours in a gallery",
		Description: "POST /v1/embed and POST /v1/neighbors?k=N take a PNG or JPEG body, a multipart form of images or JSON " +
			"{\"images\": [base64, ...]}; GET /healthz, /readyz and /metrics (Prometheus). SIGHUP reloads the model and " +
			"gallery from their files (and the keys and certificate) without failing a request, as POST /v1/admin/reload does " +
			"(with --api-key-file); SIGTERM or Ctrl-C finish the requests in flight and exit 0. See docs/serving.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "the exported encoder (.onnx, from dimtorch export)"},
			&cli.StringFlag{Name: "gallery", Usage: "images to search: a directory of PNG/JPEG files (embedded at start-up) or FILE.npy of embeddings (dimtorch embed --out FILE.npy)"},
			&cli.StringFlag{Name: "index", Value: "exact", Usage: "how to search the gallery: exact (every vector), hnsw or ivf (the approximate index beside a .npy gallery, from dimtorch index build; built at start-up for a folder)"},
			&cli.IntFlag{Name: "ef-search", Usage: "--index hnsw: candidates a query (default: the index's saved value)"},
			&cli.IntFlag{Name: "nprobe", Usage: "--index ivf: cells scanned a query (default: the index's saved value)"},
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
			&cli.StringFlag{Name: "model-name", Usage: "the model's name in the Open Inference Protocol's /v2/models/NAME routes (default: the --model file's name without .onnx)"},
			&cli.StringFlag{Name: "onnxruntime-lib", Usage: "path of the onnxruntime library"},
			&cli.StringFlag{Name: "api-key-file", Category: "access", Usage: "require one of the keys in FILE (one per line, # comments) as Authorization: Bearer KEY on every route but /healthz and /readyz; re-read on SIGHUP"},
			&cli.StringFlag{Name: "tls-cert", Category: "access", Usage: "serve HTTPS with this PEM certificate (chain); re-read on SIGHUP"},
			&cli.StringFlag{Name: "tls-key", Category: "access", Usage: "the PEM private key of --tls-cert"},
			&cli.BoolFlag{Name: "ui", Value: true, Usage: "serve a page to try the service at / (--ui=false: no page)"},
			&cli.StringFlag{Name: "otlp-endpoint", Usage: "export a trace of every request (OpenTelemetry, OTLP/HTTP) to this collector URL, e.g. http://localhost:4318 (OTEL_EXPORTER_OTLP_* variables add headers, timeouts)"},
			&cli.StringFlag{Name: "grpc-addr", Usage: "also serve the Open Inference Protocol's gRPC form (KServe v2) on this address, with the same keys and TLS (port 0: any free port, logged)"},
			&cli.StringFlag{Name: "metrics-addr", Category: "access", Usage: "serve /metrics on this address instead (plain HTTP, no key: for the monitoring network)"},
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
			if (c.String("tls-cert") == "") != (c.String("tls-key") == "") {
				return errors.New("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
			}
			var keys *serve.APIKeys
			if f := c.String("api-key-file"); f != "" {
				var err error
				if keys, err = serve.LoadAPIKeys(f); err != nil {
					return fmt.Errorf("--api-key-file: %w", err)
				}
			}
			var cert *serve.Certificate
			if c.String("tls-cert") != "" {
				var err error
				if cert, err = serve.LoadCertificate(c.String("tls-cert"), c.String("tls-key")); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			index := serve.IndexOptions{Kind: c.String("index"), EfSearch: c.Int("ef-search"), Nprobe: c.Int("nprobe")}
			switch {
			case !slices.Contains(serve.IndexKinds, index.Kind):
				return fmt.Errorf("--index %q: want one of %s", index.Kind, strings.Join(serve.IndexKinds, ", "))
			case index.EfSearch < 0 || index.Nprobe < 0:
				return errors.New("--ef-search and --nprobe must not be negative")
			case index.EfSearch > 0 && index.Kind != "hnsw", index.Nprobe > 0 && index.Kind != "ivf":
				return errors.New("--ef-search goes with --index hnsw, --nprobe with --index ivf")
			case index.Kind != "exact" && c.String("gallery") == "":
				return fmt.Errorf("--index %s: there is no --gallery to index", index.Kind)
			}
			opts := embed.Options{Library: c.String("onnxruntime-lib"), Threads: c.Int("threads"), NoSpin: !c.Bool("spin")}
			load := func(ctx context.Context, src serve.Source) (*serve.Deployment, error) {
				return loadDeployment(ctx, log, src, opts, c.String("gallery"), c.String("gallery-names"), c.Int64("max-pixels"), c.Int("max-batch"), index)
			}
			start := time.Now()
			dep, err := load(ctx, serve.Source{Model: c.String("model"), Gallery: c.String("gallery")})
			if err != nil {
				return err
			}
			loaded := time.Since(start)
			cfg := serve.Config{
				Batching: c.Bool("batching"), Runners: c.Int("runners"), MaxBatch: c.Int("max-batch"), MaxWait: c.Duration("max-wait"), MaxQueue: c.Int("max-queue"),
				MaxBody: c.Int64("max-body"), MaxPixels: c.Int64("max-pixels"), MaxImages: c.Int("max-images"),
				ReadHeaderTimeout: c.Duration("read-header-timeout"), ReadTimeout: c.Duration("read-timeout"),
				WriteTimeout: c.Duration("write-timeout"), IdleTimeout: c.Duration("idle-timeout"),
				ShutdownTimeout: c.Duration("shutdown-timeout"), Log: log,
				APIKeys: keys, TLS: cert, NoMetricsRoute: c.String("metrics-addr") != "", Load: load,
				ModelName: c.String("model-name"), ServerVersion: version, NoUI: !c.Bool("ui"),
			}
			if ep := c.String("otlp-endpoint"); ep != "" {
				tp, err := tracerProvider(ctx, ep)
				if err != nil {
					dep.Close()
					return fmt.Errorf("--otlp-endpoint: %w", err)
				}
				defer func() { // sends the spans still buffered
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := tp.Shutdown(sctx); err != nil {
						log.Warn().Err(err).Msg("exporting the last traces")
					}
				}()
				cfg.TracerProvider = tp
				log.Info().Str("endpoint", ep).Msg("exporting traces (OTLP/HTTP)")
			}
			if cfg.ModelName == "" {
				cfg.ModelName = strings.TrimSuffix(filepath.Base(c.String("model")), filepath.Ext(c.String("model")))
			}
			s, err := serve.New(*dep, cfg)
			if err != nil {
				dep.Close()
				return err
			}
			defer s.Close() // Serve closes it too: for a return before Serve
			s.ObserveModelLoad(loaded)
			l, err := listen("addr", c.String("addr"))
			if err != nil {
				return err
			}
			if keys != nil {
				log.Info().Int("keys", keys.Len()).Msg("API keys required")
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					reloadAccess(log, keys, cert)
					if _, err := s.Reload(ctx, serve.Source{}); err != nil {
						log.Error().Err(err).Msg("SIGHUP: the model was not reloaded; the previous one stays in use")
					}
				}
			}()
			// Listeners beside the main one, stopped with it.
			type side struct {
				flag  string
				l     net.Listener
				serve func(context.Context, net.Listener) error
			}
			var sides []side
			for _, sd := range []side{{flag: "metrics-addr", serve: s.ServeMetrics}, {flag: "grpc-addr", serve: s.ServeGRPC}} {
				if a := c.String(sd.flag); a != "" {
					if sd.l, err = listen(sd.flag, a); err != nil {
						l.Close()
						for _, o := range sides {
							o.l.Close()
						}
						return err
					}
					sides = append(sides, sd)
				}
			}
			sctx, sstop := context.WithCancel(ctx)
			errs := make(chan error, len(sides))
			for _, sd := range sides {
				go func() {
					if err := sd.serve(sctx, sd.l); err != nil {
						errs <- fmt.Errorf("--%s: %w", sd.flag, err)
						return
					}
					errs <- nil
				}()
			}
			err = s.Serve(ctx, l) // waits for the gRPC calls in flight, then closes the model
			sstop()
			for range sides {
				if e := <-errs; err == nil && e != nil {
					err = e
				}
			}
			return err
		},
	}
}

// listen opens the TCP address of --flag, saying so when it is taken.
func listen(flag, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("--%s %s is in use: stop the other server or choose another port", flag, addr)
		}
		return nil, fmt.Errorf("--%s %s: %w", flag, addr, err)
	}
	return l, nil
}

// reloadAccess re-reads the API keys and the TLS certificate (SIGHUP); what
// fails to load is logged and keeps what was in use.
func reloadAccess(log zerolog.Logger, keys *serve.APIKeys, cert *serve.Certificate) {
	if keys != nil {
		if n, err := keys.Reload(); err != nil {
			log.Error().Err(err).Msg("SIGHUP: the API keys were not reloaded; the previous keys stay in force")
		} else {
			log.Info().Int("keys", n).Msg("SIGHUP: API keys reloaded")
		}
	}
	if cert != nil {
		if err := cert.Reload(); err != nil {
			log.Error().Err(err).Msg("SIGHUP: the TLS certificate was not reloaded; the previous one stays in use")
		} else {
			log.Info().Msg("SIGHUP: TLS certificate reloaded")
		}
	}
}

// loadDeployment opens the model that src names and its gallery: a
// directory of images (embedded with the model) or an .npy of embeddings
// with their names (namesFlag when src names the --gallery file, else
// FILE.names.txt beside it). The version is the first 16 hex digits of the
// SHA-256 of the model's file. Each load is logged.
func loadDeployment(ctx context.Context, log zerolog.Logger, src serve.Source, opts embed.Options, galleryFlag, namesFlag string,
	maxPixels int64, batch int, index serve.IndexOptions) (*serve.Deployment, error) {
	start := time.Now()
	sum, err := fileSHA256(src.Model)
	if err != nil {
		return nil, err
	}
	m, err := embed.Open(src.Model, opts)
	if err != nil {
		return nil, err
	}
	var g *serve.Gallery
	if p := src.Gallery; p != "" {
		if st, serr := os.Stat(p); serr != nil {
			err = fmt.Errorf("gallery: %w", serr)
		} else if st.IsDir() {
			g, err = serve.GalleryFromDir(ctx, m, p, maxPixels, batch)
		} else if strings.EqualFold(filepath.Ext(p), ".npy") {
			names := ""
			if p == galleryFlag {
				names = namesFlag
			}
			g, err = serve.LoadGallery(p, names)
		} else {
			err = fmt.Errorf("gallery %s: want a directory of images or a .npy file", p)
		}
		if err == nil {
			if err = g.UseIndex(ctx, index); err != nil {
				g.Close()
			}
		}
		if err != nil {
			m.Close()
			return nil, err
		}
	}
	d := &serve.Deployment{Model: m, Gallery: g, Version: sum[:16], Source: src, Close: func() error {
		gerr := g.Close() // a memory-mapped .npy
		return errors.Join(m.Close(), gerr)
	}}
	prep, recorded := m.Preprocessing()
	steps := make([]string, len(prep.Resize))
	for i, r := range prep.Resize {
		steps[i] = r.String()
	}
	// recorded false: an export older than the preprocessing record, fed by the rule for its "data".
	ev := log.Info().Str("model", src.Model).Str("version", d.Version).Int("dim", m.Dim()).Dur("load", time.Since(start)).
		Strs("resize", steps).Bool("preprocessing_recorded", recorded)
	if g != nil {
		ev = ev.Int("gallery", g.Len()).Str("index", index.Kind)
	}
	ev.Msg("model loaded")
	return d, nil
}

// fileSHA256 is the hex SHA-256 of a file's bytes.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tracerProvider exports spans in batches over OTLP/HTTP to endpoint (a
// URL; without a path, the collector's /v1/traces).
func tracerProvider(ctx context.Context, endpoint string) (*sdktrace.TracerProvider, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: want a URL such as http://localhost:4318", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(attribute.String("service.name", "dimtorch-serve"), attribute.String("service.version", version))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
