// Package jpegturbo decodes JPEG images with libjpeg-turbo (Debian's
// libturbojpeg0-dev, through cgo), at full size or at one of the library's
// reduced scales (1/8 to 1), which skips most of the work when the target
// is much smaller than the image. The result is 8-bit channel-major
// (CHW) pixels, as package datasets keeps images.
package jpegturbo

/*
#cgo LDFLAGS: -lturbojpeg
#include <stdlib.h>
#include <turbojpeg.h>

static int dt_scaled(int dim, tjscalingfactor f) { return TJSCALED(dim, f); }
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
// library's scaling factors that keeps both sides at least minW x minH
// (full size when none of them does, or when minW or minH is 0).
func Scale(w, h, minW, minH int) (sw, sh int) {
	sw, sh = w, h
	if minW <= 0 || minH <= 0 {
		return
	}
	var n C.int
	fs := C.tjGetScalingFactors(&n)
	for _, f := range unsafe.Slice(fs, int(n)) {
		if f.num > f.denom { // enlargements
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
	if channels != 1 && channels != 3 {
		return nil, 0, 0, fmt.Errorf("jpeg: %d channels: want 1 or 3", channels)
	}
	fw, fh, _, err := Header(b)
	if err != nil {
		return nil, 0, 0, err
	}
	if fw <= 0 || fh <= 0 || int64(fw)*int64(fh) > 1<<28 {
		return nil, 0, 0, fmt.Errorf("jpeg: %d x %d pixels: out of range", fw, fh)
	}
	w, h = Scale(fw, fh, minW, minH)
	hd := C.tjInitDecompress()
	if hd == nil {
		return nil, 0, 0, errors.New("jpeg: libjpeg-turbo could not start a decompressor")
	}
	defer C.tjDestroy(hd)
	format := C.int(C.TJPF_GRAY)
	if channels == 3 {
		format = C.TJPF_RGB
	}
	buf := C.malloc(C.size_t(w * h * channels))
	if buf == nil {
		return nil, 0, 0, errors.New("jpeg: out of memory")
	}
	defer C.free(buf)
	// A warning (a truncated or damaged file the library would fill in) is
	// an error too, as Go's decoder and Pillow's defaults make it.
	if C.tjDecompress2(hd, (*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)), (*C.uchar)(buf), C.int(w), 0, C.int(h), format, C.TJFLAG_STOPONWARNING) != 0 {
		return nil, 0, 0, fmt.Errorf("jpeg: %s", C.GoString(C.tjGetErrorStr2(hd)))
	}
	src := unsafe.Slice((*uint8)(buf), w*h*channels)
	pix = make([]uint8, w*h*channels)
	if channels == 1 {
		copy(pix, src)
		return pix, w, h, nil
	}
	plane := w * h
	for i := range plane { // RGBRGB... to planes
		pix[i], pix[plane+i], pix[2*plane+i] = src[3*i], src[3*i+1], src[3*i+2]
	}
	return pix, w, h, nil
}
