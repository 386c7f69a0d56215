package eval

import (
	"context"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/datasets/datasetstest"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// The untrained baseline's BatchNorm statistics are the averages of the
// batch statistics over the training images: checked on the first layer
// against its convolution's output computed directly (two batches of 500).
func TestCalibrateBatchNorm(t *testing.T) {
	dir := t.TempDir()
	if err := datasetstest.WriteMNISTLike(dir, 1000, 10, 3); err != nil {
		t.Fatal(err)
	}
	d, err := datasets.Open("mnist", datasets.Train, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer datasets.Close(d)
	_ = torch.ManualSeed(1)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	var conv *nn.Conv2d
	var bn *nn.BatchNorm
	nn.Walk(enc, func(_ string, m nn.Module) {
		if c, ok := m.(*nn.Conv2d); ok && conv == nil {
			conv = c
		}
		if b, ok := m.(*nn.BatchNorm); ok && bn == nil {
			bn = b
		}
	})
	live := torch.LiveTensors()
	n, err := CalibrateBatchNorm(context.Background(), enc, d, nil, torch.CPU)
	if err != nil || n != 1000 {
		t.Fatalf("calibrated on %d images: %v", n, err)
	}
	if after := torch.LiveTensors(); after != live {
		t.Fatalf("%d live tensors before calibrating, %d after", live, after)
	}
	if enc.Training() {
		t.Fatal("the encoder was left in training mode")
	}
	s := torch.NewScope()
	defer s.Close()
	set, err := Extract(context.Background(), PixelSource{}, d, ExtractOptions{Taps: []string{"pixels"}, KeepImages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Free()
	var wantMean, wantVar *torch.Tensor
	torch.NoGrad(func() {
		h := conv.Forward(set.Images.Ref(s)) // [1000, 64, 14, 14]
		for b := int64(0); b < 2; b++ {
			part := h.Narrow(0, b*500, 500).Transpose(0, 1).Flatten(1, -1) // [64, 500*196]
			m, v := part.MeanDims([]int64{1}, false), part.Var([]int64{1}, true, false)
			if wantMean == nil {
				wantMean, wantVar = m.DivScalar(2), v.DivScalar(2)
			} else {
				wantMean, wantVar = wantMean.Add(m.DivScalar(2)), wantVar.Add(v.DivScalar(2))
			}
		}
	})
	dm, _ := bn.RunningMean.Ref(s).Sub(wantMean).Abs().Max().Item()
	dv, _ := bn.RunningVar.Ref(s).Sub(wantVar).Abs().Max().Div(wantVar.Abs().Max()).Item()
	m0, _ := wantMean.Abs().Max().Item()
	if !(dm <= 1e-4*(1+m0) && dv <= 1e-4) {
		t.Fatalf("running statistics off by %v (mean) and %v relative (variance)", dm, dv)
	}
	if bn.Cumulative {
		t.Fatal("BatchNorm left in cumulative mode")
	}
}
