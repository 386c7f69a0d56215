// Package export writes trained encoders as ONNX models: float32 NCHW input
// in [0, 1] with a dynamic batch, the normalisation to [-1, 1] inside the
// graph, evaluation-mode BatchNorm, and the taps y (default), fc, conv and
// local as outputs. Each model records how to feed it (metadata
// dimtorch.preprocessing, package internal/preproc: input size and channels,
// resize steps, value range), which package embed follows. Models are built with the protobuf types generated from
// onnx.proto (package onnxpb) and use common operators of opset 13 with
// their optional shape attributes written out, so that other runtimes load
// them too.
package export

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/internal/onnxsum"
	"github.com/dimtorch/dimtorch/internal/preproc"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"google.golang.org/protobuf/proto"
)

// Opset is the ONNX operator set the exporter targets.
const Opset = 13

// Options configure an export.
type Options struct {
	// Outputs are the taps to expose, in order (default: y).
	Outputs []string
	// Metadata is written into the model's metadata_props (dimtorch's
	// version, the encoder, the training configuration, ...). The entries
	// written by the exporter ("data", dimtorch.preprocessing, the
	// checksums) may not be among them.
	Metadata map[string]string
	// Data names the data the encoder was trained on (train.Config.Data:
	// "fashion-mnist", "stl10", "folder:PATH", ...; "" when unknown). It is
	// recorded as the "data" entry, and it decides the preprocessing
	// recorded (Preprocessing): STL-10 and folder models take their images
	// resized to 64 x 64 first, as in training.
	Data string
	// ProducerVersion is recorded as the model's producer_version.
	ProducerVersion string
}

type builder struct {
	graph *onnxpb.GraphProto
	n     int
}

func (b *builder) name(prefix string) string {
	b.n++
	return fmt.Sprintf("%s_%d", prefix, b.n)
}

func (b *builder) node(op string, inputs []string, attrs ...*onnxpb.AttributeProto) string {
	out := b.name(op)
	b.graph.Node = append(b.graph.Node, &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(out), Input: inputs, Output: []string{out}, Attribute: attrs})
	return out
}

func ints(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func floatAttr(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// initFloat adds a float32 initializer from a tensor.
func (b *builder) initFloat(prefix string, t *torch.Tensor) (string, error) {
	v, err := t.Detach().To(torch.Float32, torch.CPU).Float32s()
	if err != nil {
		return "", err
	}
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	name := b.name(prefix)
	b.graph.Initializer = append(b.graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: t.Shape(), RawData: raw})
	return name, nil
}

func (b *builder) initInts(prefix string, v ...int64) string {
	name := b.name(prefix)
	b.graph.Initializer = append(b.graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(v))}, Int64Data: v})
	return name
}

func (b *builder) initScalar(prefix string, v float32) string {
	name := b.name(prefix)
	b.graph.Initializer = append(b.graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{v}})
	return name
}

func valueInfo(name string, dims []int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for i, d := range dims {
		if i == 0 {
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}})
			continue
		}
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Shape: shape}}}}
}

// Model builds the ONNX model of an encoder (which must be in evaluation mode
// and implement models.Describer).
func Model(enc models.Encoder, o Options) (*onnxpb.ModelProto, error) {
	d, ok := enc.(models.Describer)
	if !ok {
		return nil, fmt.Errorf("encoder %s cannot describe its graph", enc.Spec().Name)
	}
	g, err := d.Graph()
	if err != nil {
		return nil, err
	}
	if len(o.Outputs) == 0 {
		o.Outputs = []string{"y"}
	}
	spec := enc.Spec()
	b := &builder{graph: &onnxpb.GraphProto{Name: proto.String("dimtorch_" + spec.Name)}}
	in := spec.Input
	b.graph.Input = []*onnxpb.ValueInfoProto{valueInfo("image", []int64{-1, int64(in[0]), int64(in[1]), int64(in[2])})}
	// Inputs in [0, 1] become [-1, 1], as in training (preproc.InGraph).
	vals := map[string]string{}
	vals[g.Input] = b.node("Sub", []string{b.node("Mul", []string{"image", b.initScalar("two", 2)}), b.initScalar("one", 1)})
	nodes, free := foldBatchNorm(g)
	defer free()
	for _, n := range nodes {
		ins := make([]string, len(n.Inputs))
		for i, v := range n.Inputs {
			ins[i] = vals[v]
		}
		out, err := b.convert(n, ins)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Output, err)
		}
		vals[n.Output] = out
	}
	for _, tap := range o.Outputs {
		v, ok := g.Outputs[tap]
		if !ok {
			return nil, fmt.Errorf("unknown output %q (want y, fc, conv or local)", tap)
		}
		b.graph.Node = append(b.graph.Node, &onnxpb.NodeProto{OpType: proto.String("Identity"), Name: proto.String("output_" + tap), Input: []string{vals[v]}, Output: []string{tap}})
		var dims []int64
		switch tap {
		case "y":
			dims = []int64{-1, int64(spec.Y)}
		case "fc":
			dims = []int64{-1, int64(spec.FC)}
		case "conv":
			dims = []int64{-1, int64(spec.Conv[0]), int64(spec.Conv[1]), int64(spec.Conv[2])}
		case "local":
			dims = []int64{-1, int64(spec.Local[0]), int64(spec.Local[1]), int64(spec.Local[2])}
		}
		b.graph.Output = append(b.graph.Output, valueInfo(tap, dims))
	}
	m := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(int64(onnxpb.Version_IR_VERSION_2020_5_8)), // IR 7, the version that opset 13 shipped with
		ProducerName:    proto.String("dimtorch"),
		ProducerVersion: proto.String(o.ProducerVersion),
		Domain:          proto.String("org.dimtorch"),
		ModelVersion:    proto.Int64(1),
		DocString:       proto.String(fmt.Sprintf("Deep InfoMax encoder %s: float32 NCHW images in [0, 1] -> %v", spec.Name, o.Outputs)),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		Graph:           b.graph,
	}
	meta := make(map[string]string, len(o.Metadata)+2)
	for k, v := range o.Metadata {
		if k == preproc.Key || k == onnxsum.Key || k == onnxsum.MetadataKey || k == "data" {
			return nil, fmt.Errorf("metadata %q is written by the exporter (use Options.Data for the data)", k)
		}
		meta[k] = v
	}
	// Images are made for 1- and 3-channel models; others take their
	// values from the caller and record no preprocessing.
	if p := Preprocessing(o.Data, in); p.Channels == 1 || p.Channels == 3 {
		v, err := p.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encoder %s: %w", spec.Name, err)
		}
		meta[preproc.Key] = v
	}
	if o.Data != "" {
		meta["data"] = o.Data
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(meta[k])})
	}
	return m, nil
}

// Preprocessing is how an exported model of input (channels, height,
// width) trained on data takes images, as Model records it under the
// metadata key dimtorch.preprocessing: the data's size first for STL-10 and
// folders (64 x 64), then the input's, bilinearly; values in [0, 1], which
// the graph maps to the [-1, 1] the encoder was trained on.
func Preprocessing(data string, input [3]int) preproc.Spec {
	return preproc.For(data, input[0], input[1], input[2])
}

// InputValues returns a batch of images as the loader makes them (NCHW in
// [-1, 1], datasets.Normalize) as an exported model takes them: float32
// values in [0, 1], (x + 1) / 2, the inverse of the graph's first nodes.
func InputValues(x *torch.Tensor) ([]float32, error) {
	return x.AddScalar(1).DivScalar(2).Float32s()
}

// foldBatchNorm merges each evaluation-mode BatchNorm into the convolution
// or linear layer that feeds it (when nothing else reads that layer's
// output): W' = W * s and b' = (b - mean) * s + beta per output channel, with
// s = gamma / sqrt(var + eps). The graph keeps the same function with fewer
// operators, as PyTorch's own exporter does. free releases the new weights.
func foldBatchNorm(g *models.Graph) ([]models.Node, func()) {
	readers := map[string]int{}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			readers[in]++
		}
	}
	for _, v := range g.Outputs {
		readers[v]++
	}
	var made []*torch.Tensor
	free := func() {
		for _, t := range made {
			t.Free()
		}
	}
	var out []models.Node
	for i := 0; i < len(g.Nodes); i++ {
		n := g.Nodes[i]
		if i+1 < len(g.Nodes) && (n.Op == "conv" || n.Op == "linear") {
			bn := g.Nodes[i+1]
			if bn.Op == "batchnorm" && bn.Inputs[0] == n.Output && readers[n.Output] == 1 && bn.Params["weight"] != nil {
				var w, bias *torch.Tensor
				torch.NoGrad(func() {
					s := torch.NewScope()
					defer s.Close()
					scale := bn.Params["weight"].Ref(s).Div(bn.Params["running_var"].Ref(s).AddScalar(bn.Floats["eps"]).Sqrt())
					shape := []int64{-1, 1}
					if n.Op == "conv" {
						shape = []int64{-1, 1, 1, 1}
					}
					w = n.Params["weight"].Ref(s).Mul(scale.Reshape(shape...)).MoveTo(nil)
					b0 := bn.Params["running_mean"].Ref(s).Neg()
					if cb := n.Params["bias"]; cb != nil {
						b0 = b0.Add(cb.Ref(s))
					}
					bias = b0.Mul(scale).Add(bn.Params["bias"].Ref(s)).MoveTo(nil)
				})
				made = append(made, w, bias)
				fused := n
				fused.Params = map[string]*torch.Tensor{"weight": w, "bias": bias}
				fused.Output = bn.Output
				out = append(out, fused)
				i++
				continue
			}
		}
		out = append(out, n)
	}
	return out, free
}

func (b *builder) convert(n models.Node, in []string) (string, error) {
	p, is := n.Params, n.Ints
	weights := func(names ...string) ([]string, error) {
		out := append([]string(nil), in...)
		for _, k := range names {
			t, ok := p[k]
			if !ok || t == nil {
				continue
			}
			name, err := b.initFloat(k, t)
			if err != nil {
				return nil, err
			}
			out = append(out, name)
		}
		return out, nil
	}
	switch n.Op {
	case "conv":
		w := p["weight"].Shape()
		args, err := weights("weight", "bias")
		if err != nil {
			return "", err
		}
		pad := is["padding"]
		return b.node("Conv", args, ints("kernel_shape", w[2], w[3]), ints("strides", is["stride"], is["stride"]),
			ints("pads", pad, pad, pad, pad), ints("dilations", is["dilation"], is["dilation"]), intAttr("group", is["groups"])), nil
	case "batchnorm":
		args, err := weights("weight", "bias", "running_mean", "running_var")
		if err != nil {
			return "", err
		}
		if len(args) != 5 {
			return "", fmt.Errorf("BatchNorm without affine parameters is not exported")
		}
		return b.node("BatchNormalization", args, floatAttr("epsilon", float32(n.Floats["eps"])), floatAttr("momentum", 0.9)), nil
	case "relu":
		return b.node("Relu", in), nil
	case "maxpool":
		k, s, pd := is["kernel"], is["stride"], is["padding"]
		return b.node("MaxPool", in, ints("kernel_shape", k, k), ints("strides", s, s), ints("pads", pd, pd, pd, pd),
			ints("dilations", 1, 1), intAttr("ceil_mode", 0), intAttr("storage_order", 0)), nil
	case "avgpool":
		k, s, pd := is["kernel"], is["stride"], is["padding"]
		return b.node("AveragePool", in, ints("kernel_shape", k, k), ints("strides", s, s), ints("pads", pd, pd, pd, pd),
			intAttr("ceil_mode", 0), intAttr("count_include_pad", 1)), nil
	case "gap":
		return b.node("GlobalAveragePool", in), nil
	case "flatten":
		return b.node("Flatten", in, intAttr("axis", 1)), nil
	case "linear":
		args, err := weights("weight", "bias")
		if err != nil {
			return "", err
		}
		return b.node("Gemm", args, floatAttr("alpha", 1), floatAttr("beta", 1), intAttr("transA", 0), intAttr("transB", 1)), nil
	case "add":
		return b.node("Add", in), nil
	case "crops":
		c, s, g := is["crop"], is["stride"], is["grid"]
		axes := b.initInts("axes", 2, 3)
		one := b.initInts("axis1", 1)
		var parts []string
		for i := int64(0); i < g; i++ {
			for j := int64(0); j < g; j++ {
				starts := b.initInts("starts", i*s, j*s)
				ends := b.initInts("ends", i*s+c, j*s+c)
				sl := b.node("Slice", []string{in[0], starts, ends, axes})
				parts = append(parts, b.node("Unsqueeze", []string{sl, one}))
			}
		}
		cat := b.node("Concat", parts, intAttr("axis", 1)) // [N, g*g, C, c, c]
		return b.node("Reshape", []string{cat, b.initInts("shape", -1, is["channels"], c, c)}), nil
	case "foldback":
		g := is["grid"]
		r := b.node("Reshape", []string{in[0], b.initInts("shape", -1, g, g, is["channels"])})
		return b.node("Transpose", []string{r}, ints("perm", 0, 3, 1, 2)), nil
	case "globals":
		r := b.node("Reshape", []string{in[0], b.initInts("shape", 0, 0, -1)})
		return b.node("Transpose", []string{r}, ints("perm", 0, 2, 1)), nil
	case "meanglobals":
		return b.node("ReduceMean", in, ints("axes", 1), intAttr("keepdims", 0)), nil
	case "padchannels":
		return b.node("Pad", []string{in[0], b.initInts("pads", 0, 0, 0, 0, 0, is["channels"], 0, 0)}), nil // mode: constant, value 0
	}
	return "", fmt.Errorf("no ONNX translation for %q", n.Op)
}

// Write serialises the model to path atomically, recording the checksums
// of its graph and of its preprocessing record in its metadata
// (internal/onnxsum), which embed.Open verifies.
func Write(path string, m *onnxpb.ModelProto) error {
	if err := onnxsum.Seal(m); err != nil {
		return err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}
