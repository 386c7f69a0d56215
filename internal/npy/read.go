package npy

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

var (
	descrRe   = regexp.MustCompile(`'descr':\s*'([^']*)'`)
	fortranRe = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRe   = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// ReadFloat32 reads a little-endian float32 .npy file (format 1.0, 2.0 or
// 3.0, C order) and returns its values and shape. Truncated, oversized or
// malformed files are errors that say what is wrong.
func ReadFloat32(path string) ([]float32, []int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	shape, n, err := readHeader(f, path)
	if err != nil {
		return nil, nil, err
	}
	raw := make([]byte, 4*n)
	if _, err := io.ReadFull(f, raw); err != nil {
		return nil, nil, fmt.Errorf("%s: not a float32 .npy array: truncated data", path)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, shape, nil
}

// readHeader checks f's .npy header, leaves f at the first value and
// returns the shape and the number of values, which the rest of the file
// holds exactly.
func readHeader(f *os.File, path string) ([]int, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	bad := func(format string, args ...any) ([]int, int64, error) {
		return nil, 0, fmt.Errorf("%s: not a float32 .npy array: "+format, append([]any{path}, args...)...)
	}
	var pre [10]byte
	if _, err := io.ReadFull(f, pre[:8]); err != nil || string(pre[:6]) != "\x93NUMPY" {
		return bad("no .npy magic")
	}
	var hlen int
	switch pre[6] {
	case 1:
		if _, err := io.ReadFull(f, pre[8:10]); err != nil {
			return bad("truncated header")
		}
		hlen = int(binary.LittleEndian.Uint16(pre[8:10]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(f, b[:]); err != nil {
			return bad("truncated header")
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return bad("format version %d.%d", pre[6], pre[7])
	}
	if hlen <= 0 || int64(hlen) > st.Size() || hlen > 1<<20 {
		return bad("header length %d", hlen)
	}
	h := make([]byte, hlen)
	if _, err := io.ReadFull(f, h); err != nil {
		return bad("truncated header")
	}
	hs := string(h)
	d := descrRe.FindStringSubmatch(hs)
	if d == nil || (d[1] != "<f4" && d[1] != "f4") {
		return bad("dtype %v (want little-endian float32, '<f4')", d)
	}
	if m := fortranRe.FindStringSubmatch(hs); m == nil || m[1] != "False" {
		return bad("Fortran order")
	}
	m := shapeRe.FindStringSubmatch(hs)
	if m == nil {
		return bad("no shape")
	}
	var shape []int
	n := int64(1)
	for _, p := range strings.Split(m[1], ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return bad("shape %q", m[1])
		}
		shape = append(shape, v)
		// n*v > the file's size, checked without overflowing: n <= size.
		if v > 0 && n > st.Size()/int64(v) {
			return bad("shape %v is larger than the file", shape)
		}
		n *= int64(v)
	}
	here, _ := f.Seek(0, io.SeekCurrent)
	if want := here + 4*n; st.Size() != want {
		return bad("shape %v needs %d bytes of data, the file has %d", shape, 4*n, st.Size()-here)
	}
	return shape, n, nil
}
