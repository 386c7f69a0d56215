package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
)

// fakeModel stands in for an encoder: image i of a batch of n embeds to
// [its mean pixel, n]; runs take delay.
type fakeModel struct {
	delay   time.Duration
	mu      sync.Mutex
	batches []int
}

func (f *fakeModel) InputShape() (int, int, int) { return 1, 8, 8 }
func (f *fakeModel) Dim() int                    { return 2 }

func (f *fakeModel) Preprocess(img image.Image) ([]float32, error) {
	b := img.Bounds()
	out := make([]float32, 64)
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			g := color.GrayModel.Convert(img.At(b.Min.X+x*b.Dx()/8, b.Min.Y+y*b.Dy()/8)).(color.Gray)
			out[y*8+x] = float32(g.Y) / 255
		}
	}
	return out, nil
}

func (f *fakeModel) EmbedBatchContext(ctx context.Context, data []float32, n int) ([][]float32, error) {
	f.mu.Lock()
	f.batches = append(f.batches, n)
	f.mu.Unlock()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([][]float32, n)
	for i := range out {
		var s float32
		for _, v := range data[i*64 : (i+1)*64] {
			s += v
		}
		out[i] = []float32{s / 64, float32(n)}
	}
	return out, nil
}

func grayPNG(t *testing.T, level uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = level
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func newTestServer(t *testing.T, m Model, g *Gallery, cfg Config) *httptest.Server {
	t.Helper()
	cfg.Log = zerolog.Nop()
	s, err := New(Deployment{Model: m, Gallery: g}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts
}

type answer struct {
	Dim        int         `json:"dim"`
	Embeddings [][]float32 `json:"embeddings"`
	K          int         `json:"k"`
	Results    []struct {
		Neighbors []Neighbor `json:"neighbors"`
	} `json:"results"`
	Error  string `json:"error"`
	Status int    `json:"status"`
}

func post(t *testing.T, url, ct string, body []byte) (int, answer, http.Header) {
	t.Helper()
	resp, err := http.Post(url, ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q", url, resp.StatusCode, b)
	}
	if resp.StatusCode != http.StatusOK && (a.Error == "" || a.Status != resp.StatusCode) {
		t.Fatalf("error answers carry their message and status: %q", b)
	}
	return resp.StatusCode, a, resp.Header
}

// Raw PNG and JPEG bodies, multipart forms and base64 JSON all embed, in
// the order sent.
func TestEmbedFormats(t *testing.T) {
	ts := newTestServer(t, &fakeModel{}, nil, Config{Batching: true})
	code, a, _ := post(t, ts.URL+"/v1/embed", "image/png", grayPNG(t, 255))
	if code != 200 || a.Dim != 2 || len(a.Embeddings) != 1 || a.Embeddings[0][0] != 1 {
		t.Fatalf("raw PNG: %d %+v", code, a)
	}
	var jb bytes.Buffer
	img := image.NewGray(image.Rect(0, 0, 16, 16)) // another size: preprocessed to the model's
	if err := jpeg.Encode(&jb, img, nil); err != nil {
		t.Fatal(err)
	}
	if code, a, _ = post(t, ts.URL+"/v1/embed", "image/jpeg", jb.Bytes()); code != 200 || a.Embeddings[0][0] > 0.02 {
		t.Fatalf("raw JPEG: %d %+v", code, a)
	}
	var mb bytes.Buffer
	mw := multipart.NewWriter(&mb)
	for _, level := range []uint8{0, 255, 51} {
		fw, _ := mw.CreateFormFile("image", fmt.Sprintf("%d.png", level))
		fw.Write(grayPNG(t, level))
	}
	mw.Close()
	code, a, _ = post(t, ts.URL+"/v1/embed", mw.FormDataContentType(), mb.Bytes())
	if code != 200 || len(a.Embeddings) != 3 || a.Embeddings[0][0] != 0 || a.Embeddings[1][0] != 1 || math.Abs(float64(a.Embeddings[2][0])-0.2) > 1e-6 {
		t.Fatalf("multipart: %d %+v", code, a)
	}
	js, _ := json.Marshal(map[string][]string{"images": {
		base64.StdEncoding.EncodeToString(grayPNG(t, 255)),
		"data:image/png;base64," + base64.StdEncoding.EncodeToString(grayPNG(t, 0)),
	}})
	code, a, _ = post(t, ts.URL+"/v1/embed", "application/json", js)
	if code != 200 || len(a.Embeddings) != 2 || a.Embeddings[0][0] != 1 || a.Embeddings[1][0] != 0 {
		t.Fatalf("JSON: %d %+v", code, a)
	}
}

func TestNeighbors(t *testing.T) {
	g, err := NewGallery([]string{"dark", "bright", "mid"}, [][]float32{{0.1, 1}, {1, 1}, {0.5, 1}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, &fakeModel{}, g, Config{Batching: true})
	code, a, _ := post(t, ts.URL+"/v1/neighbors?k=2", "image/png", grayPNG(t, 255)) // embeds to [1, 1]
	if code != 200 || a.K != 2 || len(a.Results) != 1 || len(a.Results[0].Neighbors) != 2 ||
		a.Results[0].Neighbors[0].Name != "bright" || a.Results[0].Neighbors[1].Name != "mid" ||
		a.Results[0].Neighbors[0].Similarity < 0.9999 {
		t.Fatalf("%d %+v", code, a)
	}
	for _, k := range []string{"0", "101", "x"} {
		if code, _, _ := post(t, ts.URL+"/v1/neighbors?k="+k, "image/png", grayPNG(t, 1)); code != 400 {
			t.Errorf("k=%s: %d", k, code)
		}
	}
	plain := newTestServer(t, &fakeModel{}, nil, Config{})
	if code, _, _ := post(t, plain.URL+"/v1/neighbors", "image/png", grayPNG(t, 1)); code != 404 {
		t.Errorf("no gallery: %d", code)
	}
}

// hugePNG is a 57-byte PNG whose header declares w x h pixels.
func hugePNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

// Every hostile or malformed input gets its status and a JSON message, and
// a PNG declaring 50,000 x 50,000 pixels costs nothing.
func TestHostileInputs(t *testing.T) {
	ts := newTestServer(t, &fakeModel{}, nil, Config{Batching: true, MaxBody: 4096, MaxImages: 2})
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	code, a, _ := post(t, ts.URL+"/v1/embed", "image/png", hugePNG(50000, 50000))
	runtime.ReadMemStats(&ms1)
	if code != 413 || !strings.Contains(a.Error, "50000x50000") {
		t.Errorf("declared-huge PNG: %d %q", code, a.Error)
	}
	if d, grew := time.Since(start), ms1.TotalAlloc-ms0.TotalAlloc; d > time.Second || grew > 16<<20 {
		t.Errorf("declared-huge PNG cost %v and %d bytes", d, grew)
	}
	full := grayPNG(t, 9)
	cases := []struct {
		name, ct string
		body     []byte
		code     int
	}{
		{"oversized body", "image/png", bytes.Repeat([]byte{1}, 5000), 413},
		{"truncated PNG", "image/png", full[:len(full)-20], 422},
		{"not an image", "image/png", []byte("hello, world"), 415},
		{"empty body", "image/png", nil, 400},
		{"malformed JSON", "application/json", []byte(`{"images": [`), 400},
		{"unknown JSON field", "application/json", []byte(`{"pictures": []}`), 400},
		{"bad base64", "application/json", []byte(`{"images": ["%%%"]}`), 400},
		{"too many images", "application/json", []byte(`{"images": ["` + strings.Repeat(base64.StdEncoding.EncodeToString(full)+`", "`, 2) + base64.StdEncoding.EncodeToString(full) + `"]}`), 413},
	}
	for _, c := range cases {
		if code, a, _ := post(t, ts.URL+"/v1/embed", c.ct, c.body); code != c.code {
			t.Errorf("%s: %d %q, want %d", c.name, code, a.Error, c.code)
		}
	}
	resp, err := http.Get(ts.URL + "/v1/embed")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/embed: %d", resp.StatusCode)
	}
	if code, _, _ := post(t, ts.URL+"/v2/other", "image/png", full); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
}

// serveOn runs the real Serve on a loopback port.
func serveOn(t *testing.T, m Model, cfg Config) (addr string, stop func() error) {
	t.Helper()
	cfg.Log = zerolog.Nop()
	s, err := New(Deployment{Model: m}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	// Ready once the model has had its warm-up runs.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if resp, err := http.Get("http://" + l.Addr().String() + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready after 10 s")
		}
	}
	return l.Addr().String(), func() error { cancel(); return <-done }
}

// A client that sends its headers a byte at a time is cut off after
// ReadHeaderTimeout instead of holding the connection.
func TestSlowClientIsCutOff(t *testing.T) {
	addr, stop := serveOn(t, &fakeModel{}, Config{ReadHeaderTimeout: 300 * time.Millisecond})
	defer stop()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	header := "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nX-Slow: " + strings.Repeat("a", 100)
	// However the cut shows (the reader sees the close, or a write fails),
	// it must come near the timeout (the server's clock starts when it
	// accepts, a little before this test's: seen 294 ms) and well within 2 s.
	bound := func(d time.Duration, how string) {
		if d < 200*time.Millisecond || d > 2*time.Second {
			t.Fatalf("cut off (%s) after %v, want between about the 300 ms timeout and 2 s", how, d)
		}
		t.Logf("cut off (%s) after %v", how, d.Round(time.Millisecond))
	}
	for i := 0; i < len(header); i++ {
		select {
		case d := <-closed:
			bound(d, "read saw the close")
			return
		default:
		}
		if _, err := c.Write([]byte{header[i]}); err != nil {
			bound(time.Since(start), "write failed")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the slow client kept its connection")
}

// Past MaxQueue images the server answers 429 with Retry-After instead of
// queueing without bound; the metrics show the queue and the refusals.
func TestOverload(t *testing.T) {
	ts := newTestServer(t, &fakeModel{delay: 300 * time.Millisecond}, nil, Config{Batching: true, MaxBatch: 1, MaxQueue: 2, MaxImages: 1})
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(ts.URL+"/v1/embed", "image/png", bytes.NewReader(grayPNG(t, 3)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			switch {
			case resp.StatusCode == 200:
				ok.Add(1)
			case resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "":
				refused.Add(1)
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if ok.Load() < 1 || refused.Load() < 1 || ok.Load() > 4 {
		t.Errorf("%d answered, %d refused", ok.Load(), refused.Load())
	}
	metrics := scrape(t, ts.URL)
	if v := metrics[`dimtorch_serve_requests_total{code="429",route="embed"}`]; v != float64(refused.Load()) {
		t.Errorf("429s in the metrics: %v, want %d", v, refused.Load())
	}
}

// scrape parses /metrics as Prometheus text and returns every sample.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation) // Prometheus' classic metric names
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			key := name
			if len(m.Label) > 0 {
				var ls []string
				for _, l := range m.Label {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// Concurrent requests share model runs, and each gets its own rows back.
func TestMicroBatching(t *testing.T) {
	f := &fakeModel{delay: 20 * time.Millisecond}
	ts := newTestServer(t, f, nil, Config{Batching: true, MaxBatch: 8, MaxWait: 50 * time.Millisecond})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(level uint8) {
			defer wg.Done()
			code, a, _ := post(t, ts.URL+"/v1/embed", "image/png", grayPNG(t, level))
			if code != 200 || len(a.Embeddings) != 1 || math.Abs(float64(a.Embeddings[0][0])-float64(level)/255) > 1e-6 {
				t.Errorf("level %d: %d %+v", level, code, a)
			}
		}(uint8(i * 10))
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	largest := 0
	for _, n := range f.batches {
		largest = max(largest, n)
		if n > 8 {
			t.Errorf("a batch of %d images, above MaxBatch", n)
		}
	}
	if largest < 2 || len(f.batches) >= 16 {
		t.Errorf("no batching: runs of %v", f.batches)
	}
	m := scrape(t, ts.URL)
	if m["dimtorch_serve_batch_size_count"] != float64(len(f.batches)) || m["dimtorch_serve_images_total"] != 16 {
		t.Errorf("batch metrics %v %v", m["dimtorch_serve_batch_size_count"], m["dimtorch_serve_images_total"])
	}
}

// SIGTERM (a cancelled context) stops new connections, lets the request in
// flight finish with 200, and Serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	addr, stop := serveOn(t, &fakeModel{delay: 400 * time.Millisecond}, Config{Batching: true})
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", err, resp)
	}
	resp.Body.Close()
	result := make(chan int, 1)
	go func() {
		r, err := http.Post("http://"+addr+"/v1/embed", "image/png", bytes.NewReader(grayPNG(t, 7)))
		if err != nil {
			result <- -1
			return
		}
		r.Body.Close()
		result <- r.StatusCode
	}()
	time.Sleep(100 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if code := <-result; code != 200 {
		t.Fatalf("the request in flight got %d", code)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}

// Clients that give up while their images wait or run free their place in
// the queue once the runner is done with them; the service goes on.
func TestClientGoneFreesQueue(t *testing.T) {
	ts := newTestServer(t, &fakeModel{delay: 150 * time.Millisecond}, nil, Config{Batching: true, MaxBatch: 1, MaxQueue: 2, MaxImages: 1})
	impatient := &http.Client{Timeout: 40 * time.Millisecond}
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := impatient.Post(ts.URL+"/v1/embed", "image/png", bytes.NewReader(grayPNG(t, 5))); err == nil {
				resp.Body.Close()
				t.Errorf("the impatient client got an answer: %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(3 * time.Second)
	for scrape(t, ts.URL)["dimtorch_serve_queue_images"] != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the queue never emptied after its clients left")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, a, _ := post(t, ts.URL+"/v1/embed", "image/png", grayPNG(t, 5)); code != 200 {
		t.Fatalf("after the impatient clients: %d %q", code, a.Error)
	}
}
