package npy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFloat32RoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.npy")
	data := []float32{1, -2.5, 3, 4, 5, 6}
	if err := WriteFloat32(p, data, 2, 3); err != nil {
		t.Fatal(err)
	}
	got, shape, err := ReadFloat32(p)
	if err != nil || len(shape) != 2 || shape[0] != 2 || shape[1] != 3 {
		t.Fatalf("%v %v", shape, err)
	}
	for i := range data {
		if got[i] != data[i] {
			t.Fatalf("%v", got)
		}
	}
	full, _ := os.ReadFile(p)
	i8 := filepath.Join(dir, "i.npy")
	if err := WriteInt64(i8, []int64{1, 2}, 2); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"truncated data":   full[:len(full)-3],
		"extra data":       append(append([]byte{}, full...), 0, 0, 0, 0),
		"truncated header": full[:20],
		"no magic":         append([]byte("XXNUMPY"), full[7:]...),
		"empty":            nil,
	}
	for name, b := range cases {
		q := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".npy")
		os.WriteFile(q, b, 0o644)
		if _, _, err := ReadFloat32(q); err == nil || !strings.Contains(err.Error(), "not a float32 .npy") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := ReadFloat32(i8); err == nil || !strings.Contains(err.Error(), "dtype") {
		t.Errorf("int64 file: %v", err)
	}
}

// MapFloat32 gives the values ReadFloat32 reads, and refuses what it
// refuses.
func TestMapFloat32(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.npy")
	want := []float32{1, -2.5, 3e-7, 4, 5, 6}
	if err := WriteFloat32(path, want, 2, 3); err != nil {
		t.Fatal(err)
	}
	got, shape, release, err := MapFloat32(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[0] != 2 || shape[1] != 3 || len(got) != 6 {
		t.Fatalf("shape %v, %d values", shape, len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d: %v, want %v", i, got[i], want[i])
		}
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	os.WriteFile(path, b[:len(b)-2], 0o644)
	if _, _, _, err := MapFloat32(path); err == nil || !strings.Contains(err.Error(), "needs 24 bytes of data") {
		t.Fatalf("a truncated file: %v", err)
	}
}
