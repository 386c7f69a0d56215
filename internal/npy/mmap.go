package npy

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// MapFloat32 maps a float32 .npy file (checked as ReadFloat32 checks it)
// into memory read-only instead of reading it: the values live in the page
// cache, shared with every process that maps the file, and pages come in
// as they are touched. Release unmaps them; the slice must not be used
// after it. A file whose values do not start at a multiple of 4 bytes
// (no writer does that) is read into memory instead, and Release is a
// no-op.
func MapFloat32(path string) (data []float32, shape []int, release func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	shape, n, err := readHeader(f, path)
	if err != nil {
		return nil, nil, nil, err
	}
	off, _ := f.Seek(0, io.SeekCurrent)
	if off%4 != 0 || n == 0 || !littleEndian() {
		d, s, err := ReadFloat32(path)
		return d, s, func() error { return nil }, err
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(off+4*n), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, nil, err
	}
	data = unsafe.Slice((*float32)(unsafe.Pointer(&b[off])), n)
	return data, shape, func() error { return syscall.Munmap(b) }, nil
}

func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}
