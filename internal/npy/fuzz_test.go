package npy

import (
	"encoding/binary"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

// npyFile is what WriteFloat32 writes for data of the given shape.
func npyFile(t testing.TB, data []float32, shape ...int) []byte {
	p := filepath.Join(t.TempDir(), "seed.npy")
	if err := WriteFloat32(p, data, shape...); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// version2 is a format 2.0 file: a 4-byte header length.
func version2(h string, data []byte) []byte {
	b := []byte("\x93NUMPY\x02\x00")
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h)))
	return append(append(b, h...), data...)
}

// FuzzReadFloat32: ReadFloat32 on any bytes never panics or allocates more
// than the file holds; what it accepts has as many values as its shape
// says, and written again with WriteFloat32 reads back bit for bit.
func FuzzReadFloat32(f *testing.F) {
	valid := npyFile(f, []float32{1, -2.5, float32(math.NaN()), float32(math.Inf(-1)), 0, 6}, 2, 3)
	f.Add(valid)
	f.Add(npyFile(f, []float32{7}))                                   // a scalar: shape ()
	f.Add(npyFile(f, []float32{}, 0, 5))                              // no values
	f.Add(valid[:len(valid)-3])                                       // truncated data
	f.Add(valid[:20])                                                 // truncated header
	f.Add(append([]byte("\x93NUMPY\x01\x00\xff\xff"), valid[10:]...)) // header length past the end
	f.Add(version2("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4611686018427387904), }\n", nil))
	f.Add(version2("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", make([]byte, 12)))
	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "a.npy")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		vals, shape, err := ReadFloat32(p)
		if err != nil {
			return
		}
		n := big.NewInt(1) // no overflow to hide a wrong count
		for _, d := range shape {
			if d < 0 {
				t.Fatalf("negative dimension in %v", shape)
			}
			n.Mul(n, big.NewInt(int64(d)))
		}
		if n.Cmp(big.NewInt(int64(len(vals)))) != 0 || 4*len(vals) > len(b) {
			t.Fatalf("shape %v, %d values from %d bytes", shape, len(vals), len(b))
		}
		q := filepath.Join(dir, "again.npy")
		if err := WriteFloat32(q, vals, shape...); err != nil {
			t.Fatal(err)
		}
		vals2, shape2, err := ReadFloat32(q)
		if err != nil || len(shape2) != len(shape) || len(vals2) != len(vals) {
			t.Fatalf("rewritten: shape %v (was %v), %d values: %v", shape2, shape, len(vals2), err)
		}
		for i := range shape {
			if shape[i] != shape2[i] {
				t.Fatalf("rewritten: shape %v, was %v", shape2, shape)
			}
		}
		for i := range vals {
			if math.Float32bits(vals[i]) != math.Float32bits(vals2[i]) {
				t.Fatalf("value %d: %v, was %v", i, vals2[i], vals[i])
			}
		}
	})
}
