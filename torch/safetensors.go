package torch

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
)

// Safetensors I/O (https://github.com/huggingface/safetensors format): an
// 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the raw little-endian data.

var safeDTypes = map[DType]string{
	Float64: "F64", Float32: "F32", Float16: "F16", BFloat16: "BF16",
	Int64: "I64", Int32: "I32", Int16: "I16", Int8: "I8", Uint8: "U8", Bool: "BOOL",
}

func safeDType(s string) (DType, bool) {
	for d, n := range safeDTypes {
		if n == s {
			return d, true
		}
	}
	return Invalid, false
}

type safeEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int64  `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// maxSafeHeader bounds the JSON header read from untrusted files.
const maxSafeHeader = 100 << 20

// DataChecksumKey is the metadata entry in which SaveSafetensors records the
// SHA-256 of the file's data bytes (hex), so that LoadSafetensors notices a
// flipped bit inside tensor data, which the format alone cannot.
const DataChecksumKey = "dimtorch_data_sha256"

// SaveSafetensors writes the named tensors and string metadata to path
// atomically (a temporary file renamed into place), so a crash never leaves a
// torn file. Tensors are stored in name order; the metadata gains
// DataChecksumKey.
func SaveSafetensors(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	_, err := SaveSafetensorsSum(path, tensors, metadata)
	return err
}

// FileSHA256 formats a whole file's checksum as SaveSafetensorsSum returns it
// and LoadSafetensorsChecked takes it.
func FileSHA256(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// SaveSafetensorsSum is SaveSafetensors that also returns the SHA-256 of the
// whole file written ("sha256:HEX"), for a manifest that LoadSafetensorsChecked
// verifies.
func SaveSafetensorsSum(path string, tensors map[string]*Tensor, metadata map[string]string) (string, error) {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		if n == "__metadata__" || n == "" {
			return "", fmt.Errorf("safetensors %s: invalid tensor name %q", path, n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{}
	blobs := make([][]byte, len(names))
	var off int64
	for i, n := range names {
		t := tensors[n]
		d := t.DType()
		code, ok := safeDTypes[d]
		if !ok {
			if err := t.Err(); err != nil {
				return "", fmt.Errorf("safetensors %s: tensor %q: %w", path, n, err)
			}
			return "", fmt.Errorf("safetensors %s: tensor %q has unsupported dtype %v", path, n, d)
		}
		b, err := t.Bytes()
		if err != nil {
			return "", fmt.Errorf("safetensors %s: tensor %q: %w", path, n, err)
		}
		blobs[i] = b
		header[n] = safeEntry{DType: code, Shape: t.Shape(), Offsets: [2]int64{off, off + int64(len(b))}}
		off += int64(len(b))
	}
	data := sha256.New()
	for _, b := range blobs {
		data.Write(b)
	}
	meta := map[string]string{DataChecksumKey: hex.EncodeToString(data.Sum(nil))}
	for k, v := range metadata {
		if k != DataChecksumKey {
			meta[k] = v
		}
	}
	header["__metadata__"] = meta
	hj, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("safetensors %s: %w", path, err)
	}
	// Pad the header with spaces to 8 bytes so the data is aligned.
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	file := sha256.New()
	err = atomicfile.Write(path, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriterSize(io.MultiWriter(w, file), 1<<20)
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(hj)))
		if _, err := bw.Write(n[:]); err != nil {
			return err
		}
		if _, err := bw.Write(hj); err != nil {
			return err
		}
		for _, b := range blobs {
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
	if err != nil {
		return "", err
	}
	return FileSHA256(file), nil
}

// LoadSafetensors reads every tensor and the metadata from path. Options place
// the tensors (a Device, a *Scope). A truncated or inconsistent file is an
// error naming the file and the problem; nothing is returned then.
func LoadSafetensors(path string, opts ...Option) (map[string]*Tensor, map[string]string, error) {
	return LoadSafetensorsChecked(path, "", opts...)
}

// LoadSafetensorsChecked is LoadSafetensors that first verifies the whole
// file against a checksum SaveSafetensorsSum returned ("sha256:HEX"; "" for
// none). Without that checksum, a file whose metadata records
// DataChecksumKey has its data bytes verified (the whole file's checksum
// covers them already). Either way the tensors must cover the data bytes exactly,
// without gaps, overlaps or trailing bytes (as the format's reference reader
// demands).
func LoadSafetensorsChecked(path, sum string, opts ...Option) (map[string]*Tensor, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	if sum != "" {
		h := sha256.New()
		h.Write(data)
		if got := FileSHA256(h); got != sum {
			return nil, nil, fmt.Errorf("safetensors %s: the file's checksum is %s, the checkpoint recorded %s: the file is damaged (a flipped bit, a partial copy) or was replaced", path, got, sum)
		}
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("safetensors %s: %s (the file is damaged or not a safetensors file)", path, fmt.Sprintf(format, args...))
	}
	if len(data) < 8 {
		return nil, nil, bad("file is %d bytes, shorter than the 8-byte header length", len(data))
	}
	hlen := binary.LittleEndian.Uint64(data[:8])
	if hlen > maxSafeHeader || hlen > uint64(len(data)-8) {
		return nil, nil, bad("header length %d exceeds the file size %d", hlen, len(data))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+hlen], &raw); err != nil {
		return nil, nil, bad("header is not valid JSON: %v", err)
	}
	body := data[8+hlen:]
	var meta map[string]string
	type span struct {
		name       string
		begin, end int64
	}
	var spans []span
	entries := map[string]safeEntry{}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, bad("metadata is not a map of strings: %v", err)
			}
			continue
		}
		var e safeEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, bad("entry %q: %v", name, err)
		}
		d, ok := safeDType(e.DType)
		if !ok {
			return nil, nil, bad("entry %q has unsupported dtype %q", name, e.DType)
		}
		n, err := numelOf(e.Shape)
		if err != nil {
			return nil, nil, bad("entry %q: %v", name, err)
		}
		b, end := e.Offsets[0], e.Offsets[1]
		if b < 0 || end < b || end > int64(len(body)) {
			return nil, nil, bad("entry %q: byte range [%d, %d) outside the %d data bytes (truncated?)", name, b, end, len(body))
		}
		if end-b != n*int64(d.ElemSize()) {
			return nil, nil, bad("entry %q: %d bytes do not hold shape %v of %s", name, end-b, e.Shape, e.DType)
		}
		entries[name] = e
		if end > b { // empty tensors occupy no bytes and cannot overlap
			spans = append(spans, span{name, b, end})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].begin < spans[j].begin })
	var covered int64
	for i, sp := range spans {
		if i > 0 && sp.begin < spans[i-1].end {
			return nil, nil, bad("entries %q and %q overlap", spans[i-1].name, sp.name)
		}
		if sp.begin > covered {
			return nil, nil, bad("data bytes [%d, %d) belong to no tensor", covered, sp.begin)
		}
		covered = sp.end
	}
	if covered != int64(len(body)) {
		return nil, nil, bad("%d data bytes after the last tensor belong to none (appended bytes?)", int64(len(body))-covered)
	}
	if want, ok := meta[DataChecksumKey]; ok && sum == "" { // a verified whole-file sum already covers the data
		h := sha256.Sum256(body)
		if got := hex.EncodeToString(h[:]); got != want {
			return nil, nil, bad("the tensor data's checksum is %s, the file records %s: some tensor's bytes are damaged", got, want)
		}
	}
	out := make(map[string]*Tensor, len(entries))
	for name, e := range entries {
		d, _ := safeDType(e.DType)
		t := FromBytes(body[e.Offsets[0]:e.Offsets[1]], d, e.Shape, opts...)
		if err := t.Err(); err != nil {
			for _, u := range out {
				u.Free()
			}
			return nil, nil, fmt.Errorf("safetensors %s: entry %q: %w", path, name, err)
		}
		out[name] = t
	}
	return out, meta, nil
}
