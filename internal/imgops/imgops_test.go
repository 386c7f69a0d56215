package imgops

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// ResizeRegion over a whole image is libtorch's bilinear interpolation
// (align_corners=False, no antialiasing) rounded to integers: checked
// against at::upsample_bilinear2d on random images, shrinking and growing
// by whole and fractional factors.
func TestResizeMatchesLibtorchBilinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ ch, h, w, oh, ow int }{
		{3, 40, 50, 20, 25}, {3, 37, 53, 224, 224}, {1, 64, 48, 17, 29}, {3, 9, 9, 9, 9}, {3, 375, 500, 96, 96},
	} {
		pix := make([]uint8, c.ch*c.h*c.w)
		src := make([]float32, len(pix))
		for i := range pix {
			pix[i] = uint8(rng.IntN(256))
			src[i] = float32(pix[i])
		}
		got := Resize(pix, c.ch, c.h, c.w, c.oh, c.ow)
		x := torch.FromSlice(src, []int64{1, int64(c.ch), int64(c.h), int64(c.w)})
		y := torch.Interpolate(x, int64(c.oh), int64(c.ow), torch.Bilinear, false)
		want, err := y.Float32s()
		x.Free()
		y.Free()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%+v: %d values, libtorch %d", c, len(got), len(want))
		}
		for i := range got {
			// libtorch computes the source positions in float32 (5.2083 for
			// 500/96 is not exact there): weights off by up to about 6e-5 on
			// differences of up to 255 levels, so a value within 0.02 of a
			// half may round either way.
			if d := math.Abs(float64(got[i]) - float64(want[i])); d > 0.5+0.02 {
				t.Fatalf("%+v: value %d is %d, libtorch %.4f", c, i, got[i], want[i])
			}
		}
	}
}

// A region is the whole-image resize of that region cut out, when the
// region starts on whole pixels and keeps the scale: the offsets are
// applied, not ignored or doubled.
func TestResizeRegionOffsets(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const c, h, w = 3, 30, 40
	pix := make([]uint8, c*h*w)
	for i := range pix {
		pix[i] = uint8(rng.IntN(256))
	}
	top, left, rh, rw := 6, 10, 16, 20
	cut := make([]uint8, c*rh*rw)
	for ch := range c {
		for y := range rh {
			copy(cut[(ch*rh+y)*rw:(ch*rh+y+1)*rw], pix[(ch*h+top+y)*w+left:])
		}
	}
	// Halving: every sample falls between pixels of the region, never
	// clamped at its border, so the cut-out and the region agree exactly.
	got := ResizeRegion(pix, c, h, w, float64(top), float64(left), float64(rh), float64(rw), rh/2, rw/2)
	want := Resize(cut, c, rh, rw, rh/2, rw/2)
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("value %d: region %d, cut-out %d", i, got[i], want[i])
		}
	}
}
