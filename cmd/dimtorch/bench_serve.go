package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/serve"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

func benchServeCommand() *cli.Command {
	d := serve.DefaultConfig()
	return &cli.Command{
		Name: "serve",
		Usage: "load test of `dimtorch serve` on loopback: p50/p99 latency and throughput of POST /v1/embed (one PNG per " +
			"request) at several concurrencies, with and without micro-batching",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "encoder", Value: "dcgan32", Usage: "export this encoder, randomly initialised, and serve it"},
			&cli.IntFlag{Name: "channels", Value: 3},
			&cli.StringFlag{Name: "model", Usage: "serve this ONNX file instead"},
			&cli.StringFlag{Name: "concurrency", Value: "1,8,64", Usage: "comma-separated numbers of concurrent clients"},
			&cli.IntFlag{Name: "requests", Value: 1500, Usage: "requests per measurement at most"},
			&cli.DurationFlag{Name: "duration", Value: 4 * time.Second, Usage: "time per measurement at most"},
			&cli.IntFlag{Name: "rounds", Value: 3, Usage: "alternating pairs (without, with micro-batching) per concurrency"},
			&cli.IntFlag{Name: "threads", Value: 2, Usage: "onnxruntime intra-op threads"},
			&cli.IntFlag{Name: "runners", Value: d.Runners, Usage: "batches run at once (dimtorch serve --runners)"},
			&cli.IntFlag{Name: "max-batch", Value: d.MaxBatch},
			&cli.BoolFlag{Name: "spin", Usage: "let onnxruntime's threads spin between runs (as dimtorch serve --spin)"},
			&cli.DurationFlag{Name: "max-wait", Value: d.MaxWait},
			&cli.StringFlag{Name: "onnxruntime-lib"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per measurement"},
			&cli.StringFlag{Name: "variants", Value: "plain", Usage: "comma-separated service configurations to measure: plain, key (an API key on every request), " +
				"trace (every request traced and exported over OTLP/HTTP to a collector on loopback), key+trace"},
		},
		Action: benchServe,
	}
}

type benchServeRow struct {
	Variant     string  `json:"variant"`
	Batching    bool    `json:"batching"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"requests_per_sec"`
	P50MS       float64 `json:"p50_ms"`
	P99MS       float64 `json:"p99_ms"`
	Errors      int     `json:"errors"`
}

// randomModel exports a randomly initialised encoder into a temporary file;
// with int8 it is quantised, calibrated on 256 synthetic images (smooth
// random patterns: timing, not accuracy).
func randomModel(encoder string, channels int, int8 bool, lib string) (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "dimtorch-bench")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	_ = torch.ManualSeed(0)
	enc, err := models.New(models.Config{Name: encoder, InChannels: channels})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	enc.Train(false)
	in := enc.Spec().Input
	m, err := export.Model(enc, export.Options{})
	nn.Free(enc)
	if err == nil && int8 {
		m, err = export.QuantizeCalibrated(m, syntheticImages(256, in[0], in[1], in[2]), 256, lib, "min-max over 256 synthetic images")
	}
	if err == nil {
		path = dir + "/model.onnx"
		err = export.Write(path, m)
	}
	if err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}

func benchServe(c *cli.Context) error {
	concs, err := positiveList(c, "concurrency", "a positive number of clients")
	if err != nil {
		return err
	}
	path := c.String("model")
	if path == "" {
		p, cleanup, err := randomModel(c.String("encoder"), c.Int("channels"), false, c.String("onnxruntime-lib"))
		if err != nil {
			return err
		}
		defer cleanup()
		path = p
	}
	m, err := embed.Open(path, embed.Options{Library: c.String("onnxruntime-lib"), Threads: c.Int("threads"), NoSpin: !c.Bool("spin")})
	if err != nil {
		return err
	}
	defer m.Close()
	ch, h, w := m.InputShape()
	body := testImage(ch, h, w)
	// Both services run at once on their own ports, sharing the model (one
	// is loaded at a time); each concurrency alternates between them.
	variants := strings.Split(c.String("variants"), ",")
	for _, v := range variants {
		if !slices.Contains([]string{"plain", "key", "trace", "key+trace"}, v) {
			return fmt.Errorf("--variants: %q is not plain, key, trace or key+trace", v)
		}
	}
	type target struct{ url, key string }
	targets := map[string]target{} // variant/batching
	var spanBytes atomic.Int64     // what the collector received: tracing really exports
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		spanBytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	var stops []func() error
	var flush []func(context.Context) error // the tracer providers'
	defer func() {
		for _, stop := range stops {
			_ = stop()
		}
	}()
	keyDir, err := os.MkdirTemp("", "dimtorch-bench-keys")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	const key = "bench-key-0123456789abcdef0123456789abcdef"
	keyFile := filepath.Join(keyDir, "keys")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return err
	}
	for _, v := range variants {
		for _, batching := range []bool{false, true} {
			cfg := serve.Config{Batching: batching, Runners: c.Int("runners"), MaxBatch: c.Int("max-batch"), MaxWait: c.Duration("max-wait"),
				MaxQueue: 1 << 16, Log: zerolog.Nop()}
			t := target{}
			if strings.Contains(v, "key") {
				if cfg.APIKeys, err = serve.LoadAPIKeys(keyFile); err != nil {
					return err
				}
				t.key = key
			}
			if strings.Contains(v, "trace") {
				tp, err := tracerProvider(context.Background(), collector.URL)
				if err != nil {
					return err
				}
				stops = append(stops, func() error { return tp.Shutdown(context.Background()) })
				flush = append(flush, tp.ForceFlush)
				cfg.TracerProvider = tp
			}
			s, err := serve.New(serve.Deployment{Model: m}, cfg)
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, l) }()
			stops = append(stops, func() error { cancel(); return <-done })
			t.url = "http://" + l.Addr().String() + "/v1/embed"
			targets[fmt.Sprint(v, batching)] = t
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	rounds := max(1, c.Int("rounds"))
	type cell struct {
		variant string
		conc    int
		off, on []benchServeRow
	}
	var cells []cell
	for _, v := range variants {
		for _, conc := range concs {
			cl := cell{variant: v, conc: conc}
			for _, b := range []bool{false, true} {
				t := targets[fmt.Sprint(v, b)]
				load(client, t.url, t.key, body, conc, conc*2, time.Minute) // warm-up
			}
			for r := 0; r < rounds; r++ {
				for _, b := range []bool{false, true} {
					t := targets[fmt.Sprint(v, b)]
					row := load(client, t.url, t.key, body, conc, c.Int("requests"), c.Duration("duration"))
					row.Batching, row.Variant = b, v
					if b {
						cl.on = append(cl.on, row)
					} else {
						cl.off = append(cl.off, row)
					}
					if c.Bool("json") {
						_ = json.NewEncoder(os.Stdout).Encode(row)
					}
				}
			}
			cells = append(cells, cl)
		}
	}
	if c.Bool("json") {
		return nil
	}
	fmt.Printf("POST /v1/embed, one %dx%dx%d PNG per request, %d onnxruntime threads, %d batch runners, loopback; %d alternating rounds, medians\n",
		ch, h, w, c.Int("threads"), c.Int("runners"), rounds)
	if slices.ContainsFunc(variants, func(v string) bool { return strings.Contains(v, "trace") }) {
		for _, f := range flush {
			_ = f(context.Background())
		}
		fmt.Printf("the collector received %.0f KiB of exported spans\n", float64(spanBytes.Load())/(1<<10))
	}
	fmt.Printf("%-10s %-11s %-9s %11s %9s %9s %7s\n", "variant", "concurrency", "batching", "requests/s", "p50 ms", "p99 ms", "errors")
	median := func(rows []benchServeRow, f func(benchServeRow) float64) float64 {
		v := make([]float64, len(rows))
		for i, r := range rows {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	for _, cl := range cells {
		var ratios []float64
		for r := range cl.on {
			ratios = append(ratios, cl.on[r].PerSec/cl.off[r].PerSec)
		}
		sort.Float64s(ratios)
		for _, rows := range [][]benchServeRow{cl.off, cl.on} {
			errs := 0
			for _, r := range rows {
				errs += r.Errors
			}
			fmt.Printf("%-10s %-11d %-9v %11.0f %9.2f %9.2f %7d\n", cl.variant, cl.conc, rows[0].Batching, median(rows, func(r benchServeRow) float64 { return r.PerSec }),
				median(rows, func(r benchServeRow) float64 { return r.P50MS }), median(rows, func(r benchServeRow) float64 { return r.P99MS }), errs)
		}
		fmt.Printf("%s, concurrency %d: micro-batching gives %.2fx the throughput (median of %d pairs; %.2fx to %.2fx)\n",
			cl.variant, cl.conc, ratios[len(ratios)/2], len(ratios), ratios[0], ratios[len(ratios)-1])
	}
	return nil
}

// load runs conc clients until n requests are done or d has passed.
func load(client *http.Client, url, key string, body []byte, conc, n int, d time.Duration) benchServeRow {
	var next, errs atomic.Int64
	lat := make([][]float64, conc)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for k := 0; k < conc; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for next.Add(1) <= int64(n) && time.Now().Before(deadline) {
				t0 := time.Now()
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "image/png")
				if key != "" {
					req.Header.Set("Authorization", "Bearer "+key)
				}
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				lat[k] = append(lat[k], float64(time.Since(t0).Microseconds())/1000)
			}
		}(k)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	var all []float64
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Float64s(all)
	r := benchServeRow{Concurrency: conc, Requests: len(all), Seconds: secs, PerSec: float64(len(all)) / secs, Errors: int(errs.Load())}
	if len(all) > 0 {
		r.P50MS, r.P99MS = all[len(all)/2], all[min(len(all)-1, len(all)*99/100)]
	}
	return r
}

// syntheticImages returns n smooth random patterns, float32 NCHW in [0, 1].
func syntheticImages(n, ch, h, w int) []float32 {
	rng := rand.New(rand.NewPCG(5, 6))
	per := ch * h * w
	out := make([]float32, n*per)
	for i := 0; i < n; i++ {
		a, b, c := rng.Float64(), rng.Float64(), rng.Float64()
		for k := 0; k < ch; k++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					out[i*per+(k*h+y)*w+x] = float32(0.5 + 0.5*math.Sin(a*float64(x)/3+b*float64(y)/4+c*float64(k)*2))
				}
			}
		}
	}
	return out
}

// testImage is a PNG of random pixels of the model's input size.
func testImage(ch, h, w int) []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	var img image.Image
	if ch == 1 {
		g := image.NewGray(image.Rect(0, 0, w, h))
		for i := range g.Pix {
			g.Pix[i] = uint8(rng.IntN(256))
		}
		img = g
	} else {
		c := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c.Set(x, y, color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255})
			}
		}
		img = c
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}
