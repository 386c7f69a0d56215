// Command similarity-server is an example Go service built on dimtorch's
// embed package: it embeds a folder of images with an exported encoder at
// start-up, then answers HTTP requests with the nearest neighbours of
// uploaded images. It links onnxruntime only, not libtorch.
//
//	dimtorch export --onnx --checkpoint runs/demo --out enc.onnx
//	go run ./examples/similarity-server -model enc.onnx -images DIR -addr 127.0.0.1:8080
//	curl -F image=@query.png 'http://127.0.0.1:8080/neighbors?k=5'
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/dimtorch/dimtorch/embed"
)

// item is one indexed image.
type item struct {
	Path  string
	Label string // the parent folder's name
	vec   []float32
}

// server holds the model and the index; it is safe for concurrent requests
// (the embed model is, and the index is read-only after start-up).
type server struct {
	model *embed.Model
	items []item
}

func normalize(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	n := float32(math.Sqrt(s))
	if n == 0 {
		return v
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = x / n
	}
	return out
}

// newServer embeds every PNG and JPEG under dir.
func newServer(model *embed.Model, dir string) (*server, error) {
	s := &server{model: model}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := strings.ToLower(filepath.Ext(p))
		if d.IsDir() || (ext != ".png" && ext != ".jpg" && ext != ".jpeg") {
			return nil
		}
		v, err := model.EmbedFile(p)
		if err != nil {
			return err
		}
		s.items = append(s.items, item{Path: p, Label: filepath.Base(filepath.Dir(p)), vec: normalize(v)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(s.items) == 0 {
		return nil, fmt.Errorf("no PNG or JPEG images under %s", dir)
	}
	return s, nil
}

// Neighbor is one answer.
type Neighbor struct {
	Path       string  `json:"path"`
	Label      string  `json:"label"`
	Similarity float64 `json:"similarity"` // cosine
}

func (s *server) nearest(v []float32, k int) []Neighbor {
	q := normalize(v)
	res := make([]Neighbor, len(s.items))
	for i, it := range s.items {
		var d float64
		for j, x := range it.vec {
			d += float64(x) * float64(q[j])
		}
		res[i] = Neighbor{it.Path, it.Label, d}
	}
	sort.Slice(res, func(a, b int) bool { return res[a].Similarity > res[b].Similarity })
	return res[:min(k, len(res))]
}

// readImage takes the upload from a multipart field "image" or the raw body.
func readImage(r *http.Request) (image.Image, error) {
	var src io.Reader = r.Body
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		f, _, err := r.FormFile("image")
		if err != nil {
			return nil, fmt.Errorf("multipart field \"image\": %w", err)
		}
		defer f.Close()
		src = f
	}
	img, _, err := image.Decode(io.LimitReader(src, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("not a readable PNG or JPEG: %w", err)
	}
	return img, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "indexed": len(s.items), "dim": s.model.Dim()})
	})
	embedOne := func(w http.ResponseWriter, r *http.Request) ([]float32, bool) {
		img, err := readImage(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return nil, false
		}
		v, err := s.model.EmbedImages([]image.Image{img})
		if err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
			return nil, false
		}
		return v[0], true
	}
	mux.HandleFunc("POST /embed", func(w http.ResponseWriter, r *http.Request) {
		if v, ok := embedOne(w, r); ok {
			writeJSON(w, http.StatusOK, map[string]any{"embedding": v})
		}
	})
	mux.HandleFunc("POST /neighbors", func(w http.ResponseWriter, r *http.Request) {
		k := 5
		if q := r.URL.Query().Get("k"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 1 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "k must be a positive integer"})
				return
			}
			k = n
		}
		if v, ok := embedOne(w, r); ok {
			writeJSON(w, http.StatusOK, map[string]any{"neighbors": s.nearest(v, k)})
		}
	})
	return mux
}

func main() {
	model := flag.String("model", "", "exported encoder (.onnx)")
	images := flag.String("images", "", "folder of PNG/JPEG images to index (class subfolders become labels)")
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	threads := flag.Int("threads", 2, "onnxruntime threads")
	lib := flag.String("onnxruntime-lib", "", "path of the onnxruntime library (default: DIMTORCH_ONNXRUNTIME_LIB or well-known places)")
	flag.Parse()
	if *model == "" || *images == "" {
		fmt.Fprintln(os.Stderr, "usage: similarity-server -model enc.onnx -images DIR [-addr HOST:PORT]")
		os.Exit(2)
	}
	m, err := embed.Open(*model, embed.Options{Library: *lib, Threads: *threads})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	s, err := newServer(m, *images)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("indexed %d images; listening on %s", len(s.items), *addr)
	if err := http.ListenAndServe(*addr, s.handler()); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
