package onnxsum

import (
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/preproc"
	"google.golang.org/protobuf/proto"
)

func model(props map[string]string) *onnxpb.ModelProto {
	m := &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{Name: proto.String("g"),
		Node: []*onnxpb.NodeProto{{OpType: proto.String("Relu"), Input: []string{"x"}, Output: []string{"y"}}}}}
	for _, k := range []string{"data", preproc.Key} {
		if v, ok := props[k]; ok {
			m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(v)})
		}
	}
	return m
}

func marshal(t *testing.T, m *onnxpb.ModelProto) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func entry(m *onnxpb.ModelProto, key string) *onnxpb.StringStringEntryProto {
	for _, p := range m.MetadataProps {
		if p.GetKey() == key {
			return p
		}
	}
	return nil
}

// The preprocessing record is covered by its own checksum: an edit or a
// removal of it is refused, the graph's checksum alone still verifies
// models sealed before the record existed, and sealing twice keeps one of
// each entry.
func TestMetadataChecksum(t *testing.T) {
	rec, _ := preproc.For("stl10", 3, 32, 32).Marshal()
	m := model(map[string]string{"data": "stl10", preproc.Key: rec})
	if err := Seal(m); err != nil {
		t.Fatal(err)
	}
	if err := Seal(m); err != nil {
		t.Fatal(err)
	}
	if len(m.MetadataProps) != 4 || entry(m, Key) == nil || entry(m, MetadataKey) == nil {
		t.Fatalf("sealed twice: %v", m.MetadataProps)
	}
	if sealed, err := Verify(marshal(t, m)); !sealed || err != nil {
		t.Fatalf("sealed: %v %v", sealed, err)
	}
	edited := proto.Clone(m).(*onnxpb.ModelProto)
	entry(edited, preproc.Key).Value = proto.String(strings.Replace(rec, `"height":64`, `"height":66`, 1))
	if _, err := Verify(marshal(t, edited)); err == nil || !strings.Contains(err.Error(), "checksum of the metadata") {
		t.Fatalf("an edited record: %v", err)
	}
	removed := proto.Clone(m).(*onnxpb.ModelProto)
	removed.MetadataProps = nil
	for _, p := range m.MetadataProps {
		if p.GetKey() != preproc.Key {
			removed.MetadataProps = append(removed.MetadataProps, p)
		}
	}
	if _, err := Verify(marshal(t, removed)); err == nil {
		t.Fatal("a removed record verified")
	}
	// Other metadata is not covered.
	other := proto.Clone(m).(*onnxpb.ModelProto)
	entry(other, "data").Value = proto.String("cifar10")
	if _, err := Verify(marshal(t, other)); err != nil {
		t.Fatalf("another entry edited: %v", err)
	}
	// Sealed before the record existed: the graph's checksum only.
	old := model(map[string]string{"data": "stl10"})
	if err := Seal(old); err != nil {
		t.Fatal(err)
	}
	if entry(old, MetadataKey) != nil {
		t.Fatal("a metadata checksum without a covered entry")
	}
	if sealed, err := Verify(marshal(t, old)); !sealed || err != nil {
		t.Fatalf("graph only: %v %v", sealed, err)
	}
	entry(old, "data").Value = proto.String("x")
	old.Graph.Name = proto.String("h")
	if _, err := Verify(marshal(t, old)); err == nil || !strings.Contains(err.Error(), "graph's checksum") {
		t.Fatalf("a changed graph: %v", err)
	}
	// Never sealed: passes, unsealed.
	if sealed, err := Verify(marshal(t, model(map[string]string{preproc.Key: rec}))); sealed || err != nil {
		t.Fatalf("unsealed: %v %v", sealed, err)
	}
}
