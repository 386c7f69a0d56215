package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"
)

// VersionHeader carries, in every answer, the version of the deployment
// that answered it (Deployment.Version), so that a client can tell which
// model computed its vectors while a reload swaps models under it.
const VersionHeader = "Dimtorch-Model-Version"

// Deployment is what a Server answers with: a model, the gallery searched
// with its vectors, and what names them.
type Deployment struct {
	Model   Model
	Gallery *Gallery // nil: /v1/neighbors answers 404
	// Version names the model in every answer's VersionHeader and in the
	// dimtorch_serve_model_info metric ("": unnamed). `dimtorch serve`
	// uses the first 16 hex digits of the SHA-256 of the .onnx file.
	Version string
	// Source is where the deployment was loaded from; a reload that names
	// no file of its own loads the same ones again.
	Source Source
	// Close, when set, releases the model. The server calls it once no
	// request uses the deployment any more: after a reload has replaced it,
	// or from Close (Serve calls Close when it stops).
	Close func() error
}

// Source names the files a deployment is loaded from.
type Source struct {
	Model   string `json:"model,omitempty"`   // the exported encoder (.onnx)
	Gallery string `json:"gallery,omitempty"` // a directory of images or an .npy of embeddings; "": none
}

// Loader loads the deployment that src names (Config.Load).
type Loader func(ctx context.Context, src Source) (*Deployment, error)

// Reloaded describes a reload that took effect.
type Reloaded struct {
	Version  string  `json:"version"`
	Previous string  `json:"previous"`
	Source   Source  `json:"source"`
	Dim      int     `json:"dim"`
	Gallery  int     `json:"gallery"` // the gallery's vectors (0: none)
	Seconds  float64 `json:"seconds"` // loading and warming up
	WarmedUp int     `json:"warmed_up"`
}

// live is a deployment as the server runs it: with its batcher, and the
// requests using it counted so that a replaced deployment is closed only
// after the last of them.
type live struct {
	Deployment
	b     *batcher
	users sync.WaitGroup
}

func (s *Server) newLive(d Deployment) *live {
	return &live{Deployment: d, b: newBatcher(d.Model.EmbedBatchContext, s.cfg.Batching, s.cfg.Runners, s.cfg.MaxBatch,
		s.cfg.MaxWait, s.cfg.MaxQueue, func(n int) {
			s.m.batches.Observe(float64(n))
			s.m.images.Add(float64(n))
		})}
}

// acquire returns the deployment a request uses from start to end; the
// request calls users.Done when it has answered. A reload swaps s.cur under
// the write lock, so no request can take a deployment once it is replaced
// and its users.Wait is safe.
func (s *Server) acquire() *live {
	s.mu.RLock()
	d := s.cur
	d.users.Add(1)
	s.mu.RUnlock()
	return d
}

func (s *Server) current() *live {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

// retire closes a replaced deployment once the requests using it have
// answered: its batcher first (no job is left in it by then), then its
// model.
func (s *Server) retire(d *live) {
	s.draining.Add(1)
	go func() {
		defer s.draining.Done()
		d.users.Wait()
		d.b.close()
		if d.Close != nil {
			if err := d.Close(); err != nil {
				s.cfg.Log.Warn().Err(err).Str("version", d.Version).Msg("closing the replaced model")
			}
		}
	}()
}

// check refuses a deployment the service cannot answer with, then warms it
// up: a run of one image and one of MaxBatch, whose vectors must have the
// model's dimension and be finite. It returns the images run.
func (s *Server) check(ctx context.Context, d *Deployment) (int, error) {
	if d == nil || d.Model == nil {
		return 0, errors.New("the loader returned no model")
	}
	if d.Gallery != nil && d.Gallery.Dim() != d.Model.Dim() {
		return 0, fmt.Errorf("the gallery's vectors have %d values, the model's %d", d.Gallery.Dim(), d.Model.Dim())
	}
	c, h, w := d.Model.InputShape()
	if c < 1 || h < 1 || w < 1 || d.Model.Dim() < 1 {
		return 0, fmt.Errorf("the model takes %dx%dx%d images to %d values: nothing the service can run", c, h, w, d.Model.Dim())
	}
	warmed := 0
	for _, n := range []int{1, s.cfg.MaxBatch} {
		vecs, err := d.Model.EmbedBatchContext(ctx, make([]float32, n*c*h*w), n)
		if err != nil {
			return warmed, fmt.Errorf("warm-up run of %d images: %w", n, err)
		}
		if len(vecs) != n {
			return warmed, fmt.Errorf("warm-up run of %d images: %d vectors back", n, len(vecs))
		}
		for _, v := range vecs {
			if len(v) != d.Model.Dim() {
				return warmed, fmt.Errorf("warm-up run: a vector of %d values from a model of %d", len(v), d.Model.Dim())
			}
			for _, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return warmed, errors.New("warm-up run: the model's vectors are not finite")
				}
			}
		}
		warmed += n
	}
	return warmed, nil
}

// WarmUp runs the current model once on one image and once on MaxBatch
// before the service reports ready (Serve calls it; a program that mounts
// Handler calls it before SetReady).
func (s *Server) WarmUp(ctx context.Context) error {
	d := s.acquire()
	defer d.users.Done()
	start := time.Now()
	n, err := s.check(ctx, &d.Deployment)
	if err != nil {
		return err
	}
	s.cfg.Log.Info().Int("images", n).Dur("took", time.Since(start)).Str("version", d.Version).Msg("warmed up")
	return nil
}

// ErrNoLoader is Reload's error on a server whose Config has no Load.
var ErrNoLoader = errors.New("this server cannot reload its model (no loader)")

// Reload loads the deployment that src names (its empty fields: the
// current deployment's files), checks and warms it up, then swaps it in:
// requests from then on use it, those in flight finish on the old one,
// which is closed after them. When anything fails, the current deployment
// stays and the error says why. Reloads run one at a time.
func (s *Server) Reload(ctx context.Context, src Source) (Reloaded, error) {
	if s.cfg.Load == nil {
		return Reloaded{}, ErrNoLoader
	}
	s.reloading.Lock()
	defer s.reloading.Unlock()
	start := time.Now()
	cur := s.current()
	if src.Model == "" {
		src.Model = cur.Source.Model
	}
	if src.Gallery == "" {
		src.Gallery = cur.Source.Gallery
	}
	fail := func(d *Deployment, err error) (Reloaded, error) {
		if d != nil && d.Close != nil {
			d.Close()
		}
		s.m.reloads.WithLabelValues("failed").Inc()
		return Reloaded{}, err
	}
	if src.Model == "" {
		return fail(nil, errors.New("no model to load: name one"))
	}
	d, err := s.cfg.Load(ctx, src)
	if err != nil {
		return fail(d, err)
	}
	warmed, err := s.check(ctx, d)
	if err != nil {
		return fail(d, err)
	}
	if d.Source == (Source{}) {
		d.Source = src
	}
	n := s.newLive(*d)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		n.b.close()
		return fail(d, errClosed)
	}
	old := s.cur
	s.cur = n
	s.mu.Unlock()
	s.retire(old)
	took := time.Since(start)
	s.m.reloads.WithLabelValues("ok").Inc()
	s.m.modelLoad.Set(took.Seconds())
	s.m.setVersion(n.Version)
	r := Reloaded{Version: n.Version, Previous: old.Version, Source: n.Source, Dim: n.Model.Dim(),
		Seconds: took.Seconds(), WarmedUp: warmed}
	if n.Gallery != nil {
		r.Gallery = n.Gallery.Len()
	}
	s.cfg.Log.Info().Str("version", r.Version).Str("previous", r.Previous).Str("model", r.Source.Model).
		Str("gallery", r.Source.Gallery).Int("gallery_vectors", r.Gallery).Dur("took", took).Msg("model reloaded")
	return r, nil
}

// handleReload answers POST /v1/admin/reload: an empty body reloads the
// current files, {"model": PATH, "gallery": PATH} names others. It needs
// API keys: on a server without them anyone could swap its model.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request, _ *live) error {
	if s.cfg.APIKeys == nil {
		return errorf(http.StatusForbidden, "reloading through HTTP needs API keys: start the server with --api-key-file (SIGHUP reloads without them)")
	}
	if s.cfg.Load == nil {
		return errorf(http.StatusNotImplemented, "%v", ErrNoLoader)
	}
	var src Source
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return errorf(http.StatusRequestEntityTooLarge, "the reload request's body is over 64 KiB")
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&src); err != nil {
			return errorf(http.StatusBadRequest, "the reload request: want JSON {\"model\": PATH, \"gallery\": PATH} (both optional): %v", err)
		}
	}
	res, err := s.Reload(r.Context(), src)
	if err != nil {
		if StatusOf(err, false) == http.StatusInternalServerError {
			// the files named: missing, damaged, of the wrong shape
			return errorf(http.StatusUnprocessableEntity, "the reload failed; the previous model stays in use: %v", err)
		}
		return err
	}
	w.Header().Set(VersionHeader, res.Version)
	return writeJSON(w, http.StatusOK, res)
}
