package jpegturbo

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"testing"
)

// photo is a smooth picture with texture, encoded as JPEG (4:2:0 colour, or
// grayscale).
func photo(t testing.TB, w, h int, gray bool) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	var img image.Image
	val := func(x, y, c int) uint8 {
		v := 128 + 60*math.Sin(float64(x)/17+float64(c)) + 50*math.Cos(float64(y)/23-float64(c)) + 10*r.NormFloat64()
		return uint8(max(0, min(255, v)))
	}
	if gray {
		g := image.NewGray(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				g.SetGray(x, y, color.Gray{val(x, y, 0)})
			}
		}
		img = g
	} else {
		c := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				c.SetRGBA(x, y, color.RGBA{val(x, y, 0), val(x, y, 1), val(x, y, 2), 255})
			}
		}
		img = c
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// goDecode is Go's image/jpeg to CHW, the reference.
func goDecode(t testing.TB, b []byte, channels int) ([]uint8, int, int) {
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	out := make([]uint8, channels*w*h)
	for y := range h {
		for x := range w {
			c := img.At(r.Min.X+x, r.Min.Y+y)
			if channels == 1 {
				out[y*w+x] = color.GrayModel.Convert(c).(color.Gray).Y
				continue
			}
			cr, cg, cb, _ := c.RGBA()
			out[y*w+x], out[w*h+y*w+x], out[2*w*h+y*w+x] = uint8(cr>>8), uint8(cg>>8), uint8(cb>>8)
		}
	}
	return out, w, h
}

// At full size libjpeg-turbo and Go's decoder agree to within their IDCTs'
// and chroma upsamplers (libjpeg-turbo interpolates, Go repeats): a mean
// difference under one and a half levels.
func TestDecodeAgreesWithGo(t *testing.T) {
	for _, c := range []struct {
		w, h     int
		gray     bool
		channels int
	}{{256, 256, false, 3}, {500, 375, false, 3}, {97, 61, true, 1}, {64, 48, false, 1}} {
		b := photo(t, c.w, c.h, c.gray)
		got, w, h, err := Decode(b, c.channels, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		want, ww, wh := goDecode(t, b, c.channels)
		if w != ww || h != wh {
			t.Fatalf("%dx%d decoded as %dx%d, Go %dx%d", c.w, c.h, w, h, ww, wh)
		}
		var sum, worst float64
		for i := range got {
			d := math.Abs(float64(got[i]) - float64(want[i]))
			sum += d
			worst = max(worst, d)
		}
		if mean := sum / float64(len(got)); mean > 1.5 || worst > 24 { // colour: the chroma upsamplers differ (libjpeg-turbo interpolates)
			t.Errorf("%dx%d gray %v -> %d channels: mean difference %.2f, worst %.0f", c.w, c.h, c.gray, c.channels, mean, worst)
		}
		if fw, fh, gray, err := Header(b); err != nil || fw != c.w || fh != c.h || gray != c.gray {
			t.Errorf("header %d %d %v %v", fw, fh, gray, err)
		}
	}
}

// A reduced scale is the smallest fast one that keeps the asked size, and is the
// full image averaged down (within the DCT's approximation).
func TestDecodeReducedScale(t *testing.T) {
	if w, h := Scale(500, 375, 64, 64); w != 125 || h != 94 {
		t.Fatalf("500x375 for at least 64x64: %dx%d, want 1/4: 125x94", w, h)
	}
	// The scales between (3/8 here: 188x141) are slower to decode than 1/2.
	if w, h := Scale(500, 375, 128, 128); w != 250 || h != 188 {
		t.Fatalf("500x375 for at least 128x128: %dx%d, want 1/2: 250x188", w, h)
	}
	if w, h := Scale(500, 375, 192, 192); w != 500 || h != 375 {
		t.Fatalf("500x375 for at least 192x192: %dx%d, want full size", w, h)
	}
	if w, h := Scale(256, 256, 32, 32); w != 32 || h != 32 {
		t.Fatalf("256x256 for 32x32: %dx%d", w, h)
	}
	if w, h := Scale(100, 80, 300, 300); w != 100 || h != 80 {
		t.Fatalf("no enlargement: %dx%d", w, h)
	}
	b := photo(t, 256, 256, false)
	half, w, h, err := Decode(b, 3, 128, 128)
	if err != nil || w != 128 || h != 128 {
		t.Fatalf("%dx%d %v", w, h, err)
	}
	full, _, _, _ := Decode(b, 3, 0, 0)
	var sum float64
	for c := range 3 {
		for y := range 128 {
			for x := range 128 {
				var m float64
				for dy := range 2 {
					for dx := range 2 {
						m += float64(full[c*65536+(2*y+dy)*256+2*x+dx])
					}
				}
				sum += math.Abs(m/4 - float64(half[c*16384+y*128+x]))
			}
		}
	}
	if mean := sum / (3 * 128 * 128); mean > 3 {
		t.Fatalf("half scale differs from the averaged full image by %.2f on average", mean)
	}
}

func TestDecodeDamaged(t *testing.T) {
	b := photo(t, 200, 150, false)
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)/2],
		"garbage":   bytes.Repeat([]byte{0xff, 0xd8, 1, 2}, 100),
		"empty":     nil,
	} {
		if _, _, _, err := Decode(bad, 3, 0, 0); err == nil {
			t.Errorf("%s JPEG decoded", name)
		}
	}
	if _, _, _, err := Decode(b, 2, 0, 0); err == nil {
		t.Error("2 channels accepted")
	}
}

func benchmarkDecode(b *testing.B, w, h, target int, turbo bool) {
	data := photo(b, w, h, false)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if turbo {
			if _, _, _, err := Decode(data, 3, target, target); err != nil {
				b.Fatal(err)
			}
		} else if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
}

func BenchmarkGo256(b *testing.B)             { benchmarkDecode(b, 256, 256, 0, false) }
func BenchmarkTurbo256(b *testing.B)          { benchmarkDecode(b, 256, 256, 0, true) }
func BenchmarkTurbo256For64(b *testing.B)     { benchmarkDecode(b, 256, 256, 64, true) }
func BenchmarkTurbo256For32(b *testing.B)     { benchmarkDecode(b, 256, 256, 32, true) }
func BenchmarkGo500x375(b *testing.B)         { benchmarkDecode(b, 500, 375, 0, false) }
func BenchmarkTurbo500x375(b *testing.B)      { benchmarkDecode(b, 500, 375, 0, true) }
func BenchmarkTurbo500x375For64(b *testing.B) { benchmarkDecode(b, 500, 375, 64, true) }

// BenchmarkDecodeAtEachScale decodes a 500x375 photo at each of the
// library's scales n/8: the ones without SIMD (7/8 to 5/8, 3/8) cost as much
// as the next larger fast one (full size, 1/2) or more, which is why Scale
// leaves them out.
func BenchmarkDecodeAtEachScale(b *testing.B) {
	data := photo(b, 500, 375, false)
	for n := 8; n >= 1; n-- {
		b.Run(fmt.Sprintf("%d_8", n), func(b *testing.B) {
			size := func(fw, fh int) (int, int) { return (fw*n + 7) / 8, (fh*n + 7) / 8 }
			for range b.N {
				if _, _, _, err := decode(data, 3, size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
