package serve

import (
	"bytes"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The limits the fuzzed requests run under.
const (
	fuzzMaxBody   = 1 << 20
	fuzzMaxImages = 4
	fuzzMaxPixels = 64 * 64
)

func fuzzPNG(tb testing.TB, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 13)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func fuzzJPEG(tb testing.TB, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 5)
	}
	img.Set(1, 1, color.Gray{200})
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// fuzzMultipart is a form with the given files (field "image").
func fuzzMultipart(files ...[]byte) ([]byte, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.SetBoundary("fuzzboundary")
	for _, f := range files {
		fw, _ := mw.CreateFormFile("image", "x.png")
		_, _ = fw.Write(f)
	}
	_ = mw.WriteField("note", "not an image")
	_ = mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

// FuzzRequestImages: a request body and Content-Type through readUploads
// and decode, as Server.images runs them. Every outcome is an *httpError
// with a 4xx status or 1..MaxImages uploads, and every decoded image has
// between 1 and MaxPixels pixels.
func FuzzRequestImages(f *testing.F) {
	p := fuzzPNG(f, 8, 6)
	j := fuzzJPEG(f, 16, 16)
	mp, mct := fuzzMultipart(p, j)
	f.Add(p, "image/png")
	f.Add(j, "image/jpeg")
	f.Add(p, "")
	f.Add(mp, mct)
	f.Add([]byte(`{"images": ["`+base64.StdEncoding.EncodeToString(p)+`", "data:image/jpeg;base64,`+base64.StdEncoding.EncodeToString(j)+`"]}`), "application/json")
	f.Add(p[:len(p)-10], "image/png")                       // truncated
	f.Add(append([]byte("\x89PNX"), p[4:]...), "image/png") // corrupt header
	f.Add(hugePNG(50000, 50000), "image/png")
	f.Add(hugePNG(65, 64), "application/octet-stream")
	f.Add(mp[:len(mp)/2], mct)
	f.Add([]byte(`{"images": ["data:;base64,", "%%%"]}`), "application/json")
	f.Add([]byte(`{"images": []}`), "application/json; charset=utf-8")
	f.Add(p, "multipart/form-data")
	f.Add(p, "image/png; ===")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/embed", bytes.NewReader(body))
		r.Header.Set("Content-Type", ct)
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, fuzzMaxBody)
		uploads, err := readUploads(r, fuzzMaxImages)
		if err != nil {
			checkHTTPError(t, err)
			return
		}
		if len(uploads) < 1 || len(uploads) > fuzzMaxImages {
			t.Fatalf("%d uploads", len(uploads))
		}
		for _, b := range uploads {
			img, err := decode(b, fuzzMaxPixels)
			if err != nil {
				checkHTTPError(t, err)
				continue
			}
			if r := img.Bounds(); r.Dx() < 1 || r.Dy() < 1 || int64(r.Dx())*int64(r.Dy()) > fuzzMaxPixels {
				t.Fatalf("decoded a %dx%d image (limit %d pixels)", r.Dx(), r.Dy(), fuzzMaxPixels)
			}
		}
	})
}

func checkHTTPError(t *testing.T, err error) {
	t.Helper()
	var he *httpError
	if !errors.As(err, &he) || he.status < 400 || he.status > 499 || he.msg == "" {
		t.Fatalf("error %v (%T) is not a 4xx httpError", err, err)
	}
}
