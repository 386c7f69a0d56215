package torch_test

import (
	"errors"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

func mustF64(t *testing.T, x *torch.Tensor) []float64 {
	t.Helper()
	v, err := x.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantValues(t *testing.T, what string, x *torch.Tensor, want []float64, tol float64) {
	t.Helper()
	got := mustF64(t, x)
	if len(got) != len(want) {
		t.Fatalf("%s: %d values %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > tol {
			t.Fatalf("%s[%d] = %v, want %v (all: %v)", what, i, got[i], want[i], got)
		}
	}
}

func TestRoundTripEveryDType(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	if v, err := torch.Data[float32](torch.FromSlice([]float32{1.5, -2}, []int64{2}, s)); err != nil || v[0] != 1.5 || v[1] != -2 {
		t.Fatalf("float32: %v %v", v, err)
	}
	if v, err := torch.Data[float64](torch.FromSlice([]float64{math.Pi}, []int64{1}, s)); err != nil || v[0] != math.Pi {
		t.Fatalf("float64: %v %v", v, err)
	}
	if v, err := torch.Data[int64](torch.FromSlice([]int64{1 << 40, -3}, []int64{2}, s)); err != nil || v[0] != 1<<40 || v[1] != -3 {
		t.Fatalf("int64: %v %v", v, err)
	}
	if v, err := torch.Data[uint8](torch.FromSlice([]uint8{0, 255}, []int64{2}, s)); err != nil || v[1] != 255 {
		t.Fatalf("uint8: %v %v", v, err)
	}
	if v, err := torch.Data[bool](torch.FromSlice([]bool{true, false}, []int64{2}, s)); err != nil || !v[0] || v[1] {
		t.Fatalf("bool: %v %v", v, err)
	}
	// bfloat16 keeps 8 bits of mantissa: 1 + 2^-7 survives, 1 + 2^-9 rounds to 1.
	bf := torch.FromSlice([]float32{1 + 1.0/128, 1 + 1.0/512, 3}, []int64{3}, torch.BFloat16, s)
	if bf.DType() != torch.BFloat16 {
		t.Fatalf("dtype %v, want bfloat16", bf.DType())
	}
	wantValues(t, "bfloat16", bf, []float64{1 + 1.0/128, 1, 3}, 0)
	if _, err := torch.Data[float32](bf); err == nil {
		t.Fatal("Data[float32] of a bfloat16 tensor must fail")
	}
	// 2 x 3 shape and row-major order.
	m := torch.FromSlice([]float32{1, 2, 3, 4, 5, 6}, []int64{2, 3}, s)
	if sh := m.Shape(); len(sh) != 2 || sh[0] != 2 || sh[1] != 3 || m.Numel() != 6 || m.Dim() != 2 {
		t.Fatalf("shape %v", sh)
	}
	wantValues(t, "transpose", m.T().Contiguous(), []float64{1, 4, 2, 5, 3, 6}, 0)
	if err := torch.FromSlice([]float32{1, 2, 3}, []int64{2, 2}, s).Err(); err == nil {
		t.Fatal("a slice that does not fill the shape must be an error")
	}
}

func TestFactoriesAndItem(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	wantValues(t, "arange", torch.Arange(0, 1, 0.25, s), []float64{0, 0.25, 0.5, 0.75}, 1e-7)
	wantValues(t, "eye", torch.Eye(2, 3, s), []float64{1, 0, 0, 0, 1, 0}, 0)
	wantValues(t, "full", torch.Full([]int64{2}, 7, torch.Float64, s), []float64{7, 7}, 0)
	wantValues(t, "zeros", torch.Zeros([]int64{3}, s), []float64{0, 0, 0}, 0)
	wantValues(t, "ones", torch.Ones([]int64{2}, torch.Int64, s), []float64{1, 1}, 0)
	v, err := torch.Scalar(2.5, s).Item()
	if err != nil || v != 2.5 {
		t.Fatalf("item %v %v", v, err)
	}
	if _, err := torch.Zeros([]int64{2}, s).Item(); err == nil || !strings.Contains(err.Error(), "item") {
		t.Fatalf("Item of two elements must fail, got %v", err)
	}
	// randperm is a permutation.
	p, _ := torch.RandPerm(50, s).Int64s()
	seen := make([]bool, 50)
	for _, x := range p {
		if x < 0 || x >= 50 || seen[x] {
			t.Fatalf("randperm %v is not a permutation", p)
		}
		seen[x] = true
	}
	// randint stays in [low, high).
	r, _ := torch.RandInt(3, 6, []int64{1000}, s).Int64s()
	for _, x := range r {
		if x < 3 || x >= 6 {
			t.Fatalf("randint gave %d", x)
		}
	}
	// rand is uniform on [0, 1): its mean is near 1/2; randn has unit variance.
	mean, _ := torch.Rand([]int64{100000}, s).Mean().Item()
	if math.Abs(mean-0.5) > 0.01 {
		t.Fatalf("rand mean %v", mean)
	}
	variance, _ := torch.Randn([]int64{100000}, s).Var([]int64{0}, true, false).Item()
	if math.Abs(variance-1) > 0.02 {
		t.Fatalf("randn variance %v", variance)
	}
}

func TestManualSeedReproduces(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	_ = torch.ManualSeed(42)
	a := mustF64(t, torch.Randn([]int64{5}, s))
	_ = torch.ManualSeed(42)
	b := mustF64(t, torch.Randn([]int64{5}, s))
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different draws: %v vs %v", a, b)
		}
	}
}

func TestElementwiseClosedForms(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.FromSlice([]float64{-2, -0.5, 0, 1, 3}, []int64{5}, s)
	ref := func(f func(float64) float64) []float64 {
		in := []float64{-2, -0.5, 0, 1, 3}
		out := make([]float64, len(in))
		for i, v := range in {
			out[i] = f(v)
		}
		return out
	}
	wantValues(t, "exp", x.Exp(), ref(math.Exp), 1e-12)
	wantValues(t, "sigmoid", x.Sigmoid(), ref(func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }), 1e-12)
	wantValues(t, "softplus", x.Softplus(), ref(func(v float64) float64 { return math.Log1p(math.Exp(v)) }), 1e-12)
	wantValues(t, "tanh", x.Tanh(), ref(math.Tanh), 1e-12)
	wantValues(t, "relu", x.Relu(), ref(func(v float64) float64 { return math.Max(v, 0) }), 0)
	wantValues(t, "leaky_relu", x.LeakyRelu(0.1), ref(func(v float64) float64 {
		if v < 0 {
			return 0.1 * v
		}
		return v
	}), 1e-15)
	wantValues(t, "abs", x.Abs(), ref(math.Abs), 0)
	wantValues(t, "clamp", x.Clamp(-1, 1), ref(func(v float64) float64 { return math.Max(-1, math.Min(1, v)) }), 0)
	wantValues(t, "log1p", x.AddScalar(3).Log1p(), ref(func(v float64) float64 { return math.Log1p(v + 3) }), 1e-12)
	wantValues(t, "pow", x.PowScalar(2), ref(func(v float64) float64 { return v * v }), 1e-12)
	wantValues(t, "sqrt", x.Abs().Sqrt(), ref(func(v float64) float64 { return math.Sqrt(math.Abs(v)) }), 1e-12)
	wantValues(t, "rsub", x.RSub(1), ref(func(v float64) float64 { return 1 - v }), 0)
	// Softplus is stable for large inputs, where log(1 + exp(x)) overflows.
	big := torch.FromSlice([]float64{1000, -1000}, []int64{2}, s)
	wantValues(t, "softplus large", big.Softplus(), []float64{1000, 0}, 1e-12)
	// Comparisons broadcast and give booleans.
	cmp := x.Gt(torch.FromSlice([]float64{0}, []int64{1}, s))
	if cmp.DType() != torch.Bool {
		t.Fatalf("comparison dtype %v", cmp.DType())
	}
	wantValues(t, "gt", cmp, []float64{0, 0, 0, 1, 1}, 0)
	wantValues(t, "eq scalar", x.EqScalar(1), []float64{0, 0, 0, 1, 0}, 0)
	// Broadcasting arithmetic: [2,1] + [3] -> [2,3].
	a := torch.FromSlice([]float64{10, 20}, []int64{2, 1}, s)
	b := torch.FromSlice([]float64{1, 2, 3}, []int64{3}, s)
	wantValues(t, "broadcast add", a.Add(b), []float64{11, 12, 13, 21, 22, 23}, 0)
}

func TestReductionsClosedForms(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	m := torch.FromSlice([]float64{1, 5, 3, 4, 2, 6}, []int64{2, 3}, s)
	wantValues(t, "sum", m.Sum(), []float64{21}, 0)
	wantValues(t, "sum dim 1", m.SumDims([]int64{1}, false), []float64{9, 12}, 0)
	wantValues(t, "mean dim 0", m.MeanDims([]int64{0}, false), []float64{2.5, 3.5, 4.5}, 1e-15)
	wantValues(t, "max", m.Max(), []float64{6}, 0)
	wantValues(t, "min", m.Min(), []float64{1}, 0)
	wantValues(t, "argmax", m.Argmax(1, false), []float64{1, 2}, 0)
	v, i := m.MinDim(0, false)
	wantValues(t, "min values", v, []float64{1, 2, 3}, 0)
	wantValues(t, "min indices", i, []float64{0, 1, 0}, 0)
	lse := math.Log(math.Exp(1) + math.Exp(5) + math.Exp(3))
	wantValues(t, "logsumexp", m.LogSumExp([]int64{1}, false).Narrow(0, 0, 1), []float64{lse}, 1e-12)
	e1, e5, e3 := math.Exp(1), math.Exp(5), math.Exp(3)
	wantValues(t, "softmax", m.Softmax(1).Narrow(0, 0, 1), []float64{e1 / (e1 + e5 + e3), e5 / (e1 + e5 + e3), e3 / (e1 + e5 + e3)}, 1e-12)
	wantValues(t, "var", m.Var([]int64{1}, true, false), []float64{4, 4}, 1e-12)
	wantValues(t, "var biased", m.Var([]int64{1}, false, false), []float64{8.0 / 3, 8.0 / 3}, 1e-12)
	wantValues(t, "prod", m.Prod([]int64{0, 1}, false), []float64{720}, 0)
	wantValues(t, "cumsum", m.Cumsum(1), []float64{1, 6, 9, 4, 6, 12}, 0)
	wantValues(t, "norm", m.Norm(2), []float64{math.Sqrt(91)}, 1e-12)
	tv, ti := torch.FromSlice([]float64{3, 9, 1, 7}, []int64{4}, s).TopK(2, 0)
	wantValues(t, "topk values", tv, []float64{9, 7}, 0)
	wantValues(t, "topk indices", ti, []float64{1, 3}, 0)
	bv, _ := torch.FromSlice([]float64{3, 9, 1, 7}, []int64{4}, s).BottomK(1, 0)
	wantValues(t, "bottomk", bv, []float64{1}, 0)
	wantValues(t, "one_hot", torch.FromSlice([]int64{2, 0}, []int64{2}, s).OneHot(3), []float64{0, 0, 1, 1, 0, 0}, 0)
}

func TestShapeOps(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Arange(0, 24, 1, s).Reshape(2, 3, 4)
	if sh := x.Permute(2, 0, 1).Shape(); sh[0] != 4 || sh[1] != 2 || sh[2] != 3 {
		t.Fatalf("permute shape %v", sh)
	}
	wantValues(t, "select+narrow", x.Select(0, 1).Narrow(1, 1, 2).Contiguous().View(-1), []float64{13, 14, 17, 18, 21, 22}, 0)
	wantValues(t, "index_select", x.Select(0, 0).IndexSelect(0, torch.FromSlice([]int64{2, 0}, []int64{2}, s)).Select(1, 0), []float64{8, 0}, 0)
	wantValues(t, "flip", torch.Arange(0, 3, 1, s).Flip(0), []float64{2, 1, 0}, 0)
	wantValues(t, "repeat", torch.Arange(0, 2, 1, s).Repeat(3), []float64{0, 1, 0, 1, 0, 1}, 0)
	wantValues(t, "expand", torch.Arange(0, 2, 1, s).Unsqueeze(1).Expand(2, 2).Contiguous().View(-1), []float64{0, 0, 1, 1}, 0)
	cat := torch.Cat([]*torch.Tensor{torch.Zeros([]int64{1, 2}, s), torch.Ones([]int64{2, 2}, s)}, 0)
	if sh := cat.Shape(); sh[0] != 3 || sh[1] != 2 {
		t.Fatalf("cat shape %v", sh)
	}
	st := torch.Stack([]*torch.Tensor{torch.Zeros([]int64{2}, s), torch.Ones([]int64{2}, s)}, 1)
	wantValues(t, "stack", st, []float64{0, 1, 0, 1}, 0)
	parts, err := torch.Arange(0, 7, 1, s).Split(3, 0)
	if err != nil || len(parts) != 3 || parts[2].Numel() != 1 {
		t.Fatalf("split: %v parts, %v", len(parts), err)
	}
	// unfold extracts sliding windows: the basis of the folded encoders' crops.
	u := torch.Arange(0, 5, 1, s).Unfold(0, 3, 1)
	wantValues(t, "unfold", u, []float64{0, 1, 2, 1, 2, 3, 2, 3, 4}, 0)
	wantValues(t, "gather", torch.FromSlice([]float64{1, 2, 3, 4}, []int64{2, 2}, s).Gather(1, torch.FromSlice([]int64{1, 1, 0, 1}, []int64{2, 2}, s)), []float64{2, 2, 3, 4}, 0)
	mf := torch.Eye(2, 2, s).MaskedFill(torch.Eye(2, 2, torch.Bool, s), -10)
	wantValues(t, "masked_fill", mf, []float64{-10, 0, 0, -10}, 0)
	wantValues(t, "where", torch.Where(torch.FromSlice([]bool{true, false}, []int64{2}, s), torch.Ones([]int64{2}, s), torch.Zeros([]int64{2}, s)), []float64{1, 0}, 0)
	wantValues(t, "pad", torch.Ones([]int64{1, 2}, s).Pad([]int64{1, 0}, torch.PadConstant, 5), []float64{5, 1, 1}, 0)
	// einsum "ij,jk->ik" is matmul.
	a := torch.FromSlice([]float64{1, 2, 3, 4}, []int64{2, 2}, s)
	wantValues(t, "einsum", torch.Einsum("ij,jk->ik", a, a), []float64{7, 10, 15, 22}, 0)
	wantValues(t, "matmul", a.Matmul(a), []float64{7, 10, 15, 22}, 0)
	wantValues(t, "flatten", x.Flatten(1, 2).SumDims([]int64{1}, false), []float64{66, 210}, 0)
}

func TestPrinting(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	str := torch.FromSlice([]float32{1.5, 2}, []int64{2}, s).String()
	if !strings.Contains(str, "1.5") || !strings.Contains(str, "Float") {
		t.Fatalf("printing: %q", str)
	}
	if !strings.Contains(torch.Errored(errors.New("boom")).String(), "boom") {
		t.Fatal("printing an errored tensor must show the error")
	}
}

func TestInPlaceAndReplace(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Ones([]int64{3}, torch.Float64, s)
	y := torch.Full([]int64{3}, 2, torch.Float64, s)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(x.AddInPlace(y, 0.5))  // 2
	must(x.MulScalarInPlace(3)) // 6
	must(x.AddcmulInPlace(y, y, 0.25))
	must(x.AddcdivInPlace(y, y, 1))           // 8
	must(x.LerpInPlace(y.MulScalar(10), 0.5)) // 14
	wantValues(t, "in place", x, []float64{14, 14, 14}, 1e-12)
	must(x.CopyFrom(torch.FromSlice([]float32{1, 2, 3}, []int64{3}, s)))
	wantValues(t, "copy", x, []float64{1, 2, 3}, 0)
	z := torch.Zeros([]int64{2}, s)
	must(z.Replace(torch.Ones([]int64{4}, s)))
	if z.Numel() != 4 {
		t.Fatalf("replace kept the old tensor: %v", z.Shape())
	}
}

// bfloat16 on the CPU: arithmetic in bfloat16 and autocast of matmul.
func TestBFloat16OnCPU(t *testing.T) {
	testref.NeedBF16(t)
	s := torch.NewScope()
	defer s.Close()
	a := torch.Randn([]int64{32, 64}, s)
	b := torch.Randn([]int64{64, 16}, s)
	exact := a.Matmul(b)
	var auto *torch.Tensor
	if err := torch.Autocast(torch.BFloat16, func() { auto = a.Matmul(b) }); err != nil {
		t.Fatal(err)
	}
	if auto.DType() != torch.BFloat16 {
		t.Fatalf("autocast matmul gave %v, want bfloat16", auto.DType())
	}
	if plain := a.Matmul(b); plain.DType() != torch.Float32 {
		t.Fatalf("autocast leaked out of its function: %v", plain.DType())
	}
	// Autocast is per device type: CUDA's setting leaves CPU operators alone
	// (this runs without a GPU: setting the flag needs no device).
	var other *torch.Tensor
	if err := torch.AutocastOn(torch.CUDA(0), torch.BFloat16, func() { other = a.Matmul(b) }); err != nil {
		t.Fatal(err)
	}
	if other.DType() != torch.Float32 {
		t.Fatalf("CUDA autocast changed a CPU matmul to %v", other.DType())
	}
	if err := torch.AutocastOn(torch.Device{Type: 7}, torch.BFloat16, func() {}); err == nil {
		t.Fatal("autocast on an unknown device type: no error")
	}
	// bfloat16 keeps about 3 significant digits: the relative error of the
	// product is small but not zero.
	rel, _ := auto.To(torch.Float32).Sub(exact).Norm(2).Div(exact.Norm(2)).Item()
	if rel == 0 || rel > 0.02 {
		t.Fatalf("relative error of the bfloat16 matmul %v", rel)
	}
	conv := torch.Conv2d(torch.Randn([]int64{2, 3, 8, 8}, torch.BFloat16, s), torch.Randn([]int64{4, 3, 3, 3}, torch.BFloat16, s), nil, torch.ConvOptions{})
	if conv.DType() != torch.BFloat16 || conv.Err() != nil {
		t.Fatalf("bfloat16 conv: %v %v", conv.DType(), conv.Err())
	}
}

func TestRNGStateRestores(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	_ = torch.ManualSeed(5)
	_ = torch.Randn([]int64{3}, s)
	st := torch.RNGState().MoveTo(s)
	a := mustF64(t, torch.Rand([]int64{4}, s))
	_ = torch.Randn([]int64{100}, s)
	if err := torch.SetRNGState(st); err != nil {
		t.Fatal(err)
	}
	b := mustF64(t, torch.Rand([]int64{4}, s))
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("restored state draws %v, want %v", b, a)
		}
	}
	if err := torch.SetRNGState(torch.Zeros([]int64{3}, torch.Uint8, s)); err == nil {
		t.Fatal("a malformed state must be refused")
	}
}
