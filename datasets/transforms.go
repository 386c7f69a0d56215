package datasets

import (
	"fmt"
	"github.com/dimtorch/dimtorch/internal/imgops"
	"math"
	"math/rand/v2"
	"strings"
)

// Transform maps an image to another, drawing any randomness from rng. The
// loader gives each image its own rng, seeded from the run's seed, the epoch
// and the image's index, so augmentations do not depend on which worker
// processes the image.
type Transform interface {
	Apply(img Image, rng *rand.Rand) Image
	String() string
}

type compose []Transform

// Compose applies transforms in order.
func Compose(ts ...Transform) Transform { return compose(ts) }

func (c compose) Apply(img Image, rng *rand.Rand) Image {
	for _, t := range c {
		img = t.Apply(img, rng)
	}
	return img
}

func (c compose) String() string {
	var s []string
	for _, t := range c {
		s = append(s, t.String())
	}
	return strings.Join(s, " -> ")
}

type funcT struct {
	name string
	fn   func(Image, *rand.Rand) Image
}

func (f funcT) Apply(img Image, rng *rand.Rand) Image { return f.fn(img, rng) }
func (f funcT) String() string                        { return f.name }

// Pad adds n pixels on every side, filled with zeros (reflect false) or by
// mirroring the border (reflect true, without repeating the edge pixel).
func Pad(n int, reflect bool) Transform {
	return funcT{fmt.Sprintf("pad(%d)", n), func(img Image, _ *rand.Rand) Image { return pad(img, n, reflect) }}
}

func pad(img Image, n int, reflect bool) Image {
	h, w := img.H+2*n, img.W+2*n
	out := NewImage(img.C, h, w)
	for c := 0; c < img.C; c++ {
		for y := 0; y < h; y++ {
			sy := y - n
			if sy < 0 || sy >= img.H {
				if !reflect {
					continue
				}
				sy = mirror(sy, img.H)
			}
			for x := 0; x < w; x++ {
				sx := x - n
				if sx < 0 || sx >= img.W {
					if !reflect {
						continue
					}
					sx = mirror(sx, img.W)
				}
				out.Pix[(c*h+y)*w+x] = img.Pix[(c*img.H+sy)*img.W+sx]
			}
		}
	}
	return out
}

func mirror(i, n int) int {
	if n == 1 {
		return 0
	}
	for i < 0 || i >= n {
		if i < 0 {
			i = -i
		}
		if i >= n {
			i = 2*(n-1) - i
		}
	}
	return i
}

func crop(img Image, top, left, h, w int) Image {
	out := NewImage(img.C, h, w)
	for c := 0; c < img.C; c++ {
		for y := 0; y < h; y++ {
			copy(out.Pix[(c*h+y)*w:(c*h+y+1)*w], img.Pix[(c*img.H+top+y)*img.W+left:])
		}
	}
	return out
}

// RandomCrop pads by padding (zeros) and cuts an h x w window at a random place.
func RandomCrop(h, w, padding int) Transform {
	return funcT{fmt.Sprintf("random_crop(%dx%d, pad %d)", h, w, padding), func(img Image, rng *rand.Rand) Image {
		if padding > 0 {
			img = pad(img, padding, false)
		}
		if img.H < h || img.W < w {
			img = resize(img, max(h, img.H), max(w, img.W))
		}
		top, left := rng.IntN(img.H-h+1), rng.IntN(img.W-w+1)
		return crop(img, top, left, h, w)
	}}
}

// CenterCrop cuts the central h x w window (resizing up first if needed).
func CenterCrop(h, w int) Transform {
	return funcT{fmt.Sprintf("center_crop(%dx%d)", h, w), func(img Image, _ *rand.Rand) Image {
		if img.H < h || img.W < w {
			img = resize(img, max(h, img.H), max(w, img.W))
		}
		return crop(img, (img.H-h)/2, (img.W-w)/2, h, w)
	}}
}

// Resize scales the image to h x w with bilinear interpolation (pixel
// centres aligned, as PyTorch's align_corners=False).
func Resize(h, w int) Transform {
	return funcT{fmt.Sprintf("resize(%dx%d)", h, w), func(img Image, _ *rand.Rand) Image { return resize(img, h, w) }}
}

func resize(img Image, h, w int) Image {
	if img.H == h && img.W == w {
		return img
	}
	return resizeRegion(img, 0, 0, float64(img.H), float64(img.W), h, w)
}

// resizeRegion samples the region [top, top+rh) x [left, left+rw) of img
// into an h x w image, bilinearly (imgops.ResizeRegion, which package embed
// shares for served images).
func resizeRegion(img Image, top, left, rh, rw float64, h, w int) Image {
	return Image{C: img.C, H: h, W: w, Pix: imgops.ResizeRegion(img.Pix, img.C, img.H, img.W, top, left, rh, rw, h, w)}
}

// RandomResizedCrop cuts a random window covering a fraction in [minScale,
// maxScale] of the image's area with an aspect ratio in [3/4, 4/3], and
// resizes it to h x w (torchvision's RandomResizedCrop).
func RandomResizedCrop(h, w int, minScale, maxScale float64) Transform {
	return randomResizedCrop(h, w, minScale, maxScale, 3.0/4, 4.0/3)
}

// randomResizedCrop is RandomResizedCrop with aspect ratios (width over
// height) in [minRatio, maxRatio], drawn uniformly in log scale.
func randomResizedCrop(h, w int, minScale, maxScale, minRatio, maxRatio float64) Transform {
	name := fmt.Sprintf("random_resized_crop(%dx%d, scale %.2g-%.2g)", h, w, minScale, maxScale)
	if minRatio != 3.0/4 || maxRatio != 4.0/3 {
		name = fmt.Sprintf("random_resized_crop(%dx%d, scale %.2g-%.2g, ratio %.2g-%.2g)", h, w, minScale, maxScale, minRatio, maxRatio)
	}
	return funcT{name, func(img Image, rng *rand.Rand) Image {
		area := float64(img.H * img.W)
		for try := 0; try < 10; try++ {
			target := area * (minScale + rng.Float64()*(maxScale-minScale))
			logR := math.Log(minRatio) + rng.Float64()*(math.Log(maxRatio)-math.Log(minRatio))
			ratio := math.Exp(logR)
			cw := math.Round(math.Sqrt(target * ratio))
			ch := math.Round(math.Sqrt(target / ratio))
			if cw >= 1 && ch >= 1 && cw <= float64(img.W) && ch <= float64(img.H) {
				top := float64(rng.IntN(img.H - int(ch) + 1))
				left := float64(rng.IntN(img.W - int(cw) + 1))
				return resizeRegion(img, top, left, ch, cw, h, w)
			}
		}
		// Fall back to the whole image.
		return resize(img, h, w)
	}}
}

// HorizontalFlip mirrors the image left-right with probability p.
func HorizontalFlip(p float64) Transform {
	return funcT{fmt.Sprintf("hflip(p=%.2g)", p), func(img Image, rng *rand.Rand) Image {
		if rng.Float64() >= p {
			return img
		}
		return flip(img)
	}}
}

func flip(img Image) Image {
	out := NewImage(img.C, img.H, img.W)
	for c := 0; c < img.C; c++ {
		for y := 0; y < img.H; y++ {
			src := img.Pix[(c*img.H+y)*img.W:]
			dst := out.Pix[(c*img.H+y)*img.W:]
			for x := 0; x < img.W; x++ {
				dst[x] = src[img.W-1-x]
			}
		}
	}
	return out
}

// Normalize writes img into dst as float32 in [-1, 1] (v/127.5 - 1), the
// range DIM trains on.
func Normalize(img Image, dst []float32) {
	for i, v := range img.Pix {
		dst[i] = float32(v)/127.5 - 1
	}
}
