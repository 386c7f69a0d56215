package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/rs/zerolog"
)

// versionModel is fakeModel with its first value scaled by scale, so that
// an answer shows which model computed it; a run after Close fails as
// embed's does, so that a model closed under a request fails the request.
type versionModel struct {
	fakeModel
	scale  float32
	dim    int  // 0: 2
	nan    bool // vectors of NaN
	closed atomic.Bool
}

func (m *versionModel) Dim() int {
	if m.dim != 0 {
		return m.dim
	}
	return 2
}

func (m *versionModel) EmbedBatchContext(ctx context.Context, data []float32, n int) ([][]float32, error) {
	if m.closed.Load() {
		return nil, embed.ErrClosed
	}
	out, err := m.fakeModel.EmbedBatchContext(ctx, data, n)
	if m.closed.Load() {
		return nil, embed.ErrClosed // closed while it ran
	}
	for i := range out {
		out[i][0] *= m.scale
		if m.nan {
			out[i][0] = float32(math.NaN())
		}
	}
	return out, err
}

// versions loads "a" (scale 1) and "b" (scale 2), and fails in the ways a
// reload can: "missing", "nan" (a model whose warm-up gives NaN), "wide"
// (a model of another dimension than the gallery "g2").
type versions struct {
	mu      sync.Mutex
	models  []*versionModel
	closes  atomic.Int64
	running time.Duration // each run's delay
}

func (v *versions) load(_ context.Context, src Source) (*Deployment, error) {
	m := &versionModel{fakeModel: fakeModel{delay: v.running}}
	switch src.Model {
	case "a":
		m.scale = 1
	case "b":
		m.scale = 2
	case "nan":
		m.scale, m.nan = 1, true
	case "wide":
		m.scale, m.dim = 1, 3
	default:
		return nil, fmt.Errorf("open %s: no such file", src.Model)
	}
	var g *Gallery
	if src.Gallery == "g2" {
		var err error
		if g, err = NewGallery([]string{"x"}, [][]float32{{1, 1}}); err != nil {
			return nil, err
		}
	}
	v.mu.Lock()
	v.models = append(v.models, m)
	v.mu.Unlock()
	return &Deployment{Model: m, Gallery: g, Version: src.Model, Close: func() error {
		if m.closed.Swap(true) {
			return errors.New("closed twice")
		}
		v.closes.Add(1)
		return nil
	}}, nil
}

// The test: 20 reloads alternating two models while 32 clients
// send requests. No request fails, every answer was computed by the model
// its Dimtorch-Model-Version names, every replaced model is closed once,
// after its last request, and the current one stays open.
func TestReloadUnderLoad(t *testing.T) {
	v := &versions{running: 200 * time.Microsecond}
	first, err := v.load(context.Background(), Source{Model: "a", Gallery: "g2"})
	if err != nil {
		t.Fatal(err)
	}
	first.Source = Source{Model: "a", Gallery: "g2"}
	s, err := New(*first, Config{Batching: true, Runners: 2, MaxBatch: 8, MaxWait: time.Millisecond, Load: v.load, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WarmUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered, failed atomic.Int64
	var seen sync.Map
	for c := 0; c < 32; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			level := uint8(40 + c*5)
			img := grayPNG(t, level)
			want := float32(level) / 255
			path := "/v1/embed"
			if c%4 == 0 {
				path = "/v1/neighbors?k=1"
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post(ts.URL+path, "image/png", bytes.NewReader(img))
				if err != nil {
					failed.Add(1)
					t.Errorf("client %d: %v", c, err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				version := resp.Header.Get(VersionHeader)
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("client %d: %d %s (version %q)", c, resp.StatusCode, body, version)
					return
				}
				seen.Store(version, true)
				scale := map[string]float32{"a": 1, "b": 2}[version]
				if path == "/v1/embed" {
					var a answer
					if json.Unmarshal(body, &a) != nil || len(a.Embeddings) != 1 ||
						math.Abs(float64(a.Embeddings[0][0]-scale*want)) > 1e-5 {
						failed.Add(1)
						t.Errorf("client %d: version %q answered %s, want first value %v", c, version, body, scale*want)
						return
					}
				}
				answered.Add(1)
			}
		}(c)
	}
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < 20; i++ {
		name := []string{"b", "a"}[i%2]
		r, err := s.Reload(context.Background(), Source{Model: name})
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if r.Version != name || r.Previous != map[string]string{"a": "b", "b": "a"}[name] || r.Gallery != 1 ||
			r.Source != (Source{Model: name, Gallery: "g2"}) || r.WarmedUp != 9 {
			t.Fatalf("reload %d: %+v", i, r)
		}
		// at least 8 answers between reloads, however slow the machine
		for a0, deadline := answered.Load(), time.Now().Add(10*time.Second); answered.Load() < a0+8 && failed.Load() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no answers for 10 s")
			}
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	for _, name := range []string{"a", "b"} {
		if _, ok := seen.Load(name); !ok {
			t.Errorf("no answer from model %s", name)
		}
	}
	t.Logf("%d answers across 20 reloads", answered.Load())
	s.Close()
	// 21 models loaded: the 20 replaced ones and the last, closed by Close.
	if n := v.closes.Load(); n != 21 {
		t.Fatalf("%d models closed, want 21", n)
	}
	var metrics bytes.Buffer
	s.MetricsHandler().ServeHTTP(&recorder{h: http.Header{}, b: &metrics}, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`dimtorch_serve_reloads_total{result="ok"} 20`, `dimtorch_serve_reloads_total{result="failed"} 0`,
		`dimtorch_serve_model_info{version="a"} 1`} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics.String(), `model_info{version="b"}`) {
		t.Error("model_info still names the replaced version")
	}
}

type recorder struct {
	h http.Header
	b *bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *recorder) WriteHeader(int)             {}

// A reload that fails leaves the model serving and says why, over HTTP
// too; the admin route needs keys; the reload metrics count both.
func TestReloadFailuresAndAdminRoute(t *testing.T) {
	v := &versions{}
	first, _ := v.load(context.Background(), Source{Model: "a", Gallery: "g2"})
	first.Source = Source{Model: "a", Gallery: "g2"}
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte(keyA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadAPIKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(*first, Config{Load: v.load, APIKeys: keys, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	ts := httptest.NewServer(s.Handler())
	defer func() { ts.Close(); s.Close() }()

	for _, tc := range []struct{ model, why string }{
		{"missing", "no such file"},
		{"nan", "not finite"},
		{"wide", "the gallery's vectors have 2 values, the model's 3"},
	} {
		if _, err := s.Reload(context.Background(), Source{Model: tc.model}); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("reload of %s: %v, want %q", tc.model, err, tc.why)
		}
	}
	admin := func(key, body string) (int, string, string) {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/admin/reload", strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get(VersionHeader), string(b)
	}
	if code, version, _ := admin("", ""); code != 401 || version != "" {
		t.Fatalf("reload without a key: %d, version %q shown", code, version)
	}
	if code, _, body := admin(keyA, `{"model": "nan"}`); code != 422 || !strings.Contains(body, "previous model stays") {
		t.Fatalf("reload of a bad model over HTTP: %d %s", code, body)
	}
	if code, _, body := admin(keyA, `{"modle": "b"}`); code != 400 || !strings.Contains(body, "modle") {
		t.Fatalf("a misspelt field: %d %s", code, body)
	}
	// Still model a, and it was not closed by the failures.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/embed", bytes.NewReader(grayPNG(t, 255)))
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(VersionHeader) != "a" {
		t.Fatalf("after failed reloads: %d, version %q", resp.StatusCode, resp.Header.Get(VersionHeader))
	}
	// The failed loads that produced a model were closed: nan, wide, nan.
	if n := v.closes.Load(); n != 3 {
		t.Fatalf("%d failed models closed, want 3", n)
	}
	code, version, body := admin(keyA, `{"model": "b"}`)
	var r Reloaded
	if code != 200 || version != "b" || json.Unmarshal([]byte(body), &r) != nil || r.Version != "b" || r.Previous != "a" || r.Gallery != 1 {
		t.Fatalf("reload of b over HTTP: %d %q %s", code, version, body)
	}
	if code, version, _ := admin(keyA, ""); code != 200 || version != "b" {
		t.Fatalf("reload of the same files: %d %q", code, version)
	}
	var metrics bytes.Buffer
	s.MetricsHandler().ServeHTTP(&recorder{h: http.Header{}, b: &metrics}, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`dimtorch_serve_reloads_total{result="ok"} 2`, `dimtorch_serve_reloads_total{result="failed"} 4`} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Without keys the route refuses: anyone could swap the model.
	open, err := New(Deployment{Model: &fakeModel{}}, Config{Load: v.load, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	ots := httptest.NewServer(open.Handler())
	defer ots.Close()
	resp, err = http.Post(ots.URL+"/v1/admin/reload", "application/json", strings.NewReader(`{"model": "b"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("reload on a server without keys: %d, want 403", resp.StatusCode)
	}
	// A server without a loader cannot reload.
	fixed, err := New(Deployment{Model: &fakeModel{}}, Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer fixed.Close()
	if _, err := fixed.Reload(context.Background(), Source{Model: "b"}); !errors.Is(err, ErrNoLoader) {
		t.Fatalf("no loader: %v", err)
	}
}

// Serve reports ready only after the warm-up, and refuses to start with a
// model that fails it.
func TestServeWarmsUpFirst(t *testing.T) {
	bad := &versionModel{scale: 1, nan: true}
	s, err := New(Deployment{Model: bad}, Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "warm-up") {
		t.Fatalf("a model whose warm-up fails: %v", err)
	}
}
