package nn_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

type block struct {
	nn.Base
	conv *nn.Conv2d
	bn   *nn.BatchNorm
	fc   *nn.Linear
}

func newBlock() *block {
	b := &block{}
	b.conv = nn.Child(&b.Base, "conv", nn.NewConv2d(3, 4, 3, torch.ConvOptions{Padding: 1}, false))
	b.bn = nn.Child(&b.Base, "bn", nn.NewBatchNorm2d(4))
	b.fc = nn.Child(&b.Base, "fc", nn.NewLinear(4, 2, true))
	return b
}

func (b *block) Forward(x *torch.Tensor) *torch.Tensor {
	h := b.bn.Forward(b.conv.Forward(x)).Relu()
	return b.fc.Forward(torch.AdaptiveAvgPool2d(h, 1, 1).Flatten(1, -1))
}

func TestNamesAndCounts(t *testing.T) {
	b := newBlock()
	defer nn.Free(b)
	var names []string
	for _, p := range b.NamedParameters() {
		names = append(names, p.Name)
	}
	want := "conv.weight bn.weight bn.bias fc.weight fc.bias"
	if strings.Join(names, " ") != want {
		t.Fatalf("parameters %v, want %s", names, want)
	}
	var bufs []string
	for _, p := range b.NamedBuffers() {
		bufs = append(bufs, p.Name)
	}
	if strings.Join(bufs, " ") != "bn.running_mean bn.running_var bn.num_batches_tracked" {
		t.Fatalf("buffers %v", bufs)
	}
	if n := nn.NumParameters(b); n != 4*3*9+4+4+2*4+2 {
		t.Fatalf("%d parameters", n)
	}
	seq := nn.NewSequential(nn.NewLinear(2, 3, true), nn.ReLU(), nn.NewLinear(3, 1, false))
	defer nn.Free(seq)
	if ps := seq.NamedParameters(); len(ps) != 3 || ps[2].Name != "2.weight" {
		t.Fatalf("sequential names %v", ps)
	}
}

func TestTrainEvalModes(t *testing.T) {
	b := newBlock()
	defer nn.Free(b)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn([]int64{8, 3, 5, 5}, s).MulScalar(3).AddScalar(2)
	if !b.Training() || !b.bn.Training() {
		t.Fatal("modules start in training mode")
	}
	b.Forward(x)
	rm, _ := b.bn.RunningMean.Float64s()
	if rm[0] == 0 {
		t.Fatal("training forward did not update the running mean")
	}
	if n, _ := b.bn.NumBatchesTracked.Item(); n != 1 {
		t.Fatalf("num_batches_tracked %v", n)
	}
	b.Train(false)
	if b.bn.Training() {
		t.Fatal("Train(false) did not reach the children")
	}
	y1, _ := b.Forward(x).Float64s()
	y2, _ := b.Forward(x.Narrow(0, 0, 1)).Float64s()
	// In eval mode each sample's output does not depend on the batch.
	for i := 0; i < 2; i++ {
		// Tolerance: convolution kernels may differ by batch size in the last bits.
		if math.Abs(y1[i]-y2[i]) > 1e-4*(1+math.Abs(y2[i])) {
			t.Fatalf("eval output depends on the batch: %v vs %v", y1[:2], y2)
		}
	}
	rm2, _ := b.bn.RunningMean.Float64s()
	if rm2[0] != rm[0] {
		t.Fatal("eval forward changed the running mean")
	}
	d := nn.NewDropout(0.5)
	ones := torch.Ones([]int64{1000}, s)
	// Training: each element is 0 or 2, about half of each (a mean of
	// exactly 1 happens when exactly 500 survive, so it cannot tell the
	// identity apart: count the zeros instead).
	out := d.Forward(ones)
	m, _ := out.Mean().Item()
	zeros, _ := out.EqScalar(0).Sum().Item()
	twos, _ := out.EqScalar(2).Sum().Item()
	if math.Abs(m-1) > 0.15 || zeros < 350 || zeros+twos != 1000 {
		t.Fatalf("training dropout: mean %v, %v zeros, %v twos of 1000 (want about 1, about 500, the rest)", m, zeros, twos)
	}
	d.Train(false)
	if m, _ := d.Forward(ones).Mean().Item(); m != 1 {
		t.Fatalf("eval dropout is not the identity: %v", m)
	}
}

func TestStateDictRoundTrip(t *testing.T) {
	a, b := newBlock(), newBlock()
	defer nn.Free(a)
	defer nn.Free(b)
	path := filepath.Join(t.TempDir(), "block.safetensors")
	if err := torch.SaveSafetensors(path, nn.StateDict(a, "enc."), nil); err != nil {
		t.Fatal(err)
	}
	sd, _, err := torch.LoadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := nn.LoadStateDict(b, sd, "enc."); err != nil {
		t.Fatal(err)
	}
	wa, _ := a.conv.Weight.Float64s()
	wb, _ := b.conv.Weight.Float64s()
	for i := range wa {
		if wa[i] != wb[i] {
			t.Fatal("weights differ after loading")
		}
	}
	// A checkpoint of another architecture is refused with names.
	other := nn.NewLinear(4, 3, true)
	defer nn.Free(other)
	err = nn.LoadStateDict(other, map[string]*torch.Tensor{"weight": a.fc.Weight, "bias": a.fc.Bias}, "")
	if err == nil || !strings.Contains(err.Error(), "wrong shape: bias") {
		t.Fatalf("mismatched shapes: %v", err)
	}
	err = nn.LoadStateDict(other, map[string]*torch.Tensor{"weight": other.Weight}, "")
	if err == nil || !strings.Contains(err.Error(), "missing: bias") {
		t.Fatalf("missing tensor: %v", err)
	}
}

// PyTorch's default init draws Linear weights from U(-1/sqrt(in), 1/sqrt(in)).
func TestDefaultInitBounds(t *testing.T) {
	l := nn.NewLinear(400, 300, true)
	defer nn.Free(l)
	w, _ := l.Weight.Float64s()
	bound := 1 / math.Sqrt(400)
	var sumsq float64
	for _, v := range w {
		if math.Abs(v) > bound {
			t.Fatalf("weight %v outside +-%v", v, bound)
		}
		sumsq += v * v
	}
	// Var of U(-b, b) is b^2/3.
	if v := sumsq / float64(len(w)); math.Abs(v-bound*bound/3) > 0.03*bound*bound/3 {
		t.Fatalf("weight variance %v, want %v", v, bound*bound/3)
	}
	x := torch.Empty([]int64{256, 128, 3, 3})
	defer x.Free()
	if err := nn.KaimingNormal(x, 0, "relu", false); err != nil {
		t.Fatal(err)
	}
	std, _ := x.Std([]int64{0, 1, 2, 3}, true, false).Item()
	if want := math.Sqrt(2.0 / (128 * 9)); math.Abs(std-want) > 0.01*want {
		t.Fatalf("kaiming normal std %v, want %v", std, want)
	}
	if err := nn.XavierUniform(torch.Empty([]int64{3}), 1); err == nil {
		t.Fatal("fans of a 1-D tensor must be an error")
	}
}

// A few steps of training lower the loss of a small classifier.
func TestLayersLearn(t *testing.T) {
	_ = torch.ManualSeed(3)
	b := newBlock()
	defer nn.Free(b)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn([]int64{16, 3, 6, 6}, s)
	// A learnable rule: the class is whether the first channel's mean is positive.
	y := x.Select(1, 0).MeanDims([]int64{1, 2}, false).GtScalar(0).To(torch.Int64)
	ps := nn.Parameters(b)
	lossAt := func() float64 {
		v, _ := torch.CrossEntropy(b.Forward(x), y, torch.ReduceMean).Item()
		return v
	}
	first := lossAt()
	for i := 0; i < 100; i++ {
		loss := torch.CrossEntropy(b.Forward(x), y, torch.ReduceMean)
		for _, p := range ps {
			_ = p.ZeroGrad()
		}
		if err := loss.Backward(); err != nil {
			t.Fatal(err)
		}
		torch.NoGrad(func() {
			for _, p := range ps {
				g := p.Grad()
				_ = p.SubInPlace(g, 0.1)
				g.Free()
			}
		})
	}
	if last := lossAt(); !(last < first*0.7) {
		t.Fatalf("loss %v -> %v", first, last)
	}
}
