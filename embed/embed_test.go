package embed_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/testref"
	"google.golang.org/protobuf/proto"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func exported(t *testing.T, name string, ch int) string {
	t.Helper()
	testref.NeedORT(t)
	enc, err := models.New(models.Config{Name: name, InChannels: ch})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	enc.Train(false)
	m, err := export.Model(enc, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".onnx")
	if err := export.Write(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEmbedImagesAndErrors(t *testing.T) {
	p := exported(t, "basic28", 1)
	m, err := embed.Open(p, embed.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if c, h, w := m.InputShape(); c != 1 || h != 28 || w != 28 || m.Dim() != 64 {
		t.Fatalf("shape %d %d %d dim %d", c, h, w, m.Dim())
	}
	g := image.NewGray(image.Rect(0, 0, 28, 28))
	g.SetGray(3, 4, color.Gray{200})
	v, err := m.EmbedImages([]image.Image{g, g})
	if err != nil || len(v) != 2 || len(v[0]) != 64 {
		t.Fatalf("embed: %v %v", len(v), err)
	}
	for j := range v[0] {
		if v[0][j] != v[1][j] {
			t.Fatal("the same image embedded differently")
		}
	}
	// Wrong size, wrong colour mode, wrong batch length: clear errors, of
	// their kinds.
	if _, err := m.EmbedImages([]image.Image{image.NewGray(image.Rect(0, 0, 32, 32))}); !errors.Is(err, embed.ErrSize) || !strings.Contains(err.Error(), "takes 28x28") {
		t.Fatalf("wrong size: %v", err)
	}
	if _, err := m.EmbedImages([]image.Image{image.NewRGBA(image.Rect(0, 0, 28, 28))}); !errors.Is(err, embed.ErrChannels) || !strings.Contains(err.Error(), "grayscale") {
		t.Fatalf("wrong colour mode: %v", err)
	}
	if _, err := m.EmbedBatch(make([]float32, 100), 1); !errors.Is(err, embed.ErrSize) {
		t.Fatalf("a batch of the wrong length: %v", err)
	}
	if _, err := m.Preprocess(image.NewGray(image.Rect(0, 0, 0, 5))); !errors.Is(err, embed.ErrImage) {
		t.Fatalf("an empty image: %v", err)
	}
	// Safe for concurrent use.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := m.EmbedImages([]image.Image{g})
			if err == nil && got[0][0] != v[0][0] {
				err = os.ErrInvalid
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	if _, err := m.EmbedBatch(make([]float32, 784), 1); err != embed.ErrClosed {
		t.Fatalf("closed model: %v", err)
	}
	if _, err := m.EmbedImages([]image.Image{g}); !errors.Is(err, embed.ErrClosed) {
		t.Fatalf("closed model, images: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	p := exported(t, "dcgan32", 3)
	bad := filepath.Join(t.TempDir(), "not.onnx")
	_ = os.WriteFile(bad, []byte("this is not a model"), 0o644)
	if _, err := embed.Open(bad, embed.Options{}); err == nil || !strings.Contains(err.Error(), "not a readable ONNX model") {
		t.Fatalf("not ONNX: %v", err)
	}
	if _, err := embed.Open(p, embed.Options{Output: "z"}); err == nil || !strings.Contains(err.Error(), `no output "z"`) {
		t.Fatalf("unknown output: %v", err)
	}
	if _, err := embed.Open(p, embed.Options{Library: "/nonexistent/libonnxruntime.so"}); err == nil || !strings.Contains(err.Error(), "not a readable file") {
		t.Fatalf("missing library: %v", err)
	}
	m, err := embed.Open(p, embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.EmbedImages([]image.Image{image.NewGray(image.Rect(0, 0, 32, 32))}); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("gray image into an RGB model: %v", err)
	}
	f := filepath.Join(t.TempDir(), "x.png")
	_ = os.WriteFile(f, []byte("garbage"), 0o644)
	if _, err := m.EmbedFile(f); !errors.Is(err, embed.ErrImage) || !strings.Contains(err.Error(), "not a readable PNG or JPEG") {
		t.Fatalf("bad file: %v", err)
	}
}

// Close while goroutines embed: every call either returns its vectors or
// ErrClosed; nothing crashes (this crashed with SIGSEGV before Close waited
// for the runs in progress). The goroutines embed until they see ErrClosed,
// and the test fails unless Close was called with runs in flight in some
// round: the hazard it is named after must be reached.
func TestCloseWhileEmbedding(t *testing.T) {
	p := exported(t, "dcgan32", 3)
	reached := 0
	for round := 0; round < 3; round++ {
		m, err := embed.Open(p, embed.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]float32, 16*3*32*32)
		var wg sync.WaitGroup
		var ok, closed, inflight atomic.Int32
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					inflight.Add(1)
					_, err := m.EmbedBatch(data, 16)
					inflight.Add(-1)
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, embed.ErrClosed):
						closed.Add(1)
						return
					default:
						t.Error(err)
						return
					}
				}
			}()
		}
		for ok.Load() < 6 { // every goroutine is in its loop
			time.Sleep(time.Millisecond)
		}
		during := inflight.Load()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if closed.Load() != 6 {
			t.Fatalf("round %d: %d of 6 goroutines saw ErrClosed", round, closed.Load())
		}
		if during > 0 {
			reached++
		}
		t.Logf("round %d: %d runs in flight at Close, %d finished", round, during, ok.Load())
	}
	if reached == 0 {
		t.Fatal("no round closed the model with a run in flight: the test did not reach its hazard")
	}
}

// A flipped bit in an exported model's weight is refused with the file named
// (the graph checksum export.Write records); a model without the checksum
// (another exporter's) still opens.
func TestOpenRefusesDamagedModel(t *testing.T) {
	p := exported(t, "basic28", 1)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var w []byte // the largest weight's bytes
	for _, in := range m.GetGraph().GetInitializer() {
		if len(in.GetRawData()) > len(w) {
			w = in.GetRawData()
		}
	}
	at := bytes.Index(raw, w[:64])
	if len(w) < 1024 || at < 0 {
		t.Fatalf("no weight found in the file (%d bytes)", len(w))
	}
	bad := append([]byte{}, raw...)
	bad[at+len(w)/2] ^= 0x04
	bp := filepath.Join(t.TempDir(), "flipped.onnx")
	if err := os.WriteFile(bp, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := embed.Open(bp, embed.Options{}); err == nil || !strings.Contains(err.Error(), bp) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a flipped weight bit: %v", err)
	}
	// Without the checksum entry: opens.
	props := m.MetadataProps[:0]
	for _, pr := range m.MetadataProps {
		if pr.GetKey() != "dimtorch_graph_sha256" {
			props = append(props, pr)
		}
	}
	if len(props) == len(m.MetadataProps) {
		t.Fatal("export.Write recorded no checksum")
	}
	m.MetadataProps = props
	plain, _ := proto.Marshal(&m)
	pp := filepath.Join(t.TempDir(), "plain.onnx")
	if err := os.WriteFile(pp, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	mm, err := embed.Open(pp, embed.Options{})
	if err != nil {
		t.Fatalf("a model without checksum: %v", err)
	}
	mm.Close()
}

// A cancelled context stops a call before it runs and interrupts a run in
// progress; the model stays usable.
func TestEmbedContext(t *testing.T) {
	m, err := embed.Open(exported(t, "dcgan32", 3), embed.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	data := make([]float32, 256*3*32*32)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.EmbedBatchContext(ctx, data, 256); !errors.Is(err, context.Canceled) || !errors.Is(err, embed.ErrCanceled) || err.Error() != context.Canceled.Error() {
		t.Fatalf("cancelled before: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = m.EmbedBatchContext(ctx, data, 256)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, embed.ErrCanceled) {
		t.Fatalf("deadline during the run: %v", err)
	}
	t.Logf("a run of 256 images gave up %v after its 1 ms deadline", time.Since(start))
	if _, err := m.EmbedBatchContext(context.Background(), data[:3*32*32], 1); err != nil {
		t.Fatalf("after a terminated run: %v", err)
	}
}

// Preprocess is the training pipeline's arithmetic: a colour image of
// another size becomes the model's 28x28 grayscale input through the same
// bilinear resize as the datasets package.
func TestPreprocess(t *testing.T) {
	m, err := embed.Open(exported(t, "basic28", 1), embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src := image.NewRGBA(image.Rect(0, 0, 56, 42))
	for y := 0; y < 42; y++ {
		for x := 0; x < 56; x++ {
			src.Set(x, y, color.RGBA{uint8(4 * x), uint8(6 * y), 100, 255})
		}
	}
	got, err := m.Preprocess(src)
	if err != nil {
		t.Fatal(err)
	}
	gray := make([]uint8, 56*42)
	for y := 0; y < 42; y++ {
		for x := 0; x < 56; x++ {
			gray[y*56+x] = color.GrayModel.Convert(src.At(x, y)).(color.Gray).Y
		}
	}
	want := datasets.Resize(28, 28).Apply(datasets.Image{C: 1, H: 42, W: 56, Pix: gray}, nil)
	if len(got) != 28*28 {
		t.Fatalf("%d values", len(got))
	}
	for i, v := range want.Pix {
		if got[i] != float32(v)/255 {
			t.Fatalf("pixel %d: %v, the datasets pipeline gives %v", i, got[i]*255, v)
		}
	}
	// An image of the right size and mode is what Pixels gives.
	g := image.NewGray(image.Rect(0, 0, 28, 28))
	g.Pix[30] = 77
	a, _ := m.Preprocess(g)
	b, _ := m.Pixels(g)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("pixel %d: %v vs %v", i, a[i], b[i])
		}
	}
}
