package serve

import (
	_ "embed"
	"net/http"
	"os"
	"strconv"
)

// The page to try the service (GET /, off with Config.NoUI): pick or drop
// an image, see its nearest gallery images with their names and
// similarities. Plain HTML and JavaScript (ui/index.html) calling the same
// routes a client does; with API keys, the page asks for one and sends it.
// Its helpers:
//
//	GET /ui/info           the model and gallery in a sentence's worth of JSON (needs a key)
//	GET /v1/gallery/INDEX  the gallery's image INDEX, when the gallery is a folder (needs a key)

//go:embed ui/index.html
var uiPage []byte

func (s *Server) uiRoutes(route, open func(path, method, name string, h handler)) {
	open("/{$}", http.MethodGet, "ui", func(w http.ResponseWriter, _ *http.Request, _ *live) error {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, err := w.Write(uiPage)
		return err
	})
	route("/ui/info", http.MethodGet, "ui_info", func(w http.ResponseWriter, _ *http.Request, d *live) error {
		c, h, wd := d.Model.InputShape()
		info := map[string]any{"model": s.cfg.ModelName, "version": d.Version, "channels": c, "height": h, "width": wd, "dim": d.Model.Dim(),
			"gallery": 0, "gallery_images": false}
		if d.Gallery != nil {
			info["gallery"] = d.Gallery.Len()
			info["gallery_images"] = d.Gallery.root != ""
		}
		return writeJSON(w, http.StatusOK, info)
	})
	route("/v1/gallery/{index}", http.MethodGet, "gallery_image", func(w http.ResponseWriter, r *http.Request, d *live) error {
		if d.Gallery == nil {
			return errorf(http.StatusNotFound, "no gallery")
		}
		i, err := strconv.Atoi(r.PathValue("index"))
		if err != nil || i < 0 || i >= d.Gallery.Len() {
			return errorf(http.StatusNotFound, "no gallery image %q: indices run from 0 to %d", r.PathValue("index"), d.Gallery.Len()-1)
		}
		path, ok := d.Gallery.File(i)
		if !ok {
			return errorf(http.StatusNotFound, "the gallery is a file of vectors: it has no images to show")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return errorf(http.StatusNotFound, "gallery image %d: %v", i, err)
		}
		ct := http.DetectContentType(b)
		if ct != "image/png" && ct != "image/jpeg" {
			return errorf(http.StatusUnsupportedMediaType, "gallery image %d is no longer a PNG or JPEG", i)
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, err = w.Write(b)
		return err
	})
}
