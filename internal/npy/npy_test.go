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
