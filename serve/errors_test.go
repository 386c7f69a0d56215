package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"mime/multipart"
	"net/http"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/embed"
)

// The status of an error comes from its kind, however it is wrapped.
func TestStatusOf(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("image 2: %w", err) }
	cases := []struct {
		name       string
		err        error
		clientGone bool
		status     int
	}{
		{"request error", errorf(http.StatusUnsupportedMediaType, "not a PNG"), false, 415},
		{"wrapped request error", wrap(errorf(http.StatusRequestEntityTooLarge, "too big")), false, 413},
		{"overloaded", ErrOverloaded, false, 429},
		{"unusable image", wrap(embed.ErrImage), false, 422},
		{"wrong size", embed.ErrSize, false, 422},
		{"wrong channels", wrap(embed.ErrChannels), false, 422},
		{"shutting down", errClosed, false, 503},
		{"model closed", embed.ErrClosed, false, 503},
		{"model closed, wrapped", wrap(embed.ErrClosed), false, 503},
		{"run cancelled, client waits", embed.ErrCanceled, false, 503},
		{"run timed out", context.DeadlineExceeded, false, 503},
		{"client gone", context.Canceled, true, StatusClientClosedRequest},
		{"run cancelled, client gone", wrap(embed.ErrCanceled), true, StatusClientClosedRequest},
		{"onnxruntime failure", errors.New("embed: onnxruntime: out of memory"), false, 500},
		{"a message that reads like a client's fault", errors.New("the image is damaged"), false, 500},
		{"bad preprocessing", embed.ErrPreprocessing, false, 500},
		{"none", nil, false, 200},
	}
	for _, c := range cases {
		if got := StatusOf(c.err, c.clientGone); got != c.status {
			t.Errorf("%s (%v): %d, want %d", c.name, c.err, got, c.status)
		}
	}
}

// errModel is fakeModel with Preprocess and EmbedBatchContext failing as
// set.
type errModel struct {
	fakeModel
	prep, run error
}

func (m *errModel) Preprocess(img image.Image) ([]float32, error) {
	if m.prep != nil {
		return nil, fmt.Errorf("preprocess: %w", m.prep)
	}
	return m.fakeModel.Preprocess(img)
}

func (m *errModel) EmbedBatchContext(ctx context.Context, data []float32, n int) ([][]float32, error) {
	if m.run != nil {
		return nil, m.run
	}
	return m.fakeModel.EmbedBatchContext(ctx, data, n)
}

// The model's errors reach the client with the status of their kind, for
// one image and for one of several, with batching and without.
func TestModelErrorStatus(t *testing.T) {
	cases := []struct {
		name      string
		prep, run error
		status    int
	}{
		{"unusable image", embed.ErrImage, nil, 422},
		{"wrong channels", embed.ErrChannels, nil, 422},
		{"model closed", nil, embed.ErrClosed, 503},
		{"model closed in preprocessing", embed.ErrClosed, nil, 503},
		{"onnxruntime failure", nil, errors.New("embed: onnxruntime: failed"), 500},
		{"other preprocessing failure", errors.New("embed: images make 1- or 3-channel inputs"), nil, 500},
	}
	for _, batching := range []bool{false, true} {
		for _, c := range cases {
			ts := newTestServer(t, &errModel{prep: c.prep, run: c.run}, nil, Config{Batching: batching})
			if code, a, _ := post(t, ts.URL+"/v1/embed", "image/png", grayPNG(t, 3)); code != c.status {
				t.Errorf("batching %v, %s: %d %q, want %d", batching, c.name, code, a.Error, c.status)
			}
			var mb bytes.Buffer
			mw := multipart.NewWriter(&mb)
			for i := 0; i < 2; i++ {
				fw, _ := mw.CreateFormFile("image", fmt.Sprintf("%d.png", i))
				fw.Write(grayPNG(t, 3))
			}
			mw.Close()
			code, a, _ := post(t, ts.URL+"/v1/embed", mw.FormDataContentType(), mb.Bytes())
			if code != c.status {
				t.Errorf("batching %v, %s, two images: %d %q, want %d", batching, c.name, code, a.Error, c.status)
			}
			if c.prep != nil && !bytes.Contains([]byte(a.Error), []byte("image 0: ")) {
				t.Errorf("%s, two images: %q does not name the image", c.name, a.Error)
			}
		}
	}
}

// Each default is written once, in DefaultConfig: a zero Config takes them
// (less Batching and MaxWait, whose zeros mean what they say), and New
// derives MaxQueue and Decoders.
func TestDefaults(t *testing.T) {
	d := DefaultConfig()
	if !d.Batching || d.MaxWait != 2*time.Millisecond || d.MaxBatch != 32 || d.MaxImages != 64 || d.MaxBody != 16<<20 ||
		d.MaxQueue != 0 || d.Decoders != 0 || d.ShutdownTimeout != 30*time.Second {
		t.Fatalf("DefaultConfig %+v", d)
	}
	var c Config
	c.defaults()
	want := d
	want.Batching, want.MaxWait = false, 0
	want.MaxQueue, want.Decoders = 8*d.MaxBatch, 2*runtime.GOMAXPROCS(0)
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("a zero Config became\n%+v\nwant\n%+v", c, want)
	}
	d.defaults()
	if d.MaxQueue != 256 || !d.Batching || d.MaxWait != 2*time.Millisecond {
		t.Fatalf("DefaultConfig with New's derivations: %+v", d)
	}
	c = Config{MaxBatch: 4, MaxImages: 100, MaxWait: -time.Second}
	c.defaults()
	if c.MaxQueue != 100 || c.MaxWait != 0 {
		t.Fatalf("MaxQueue %d (want at least MaxImages), MaxWait %v", c.MaxQueue, c.MaxWait)
	}
}
