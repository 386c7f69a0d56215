package torch_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	in := map[string]*torch.Tensor{
		"conv.weight": torch.Randn([]int64{4, 3, 2, 2}, s),
		"bias64":      torch.Randn([]int64{5}, torch.Float64, s),
		"half":        torch.Randn([]int64{2, 3}, torch.BFloat16, s),
		"steps":       torch.FromSlice([]int64{7, -1}, []int64{2}, s),
		"mask":        torch.FromSlice([]bool{true, false, true}, []int64{3}, s),
		"bytes":       torch.FromSlice([]uint8{0, 9, 255}, []int64{3}, s),
		"scalar":      torch.Scalar(3.25, s),
		"empty":       torch.Zeros([]int64{0, 4}, s),
	}
	meta := map[string]string{"encoder": "basic28", "epoch": "3"}
	if err := torch.SaveSafetensors(path, in, meta); err != nil {
		t.Fatal(err)
	}
	out, gotMeta, err := torch.LoadSafetensors(path, s)
	if err != nil {
		t.Fatal(err)
	}
	if gotMeta["encoder"] != "basic28" || gotMeta["epoch"] != "3" {
		t.Fatalf("metadata %v", gotMeta)
	}
	if len(out) != len(in) {
		t.Fatalf("%d tensors back, want %d", len(out), len(in))
	}
	for name, want := range in {
		got := out[name]
		if got.DType() != want.DType() || !equalShape(got.Shape(), want.Shape()) {
			t.Fatalf("%s: %v %v, want %v %v", name, got.DType(), got.Shape(), want.DType(), want.Shape())
		}
		wb, _ := want.Bytes()
		gb, _ := got.Bytes()
		if string(wb) != string(gb) {
			t.Fatalf("%s: bytes differ", name)
		}
	}
	// The file is the standard layout: an 8-byte header length, JSON, data.
	raw, _ := os.ReadFile(path)
	n := binary.LittleEndian.Uint64(raw[:8])
	if !strings.Contains(string(raw[8:8+n]), `"conv.weight":{"dtype":"F32","shape":[4,3,2,2]`) {
		t.Fatalf("unexpected header %s", raw[8:8+n])
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after an atomic write", len(entries))
	}
}

// TestSafetensorsDamaged feeds damaged files to the loader: each must fail
// with an error naming the file, never panic.
func TestSafetensorsDamaged(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	if err := torch.SaveSafetensors(good, map[string]*torch.Tensor{
		"a": torch.Randn([]int64{16, 16}, s),
		"b": torch.Randn([]int64{8}, s),
	}, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	hlen := binary.LittleEndian.Uint64(raw[:8])
	header := string(raw[8 : 8+hlen])
	withHeader := func(h string) []byte {
		for len(h)%8 != 0 {
			h += " "
		}
		b := make([]byte, 8, 8+len(h)+len(raw))
		binary.LittleEndian.PutUint64(b, uint64(len(h)))
		b = append(b, h...)
		return append(b, raw[8+hlen:]...)
	}
	cases := map[string][]byte{
		"empty file":         {},
		"too short":          raw[:5],
		"truncated data":     raw[:len(raw)-10],
		"huge header length": append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, raw[8:]...),
		"not JSON":           withHeader("{not json"),
		"bad dtype":          withHeader(strings.Replace(header, `"F32"`, `"Q7"`, 1)),
		"wrong shape":        withHeader(strings.Replace(header, `[16,16]`, `[16,17]`, 1)),
		"overlap":            withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`),
		"negative size":      withHeader(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`),
		// The format's reference reader refuses data bytes that no tensor covers.
		"appended bytes": append(append([]byte{}, raw...), make([]byte, 1000)...),
		"gap":            withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`),
		"trailing bytes": withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`),
		// A flipped bit inside tensor data: only the recorded checksum can tell.
		"flipped data bit": flipBit(raw, len(raw)-7, 3),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := torch.LoadSafetensors(p)
			if err == nil {
				t.Fatal("loaded a damaged file")
			}
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
	if _, _, err := torch.LoadSafetensors(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file must be an error")
	}
}

func flipBit(b []byte, at int, bit uint) []byte {
	c := append([]byte{}, b...)
	c[at] ^= 1 << bit
	return c
}

// The whole-file checksum SaveSafetensorsSum returns catches what the file
// cannot: damage in a file without a data checksum (written by another
// program), or in its header's metadata; files without any checksum still
// load.
func TestSafetensorsFileChecksum(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	dir := t.TempDir()
	p := filepath.Join(dir, "w.safetensors")
	sum, err := torch.SaveSafetensorsSum(p, map[string]*torch.Tensor{"a": torch.Randn([]int64{64}, s)}, map[string]string{"encoder": "basic28"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := torch.LoadSafetensorsChecked(p, sum, s); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	// A flipped bit in the metadata's value: the data checksum cannot see it.
	i := strings.Index(string(raw), "basic28")
	if err := os.WriteFile(p, flipBit(raw, i, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := torch.LoadSafetensors(p, s); err != nil {
		t.Fatalf("a metadata flip is invisible to the file alone, yet: %v", err)
	}
	if _, _, err := torch.LoadSafetensorsChecked(p, sum, s); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a flipped bit under a recorded checksum: %v", err)
	}
	// Another program's file, without the data checksum, loads.
	other := filepath.Join(dir, "other.safetensors")
	h := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	b := make([]byte, 8, 8+len(h)+8)
	binary.LittleEndian.PutUint64(b, uint64(len(h)))
	b = append(append(b, h...), make([]byte, 8)...)
	if err := os.WriteFile(other, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := torch.LoadSafetensors(other, s); err != nil {
		t.Fatalf("a file without checksum: %v", err)
	}
}

// TestSafetensorsSaveFailureKeepsOld checks that a failed save leaves the old
// file intact.
func TestSafetensorsSaveFailureKeepsOld(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := torch.SaveSafetensors(path, map[string]*torch.Tensor{"a": torch.Ones([]int64{2}, s)}, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	bad := torch.Zeros([]int64{2}, s).Matmul(torch.Zeros([]int64{3}, s))
	if err := torch.SaveSafetensors(path, map[string]*torch.Tensor{"a": bad}, nil); err == nil {
		t.Fatal("saving an errored tensor must fail")
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("a failed save changed the file")
	}
}
