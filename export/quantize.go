package export

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"google.golang.org/protobuf/proto"
)

// Static int8 quantisation in the QDQ format, the form onnxruntime's x86
// kernels fuse into integer convolutions and matrix products (QLinearConv,
// QGemm, with VNNI/AMX where the CPU has them):
//
//   - weights of Conv and Gemm become int8 initializers, symmetric, one scale
//     per output channel, read through DequantizeLinear (axis 0); biases
//     become int32 with the scale input scale x weight scale, as the integer
//     kernels accumulate;
//   - every activation that a Conv, Gemm, pooling, Add or data-movement
//     operator reads goes through QuantizeLinear -> DequantizeLinear as
//     uint8, asymmetric, with the range measured on calibration images
//     (always including 0, so a ReLU's output has zero point 0 and
//     onnxruntime folds the ReLU into the preceding convolution);
//     data-movement operators (Flatten, Reshape, Transpose, Slice,
//     Unsqueeze, MaxPool) keep their input's scale, so that onnxruntime can
//     drop their Q/DQ pairs;
//   - BatchNorm is already folded into the convolutions by Model.
//
// The graph's outputs stay float32.

// quantizedInputs are the operators whose activation inputs are quantised.
var quantizedInputs = map[string]bool{
	"Conv": true, "Gemm": true, "MaxPool": true, "AveragePool": true, "GlobalAveragePool": true, "Add": true,
	"Concat": true, "Flatten": true, "Reshape": true, "Transpose": true, "Slice": true, "Unsqueeze": true,
}

// sameScale are the operators whose output keeps the input's scale.
var sameScale = map[string]bool{
	"Flatten": true, "Reshape": true, "Transpose": true, "Slice": true, "Unsqueeze": true, "MaxPool": true,
}

// activationInputs returns, for each node, which of its inputs are
// activations to quantise (by position): the first for Conv and Gemm (the
// others are weights), every non-initializer input otherwise.
func activationInputs(g *onnxpb.GraphProto, n *onnxpb.NodeProto) []int {
	if !quantizedInputs[n.GetOpType()] {
		return nil
	}
	inits := initializerSet(g)
	var out []int
	for i, in := range n.Input {
		if in == "" || inits[in] {
			continue
		}
		if (n.GetOpType() == "Conv" || n.GetOpType() == "Gemm") && i > 0 {
			continue
		}
		out = append(out, i)
	}
	return out
}

func initializerSet(g *onnxpb.GraphProto) map[string]bool {
	s := map[string]bool{}
	for _, t := range g.Initializer {
		s[t.GetName()] = true
	}
	return s
}

// CalibrationValues lists the values of a float model (from Model) whose
// ranges Quantize needs, in graph order.
func CalibrationValues(m *onnxpb.ModelProto) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range m.Graph.Node {
		for _, i := range activationInputs(m.Graph, n) {
			if v := n.Input[i]; !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// WithOutputs returns a copy of m that also outputs the given values (for
// measuring their ranges on calibration images).
func WithOutputs(m *onnxpb.ModelProto, values []string) *onnxpb.ModelProto {
	c := proto.Clone(m).(*onnxpb.ModelProto)
	for _, v := range values {
		c.Graph.Output = append(c.Graph.Output, &onnxpb.ValueInfoProto{Name: proto.String(v), Type: &onnxpb.TypeProto{
			Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}}}})
	}
	return c
}

// Range is the smallest and largest value seen of one activation.
type Range struct{ Min, Max float32 }

// uint8Params returns the scale and zero point that cover r (and 0).
func uint8Params(r Range) (float32, uint8) {
	lo, hi := math.Min(float64(r.Min), 0), math.Max(float64(r.Max), 0)
	if hi-lo < 1e-12 {
		return 1, 0
	}
	s := (hi - lo) / 255
	zp := math.Round(-lo / s)
	return float32(s), uint8(math.Max(0, math.Min(255, zp)))
}

// Quantize returns the QDQ int8 form of a float model made by Model, with
// activation ranges measured on calibration images (CalibrationValues,
// WithOutputs). calibration describes them for the model's metadata.
func Quantize(m *onnxpb.ModelProto, ranges map[string]Range, calibration string) (*onnxpb.ModelProto, error) {
	q := proto.Clone(m).(*onnxpb.ModelProto)
	g := q.Graph
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range g.Initializer {
		inits[t.GetName()] = t
	}
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range g.Node {
		for _, o := range n.Output {
			producer[o] = n
		}
	}
	// Scales: measured, or inherited through data-movement operators.
	type qp struct {
		scale float32
		zp    uint8
	}
	params := map[string]qp{}
	var paramsOf func(v string, depth int) (qp, error)
	paramsOf = func(v string, depth int) (qp, error) {
		if p, ok := params[v]; ok {
			return p, nil
		}
		if p := producer[v]; p != nil && sameScale[p.GetOpType()] && depth < 64 {
			if in := p.Input[0]; in != "" {
				if _, measured := ranges[in]; measured || producer[in] != nil {
					pp, err := paramsOf(in, depth+1)
					if err == nil {
						params[v] = pp
						return pp, nil
					}
				}
			}
		}
		r, ok := ranges[v]
		if !ok {
			return qp{}, fmt.Errorf("no calibration range for %s", v)
		}
		s, zp := uint8Params(r)
		params[v] = qp{s, zp}
		return params[v], nil
	}
	b := &builder{graph: g, n: len(g.Node) + len(g.Initializer)}
	dq := map[string]string{} // activation -> its Q/DQ'd copy
	var nodes []*onnxpb.NodeProto
	emit := func(n *onnxpb.NodeProto) { nodes = append(nodes, n) }
	qdq := func(v string) (string, error) {
		if out, ok := dq[v]; ok {
			return out, nil
		}
		p, err := paramsOf(v, 0)
		if err != nil {
			return "", err
		}
		scale := b.initScalar("act_scale", p.scale)
		zp := b.name("act_zero_point")
		g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(zp), DataType: proto.Int32(int32(onnxpb.TensorProto_UINT8)), RawData: []byte{p.zp}})
		qn := b.name("QuantizeLinear")
		emit(&onnxpb.NodeProto{OpType: proto.String("QuantizeLinear"), Name: proto.String(qn), Input: []string{v, scale, zp}, Output: []string{qn}})
		dn := b.name("DequantizeLinear")
		emit(&onnxpb.NodeProto{OpType: proto.String("DequantizeLinear"), Name: proto.String(dn), Input: []string{qn, scale, zp}, Output: []string{dn}})
		dq[v] = dn
		return dn, nil
	}
	for _, n := range g.Node {
		for _, i := range activationInputs(g, n) {
			v, err := qdq(n.Input[i])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n.GetName(), err)
			}
			n.Input[i] = v
		}
		if op := n.GetOpType(); (op == "Conv" || op == "Gemm") && len(n.Input) >= 2 {
			w := inits[n.Input[1]]
			if w == nil {
				return nil, fmt.Errorf("%s: the weight is not an initializer", n.GetName())
			}
			in, err := paramsOf(dqSource(dq, n.Input[0]), 0)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n.GetName(), err)
			}
			wq, scales, err := b.quantizeWeight(w, emit)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n.GetName(), err)
			}
			n.Input[1] = wq
			if len(n.Input) >= 3 && n.Input[2] != "" {
				bias := inits[n.Input[2]]
				if bias == nil {
					return nil, fmt.Errorf("%s: the bias is not an initializer", n.GetName())
				}
				bq, err := b.quantizeBias(bias, in.scale, scales, emit)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", n.GetName(), err)
				}
				n.Input[2] = bq
			}
		}
		emit(n)
	}
	g.Node = nodes
	pruneInitializers(g)
	q.MetadataProps = append(q.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String("quantization"),
		Value: proto.String("int8 QDQ: weights int8 symmetric per output channel, activations uint8 asymmetric, ranges " + calibration)})
	sort.Slice(q.MetadataProps, func(i, j int) bool { return q.MetadataProps[i].GetKey() < q.MetadataProps[j].GetKey() })
	q.DocString = proto.String(q.GetDocString() + " (int8 QDQ)")
	return q, nil
}

// dqSource returns the activation a DequantizeLinear copy stands for.
func dqSource(dq map[string]string, v string) string {
	for src, d := range dq {
		if d == v {
			return src
		}
	}
	return v
}

func floats(t *onnxpb.TensorProto) ([]float32, error) {
	if t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("%s is not float32", t.GetName())
	}
	if len(t.FloatData) > 0 {
		return t.FloatData, nil
	}
	raw := t.GetRawData()
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, nil
}

// quantizeWeight adds an int8 copy of w (symmetric, one scale per output
// channel, dimension 0) and its DequantizeLinear; it returns the
// dequantised value's name and the scales.
func (b *builder) quantizeWeight(w *onnxpb.TensorProto, emit func(*onnxpb.NodeProto)) (string, []float32, error) {
	v, err := floats(w)
	if err != nil {
		return "", nil, err
	}
	dims := w.GetDims()
	if len(dims) < 2 {
		return "", nil, fmt.Errorf("weight %s has shape %v", w.GetName(), dims)
	}
	oc := int(dims[0])
	per := len(v) / oc
	scales := make([]float32, oc)
	raw := make([]byte, len(v))
	for c := 0; c < oc; c++ {
		row := v[c*per : (c+1)*per]
		m := 0.0
		for _, x := range row {
			m = math.Max(m, math.Abs(float64(x)))
		}
		s := m / 127
		if s == 0 {
			s = 1
		}
		scales[c] = float32(s)
		for i, x := range row {
			raw[c*per+i] = byte(int8(math.Max(-127, math.Min(127, math.Round(float64(x)/float64(scales[c]))))))
		}
	}
	qn := b.name(w.GetName() + "_int8")
	g := b.graph
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(qn), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), Dims: dims, RawData: raw})
	sn := b.floatVector(w.GetName()+"_scale", scales)
	zn := b.name(w.GetName() + "_zero_point")
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(zn), DataType: proto.Int32(int32(onnxpb.TensorProto_INT8)), Dims: []int64{int64(oc)}, RawData: make([]byte, oc)})
	dn := b.name("DequantizeLinear")
	emit(&onnxpb.NodeProto{OpType: proto.String("DequantizeLinear"), Name: proto.String(dn), Input: []string{qn, sn, zn}, Output: []string{dn}, Attribute: []*onnxpb.AttributeProto{intAttr("axis", 0)}})
	return dn, scales, nil
}

// quantizeBias adds an int32 copy of a bias with scale inScale*wScale[c].
func (b *builder) quantizeBias(t *onnxpb.TensorProto, inScale float32, wScales []float32, emit func(*onnxpb.NodeProto)) (string, error) {
	v, err := floats(t)
	if err != nil {
		return "", err
	}
	if len(v) != len(wScales) {
		return "", fmt.Errorf("bias %s has %d values for %d channels", t.GetName(), len(v), len(wScales))
	}
	scales := make([]float32, len(v))
	raw := make([]byte, 4*len(v))
	for c, x := range v {
		scales[c] = inScale * wScales[c]
		q := math.Round(float64(x) / float64(scales[c]))
		q = math.Max(math.MinInt32, math.Min(math.MaxInt32, q))
		binary.LittleEndian.PutUint32(raw[4*c:], uint32(int32(q)))
	}
	qn := b.name(t.GetName() + "_int32")
	g := b.graph
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(qn), DataType: proto.Int32(int32(onnxpb.TensorProto_INT32)), Dims: []int64{int64(len(v))}, RawData: raw})
	sn := b.floatVector(t.GetName()+"_scale", scales)
	zn := b.name(t.GetName() + "_zero_point")
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(zn), DataType: proto.Int32(int32(onnxpb.TensorProto_INT32)), Dims: []int64{int64(len(v))}, RawData: make([]byte, 4*len(v))})
	dn := b.name("DequantizeLinear")
	emit(&onnxpb.NodeProto{OpType: proto.String("DequantizeLinear"), Name: proto.String(dn), Input: []string{qn, sn, zn}, Output: []string{dn}, Attribute: []*onnxpb.AttributeProto{intAttr("axis", 0)}})
	return dn, nil
}

func (b *builder) floatVector(prefix string, v []float32) string {
	name := b.name(prefix)
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	b.graph.Initializer = append(b.graph.Initializer, &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: []int64{int64(len(v))}, RawData: raw})
	return name
}

// pruneInitializers drops initializers nothing reads any more (the float
// weights and biases that were replaced).
func pruneInitializers(g *onnxpb.GraphProto) {
	used := map[string]bool{}
	for _, n := range g.Node {
		for _, in := range n.Input {
			used[in] = true
		}
	}
	for _, o := range g.Output {
		used[o.GetName()] = true
	}
	kept := g.Initializer[:0]
	for _, t := range g.Initializer {
		if used[t.GetName()] {
			kept = append(kept, t)
		}
	}
	g.Initializer = kept
}
