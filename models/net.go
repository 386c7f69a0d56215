package models

import (
	"fmt"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Net is a network written once, as a program: a list of steps over values,
// each step either a layer applied to one value or a structural operation
// (flatten, gap, add, relu, crops, foldback, globals or meanglobals, as Node
// documents them), plus named outputs. Running the program is the forward
// pass; walking it is the graph description that exporters write, so the two
// cannot drift apart.
//
// The zero Net is an empty program. A Net is itself a layer (a residual
// block), whose result is its last step's.
type Net struct {
	nn.Base
	steps   []step
	outputs []output
}

// Value is one of a Net's tensors: its input In or a step's result.
type Value int

// In is a Net's input.
const In Value = 0

type step struct {
	layer nn.Layer // nil for a structural operation
	op    string
	ints  map[string]int64
	in    []Value
}

type output struct {
	name string
	v    Value
}

// Layer appends a step that applies l to in and returns its result. l is
// registered as the child name, which prefixes its parameters' names in the
// state dict.
func (n *Net) Layer(name string, l nn.Layer, in Value) Value {
	return n.Apply(nn.Child(&n.Base, name, l), in)
}

// Apply appends a step that applies l, a child registered already, to in
// and returns its result: for when the order of the steps is not the order
// of the parameters.
func (n *Net) Apply(l nn.Layer, in Value) Value {
	return n.push(step{layer: l, in: []Value{in}})
}

// Op appends a structural operation with its integer arguments (as Node
// documents them) and returns its result.
func (n *Net) Op(op string, ints map[string]int64, in ...Value) Value {
	return n.push(step{op: op, ints: ints, in: in})
}

func (n *Net) push(s step) Value {
	n.steps = append(n.steps, s)
	return Value(len(n.steps))
}

// Output names v as an output (an encoder's tap).
func (n *Net) Output(name string, v Value) {
	n.outputs = append(n.outputs, output{name, v})
}

// Forward runs the program on x and returns the last step's result.
func (n *Net) Forward(x *torch.Tensor) *torch.Tensor {
	v := n.run(x)
	return v[len(v)-1]
}

// run runs the program on x and returns every value, indexed by Value.
// Layers run their own Forward, so training makes the same libtorch calls as
// a network written out by hand.
func (n *Net) run(x *torch.Tensor) []*torch.Tensor {
	v := make([]*torch.Tensor, 1, len(n.steps)+1)
	v[0] = x
	for _, s := range n.steps {
		if s.layer != nil {
			v = append(v, s.layer.Forward(v[s.in[0]]))
			continue
		}
		var buf [2]*torch.Tensor // structural operations read at most two values
		in := buf[:0]
		for _, i := range s.in {
			in = append(in, v[i])
		}
		v = append(v, applyOp(s.op, s.ints, in))
	}
	return v
}

// describe appends the program to b's graph, its input bound to the graph
// value in, and returns the graph value of each Value.
func (n *Net) describe(b *graphBuilder, in string) []string {
	names := make([]string, 1, len(n.steps)+1)
	names[0] = in
	for _, s := range n.steps {
		ins := make([]string, len(s.in))
		for i, v := range s.in {
			ins[i] = names[v]
		}
		if s.layer != nil {
			names = append(names, b.layer(s.layer, ins[0]))
		} else {
			names = append(names, b.add(s.op, ins, nil, s.ints, nil))
		}
	}
	return names
}

// applyOp computes a structural operation. Net's forward pass and Interpret
// both call it, so that an exported description means what training ran.
func applyOp(op string, ints map[string]int64, in []*torch.Tensor) *torch.Tensor {
	switch op {
	case "flatten":
		return in[0].Flatten(1, -1)
	case "gap":
		return torch.AdaptiveAvgPool2d(in[0], 1, 1)
	case "add":
		return in[0].Add(in[1])
	case "relu":
		return in[0].Relu()
	case "crops":
		return Crops(in[0], ints["crop"], ints["stride"])
	case "foldback":
		g := ints["grid"]
		return FoldBack(in[0], in[0].Size(0)/(g*g), g)
	case "globals":
		return in[0].Flatten(2, -1).Transpose(1, 2)
	case "meanglobals":
		return in[0].MeanDims([]int64{1}, false)
	case "padchannels":
		return in[0].Pad([]int64{0, 0, 0, 0, 0, ints["channels"]}, torch.PadConstant, 0)
	}
	return torch.Errored(fmt.Errorf("unknown operation %q", op))
}
