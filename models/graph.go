package models

import (
	"fmt"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Graph describes an encoder's inference computation (evaluation mode) as a
// list of operations over named values, for exporters. Parameters are the
// encoder's own tensors, not copies.
type Graph struct {
	Input   string            // the image batch [N, C, H, W] in [-1, 1]
	Nodes   []Node            // in execution order
	Outputs map[string]string // tap name ("local", "conv", "fc", "y") -> value name
}

// Node is one operation. Op is one of:
//
//	conv        Conv2d: Params weight[, bias]; Ints stride, padding, dilation, groups
//	batchnorm   eval-mode BatchNorm: Params weight, bias, running_mean, running_var; Floats eps
//	relu
//	maxpool     Ints kernel, stride, padding
//	avgpool     Ints kernel, stride, padding (padding counted in the average)
//	gap         global average pooling to 1x1
//	flatten     [N, ...] -> [N, prod]
//	linear      Params weight[, bias]: x W^T + b
//	add         elementwise sum of two inputs
//	crops       [N, C, H, W] -> [N*g*g, C, crop, crop]: Ints crop, stride, grid, channels (C)
//	foldback    [N*g*g, D] -> [N, D, g, g]: Ints grid, channels (D)
//	globals     [N, D, h, w] -> [N, h*w, D]
//	meanglobals [N, M, D] -> [N, D]
//	padchannels [N, C, H, W] -> [N, C+channels, H, W], the new channels zero: Ints channels
type Node struct {
	Op     string
	Inputs []string
	Output string
	Params map[string]*torch.Tensor
	Ints   map[string]int64
	Floats map[string]float64
}

// Describer is implemented by encoders that can describe their graph.
type Describer interface {
	Graph() (*Graph, error)
}

type graphBuilder struct {
	g   *Graph
	n   int
	err error
}

func (b *graphBuilder) add(op string, inputs []string, params map[string]*torch.Tensor, ints map[string]int64, floats map[string]float64) string {
	b.n++
	out := fmt.Sprintf("%s_%d", op, b.n)
	b.g.Nodes = append(b.g.Nodes, Node{Op: op, Inputs: inputs, Output: out, Params: params, Ints: ints, Floats: floats})
	return out
}

// layer appends the description of one module.
func (b *graphBuilder) layer(l nn.Layer, in string) string {
	if b.err != nil {
		return in
	}
	switch m := l.(type) {
	case *nn.Sequential:
		for _, c := range m.Layers {
			in = b.layer(c, in)
		}
		return in
	case *nn.Conv2d:
		o := m.Opts
		stride, dil, groups := max(o.Stride, 1), max(o.Dilation, 1), max(o.Groups, 1)
		p := map[string]*torch.Tensor{"weight": m.Weight}
		if m.Bias != nil {
			p["bias"] = m.Bias
		}
		return b.add("conv", []string{in}, p, map[string]int64{"stride": stride, "padding": o.Padding, "dilation": dil, "groups": groups}, nil)
	case *nn.BatchNorm:
		return b.add("batchnorm", []string{in}, map[string]*torch.Tensor{"weight": m.Weight, "bias": m.Bias, "running_mean": m.RunningMean, "running_var": m.RunningVar}, nil, map[string]float64{"eps": m.Eps})
	case *nn.Linear:
		p := map[string]*torch.Tensor{"weight": m.Weight}
		if m.Bias != nil {
			p["bias"] = m.Bias
		}
		return b.add("linear", []string{in}, p, nil, nil)
	case *nn.Func:
		switch m.Name {
		case "relu":
			return b.add("relu", []string{in}, nil, nil, nil)
		case "flatten":
			return b.add("flatten", []string{in}, nil, nil, nil)
		case "max_pool2d", "avg_pool2d":
			op := "maxpool"
			if m.Name == "avg_pool2d" {
				op = "avgpool"
			}
			return b.add(op, []string{in}, nil, map[string]int64{"kernel": m.Args[0], "stride": m.Args[1], "padding": m.Args[2]}, nil)
		case "adaptive_avg_pool2d":
			if len(m.Args) == 2 && m.Args[0] == 1 && m.Args[1] == 1 {
				return b.add("gap", []string{in}, nil, nil, nil)
			}
		}
		b.err = fmt.Errorf("cannot describe function layer %q", m.Name)
		return in
	case *Net:
		names := m.describe(b, in)
		return names[len(names)-1]
	}
	b.err = fmt.Errorf("cannot describe layer %T", l)
	return in
}

// Graph implements Describer. Globals stay out of the outputs: exporters
// declare the shapes of the four taps that Spec gives.
func (e *encoder) Graph() (*Graph, error) {
	b := &graphBuilder{g: &Graph{Input: "image", Outputs: map[string]string{}}}
	names := e.describe(b, b.g.Input)
	for _, o := range e.outputs {
		if o.name != "globals" {
			b.g.Outputs[o.name] = names[o.v]
		}
	}
	return b.g, b.err
}

// Interpret evaluates a graph on x with libtorch operators, as exporters'
// outputs should: it lets tests check a description against Encode.
func Interpret(g *Graph, x *torch.Tensor) (map[string]*torch.Tensor, error) {
	vals := map[string]*torch.Tensor{g.Input: x}
	for _, n := range g.Nodes {
		in := make([]*torch.Tensor, len(n.Inputs))
		for i, name := range n.Inputs {
			v, ok := vals[name]
			if !ok {
				return nil, fmt.Errorf("node %s reads undefined value %s", n.Output, name)
			}
			in[i] = v
		}
		var out *torch.Tensor
		p, is := n.Params, n.Ints
		switch n.Op {
		case "conv":
			out = torch.Conv2d(in[0], p["weight"], p["bias"], torch.ConvOptions{Stride: is["stride"], Padding: is["padding"], Dilation: is["dilation"], Groups: is["groups"]})
		case "batchnorm":
			out = torch.BatchNorm(in[0], p["weight"], p["bias"], p["running_mean"], p["running_var"], false, 0, n.Floats["eps"])
		case "maxpool":
			out = torch.MaxPool2d(in[0], is["kernel"], torch.ConvOptions{Stride: is["stride"], Padding: is["padding"]})
		case "avgpool":
			out = torch.AvgPool2d(in[0], is["kernel"], torch.ConvOptions{Stride: is["stride"], Padding: is["padding"]})
		case "linear":
			out = torch.Linear(in[0], p["weight"], p["bias"])
		default:
			out = applyOp(n.Op, is, in)
		}
		if err := out.Err(); err != nil {
			return nil, fmt.Errorf("node %s (%s): %w", n.Output, n.Op, err)
		}
		vals[n.Output] = out
	}
	res := map[string]*torch.Tensor{}
	for tap, name := range g.Outputs {
		res[tap] = vals[name]
	}
	return res, nil
}
