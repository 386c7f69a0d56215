package serve

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // the formats the service takes
	_ "image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
)

// httpError is an error with the status it answers.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// readUploads returns the encoded images of a request: a raw PNG or JPEG
// body, every file of a multipart form, or JSON {"images": [base64, ...]}.
// The body is already limited by http.MaxBytesReader.
func readUploads(r *http.Request, maxImages int) ([][]byte, error) {
	ct, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil && r.Header.Get("Content-Type") != "" {
		return nil, errorf(http.StatusUnsupportedMediaType, "Content-Type %q: %v", r.Header.Get("Content-Type"), err)
	}
	var out [][]byte
	add := func(b []byte) error {
		if len(out) == maxImages {
			return errorf(http.StatusRequestEntityTooLarge, "more than %d images in one request", maxImages)
		}
		out = append(out, b)
		return nil
	}
	switch {
	case ct == "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, bodyError(err)
			}
			if p.FileName() == "" && p.FormName() != "image" && p.FormName() != "images" {
				p.Close()
				continue
			}
			b, err := io.ReadAll(p)
			p.Close()
			if err != nil {
				return nil, bodyError(err)
			}
			if err := add(b); err != nil {
				return nil, err
			}
		}
	case ct == "application/json":
		var req struct {
			Images []string `json:"images"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, bodyError(err)
		}
		for i, s := range req.Images {
			b, err := decodeBase64Image(s)
			if err != nil {
				return nil, errorf(http.StatusBadRequest, "images[%d]: %v", i, err)
			}
			if err := add(b); err != nil {
				return nil, err
			}
		}
	default: // a raw image body (image/png, image/jpeg, application/octet-stream, none)
		var buf bytes.Buffer
		if r.ContentLength > 0 && r.ContentLength <= 64<<20 {
			buf.Grow(int(r.ContentLength))
		}
		_, err := buf.ReadFrom(r.Body)
		b := buf.Bytes()
		if err != nil {
			return nil, bodyError(err)
		}
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil, errorf(http.StatusBadRequest, "no image in the request: send a PNG or JPEG body, a multipart form with image files, or JSON {\"images\": [base64, ...]}")
	}
	return out, nil
}

// bodyError maps a failure to read the body to its status.
func bodyError(err error) error {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return errorf(http.StatusRequestEntityTooLarge, "the request body is larger than %d bytes", mb.Limit)
	}
	return errorf(http.StatusBadRequest, "reading the request: %v", err)
}

// decode checks an encoded image's declared size before decoding it, so a
// small file that declares a huge image costs nothing.
func decode(b []byte, maxPixels int64) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, errorf(http.StatusUnsupportedMediaType, "not a PNG or JPEG image (%v)", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, errorf(http.StatusUnprocessableEntity, "the %s declares %dx%d pixels", format, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, errorf(http.StatusRequestEntityTooLarge, "the %s declares %dx%d pixels; the limit is %d pixels", format, cfg.Width, cfg.Height, maxPixels)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, errorf(http.StatusUnprocessableEntity, "the %s is damaged or truncated: %v", format, err)
	}
	return img, nil
}

// decodeBase64Image reads an image file given as base64 or as a data URL
// ("data:image/png;base64,...").
func decodeBase64Image(s string) ([]byte, error) {
	if k := strings.Index(s, ";base64,"); strings.HasPrefix(s, "data:") && k > 0 {
		s = s[k+len(";base64,"):]
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %v", err)
	}
	return b, nil
}
