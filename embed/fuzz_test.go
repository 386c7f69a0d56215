package embed

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/onnxsum"
	"github.com/dimtorch/dimtorch/internal/testref"
	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"
)

// Open's signature check (checkSignature) sees a model the way onnxruntime
// reports it: its inputs (less the initializers) and outputs with their
// value types, element types and dimensions (-1 where not a fixed number).
// infosOf derives the same from the model's bytes in Go, so that the check
// can be fuzzed on any bytes without loading them into onnxruntime;
// TestInfosOfMatchesORT holds infosOf to what onnxruntime reports.

func infoOf(v *onnxpb.ValueInfoProto) ort.InputOutputInfo {
	i := ort.InputOutputInfo{Name: v.GetName(), OrtValueType: ort.ONNXTypeUnknown}
	switch t := v.GetType().GetValue().(type) {
	case *onnxpb.TypeProto_TensorType:
		i.OrtValueType = ort.ONNXTypeTensor
		i.DataType = ort.TensorElementDataType(t.TensorType.GetElemType())
		i.Dimensions = ort.Shape{}
		for _, d := range t.TensorType.GetShape().GetDim() {
			if dv, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
				i.Dimensions = append(i.Dimensions, dv.DimValue)
			} else {
				i.Dimensions = append(i.Dimensions, -1)
			}
		}
	case *onnxpb.TypeProto_SequenceType:
		i.OrtValueType = ort.ONNXTypeSequence
	case *onnxpb.TypeProto_MapType:
		i.OrtValueType = ort.ONNXTypeMap
	case *onnxpb.TypeProto_OptionalType:
		i.OrtValueType = ort.ONNXTypeOptional
	case *onnxpb.TypeProto_SparseTensorType:
		i.OrtValueType = ort.ONNXTypeSparseTensor
	}
	return i
}

func infosOf(m *onnxpb.ModelProto) (ins, outs []ort.InputOutputInfo) {
	g := m.GetGraph()
	init := map[string]bool{}
	for _, t := range g.GetInitializer() {
		init[t.GetName()] = true
	}
	for _, v := range g.GetInput() {
		if !init[v.GetName()] {
			ins = append(ins, infoOf(v))
		}
	}
	for _, v := range g.GetOutput() {
		outs = append(outs, infoOf(v))
	}
	return ins, outs
}

// tensorInfo is a float32 tensor's value info; a negative dimension is the
// symbolic "batch".
func tensorInfo(name string, elem onnxpb.TensorProto_DataType, dims ...int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		if d < 0 {
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}})
		} else {
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(elem)), Shape: shape}}}}
}

// flattenModel is a model that onnxruntime loads: in (the given value
// info) flattened to out.
func flattenModel(in, out *onnxpb.ValueInfoProto) *onnxpb.ModelProto {
	return &onnxpb.ModelProto{
		IrVersion:   proto.Int64(int64(onnxpb.Version_IR_VERSION_2020_5_8)),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("fuzz"),
			Node: []*onnxpb.NodeProto{{OpType: proto.String("Flatten"), Name: proto.String("flatten"),
				Input: []string{in.GetName()}, Output: []string{out.GetName()}}},
			Input:  []*onnxpb.ValueInfoProto{in},
			Output: []*onnxpb.ValueInfoProto{out},
		},
	}
}

const f32 = onnxpb.TensorProto_FLOAT

// signatureSeed is a model for the corpus and for TestOpenChecksSignature;
// exact when onnxruntime reports its inputs and outputs as declared (its
// shape inference refines some declared shapes).
type signatureSeed struct {
	name  string
	model *onnxpb.ModelProto
	exact bool
	opens bool // Open takes it: 1x8x8 images to 64 values
}

// signatureSeeds are models for the check; the first is valid.
func signatureSeeds() []signatureSeed {
	seq := &onnxpb.ValueInfoProto{Name: proto.String("y"), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_SequenceType{
		SequenceType: &onnxpb.TypeProto_Sequence{ElemType: tensorInfo("", f32, -1, 64).Type}}}}
	noShape := &onnxpb.ValueInfoProto{Name: proto.String("y"), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(f32))}}}}
	image := tensorInfo("image", f32, -1, 1, 8, 8)
	return []signatureSeed{
		{"valid", flattenModel(image, tensorInfo("y", f32, -1, 64)), true, true},
		{"scalar output", flattenModel(image, tensorInfo("y", f32)), true, false},
		{"no output shape", flattenModel(image, noShape), false, true},
		{"dynamic output", flattenModel(image, tensorInfo("y", f32, -1, -1)), false, true},
		{"int64", flattenModel(tensorInfo("image", onnxpb.TensorProto_INT64, -1, 1, 8, 8), tensorInfo("y", onnxpb.TensorProto_INT64, -1, 64)), true, false},
		{"dynamic input", flattenModel(tensorInfo("image", f32, -1, 1, -1, 8), tensorInfo("y", f32, -1, -1)), false, false},
		{"huge", flattenModel(tensorInfo("image", f32, -1, 1<<40, 1<<40, 1<<40), tensorInfo("y", f32, -1, 1<<62, 4)), false, false},
		{"sequence output", flattenModel(image, seq), false, false},
		{"other output", flattenModel(image, tensorInfo("z", f32, -1, 64)), true, false},
	}
}

// sealedSeed is the valid seed model with its checksum recorded.
func sealedSeed(tb testing.TB) []byte {
	m := proto.Clone(signatureSeeds()[0].model).(*onnxpb.ModelProto)
	if err := onnxsum.Seal(m); err != nil {
		tb.Fatal(err)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// damagedSeed is a sealed model with its graph's name changed after the
// checksum was taken.
func damagedSeed(sealed []byte) []byte {
	return bytes.Replace(sealed, []byte("fuzz"), []byte("fuzZ"), 1)
}

// FuzzSignature: any bytes through onnxsum.Verify (Open's checksum check;
// a model it parses, sealed again, must verify), then parsed as an ONNX
// model and given to checkSignature, asking for output "y" and for each output's name. It
// never panics; what it accepts has one input, fixed positive channels and
// size, and a fixed positive output size, none of them overflowing.
func FuzzSignature(f *testing.F) {
	for _, seed := range signatureSeeds() {
		b, err := proto.Marshal(seed.model)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	valid, _ := proto.Marshal(signatureSeeds()[0].model)
	f.Add(valid[:len(valid)/2])
	f.Add(append([]byte{0xff, 0xff}, valid[2:]...))
	sealed := sealedSeed(f)
	f.Add(sealed)
	f.Add(damagedSeed(sealed))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Open's first look at the bytes: the recorded checksum, if any.
		_, verr := onnxsum.Verify(b)
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(b, &m); err != nil {
			if verr == nil {
				t.Fatal("onnxsum.Verify took bytes that do not parse")
			}
			return
		}
		// Sealed again, the model verifies.
		if err := onnxsum.Seal(&m); err != nil {
			t.Fatal(err)
		}
		sealed, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := onnxsum.Verify(sealed); !ok || err != nil {
			t.Fatalf("a freshly sealed model: sealed %v, %v", ok, err)
		}
		ins, outs := infosOf(&m)
		names := []string{"y"}
		for _, o := range outs {
			names = append(names, o.Name)
		}
		for _, name := range names {
			s, err := checkSignature(ins, outs, name)
			if err != nil {
				if err.Error() == "" {
					t.Fatal("an empty error")
				}
				continue
			}
			if len(ins) != 1 || s.input != ins[0].Name {
				t.Fatalf("accepted input %q of %d", s.input, len(ins))
			}
			if s.c <= 0 || s.h <= 0 || s.w <= 0 || s.c > maxValues/s.h || s.c*s.h > maxValues/s.w {
				t.Fatalf("accepted an input of %dx%dx%d", s.c, s.h, s.w)
			}
			if s.dim <= 0 || s.dim > maxValues {
				t.Fatalf("accepted an output of %d values per image", s.dim)
			}
		}
	})
}

// Open takes the seed models marked opens (onnxruntime's shape inference
// fixes the output's size that some leave open) and refuses every other
// one with an error (a scalar output used to panic it); onnxruntime describes the
// seeds marked exact as infosOf does.
func TestOpenChecksSignature(t *testing.T) {
	testref.NeedORT(t)
	dir := t.TempDir()
	for _, seed := range signatureSeeds() {
		b, err := proto.Marshal(seed.model)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, strings.ReplaceAll(seed.name, " ", "_")+".onnx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Open(p, Options{})
		if seed.opens {
			if err != nil {
				t.Fatalf("%s: %v", seed.name, err)
			}
			if c, h, w := m.InputShape(); c != 1 || h != 8 || w != 8 || m.Dim() != 64 {
				t.Errorf("%s: %dx%dx%d -> %d", seed.name, c, h, w, m.Dim())
			}
			m.Close()
		} else if err == nil {
			m.Close()
			t.Errorf("%s: opened", seed.name)
		}
		if !seed.exact {
			continue
		}
		ins, outs, err := ort.GetInputOutputInfoWithONNXData(b)
		if err != nil {
			t.Fatalf("%s: %v", seed.name, err)
		}
		gins, gouts := infosOf(seed.model)
		if fmt.Sprint(ins, outs) != fmt.Sprint(gins, gouts) || !reflect.DeepEqual(dims(ins), dims(gins)) || !reflect.DeepEqual(dims(outs), dims(gouts)) {
			t.Errorf("%s: onnxruntime reports %v %v, infosOf %v %v", seed.name, ins, outs, gins, gouts)
		}
	}
}

func dims(infos []ort.InputOutputInfo) [][]int64 {
	var out [][]int64
	for _, i := range infos {
		out = append(out, append([]int64{}, i.Dimensions...))
	}
	return out
}
