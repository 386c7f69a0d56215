// Package jpegturbo decodes JPEG images with libjpeg-turbo (Debian's
// libturbojpeg0-dev, through cgo), at full size or at one of the library's
// reduced scales (1/2, 1/4, 1/8), which skips most of the work when the
// target is much smaller than the image. The result is 8-bit channel-major
// (CHW) pixels, as package datasets keeps images.
package jpegturbo

/*
#cgo LDFLAGS: -lturbojpeg
#include <stdlib.h>
#include <turbojpeg.h>

static int dt_scaled(int dim, tjscalingfactor f) { return TJSCALED(dim, f); }

// RGBRGB... to three planes.
static void dt_planes(const unsigned char *restrict src, unsigned char *restrict dst, size_t n) {
	unsigned char *restrict r = dst, *restrict g = dst + n, *restrict b = dst + 2 * n;
	for (size_t i = 0; i < n; i++) {
		r[i] = src[3 * i];
		g[i] = src[3 * i + 1];
		b[i] = src[3 * i + 2];
	}
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// Header reads a JPEG's width and height and whether it is grayscale.
func Header(b []byte) (w, h int, gray bool, err error) {
	if len(b) == 0 {
		return 0, 0, false, errors.New("jpeg: no data")
	}
	hd := C.tjInitDecompress()
	if hd == nil {
		return 0, 0, false, errors.New("jpeg: libjpeg-turbo could not start a decompressor")
	}
	defer C.tjDestroy(hd)
	var cw, ch, sub, cs C.int
	if C.tjDecompressHeader3(hd, (*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)), &cw, &ch, &sub, &cs) != 0 {
		return 0, 0, false, fmt.Errorf("jpeg: %s", C.GoString(C.tjGetErrorStr2(hd)))
	}
	return int(cw), int(ch), cs == C.TJCS_GRAY, nil
}

// Scale is the size a w x h image decodes to at the smallest of the
// scales 1/2, 1/4 and 1/8 that keeps both sides at least minW x minH (full
// size when none of them does, or when minW or minH is 0). These are the
// scales libjpeg-turbo decodes with SIMD; its others (7/8 to 3/8) run a
// plain C inverse DCT and cost as much as the next larger of these or more
// (BenchmarkDecodeAtEachScale; docs/data.md has the figures).
func Scale(w, h, minW, minH int) (sw, sh int) {
	sw, sh = w, h
	if minW <= 0 || minH <= 0 {
		return
	}
	var n C.int
	fs := C.tjGetScalingFactors(&n)
	for _, f := range unsafe.Slice(fs, int(n)) {
		if f.num != 1 || (f.denom != 2 && f.denom != 4 && f.denom != 8) {
			continue
		}
		x, y := int(C.dt_scaled(C.int(w), f)), int(C.dt_scaled(C.int(h), f))
		if x >= minW && y >= minH && x*y < sw*sh {
			sw, sh = x, y
		}
	}
	return
}

// Decode decodes b into channels (1: luminance, 3: RGB) of 8-bit CHW
// pixels, at the size Scale gives for minW x minH.
func Decode(b []byte, channels, minW, minH int) (pix []uint8, w, h int, err error) {
	return decode(b, channels, func(fw, fh int) (int, int) { return Scale(fw, fh, minW, minH) })
}

// decode is Decode at the size size gives for the image's full size (one
// the library can scale to).
func decode(b []byte, channels int, size func(fw, fh int) (int, int)) (pix []uint8, w, h int, err error) {
	if channels != 1 && channels != 3 {
		return nil, 0, 0, fmt.Errorf("jpeg: %d channels: want 1 or 3", channels)
	}
	if len(b) == 0 {
		return nil, 0, 0, errors.New("jpeg: no data")
	}
	hd := C.tjInitDecompress()
	if hd == nil {
		return nil, 0, 0, errors.New("jpeg: libjpeg-turbo could not start a decompressor")
	}
	defer C.tjDestroy(hd)
	src, srcLen := (*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b))
	var cw, ch, sub, cs C.int
	if C.tjDecompressHeader3(hd, src, srcLen, &cw, &ch, &sub, &cs) != 0 {
		return nil, 0, 0, fmt.Errorf("jpeg: %s", C.GoString(C.tjGetErrorStr2(hd)))
	}
	fw, fh := int(cw), int(ch)
	if fw <= 0 || fh <= 0 || int64(fw)*int64(fh) > 1<<28 {
		return nil, 0, 0, fmt.Errorf("jpeg: %d x %d pixels: out of range", fw, fh)
	}
	w, h = size(fw, fh)
	pix = make([]uint8, w*h*channels)
	// Grey decodes straight into pix; colour into an interleaved buffer,
	// split into planes in C. Neither buffer holds Go pointers, so C may
	// write them for the call's duration.
	format, out := C.int(C.TJPF_GRAY), unsafe.Pointer(&pix[0])
	if channels == 3 {
		format = C.TJPF_RGB
		if out = C.malloc(C.size_t(w * h * 3)); out == nil {
			return nil, 0, 0, errors.New("jpeg: out of memory")
		}
		defer C.free(out)
	}
	// A warning (a truncated or damaged file the library would fill in) is
	// an error too, as Go's decoder and Pillow's defaults make it.
	if C.tjDecompress2(hd, src, srcLen, (*C.uchar)(out), C.int(w), 0, C.int(h), format, C.TJFLAG_STOPONWARNING) != 0 {
		return nil, 0, 0, fmt.Errorf("jpeg: %s", C.GoString(C.tjGetErrorStr2(hd)))
	}
	if channels == 3 {
		C.dt_planes((*C.uchar)(out), (*C.uchar)(unsafe.Pointer(&pix[0])), C.size_t(w*h))
	}
	return pix, w, h, nil
}
