package datasets

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// A Policy is a named training augmentation (dimtorch train --augment).
// Every view of a multi-view batch draws its own.
type Policy struct {
	Name string
	Doc  string // one line, for --help and docs/data.md
	// build returns the transform for a dataset whose images are brought to
	// h x w (the encoder's input) after it; minScale is --crop-scale (0: the
	// policy's own).
	build func(data string, h, w int, minScale float64) Transform
}

// policies lists the policies, in the order --help gives them.
var policies = []Policy{
	{"none", "no augmentation (STL-10 and folders keep their random 64x64 crops, which bring them to size)",
		func(data string, _, _ int, _ float64) Transform { return DefaultTransform(data, Train) }},
	{"crops", "random crops after padding, and flips where they keep the classes (not digits)",
		func(data string, _, _ int, _ float64) Transform { return AugmentTransform(data) }},
	{"resized-crops", "random resized crops covering at least --crop-scale of the image (default 0.4; aspect 3/4 to 4/3), and flips where they keep the classes",
		func(data string, h, w int, minScale float64) Transform {
			return ScaleAugment(data, h, w, orDefault(minScale, 0.4))
		}},
	{"amdim", "AMDIM's: flips where they keep the classes; images of up to 32 pixels translated by up to 4 pixels with mirrored borders (p 0.8), larger ones random resized crops (--crop-scale, default 0.3, to all of the image; aspect 0.7 to 1.4); for colour images colour jitter (brightness, contrast, saturation 0.4, hue 0.2; p 0.8) and greyscale (p 0.25)",
		amdimPolicy},
}

func orDefault(v, d float64) float64 {
	if v > 0 {
		return v
	}
	return d
}

// Policies lists the policies' names.
func Policies() []string {
	out := make([]string, len(policies))
	for i, p := range policies {
		out[i] = p.Name
	}
	return out
}

// PolicyHelp is --augment's list: each name with what it does.
func PolicyHelp() []string {
	out := make([]string, len(policies))
	for i, p := range policies {
		out[i] = p.Name + ": " + p.Doc
	}
	return out
}

// Augmentation returns the training transform of a policy for a dataset
// whose images are then brought to h x w; nil when it changes nothing.
func Augmentation(policy, data string, h, w int, minScale float64) (Transform, error) {
	for _, p := range policies {
		if p.Name == policy {
			return p.build(data, h, w, minScale), nil
		}
	}
	return nil, fmt.Errorf("unknown augmentation policy %q (want %s)", policy, strings.Join(Policies(), ", "))
}

func amdimPolicy(data string, h, w int, minScale float64) Transform {
	var ts []Transform
	if s, err := lookup(data); err != nil || !s.noFlip {
		ts = append(ts, HorizontalFlip(0.5))
	}
	small := max(h, w) <= 32 // folders: by the encoder's input
	if s, err := lookup(data); err == nil && s.size > 0 {
		small = s.size <= 32
	}
	if small {
		ts = append(ts, RandomApply(RandomTranslate(4), 0.8))
	} else {
		ts = append(ts, randomResizedCrop(h, w, orDefault(minScale, 0.3), 1, 0.7, 1.4))
	}
	return Compose(append(ts, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.2), 0.8), RandomGrayscale(0.25))...)
}

// RandomApply applies t with probability p.
func RandomApply(t Transform, p float64) Transform {
	return funcT{fmt.Sprintf("%s(p=%.2g)", t, p), func(img Image, rng *rand.Rand) Image {
		if rng.Float64() >= p {
			return img
		}
		return t.Apply(img, rng)
	}}
}

// RandomTranslate shifts the image by whole pixels, up to max in each
// direction (each drawn uniformly from -max to max), filling what is
// uncovered by mirroring the image at its border (as AMDIM's
// RandomTranslateWithReflect).
func RandomTranslate(max int) Transform {
	return funcT{fmt.Sprintf("translate(%d)", max), func(img Image, rng *rand.Rand) Image {
		dy, dx := rng.IntN(2*max+1)-max, rng.IntN(2*max+1)-max
		return crop(pad(img, max, true), max-dy, max-dx, img.H, img.W)
	}}
}

// ColorJitter changes the brightness, contrast and saturation of a colour
// image by factors drawn uniformly from [1-b, 1+b], [1-c, 1+c], [1-s, 1+s]
// and rotates its hue by a fraction of the colour circle drawn from [-hue,
// hue], in a random order (as torchvision's ColorJitter). One-channel images
// pass unchanged. Pixels stay in [0, 255] after each step and are rounded
// once at the end.
func ColorJitter(b, c, s, hue float64) Transform {
	return funcT{fmt.Sprintf("color_jitter(%.2g, %.2g, %.2g, %.2g)", b, c, s, hue), func(img Image, rng *rand.Rand) Image {
		if img.C != 3 {
			return img
		}
		f := toFloat(img)
		for _, k := range rng.Perm(4) {
			switch k {
			case 0:
				if b > 0 {
					brightness(f, 1-b+2*b*rng.Float64())
				}
			case 1:
				if c > 0 {
					contrast(f, 1-c+2*c*rng.Float64())
				}
			case 2:
				if s > 0 {
					saturation(f, 1-s+2*s*rng.Float64())
				}
			case 3:
				if hue > 0 {
					hueShift(f, -hue+2*hue*rng.Float64())
				}
			}
		}
		return fromFloat(f, img)
	}}
}

// RandomGrayscale replaces a colour image by its luma (ITU-R 601: 0.299 R +
// 0.587 G + 0.114 B) in all three channels with probability p.
func RandomGrayscale(p float64) Transform {
	return funcT{fmt.Sprintf("grayscale(p=%.2g)", p), func(img Image, rng *rand.Rand) Image {
		if img.C != 3 || rng.Float64() >= p {
			return img
		}
		f := toFloat(img)
		saturation(f, 0)
		return fromFloat(f, img)
	}}
}

// rgb is a colour image as three planes of floats in [0, 255].
type rgb [3][]float64

func toFloat(img Image) rgb {
	n := img.H * img.W
	var f rgb
	for c := range f {
		f[c] = make([]float64, n)
		for i, v := range img.Pix[c*n : (c+1)*n] {
			f[c][i] = float64(v)
		}
	}
	return f
}

func fromFloat(f rgb, like Image) Image {
	out := NewImage(3, like.H, like.W)
	n := like.H * like.W
	for c := range f {
		for i, v := range f[c] {
			out.Pix[c*n+i] = uint8(math.Round(clamp255(v)))
		}
	}
	return out
}

func clamp255(v float64) float64 { return math.Min(255, math.Max(0, v)) }

func luma(f rgb, i int) float64 { return 0.299*f[0][i] + 0.587*f[1][i] + 0.114*f[2][i] }

// blend sets each value to k*v + (1-k)*other(i), clamped.
func blend(f rgb, k float64, other func(c, i int) float64) {
	for i := range f[0] {
		var o [3]float64
		for c := range f {
			o[c] = other(c, i)
		}
		for c := range f {
			f[c][i] = clamp255(k*f[c][i] + (1-k)*o[c])
		}
	}
}

func brightness(f rgb, k float64) { blend(f, k, func(int, int) float64 { return 0 }) }

// contrast blends with the mean luma of the image.
func contrast(f rgb, k float64) {
	var m float64
	for i := range f[0] {
		m += luma(f, i)
	}
	m /= float64(len(f[0]))
	blend(f, k, func(int, int) float64 { return m })
}

// saturation blends with the pixel's own luma (0: greyscale).
func saturation(f rgb, k float64) {
	l := make([]float64, len(f[0]))
	for i := range l {
		l[i] = luma(f, i)
	}
	blend(f, k, func(_, i int) float64 { return l[i] })
}

// hueShift rotates each pixel's hue by shift of the colour circle (HSV),
// keeping its saturation and value.
func hueShift(f rgb, shift float64) {
	for i := range f[0] {
		r, g, b := f[0][i]/255, f[1][i]/255, f[2][i]/255
		hi, lo := math.Max(r, math.Max(g, b)), math.Min(r, math.Min(g, b))
		d := hi - lo
		if d == 0 {
			continue // grey: no hue
		}
		var h float64
		switch hi {
		case r:
			h = math.Mod((g-b)/d, 6)
		case g:
			h = (b-r)/d + 2
		default:
			h = (r-g)/d + 4
		}
		h = math.Mod(h/6+shift+1, 1) * 6 // in [0, 6)
		sv := d                          // chroma = s * v
		x := sv * (1 - math.Abs(math.Mod(h, 2)-1))
		var rr, gg, bb float64
		switch int(h) {
		case 0:
			rr, gg, bb = sv, x, 0
		case 1:
			rr, gg, bb = x, sv, 0
		case 2:
			rr, gg, bb = 0, sv, x
		case 3:
			rr, gg, bb = 0, x, sv
		case 4:
			rr, gg, bb = x, 0, sv
		default:
			rr, gg, bb = sv, 0, x
		}
		f[0][i], f[1][i], f[2][i] = (rr+lo)*255, (gg+lo)*255, (bb+lo)*255
	}
}
