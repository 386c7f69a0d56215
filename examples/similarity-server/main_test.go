package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/internal/ortlib"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func bar(row int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, 28, 28))
	for y := row; y < row+4; y++ {
		for x := 2; x < 26; x++ {
			g.SetGray(x, y, color.Gray{230})
		}
	}
	return g
}

func pngBytes(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Starts the service on loopback over an index of two classes of images and
// checks that a query's nearest neighbour is its own class.
func TestServiceOnLoopback(t *testing.T) {
	if _, err := ortlib.Find(""); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	_ = torch.ManualSeed(4)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	enc.Train(false)
	mp, err := export.Model(enc, export.Options{})
	nn.Free(enc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "enc.onnx")
	if err := export.Write(modelPath, mp); err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(dir, "index")
	for class, row := range map[string]int{"top": 2, "bottom": 20} {
		_ = os.MkdirAll(filepath.Join(idx, class), 0o755)
		for i := 0; i < 3; i++ {
			_ = os.WriteFile(filepath.Join(idx, class, string(rune('a'+i))+".png"), pngBytes(t, bar(row+i)), 0o644)
		}
	}
	m, err := embed.Open(modelPath, embed.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := newServer(m, idx)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.handler()) // listens on 127.0.0.1
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h["indexed"].(float64) != 6 || h["dim"].(float64) != 64 {
		t.Fatalf("healthz %v", h)
	}
	// A multipart upload of a "bottom" bar finds bottom bars first.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("image", "q.png")
	fw.Write(pngBytes(t, bar(21)))
	mw.Close()
	resp, err = http.Post(srv.URL+"/neighbors?k=3", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	var nb struct {
		Neighbors []Neighbor `json:"neighbors"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&nb)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(nb.Neighbors) != 3 || nb.Neighbors[0].Label != "bottom" {
		t.Fatalf("neighbors: %d %+v", resp.StatusCode, nb)
	}
	// Raw body to /embed.
	resp, err = http.Post(srv.URL+"/embed", "image/png", bytes.NewReader(pngBytes(t, bar(5))))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Embedding []float32 `json:"embedding"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if len(e.Embedding) != 64 {
		t.Fatalf("embedding of %d values", len(e.Embedding))
	}
	// Bad inputs: not an image, wrong size, bad k.
	for _, c := range []struct {
		url, ctype string
		body       []byte
		code       int
	}{
		{"/embed", "image/png", []byte("garbage"), http.StatusBadRequest},
		{"/embed", "image/png", pngBytes(t, image.NewGray(image.Rect(0, 0, 10, 10))), http.StatusUnprocessableEntity},
		{"/neighbors?k=0", "image/png", pngBytes(t, bar(3)), http.StatusBadRequest},
	} {
		resp, err := http.Post(srv.URL+c.url, c.ctype, bytes.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: status %d, want %d", c.url, resp.StatusCode, c.code)
		}
	}
}
