package nn_test

import (
	"testing"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// ToChannelsLast changes the layout of 4-D parameters, not their values or
// what the layers compute; other parameters are left alone.
func TestToChannelsLast(t *testing.T) {
	_ = torch.ManualSeed(3)
	net := nn.NewSequential(
		nn.NewConv2d(3, 8, 3, torch.ConvOptions{Padding: 1}, true),
		nn.NewBatchNorm2d(8),
		nn.ReLU(),
		nn.Flatten(),
		nn.NewLinear(8*6*6, 4, true),
	)
	defer nn.Free(net)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn([]int64{5, 3, 6, 6}, s)
	before, err := net.Forward(x).Float64s()
	if err != nil {
		t.Fatal(err)
	}
	if err := nn.ToChannelsLast(net); err != nil {
		t.Fatal(err)
	}
	for _, p := range net.NamedParameters() {
		if cl := p.Tensor.IsChannelsLast(); cl != (p.Tensor.Dim() == 4) {
			t.Fatalf("%s (%d-D): channels_last %v", p.Name, p.Tensor.Dim(), cl)
		}
		if !p.Tensor.RequiresGrad() {
			t.Fatalf("%s lost requires_grad", p.Name)
		}
	}
	xc := x.ChannelsLast()
	if !xc.IsChannelsLast() || x.IsChannelsLast() {
		t.Fatal("ChannelsLast did not change the input's layout alone")
	}
	after, err := net.Forward(xc).Float64s()
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if d := before[i] - after[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("output %d: %v before, %v after", i, before[i], after[i])
		}
	}
	if err := torch.Randn([]int64{3, 4}, s).ChannelsLast().Err(); err == nil {
		t.Fatal("channels_last of a 2-D tensor: no error")
	}
}
