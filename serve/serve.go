// Package serve is dimtorch's HTTP service for exported encoders, built on
// package embed (onnxruntime; no libtorch): embeddings and nearest
// neighbours over JSON, with micro-batching of concurrent requests,
// Prometheus metrics, limits on every input a client controls, and a
// graceful shutdown. `dimtorch serve` is its command.
//
// # API
//
//	POST /v1/embed              images -> {"dim": D, "embeddings": [[...], ...]}
//	POST /v1/neighbors?k=N      images -> {"k": N, "results": [{"neighbors": [{"index", "name", "similarity"}, ...]}, ...]}
//	GET  /healthz               200 while the process runs
//	GET  /readyz                200 when it takes requests, 503 while it starts or stops
//	GET  /metrics               Prometheus text format (or on a listener of its own: ServeMetrics)
//	POST /v1/admin/reload       {"model": PATH, "gallery": PATH} (optional) -> Reloaded; needs API keys
//	/v2/...                     the Open Inference Protocol (KServe v2) over HTTP: see kserve.go
//
// Every answer names the model that computed it in its
// Dimtorch-Model-Version header (VersionHeader). Reload (POST
// /v1/admin/reload, or SIGHUP in `dimtorch serve`) loads a new deployment
// through Config.Load, warms it up and swaps it in without failing or
// holding a request: those in flight finish on the old model, which is
// closed after them; a reload that fails leaves the old model serving.
//
// With Config.APIKeys, every route but /healthz and /readyz needs a key
// ("Authorization: Bearer KEY"; 401 with a WWW-Authenticate challenge
// without one); with Config.TLS, Serve speaks HTTPS. Both re-read their
// files on Reload (`dimtorch serve` does it on SIGHUP) without dropping
// a connection.
//
// Images come as a raw PNG or JPEG body, as the files of a multipart form,
// or as JSON {"images": ["<base64 or data URL>", ...]}; each is converted
// to the model's channels and resized to its input (Model.Preprocess, which
// for *embed.Model follows the preprocessing the model records).
// Errors are JSON {"error": "...", "status": N}: 400 malformed request, 404
// unknown path or no gallery, 405 wrong method, 413 body, image or count
// over a limit, 415 not a PNG or JPEG, 422 damaged image or one the model
// cannot take (embed.ErrImage, embed.ErrSize, embed.ErrChannels), 429 at
// capacity (with Retry-After), 503 shutting down (the server's, or
// embed.ErrClosed) or a run that timed out, 500 anything else. A client
// that leaves before its answer is logged and counted as 499, with no body.
// The status comes from the error's type (errors.Is, errors.As), never from
// its message.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Model is what the service needs of an encoder; *embed.Model has it.
type Model interface {
	EmbedBatchContext(ctx context.Context, data []float32, n int) ([][]float32, error)
	Preprocess(img image.Image) ([]float32, error)
	InputShape() (c, h, w int)
	Dim() int
}

// Config sets the service's batching and limits. DefaultConfig holds the
// defaults (in brackets), which `dimtorch serve` starts from; in a Config
// built otherwise, a zero or negative number or duration takes its default,
// except Batching and MaxWait, whose zero values mean what they say (each
// request runs on its own; a batch does not wait to fill).
type Config struct {
	Batching  bool          // batch concurrent requests together (else each runs on its own) [true]
	Runners   int           // batches run at once [1]; 2 with a 1-thread model suits 2 cores
	MaxBatch  int           // images per model run [32]
	MaxWait   time.Duration // how long a batch waits to fill once it has an image [2ms]
	MaxQueue  int           // images accepted and not yet answered before 429 [0: 8 x MaxBatch, at least MaxImages]
	MaxBody   int64         // bytes per request body [16 MiB]
	MaxPixels int64         // width x height of one image, checked before decoding [16,777,216: 4096 x 4096]
	MaxImages int           // images per request [64]
	MaxK      int           // neighbours per query [100]
	Decoders  int           // images decoded at once, bounding their memory [0: 2 x GOMAXPROCS]

	ReadHeaderTimeout time.Duration // [5s]: a client that sends headers slowly is cut off
	ReadTimeout       time.Duration // [30s]
	WriteTimeout      time.Duration // [60s]
	IdleTimeout       time.Duration // [120s]
	ShutdownTimeout   time.Duration // in-flight requests get this long after SIGTERM [30s]

	// Load, when set, makes the deployment reloadable (Server.Reload,
	// POST /v1/admin/reload): it loads the model and gallery a Source names.
	Load Loader

	// ModelName is the model's name in the Open Inference Protocol's
	// /v2/models/NAME routes ["model"]; ServerVersion is the server's
	// version in GET /v2 [""].
	ModelName     string
	ServerVersion string

	// TracerProvider, when set, traces every request (OpenTelemetry: see
	// tracing.go) [nil: none].
	TracerProvider trace.TracerProvider

	APIKeys *APIKeys     // when set, every route but /healthz and /readyz needs one of its keys [nil: open]
	TLS     *Certificate // when set, Serve speaks HTTPS (TLS 1.2+, HTTP/2) with it [nil: plain HTTP]
	// NoMetricsRoute leaves /metrics off the service's routes, for a
	// program that serves MetricsHandler on a listener of its own
	// (`dimtorch serve --metrics-addr`).
	NoMetricsRoute bool
	// NoUI leaves out the page to try the service (GET /, ui.go).
	NoUI bool

	Log zerolog.Logger
}

// DefaultConfig returns the service's defaults. MaxQueue and Decoders are
// 0 there: New derives them (see Config).
func DefaultConfig() Config {
	return Config{
		Batching:          true,
		Runners:           1,
		MaxBatch:          32,
		MaxWait:           2 * time.Millisecond,
		MaxBody:           16 << 20,
		MaxPixels:         4096 * 4096,
		MaxImages:         64,
		MaxK:              100,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ShutdownTimeout:   30 * time.Second,
		ModelName:         "model",
	}
}

// defaults fills the unset fields from DefaultConfig and derives MaxQueue
// and Decoders.
func (c *Config) defaults() {
	d := DefaultConfig()
	set := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	set64 := func(p *int64, v int64) {
		if *p <= 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.ModelName == "" {
		c.ModelName = d.ModelName
	}
	set(&c.Runners, d.Runners)
	set(&c.MaxBatch, d.MaxBatch)
	set(&c.MaxImages, d.MaxImages)
	set(&c.MaxQueue, max(8*c.MaxBatch, c.MaxImages))
	c.MaxQueue = max(c.MaxQueue, c.MaxImages)
	set(&c.MaxK, d.MaxK)
	set(&c.Decoders, 2*runtime.GOMAXPROCS(0))
	set64(&c.MaxBody, d.MaxBody)
	set64(&c.MaxPixels, d.MaxPixels)
	if c.MaxWait < 0 {
		c.MaxWait = 0
	}
	setD(&c.ReadHeaderTimeout, d.ReadHeaderTimeout)
	setD(&c.ReadTimeout, d.ReadTimeout)
	setD(&c.WriteTimeout, d.WriteTimeout)
	setD(&c.IdleTimeout, d.IdleTimeout)
	setD(&c.ShutdownTimeout, d.ShutdownTimeout)
}

// Server answers the API for a deployment: a model and an optional gallery.
type Server struct {
	cfg     Config
	tracer  trace.Tracer
	m       *metrics
	ready   atomic.Bool
	decode  chan struct{}
	handler http.Handler

	mu        sync.RWMutex // guards cur and closed
	cur       *live
	closed    bool
	reloading sync.Mutex     // one reload at a time
	draining  sync.WaitGroup // replaced deployments not yet closed
	servers   sync.WaitGroup // ServeGRPC calls running: Serve closes the model after them

	metricsHandler http.Handler
}

// New prepares a server for d; Serve runs it. d.Gallery may be nil (then
// /v1/neighbors answers 404).
func New(d Deployment, cfg Config) (*Server, error) {
	cfg.defaults()
	if d.Model == nil {
		return nil, errors.New("serve.New: no model")
	}
	if d.Gallery != nil && d.Gallery.Dim() != d.Model.Dim() {
		return nil, errors.New("the gallery's vectors have " + strconv.Itoa(d.Gallery.Dim()) + " values, the model's " + strconv.Itoa(d.Model.Dim()))
	}
	s := &Server{cfg: cfg, decode: make(chan struct{}, cfg.Decoders), tracer: newTracer(cfg.TracerProvider)}
	s.m = newMetrics(func() float64 { return float64(s.current().b.Queued()) })
	s.cur = s.newLive(d)
	s.m.setVersion(d.Version)
	mux := http.NewServeMux()
	route := func(path, method, name string, h handler) {
		mux.Handle(path, s.instrument(name, method, cfg.APIKeys, h))
	}
	open := func(path, method, name string, h handler) {
		mux.Handle(path, s.instrument(name, method, nil, h))
	}
	route("/v1/embed", http.MethodPost, "embed", s.handleEmbed)
	route("/v1/neighbors", http.MethodPost, "neighbors", s.handleNeighbors)
	route("/v1/admin/reload", http.MethodPost, "reload", s.handleReload)
	s.v2Routes(route, open)
	if !cfg.NoUI {
		s.uiRoutes(route, open)
	}
	open("/healthz", http.MethodGet, "healthz", func(w http.ResponseWriter, _ *http.Request, _ *live) error {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	open("/readyz", http.MethodGet, "readyz", func(w http.ResponseWriter, _ *http.Request, _ *live) error {
		if !s.ready.Load() {
			return errorf(http.StatusServiceUnavailable, "not ready")
		}
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	s.metricsHandler = promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
	if !cfg.NoMetricsRoute {
		route("/metrics", http.MethodGet, "metrics", func(w http.ResponseWriter, r *http.Request, _ *live) error {
			s.metricsHandler.ServeHTTP(w, r)
			return nil
		})
	}
	route("/", "", "other", func(w http.ResponseWriter, r *http.Request, _ *live) error {
		return errorf(http.StatusNotFound, "no such endpoint: %s (see POST /v1/embed, POST /v1/neighbors, POST /v1/admin/reload, GET /healthz, /readyz, /metrics, and the Open Inference Protocol's /v2 routes)", r.URL.Path)
	})
	s.handler = mux
	return s, nil
}

// Handler returns the service's routes (for tests and for embedding the
// service in another server).
func (s *Server) Handler() http.Handler { return s.handler }

// MetricsHandler serves the service's Prometheus metrics (also at
// /metrics of Handler unless Config.NoMetricsRoute).
func (s *Server) MetricsHandler() http.Handler { return s.metricsHandler }

// SetReady marks the service ready (Serve does it when it starts; a
// program that mounts Handler in its own server calls it).
func (s *Server) SetReady(ok bool) { s.ready.Store(ok) }

// Close stops the batch runners once the requests they hold are answered,
// waits for replaced deployments to close, then closes the current one's
// model (Deployment.Close): for a program that mounts Handler in its own
// server (Serve does it itself). Requests after Close get 503; a reload
// after it fails.
func (s *Server) Close() {
	s.ready.Store(false)
	s.reloading.Lock() // a reload in progress finishes first
	s.mu.Lock()
	already := s.closed
	s.closed = true
	d := s.cur
	s.mu.Unlock()
	s.reloading.Unlock()
	if already {
		return
	}
	d.b.close()
	s.draining.Wait()
	if d.Close != nil {
		if err := d.Close(); err != nil {
			s.cfg.Log.Warn().Err(err).Msg("closing the model")
		}
	}
}

// ObserveModelLoad records how long the model and gallery took to load.
func (s *Server) ObserveModelLoad(d time.Duration) { s.m.modelLoad.Set(d.Seconds()) }

// Serve answers on l until ctx is cancelled, then stops accepting
// connections, lets in-flight requests finish (for up to ShutdownTimeout)
// and returns nil.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(zerologWriter{s.cfg.Log}, "", 0),
	}
	errc := make(chan error, 1)
	if s.cfg.TLS != nil {
		hs.TLSConfig = s.cfg.TLS.TLSConfig()
		go func() { errc <- hs.ServeTLS(l, "", "") }()
	} else {
		go func() { errc <- hs.Serve(l) }()
	}
	if err := s.WarmUp(ctx); err != nil {
		hs.Close()
		<-errc
		s.Close()
		return fmt.Errorf("the model failed its warm-up run: %w", err)
	}
	s.ready.Store(true)
	s.cfg.Log.Info().Str("addr", l.Addr().String()).Bool("tls", s.cfg.TLS != nil).Bool("api_keys", s.cfg.APIKeys != nil).Bool("batching", s.cfg.Batching).Int("max_batch", s.cfg.MaxBatch).
		Dur("max_wait", s.cfg.MaxWait).Msg("serving")
	select {
	case err := <-errc:
		s.Close()
		return err
	case <-ctx.Done():
	}
	s.ready.Store(false)
	s.cfg.Log.Info().Msg("shutting down: finishing the requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	others := make(chan struct{})
	go func() { s.servers.Wait(); close(others) }()
	select { // the gRPC listener, stopping on the same signal
	case <-others:
	case <-sctx.Done():
	}
	s.Close()
	<-errc
	if err != nil {
		return errors.New("shutdown: requests still running after " + s.cfg.ShutdownTimeout.String())
	}
	s.cfg.Log.Info().Msg("stopped")
	return nil
}

// ServeMetrics answers GET /metrics on l, plain HTTP and without keys (a
// listener for the monitoring network: `dimtorch serve --metrics-addr`),
// until ctx is cancelled.
func (s *Server) ServeMetrics(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metricsHandler)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, ReadTimeout: s.cfg.ReadTimeout,
		WriteTimeout: s.cfg.WriteTimeout, IdleTimeout: s.cfg.IdleTimeout, ErrorLog: log.New(zerologWriter{s.cfg.Log}, "", 0)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	s.cfg.Log.Info().Str("addr", l.Addr().String()).Msg("serving metrics")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	return err
}

// zerologWriter passes net/http's own messages (TLS, malformed requests)
// to the structured log.
type zerologWriter struct{ l zerolog.Logger }

func (z zerologWriter) Write(p []byte) (int, error) {
	z.l.Debug().Str("source", "net/http").Msg(string(trimNL(p)))
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// handler answers a request with the deployment it holds from start to
// end.
type handler func(w http.ResponseWriter, r *http.Request, d *live) error

// instrument checks the key and the method, holds the current deployment
// for the request (named in its VersionHeader), turns a handler's error
// into its JSON answer, and records the request's status and latency.
func (s *Server) instrument(route, method string, keys *APIKeys, h handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		dep := s.acquire()
		defer dep.users.Done()
		r, span := s.startRequest(r, route)
		w := &statusWriter{ResponseWriter: rw}
		var err error
		if err = authenticate(keys, w, r); err != nil {
			// before anything else: an unknown client learns nothing of the routes or the model
		} else {
			if dep.Version != "" {
				w.Header().Set(VersionHeader, dep.Version)
			}
			if method != "" && r.Method != method {
				w.Header().Set("Allow", method)
				err = errorf(http.StatusMethodNotAllowed, "%s takes %s, not %s", r.URL.Path, method, r.Method)
			} else {
				err = h(w, r, dep)
			}
		}
		if err != nil {
			writeError(w, r, err)
		}
		code := w.status
		if code == 0 {
			code = http.StatusOK
		}
		endRequest(span, code, dep.Version, err)
		d := time.Since(start)
		s.m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		s.m.latency.WithLabelValues(route).Observe(d.Seconds())
		ev := s.cfg.Log.Debug()
		if code >= 500 {
			ev = s.cfg.Log.Warn()
		}
		if err != nil {
			ev = ev.Err(err)
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", code).Dur("took", d).Str("remote", r.RemoteAddr).Msg("request")
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// StatusClientClosedRequest is the status recorded, in the metrics and the
// log, for a request whose client left before its answer (nginx's 499); no
// answer is sent.
const StatusClientClosedRequest = 499

// StatusOf is the HTTP status that answers err, from its type alone:
// the status of the service's own request errors (malformed, over a limit,
// not an image: 400, 413, 415, 422); 422 for an image the model cannot take
// (embed.ErrImage, embed.ErrSize, embed.ErrChannels); 429 for ErrOverloaded;
// 503 when the service or the model is closing (embed.ErrClosed) or a run
// was cancelled or timed out (embed.ErrCanceled, context errors) while the
// client still waits, StatusClientClosedRequest when it left (clientGone);
// 500 for anything else.
func StatusOf(err error, clientGone bool) int {
	var he *httpError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, ErrOverloaded):
		return http.StatusTooManyRequests
	case errors.Is(err, embed.ErrImage), errors.Is(err, embed.ErrSize), errors.Is(err, embed.ErrChannels):
		return http.StatusUnprocessableEntity
	case errors.Is(err, errClosed), errors.Is(err, embed.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, embed.ErrCanceled), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		if clientGone {
			return StatusClientClosedRequest
		}
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := StatusOf(err, r.Context().Err() != nil)
	switch status {
	case StatusClientClosedRequest:
		w.WriteHeader(status) // for the metrics and logs: nobody reads an answer
		return
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
	}
	_ = writeJSON(w, status, map[string]any{"error": err.Error(), "status": status})
}

// images reads, checks, decodes and preprocesses a request's images.
func (s *Server) images(w http.ResponseWriter, r *http.Request, d *live) ([]float32, int, error) {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	_, span := s.step(r.Context(), "read")
	uploads, err := readUploads(r, s.cfg.MaxImages)
	span.End()
	if err != nil {
		return nil, 0, err
	}
	return s.preprocess(r.Context(), uploads, d)
}

// preprocess decodes image files and turns them into the model's input,
// at most Config.Decoders at once.
func (s *Server) preprocess(ctx context.Context, uploads [][]byte, d *live) ([]float32, int, error) {
	ctx, span := s.step(ctx, "decode", attribute.Int("images", len(uploads)))
	defer span.End()
	c, h, wd := d.Model.InputShape()
	pixels := make([]float32, 0, len(uploads)*c*h*wd)
	for i, b := range uploads {
		select {
		case s.decode <- struct{}{}:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		img, err := decode(b, s.cfg.MaxPixels)
		var p []float32
		if err == nil {
			p, err = d.Model.Preprocess(img)
		}
		<-s.decode
		if err != nil {
			if len(uploads) > 1 {
				err = fmt.Errorf("image %d: %w", i, err) // its status is err's (StatusOf)
			}
			return nil, 0, err
		}
		pixels = append(pixels, p...)
	}
	return pixels, len(uploads), nil
}

// embedRequest reads a request's images and embeds them through the
// batcher, counted as on their way to it from the start.
func (s *Server) embedRequest(w http.ResponseWriter, r *http.Request, d *live) ([][]float32, error) {
	d.b.inflight.Add(1)
	defer d.b.inflight.Add(-1)
	pixels, n, err := s.images(w, r, d)
	if err != nil {
		return nil, err
	}
	return s.run(r.Context(), d, pixels, n)
}

func (s *Server) handleEmbed(w http.ResponseWriter, r *http.Request, d *live) error {
	vecs, err := s.embedRequest(w, r, d)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"dim": d.Model.Dim(), "embeddings": vecs})
}

func (s *Server) handleNeighbors(w http.ResponseWriter, r *http.Request, d *live) error {
	if d.Gallery == nil {
		return errorf(http.StatusNotFound, "no gallery: start the server with --gallery DIR or FILE.npy")
	}
	k := 5
	if v := r.URL.Query().Get("k"); v != "" {
		var err error
		if k, err = strconv.Atoi(v); err != nil || k < 1 || k > s.cfg.MaxK {
			return errorf(http.StatusBadRequest, "k=%q: want a whole number from 1 to %d", v, s.cfg.MaxK)
		}
	}
	vecs, err := s.embedRequest(w, r, d)
	if err != nil {
		return err
	}
	type res struct {
		Neighbors []Neighbor `json:"neighbors"`
	}
	_, span := s.step(r.Context(), "search", attribute.Int("k", k), attribute.Int("dimtorch.gallery_size", d.Gallery.Len()))
	out := make([]res, len(vecs))
	for i, v := range vecs {
		out[i].Neighbors = d.Gallery.Nearest(v, k)
	}
	span.End()
	return writeJSON(w, http.StatusOK, map[string]any{"k": min(k, d.Gallery.Len()), "results": out})
}
