// Package onnxsum is the checksum dimtorch records in the ONNX models it
// exports (export.Write) and verifies when it loads one (embed.Open): the
// SHA-256 of the graph's deterministic serialisation (nodes, weights, inputs
// and outputs), kept in the model's metadata, so that a flipped bit in a
// weight is an error naming the file instead of wrong embeddings computed in
// silence. It depends on the generated ONNX types only, not on libtorch.
package onnxsum

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Key is the metadata entry holding the checksum.
const Key = "dimtorch_graph_sha256"

// Graph is the SHA-256 (hex) of the graph's deterministic serialisation.
func Graph(g *onnxpb.GraphProto) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(g)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// Seal sets the model's checksum entry (replacing an older one).
func Seal(m *onnxpb.ModelProto) error {
	sum, err := Graph(m.GetGraph())
	if err != nil {
		return err
	}
	props := m.MetadataProps[:0:0]
	for _, p := range m.MetadataProps {
		if p.GetKey() != Key {
			props = append(props, p)
		}
	}
	m.MetadataProps = append(props, &onnxpb.StringStringEntryProto{Key: proto.String(Key), Value: proto.String(sum)})
	return nil
}

// ErrNotONNX reports bytes that do not parse as an ONNX model.
var ErrNotONNX = errors.New("not a readable ONNX model")

// Verify checks a serialised model against the checksum it records. A model
// without one (exported before dimtorch recorded it, or by another program)
// passes with sealed false.
func Verify(model []byte) (sealed bool, err error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return false, fmt.Errorf("%w: %v", ErrNotONNX, err)
	}
	for _, p := range m.MetadataProps {
		if p.GetKey() != Key {
			continue
		}
		got, err := Graph(m.GetGraph())
		if err != nil {
			return true, err
		}
		if got != p.GetValue() {
			return true, fmt.Errorf("the graph's checksum is %s, the model records %s: the file is damaged (a flipped bit, a partial copy)", got, p.GetValue())
		}
		return true, nil
	}
	return false, nil
}
