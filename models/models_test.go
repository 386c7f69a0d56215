package models

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func eq(a []int64, b ...int64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// Every encoder's taps have the documented shapes, for 1 and 3 input channels.
func TestEncoderTaps(t *testing.T) {
	want := map[string]struct {
		in             int64
		local, conv    []int64
		fc, y, globals int64
	}{
		"amdim28":           {28, []int64{128, 7, 7}, []int64{128, 5, 5}, 256, 64, 0},
		"amdim32":           {32, []int64{128, 7, 7}, []int64{128, 5, 5}, 256, 64, 0},
		"basic28":           {28, []int64{128, 7, 7}, []int64{128, 7, 7}, 1024, 64, 0},
		"dcgan32":           {32, []int64{128, 8, 8}, []int64{256, 4, 4}, 1024, 64, 0},
		"basic64":           {64, []int64{256, 8, 8}, []int64{512, 4, 4}, 1024, 64, 0},
		"alex64":            {64, []int64{384, 15, 15}, []int64{192, 7, 7}, 4096, 64, 0},
		"resnet32":          {32, []int64{512, 8, 8}, []int64{1024, 4, 4}, 1024, 64, 0},
		"resnet64":          {64, []int64{512, 8, 8}, []int64{1024, 4, 4}, 1024, 64, 0},
		"fold-alex64":       {64, []int64{256, 7, 7}, []int64{512, 4, 4}, 1024, 64, 0},
		"fold-multi-alex64": {64, []int64{256, 7, 7}, []int64{512, 5, 5}, 512, 64, 25},
		"fold-resnet32":     {32, []int64{512, 7, 7}, []int64{1024, 4, 4}, 1024, 64, 0},
	}
	if len(want) != len(Names()) {
		t.Fatalf("test covers %d encoders, registry has %v", len(want), Names())
	}
	for name, w := range want {
		for _, ch := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/%dch", name, ch), func(t *testing.T) {
				e, err := New(Config{Name: name, InChannels: ch})
				if err != nil {
					t.Fatal(err)
				}
				defer nn.Free(e)
				s := torch.NewScope()
				defer s.Close()
				x := torch.Randn([]int64{2, int64(ch), w.in, w.in}, s)
				if err := CheckInput(e, x); err != nil {
					t.Fatal(err)
				}
				taps := e.Encode(x)
				for _, tp := range []*torch.Tensor{taps.Local, taps.Conv, taps.FC, taps.Y} {
					if err := tp.Err(); err != nil {
						t.Fatal(err)
					}
				}
				if !eq(taps.Local.Shape(), append([]int64{2}, w.local...)...) || !eq(taps.Conv.Shape(), append([]int64{2}, w.conv...)...) {
					t.Fatalf("local %v conv %v", taps.Local.Shape(), taps.Conv.Shape())
				}
				if !eq(taps.FC.Shape(), 2, w.fc) || !eq(taps.Y.Shape(), 2, w.y) {
					t.Fatalf("fc %v y %v", taps.FC.Shape(), taps.Y.Shape())
				}
				if w.globals > 0 && !eq(taps.Globals.Shape(), 2, w.globals, w.y) {
					t.Fatalf("globals %v", taps.Globals.Shape())
				}
				sp := e.Spec()
				if sp.Local[0] != int(w.local[0]) || sp.Y != 64 || sp.Input[0] != ch {
					t.Fatalf("spec %+v", sp)
				}
				// A batch of the wrong size is refused with a clear message.
				if err := CheckInput(e, torch.Zeros([]int64{1, int64(ch), w.in + 1, w.in}, s)); err == nil {
					t.Fatal("wrong input size accepted")
				}
			})
		}
	}
}

// The folded crops are the image's windows, and folding back inverts the layout.
func TestCropsAndFoldBack(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Arange(0, 2*1*32*32, 1, s).Reshape(2, 1, 32, 32)
	c := Crops(x, 8, 4)
	if !eq(c.Shape(), 98, 1, 8, 8) {
		t.Fatalf("crops %v", c.Shape())
	}
	// Crop (image 1, row 2, col 3) starts at pixel (8, 12) of image 1.
	v, _ := c.Select(0, 49+2*7+3).Select(0, 0).Select(0, 0).Select(0, 0).Item()
	if want := float64(1*1024 + 8*32 + 12); v != want {
		t.Fatalf("crop origin %v, want %v", v, want)
	}
	vec := torch.Arange(0, 98, 1, s).Reshape(98, 1)
	m := FoldBack(vec, 2, 7)
	if got, _ := m.Select(0, 1).Select(0, 0).Select(0, 2).Select(0, 3).Item(); got != 49+2*7+3 {
		t.Fatalf("fold back %v", got)
	}
}

func TestMIHeads(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	lh := NewLocalHead(128, 256)
	defer nn.Free(lh)
	out := lh.Forward(torch.Randn([]int64{4, 128, 7, 7}, s))
	if !eq(out.Shape(), 4, 49, 256) {
		t.Fatalf("local head %v", out.Shape())
	}
	// LayerNorm over units: each position's encoding has mean 0, variance 1.
	m, _ := out.MeanDims([]int64{2}, false).Abs().Max().Item()
	v, _ := out.Var([]int64{2}, false, false).SubScalar(1).Abs().Max().Item()
	if m > 1e-4 || v > 1e-3 {
		t.Fatalf("layer norm: mean %v var-1 %v", m, v)
	}
	gh := NewGlobalHead(64, 256)
	defer nn.Free(gh)
	if o := gh.Forward(torch.Randn([]int64{4, 64}, s)); !eq(o.Shape(), 4, 256) {
		t.Fatalf("global head %v", o.Shape())
	}
	if o := gh.Forward(torch.Randn([]int64{4, 25, 64}, s)); !eq(o.Shape(), 4, 25, 256) {
		t.Fatalf("multi-global head %v", o.Shape())
	}
	// As the original's MI1x1ConvNet: the shortcut has no bias and starts
	// near the identity when units >= inputs; with fewer units than inputs it
	// keeps the default initialisation (no ones on its diagonal).
	for _, c := range []struct {
		in, units int64
		identity  bool
	}{{64, 256, true}, {64, 64, true}, {128, 32, false}} {
		for _, h := range []*MIHead{NewGlobalHead(c.in, c.units), NewLocalHead(c.in, c.units)} {
			var w *torch.Tensor
			for _, p := range h.NamedParameters() {
				switch p.Name {
				case "shortcut.weight":
					w = p.Tensor.Reshape(c.units, c.in)
				case "shortcut.bias":
					t.Fatalf("%d -> %d: the shortcut has a bias", c.in, c.units)
				}
			}
			v, _ := w.Float64s()
			var diag, off float64
			for i := int64(0); i < c.units; i++ {
				for j := int64(0); j < c.in; j++ {
					if i == j {
						diag += v[i*c.in+j]
					} else {
						off += math.Abs(v[i*c.in+j])
					}
				}
			}
			k := float64(min(c.in, c.units))
			if c.identity && (diag != k || off > 0.01*float64(c.in*c.units)) {
				t.Fatalf("%d -> %d: shortcut diagonal sums to %v (want %v), |off-diagonal| %v", c.in, c.units, diag, k, off)
			}
			if !c.identity && math.Abs(diag) > k/2 {
				t.Fatalf("%d -> %d: shortcut starts as an identity (diagonal sum %v)", c.in, c.units, diag)
			}
			nn.Free(h)
		}
	}
}

// Every encoder's graph description computes exactly what Encode computes
// in evaluation mode: the basis of the ONNX export.
func TestGraphsMatchEncode(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			_ = torch.ManualSeed(11)
			e, err := New(Config{Name: name, InChannels: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer nn.Free(e)
			s := torch.NewScope()
			defer s.Close()
			in := e.Spec().Input
			// Train a little so that BatchNorm's running statistics are not trivial.
			for i := 0; i < 2; i++ {
				e.Encode(torch.Randn([]int64{4, int64(in[0]), int64(in[1]), int64(in[2])}, s))
			}
			e.Train(false)
			g, err := e.(Describer).Graph()
			if err != nil {
				t.Fatal(err)
			}
			x := torch.Randn([]int64{3, int64(in[0]), int64(in[1]), int64(in[2])}, s)
			torch.NoGrad(func() {
				want := e.Encode(x)
				got, err := Interpret(g, x)
				if err != nil {
					t.Fatal(err)
				}
				for tap, w := range map[string]*torch.Tensor{"local": want.Local, "conv": want.Conv, "fc": want.FC, "y": want.Y} {
					d, err := got[tap].Sub(w).Abs().Max().Item()
					if err != nil || d > 1e-5 {
						t.Fatalf("%s: max difference %v (%v)", tap, d, err)
					}
				}
			})
		})
	}
}

// Every encoder keeps the names, shapes and order of its parameters and
// buffers as recorded in testdata/state_dict.txt: checkpoints load by name,
// and optimiser states by the parameters' order.
func TestStateDictUnchanged(t *testing.T) {
	want, err := os.ReadFile("testdata/state_dict.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, name := range Names() {
		e, err := New(Config{Name: name, InChannels: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range e.NamedParameters() {
			fmt.Fprintf(&got, "%s param %s %v\n", name, p.Name, p.Tensor.Shape())
		}
		for _, b := range e.NamedBuffers() {
			fmt.Fprintf(&got, "%s buffer %s %v\n", name, b.Name, b.Tensor.Shape())
		}
		nn.Free(e)
	}
	g, w := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			t.Fatalf("line %d: got %q, want %q", i+1, g[i], w[i])
		}
	}
	if len(g) != len(w) {
		t.Fatalf("%d lines, want %d", len(g), len(w))
	}
}

// The AMDIM encoders: --width and --depth size them; each residual unit
// starts as its shortcut (average pooling, channels padded with zeros); and
// the convolutions are unpadded, so that a position of the 7x7 local map
// sees only its patch of the image (amdim32: rows and columns 4i to 4i+7).
func TestAMDIMEncoder(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	e, err := New(Config{Name: "amdim32", InChannels: 3, YDim: 10, Width: 8, Depth: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(e)
	sp := e.Spec()
	if sp.Local != [3]int{32, 7, 7} || sp.Conv != [3]int{32, 5, 5} || sp.FC != 64 || sp.Y != 10 {
		t.Fatalf("width 8: spec %+v", sp)
	}
	if got, want := len(e.NamedParameters()), 2+4*(1+4*3+1)+2+2+2; got != want { // stem, 4 tensors a unit (res1, 4 blocks of 3, head), bn7, bn1, y
		t.Errorf("depth 3: %d parameter tensors, want %d", got, want)
	}

	u := newResUnit(4, 8, 3, 2)
	defer nn.Free(u)
	x := torch.Randn([]int64{2, 4, 9, 9}, s)
	want := torch.AvgPool2d(x, 3, torch.ConvOptions{Stride: 2}).Pad([]int64{0, 0, 0, 0, 0, 4}, torch.PadConstant, 0)
	if d, err := u.Forward(x).Sub(want).Abs().Max().Item(); err != nil || d != 0 {
		t.Fatalf("a fresh unit differs from its shortcut by %v (%v)", d, err)
	}

	e.Train(false)
	img := torch.Randn([]int64{1, 3, 32, 32}, s)
	at := func(img *torch.Tensor) *torch.Tensor { return e.Encode(img).Local.Select(2, 1).Select(2, 1) } // position (1, 1)
	base := at(img)
	for _, c := range []struct {
		y, x int64
		sees bool
	}{{4, 4, true}, {11, 11, true}, {4, 11, true}, {3, 5, false}, {12, 6, false}, {20, 20, false}} {
		moved := img.Clone()
		torch.NoGrad(func() { _ = moved.Narrow(2, c.y, 1).Narrow(3, c.x, 1).FillInPlace(5) })
		d, err := at(moved).Sub(base).Abs().Max().Item()
		if err != nil {
			t.Fatal(err)
		}
		if (d > 0) != c.sees {
			t.Errorf("pixel (%d, %d): local position (1, 1) changed by %g; want a change: %v", c.y, c.x, d, c.sees)
		}
	}
}
