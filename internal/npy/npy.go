// Package npy writes NumPy .npy files (format version 1.0) of float32 or
// int64 arrays, for handing arrays to Python tools, and reads float32 ones
// back (embedding galleries).
package npy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
)

func header(descr string, shape []int) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, tuple)
	// magic (6) + version (2) + length (2) + header + '\n', padded to 64 bytes.
	total := 10 + len(h) + 1
	pad := (64 - total%64) % 64
	h += strings.Repeat(" ", pad) + "\n"
	out := []byte("\x93NUMPY\x01\x00")
	out = binary.LittleEndian.AppendUint16(out, uint16(len(h)))
	return append(out, h...)
}

// WriteFloat32 writes data of the given shape (row-major) to path atomically.
func WriteFloat32(path string, data []float32, shape ...int) error {
	if err := check(len(data), shape); err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		bw.Write(header("<f4", shape))
		var b [4]byte
		for _, v := range data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			bw.Write(b[:])
		}
		return bw.Flush()
	})
}

// WriteInt64 writes data of the given shape (row-major) to path atomically.
func WriteInt64(path string, data []int64, shape ...int) error {
	if err := check(len(data), shape); err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		bw.Write(header("<i8", shape))
		var b [8]byte
		for _, v := range data {
			binary.LittleEndian.PutUint64(b[:], uint64(v))
			bw.Write(b[:])
		}
		return bw.Flush()
	})
}

func check(n int, shape []int) error {
	p := 1
	for _, d := range shape {
		p *= d
	}
	if p != n {
		return fmt.Errorf("npy: shape %v needs %d values, got %d", shape, p, n)
	}
	return nil
}
