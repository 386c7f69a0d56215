// Package onnxsum is the checksum dimtorch records in the ONNX models it
// exports (export.Write) and verifies when it loads one (embed.Open): the
// SHA-256 of the graph's deterministic serialisation (nodes, weights, inputs
// and outputs), kept in the model's metadata, so that a flipped bit in a
// weight is an error naming the file instead of wrong embeddings computed in
// silence. The metadata entries that decide what a model computes from an
// image (Covered: the preprocessing record) have their own checksum beside
// it, since the graph's does not cover the metadata. It depends on the
// generated ONNX types only, not on libtorch.
package onnxsum

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/preproc"
	"google.golang.org/protobuf/proto"
)

// Key is the metadata entry holding the checksum.
const Key = "dimtorch_graph_sha256"

// MetadataKey is the metadata entry holding the checksum of the Covered
// entries, recorded when the model has any of them.
const MetadataKey = "dimtorch_metadata_sha256"

// Covered are the metadata entries that MetadataKey's checksum covers: the
// preprocessing record (package preproc), which decides the model's input.
var Covered = []string{preproc.Key}

// Metadata is the SHA-256 (hex) of the Covered entries of props (each
// occurrence, in Covered's order, as length-prefixed key and value), and
// whether there was any.
func Metadata(props []*onnxpb.StringStringEntryProto) (string, bool) {
	h := sha256.New()
	found := false
	for _, k := range Covered {
		for _, p := range props {
			if p.GetKey() == k {
				found = true
				fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(p.GetValue()), p.GetValue())
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), found
}

// Graph is the SHA-256 (hex) of the graph's deterministic serialisation.
func Graph(g *onnxpb.GraphProto) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(g)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// Seal sets the model's checksum entries (replacing older ones): the
// graph's, and the Covered metadata's when there is any.
func Seal(m *onnxpb.ModelProto) error {
	sum, err := Graph(m.GetGraph())
	if err != nil {
		return err
	}
	props := m.MetadataProps[:0:0]
	for _, p := range m.MetadataProps {
		if p.GetKey() != Key && p.GetKey() != MetadataKey {
			props = append(props, p)
		}
	}
	props = append(props, &onnxpb.StringStringEntryProto{Key: proto.String(Key), Value: proto.String(sum)})
	if msum, ok := Metadata(props); ok {
		props = append(props, &onnxpb.StringStringEntryProto{Key: proto.String(MetadataKey), Value: proto.String(msum)})
	}
	m.MetadataProps = props
	return nil
}

// ErrNotONNX reports bytes that do not parse as an ONNX model.
var ErrNotONNX = errors.New("not a readable ONNX model")

// Verify checks a serialised model against the checksums it records. A
// model without the graph's (exported before dimtorch recorded it, or by
// another program) passes with sealed false; one without the metadata's
// (exported before dimtorch recorded it) passes on the graph's alone.
func Verify(model []byte) (sealed bool, err error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return false, fmt.Errorf("%w: %v", ErrNotONNX, err)
	}
	graphChecked, metaChecked := false, false
	for _, p := range m.MetadataProps {
		switch {
		case p.GetKey() == Key && !graphChecked:
			graphChecked = true
			got, err := Graph(m.GetGraph())
			if err != nil {
				return true, err
			}
			if got != p.GetValue() {
				return true, fmt.Errorf("the graph's checksum is %s, the model records %s: the file is damaged (a flipped bit, a partial copy)", got, p.GetValue())
			}
		case p.GetKey() == MetadataKey && !metaChecked:
			metaChecked = true
			if got, _ := Metadata(m.MetadataProps); got != p.GetValue() {
				return true, fmt.Errorf("the checksum of the metadata %v is %s, the model records %s: the file is damaged (a flipped bit, a partial copy) or the entries were edited",
					Covered, got, p.GetValue())
			}
		}
	}
	return graphChecked, nil
}
