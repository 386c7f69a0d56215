package embed_test

import (
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/internal/ortlib"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func exported(t *testing.T, name string, ch int) string {
	t.Helper()
	if _, err := ortlib.Find(""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide onnxruntime (make setup fetches it): %v", err)
		}
		t.Skipf("no onnxruntime library (run make setup): %v", err)
	}
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
	// Wrong size, wrong colour mode, wrong batch length: clear errors.
	if _, err := m.EmbedImages([]image.Image{image.NewGray(image.Rect(0, 0, 32, 32))}); err == nil || !strings.Contains(err.Error(), "takes 28x28") {
		t.Fatalf("wrong size: %v", err)
	}
	if _, err := m.EmbedImages([]image.Image{image.NewRGBA(image.Rect(0, 0, 28, 28))}); err == nil || !strings.Contains(err.Error(), "grayscale") {
		t.Fatalf("wrong colour mode: %v", err)
	}
	if _, err := m.EmbedBatch(make([]float32, 100), 1); err == nil {
		t.Fatal("a batch of the wrong length was accepted")
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
	if _, err := m.EmbedFile(f); err == nil || !strings.Contains(err.Error(), "not a readable PNG or JPEG") {
		t.Fatalf("bad file: %v", err)
	}
}
