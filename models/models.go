// Package models defines the Deep InfoMax encoders, each exposing named
// feature taps (local, conv, fc, y), and the mutual-information heads that
// map those features into the critic's common space.
package models

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Taps are an encoder's named features for one batch of N images.
type Taps struct {
	Local *torch.Tensor // [N, C, H, W]: the local feature map scored by local DIM
	Conv  *torch.Tensor // [N, C', H', W']: the last convolutional layer ("conv" in the paper's tables)
	FC    *torch.Tensor // [N, F]: the fully connected layer before Y ("fc")
	Y     *torch.Tensor // [N, D]: the representation ("Y"); the mean of Globals when there are several
	// Globals is [N, M, D] when the encoder ends in a map of M global vectors
	// (the "multiple globals" variant); nil otherwise.
	Globals *torch.Tensor
}

// Tap returns the named tap: "local", "conv", "fc" or "y".
func (t Taps) Tap(name string) (*torch.Tensor, error) {
	switch name {
	case "local":
		return t.Local, nil
	case "conv":
		return t.Conv, nil
	case "fc":
		return t.FC, nil
	case "y":
		return t.Y, nil
	}
	return nil, fmt.Errorf("unknown feature tap %q (want local, conv, fc or y)", name)
}

// Spec describes an encoder's input and tap shapes (per image).
type Spec struct {
	Name    string  `json:"name"`
	Input   [3]int  `json:"input"` // C, H, W
	Local   [3]int  `json:"local"`
	Conv    [3]int  `json:"conv"`
	FC      int     `json:"fc"`
	Y       int     `json:"y"`
	Globals int     `json:"globals"` // 1, or M for a map of globals
	Folded  *Folded `json:"folded,omitempty"`
}

// Folded describes the strided crops of a folded encoder.
type Folded struct {
	Crop   int `json:"crop"`
	Stride int `json:"stride"`
	Grid   int `json:"grid"` // crops per side
}

// Config is what rebuilds an encoder (stored in checkpoints).
type Config struct {
	Name       string `json:"name" flag:"encoder" default:"basic28" choices:"encoders" help:"the encoder's architecture"`
	InChannels int    `json:"in_channels" flag:"in-channels" help:"channels of the encoder's input (0: the training data's, which a run records)"`
	YDim       int    `json:"y_dim" flag:"y-dim" default:"64" help:"size of the global feature Y, the representation"`
	// Width and Depth size the AMDIM encoders (0: their defaults, 32 and 1);
	// the other encoders have fixed sizes.
	Width int `json:"width,omitempty" flag:"width" defaulttext:"32" help:"amdim28 and amdim32: channels of the first layer (the local and conv maps have 4x, fc 8x; 0: 32)"`
	Depth int `json:"depth,omitempty" flag:"depth" defaulttext:"1" help:"amdim28 and amdim32: residual units per block (0: 1)"`
}

// Encoder maps images to taps. Inputs are float32 [N, C, H, W] in [-1, 1] of
// the spec's input shape.
type Encoder interface {
	nn.Module
	Encode(x *torch.Tensor) Taps
	Spec() Spec
	Config() Config
}

type builder struct {
	input [2]int // the native input size
	doc   string
	build func(cfg Config) Encoder
}

var registry = map[string]builder{}

// Names lists the encoders.
func Names() []string {
	return slices.Sorted(maps.Keys(registry))
}

// Describe returns a one-line description of an encoder.
func Describe(name string) string { return registry[name].doc }

// InputSize returns the native input height and width of an encoder.
func InputSize(name string) (int, int, error) {
	b, ok := registry[name]
	if !ok {
		return 0, 0, fmt.Errorf("unknown encoder %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return b.input[0], b.input[1], nil
}

// New builds an encoder with freshly initialised weights (from libtorch's
// generator: seed it with torch.ManualSeed for reproducible weights).
func New(cfg Config) (Encoder, error) {
	b, ok := registry[cfg.Name]
	if !ok {
		return nil, fmt.Errorf("unknown encoder %q (known: %s)", cfg.Name, strings.Join(Names(), ", "))
	}
	if cfg.InChannels <= 0 {
		cfg.InChannels = 3
	}
	if cfg.YDim <= 0 {
		cfg.YDim = 64
	}
	e := b.build(cfg)
	if err := nn.FirstError(e); err != nil {
		nn.Free(e)
		return nil, fmt.Errorf("build %s: %w", cfg.Name, err)
	}
	return e, nil
}

// CheckInput verifies that x is a batch of the encoder's input shape.
func CheckInput(e Encoder, x *torch.Tensor) error {
	in := e.Spec().Input
	s := x.Shape()
	if err := x.Err(); err != nil {
		return err
	}
	if len(s) != 4 || s[1] != int64(in[0]) || s[2] != int64(in[1]) || s[3] != int64(in[2]) {
		return fmt.Errorf("%s takes images of %dx%dx%d (channels x height x width), got a batch of shape %v", e.Spec().Name, in[0], in[1], in[2], s)
	}
	return nil
}

// encoder is every Encoder: a Net whose outputs are the taps.
type encoder struct {
	Net
	spec Spec
	cfg  Config
}

func (e *encoder) Spec() Spec     { return e.spec }
func (e *encoder) Config() Config { return e.cfg }

// Encode runs the program and collects its outputs as taps.
func (e *encoder) Encode(x *torch.Tensor) Taps {
	v := e.run(x)
	var t Taps
	for _, o := range e.outputs {
		switch o.name {
		case "local":
			t.Local = v[o.v]
		case "conv":
			t.Conv = v[o.v]
		case "fc":
			t.FC = v[o.v]
		case "y":
			t.Y = v[o.v]
		case "globals":
			t.Globals = v[o.v]
		}
	}
	return t
}

// finish records e's spec, with the tap shapes that running a batch
// measures, and returns e.
func (e *encoder) finish(s Spec) Encoder {
	e.spec = s
	probeSpec(e, &e.spec)
	return e
}

// Building blocks.

func convBNReLU(in, out, k, stride, pad int64) *nn.Sequential {
	return nn.NewSequential(
		nn.NewConv2d(in, out, k, torch.ConvOptions{Stride: stride, Padding: pad}, false),
		nn.NewBatchNorm2d(out),
		nn.ReLUInPlace(),
	)
}

func linBNReLU(in, out int64) *nn.Sequential {
	return nn.NewSequential(nn.NewLinear(in, out, false), nn.NewBatchNorm1d(out), nn.ReLUInPlace())
}

func shapeOf(t *torch.Tensor) [3]int {
	s := t.Shape()
	if len(s) != 4 {
		return [3]int{}
	}
	return [3]int{int(s[1]), int(s[2]), int(s[3])}
}

// probeSpec runs one image through e (in eval mode, without gradients) to
// fill the spec's tap shapes.
func probeSpec(e Encoder, spec *Spec) {
	was := e.Training()
	e.Train(false)
	defer e.Train(was)
	torch.NoGrad(func() {
		s := torch.NewScope()
		defer s.Close()
		x := torch.Zeros([]int64{2, int64(spec.Input[0]), int64(spec.Input[1]), int64(spec.Input[2])}, s)
		t := e.Encode(x)
		spec.Local = shapeOf(t.Local)
		spec.Conv = shapeOf(t.Conv)
		spec.FC = int(t.FC.Size(1))
		spec.Y = int(t.Y.Size(1))
		spec.Globals = 1
		if t.Globals != nil {
			spec.Globals = int(t.Globals.Size(1))
		}
	})
}
