// Package imgops holds the pixel operations that training data and served
// images must share exactly: planar uint8 images (channel, row, column)
// resampled bilinearly. Package datasets builds its transforms on it and
// package embed its preprocessing, so a service embeds what the probe saw.
package imgops

import "math"

// ResizeRegion samples the region [top, top+rh) x [left, left+rw) of a
// planar c x h x w image into an oh x ow image, bilinearly, with pixel
// centres aligned (PyTorch's align_corners=False) and values rounded to
// the nearest integer.
func ResizeRegion(pix []uint8, c, h, w int, top, left, rh, rw float64, oh, ow int) []uint8 {
	out := make([]uint8, c*oh*ow)
	sy, sx := rh/float64(oh), rw/float64(ow)
	// Each output column's two source columns and weights, computed once.
	type tap struct {
		x0, x1 int
		w0, w1 float64
	}
	taps := make([]tap, ow)
	for x := range taps {
		fx := left + (float64(x)+0.5)*sx - 0.5
		fx = math.Max(0, math.Min(fx, float64(w-1)))
		x0 := int(fx)
		taps[x] = tap{x0, min(x0+1, w-1), 1 - (fx - float64(x0)), fx - float64(x0)}
	}
	for y := 0; y < oh; y++ {
		fy := top + (float64(y)+0.5)*sy - 0.5
		fy = math.Max(0, math.Min(fy, float64(h-1)))
		y0 := int(fy)
		y1 := min(y0+1, h-1)
		wy := fy - float64(y0)
		for ch := 0; ch < c; ch++ {
			r0 := pix[(ch*h+y0)*w : (ch*h+y0+1)*w]
			r1 := pix[(ch*h+y1)*w : (ch*h+y1+1)*w]
			dst := out[(ch*oh+y)*ow : (ch*oh+y+1)*ow]
			for x, t := range taps[:len(dst)] {
				a := float64(r0[t.x0])*t.w0 + float64(r0[t.x1])*t.w1
				b := float64(r1[t.x0])*t.w0 + float64(r1[t.x1])*t.w1
				dst[x] = uint8(a*(1-wy) + b*wy + 0.5) // rounds half up: every value is >= 0
			}
		}
	}
	return out
}

// Resize scales a planar c x h x w image to oh x ow (a copy when the size
// is already right).
func Resize(pix []uint8, c, h, w, oh, ow int) []uint8 {
	if h == oh && w == ow {
		return append([]uint8(nil), pix...)
	}
	return ResizeRegion(pix, c, h, w, 0, 0, float64(h), float64(w), oh, ow)
}
