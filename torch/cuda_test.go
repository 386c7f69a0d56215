package torch_test

import (
	"testing"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// TestCUDA runs the binding's core paths on a GPU: transfers, an op, autograd,
// an optimiser step with modules moved to the device, and agreement with the
// CPU. It is skipped, and says so, where libtorch has no CUDA or no GPU.
func TestCUDA(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA: libtorch was built without it or no GPU is visible (skipped, not passed)")
	}
	dev := torch.CUDA(0)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn([]int64{16, 8}, torch.Float64, s)
	w := torch.Randn([]int64{8, 4}, torch.Float64, s)
	cpu := mustF64(t, x.Matmul(w).Relu())
	xg, wg := x.To(dev), w.To(dev).SetRequiresGrad(true)
	y := xg.Matmul(wg).Relu()
	if y.Device() != dev {
		t.Fatalf("result on %v", y.Device())
	}
	gpu := mustF64(t, y)
	for i := range cpu {
		if d := cpu[i] - gpu[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("CUDA and CPU differ at %d: %v vs %v", i, gpu[i], cpu[i])
		}
	}
	if err := y.Sum().Backward(); err != nil {
		t.Fatal(err)
	}
	if g := wg.Grad(); g == nil || g.Device() != dev {
		t.Fatal("no gradient on the device")
	}
	net := smallNet()
	defer nn.Free(net)
	if err := nn.MoveTo(net, dev); err != nil {
		t.Fatal(err)
	}
	opt, err := optim.NewAdam(nn.Parameters(net), optim.AdamDefaults(1e-2))
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	target := torch.RandInt(0, 10, []int64{32}, dev, s)
	in := torch.Randn([]int64{32, 1, 16, 16}, dev, s)
	first := 0.0
	for i := 0; i < 20; i++ {
		loss := torch.CrossEntropy(net.Forward(in), target, torch.ReduceMean)
		v, err := loss.Item()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = v
		}
		_ = opt.ZeroGrad()
		if err := loss.Backward(); err != nil {
			t.Fatal(err)
		}
		if err := opt.Step(); err != nil {
			t.Fatal(err)
		}
	}
	last, _ := torch.CrossEntropy(net.Forward(in), target, torch.ReduceMean).Item()
	if !(last < first) {
		t.Fatalf("loss on CUDA did not fall: %v -> %v", first, last)
	}
	// bfloat16 autocast on the GPU: matmul in bfloat16, close to float32;
	// the CPU's setting does not reach CUDA operators.
	a, b := torch.Randn([]int64{64, 128}, dev, s), torch.Randn([]int64{128, 32}, dev, s)
	exact := a.Matmul(b)
	var auto, cpuOnly *torch.Tensor
	if err := torch.AutocastOn(dev, torch.BFloat16, func() { auto = a.Matmul(b) }); err != nil {
		t.Fatal(err)
	}
	if auto.DType() != torch.BFloat16 || auto.Device() != dev {
		t.Fatalf("CUDA autocast matmul gave %v on %v, want bfloat16 on %v", auto.DType(), auto.Device(), dev)
	}
	rel, err := auto.To(torch.Float32).Sub(exact).Norm(2).Div(exact.Norm(2)).Item()
	if err != nil || rel == 0 || rel > 0.02 {
		t.Fatalf("relative error of the bfloat16 matmul on CUDA: %v (%v)", rel, err)
	}
	if err := torch.Autocast(torch.BFloat16, func() { cpuOnly = a.Matmul(b) }); err != nil {
		t.Fatal(err)
	}
	if cpuOnly.DType() != torch.Float32 {
		t.Fatalf("CPU autocast changed a CUDA matmul to %v", cpuOnly.DType())
	}
	if err := torch.CUDASynchronize(0); err != nil {
		t.Fatal(err)
	}
}
