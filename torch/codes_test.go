package torch_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// The codes of ops.def's valued kinds cross the C interface as they are, in
// both directions: a tensor made with a dtype reports that dtype back.
// (shim_ops.h checks at compile time that each is libtorch's value.)
func TestDTypeCodesRoundTrip(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	names := map[torch.DType]string{
		torch.Uint8: "uint8", torch.Int8: "int8", torch.Int16: "int16", torch.Int32: "int32",
		torch.Int64: "int64", torch.Float16: "float16", torch.Float32: "float32",
		torch.Float64: "float64", torch.Bool: "bool", torch.BFloat16: "bfloat16",
	}
	for d, name := range names {
		if d.String() != name {
			t.Errorf("DType(%d).String() = %q, want %q", int(d), d.String(), name)
		}
		z := torch.Zeros([]int64{3}, d, s)
		if z.DType() != d || z.Device() != torch.CPU {
			t.Errorf("%s: zeros are %v on %v (%v)", name, z.DType(), z.Device(), z.Err())
		}
		if to := torch.Ones([]int64{2}, s).To(d); to.DType() != d {
			t.Errorf("%s: To gave %v (%v)", name, to.DType(), to.Err())
		}
		if b, err := z.Bytes(); err != nil || len(b) != 3*d.ElemSize() {
			t.Errorf("%s: %d bytes for 3 elements (%v), want %d", name, len(b), err, 3*d.ElemSize())
		}
	}
	for _, d := range []torch.DType{torch.Invalid, 8, 12, 16, 100} {
		if !strings.HasPrefix(d.String(), "dtype(") {
			t.Errorf("DType(%d).String() = %q", int(d), d.String())
		}
	}
}

func opOf(err error) string {
	var te *torch.Error
	if errors.As(err, &te) {
		return te.Op
	}
	return ""
}

// Each code of the switched kinds that are not plain operators reaches the
// libtorch call and the name that ops.def gives it.
func TestSwitchedCodes(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.FromSlice([]float32{3, 1, 2, 5, 4, 0}, []int64{2, 3}, s)

	mx, imx := x.MaxDim(1, false)
	mn, imn := x.MinDim(1, false)
	wantValues(t, "max", mx, []float64{3, 5}, 0)
	wantValues(t, "max indices", imx, []float64{0, 0}, 0)
	wantValues(t, "min", mn, []float64{1, 0}, 0)
	wantValues(t, "min indices", imn, []float64{1, 2}, 0)
	wantValues(t, "argmax", x.Argmax(1, false), []float64{0, 0}, 0)
	wantValues(t, "argmin", x.Argmin(1, false), []float64{1, 2}, 0)
	wantValues(t, "argmax all", x.ArgmaxAll(), []float64{3}, 0)
	if v, _ := x.MaxDim(5, false); opOf(v.Err()) != "max" {
		t.Errorf("MaxDim's error: %v", v.Err())
	}
	if v, _ := x.MinDim(5, false); opOf(v.Err()) != "min" {
		t.Errorf("MinDim's error: %v", v.Err())
	}
	if e := x.Argmin(5, false).Err(); opOf(e) != "argmin" {
		t.Errorf("Argmin's error: %v", e)
	}

	img := torch.FromSlice([]float32{1, 2, 3, 4}, []int64{1, 1, 2, 2}, s)
	wantValues(t, "adaptive avg", torch.AdaptiveAvgPool2d(img, 1, 1), []float64{2.5}, 0)
	wantValues(t, "adaptive max", torch.AdaptiveMaxPool2d(img, 1, 1), []float64{4}, 0)
	for _, e := range []error{torch.AdaptiveAvgPool2d(torch.Zeros([]int64{2}, s), 1, 1).Err(),
		torch.AdaptiveMaxPool2d(torch.Zeros([]int64{2}, s), 1, 1).Err()} {
		if opOf(e) != "adaptive_pool2d" {
			t.Errorf("adaptive pooling's error: %v", e)
		}
	}
	wantValues(t, "nearest", torch.Interpolate(img, 1, 4, torch.Nearest, false).Reshape(4), []float64{1, 1, 2, 2}, 0)
	wantValues(t, "bilinear", torch.Interpolate(img, 1, 3, torch.Bilinear, true).Reshape(3), []float64{1, 1.5, 2}, 1e-6)
	if e := torch.Interpolate(img, 2, 2, torch.InterpMode(7), false).Err(); opOf(e) != "interpolate" || !strings.Contains(e.Error(), "unknown interpolation mode") {
		t.Errorf("an unknown interpolation mode: %v", e)
	}

	row := torch.FromSlice([]float32{1, 2, 3}, []int64{1, 1, 3}, s)
	for _, c := range []struct {
		mode torch.PadMode
		want []float64
	}{
		{torch.PadConstant, []float64{9, 1, 2, 3, 9}},
		{torch.PadReflect, []float64{2, 1, 2, 3, 2}},
		{torch.PadReplicate, []float64{1, 1, 2, 3, 3}},
		{torch.PadCircular, []float64{3, 1, 2, 3, 1}},
	} {
		wantValues(t, "pad", row.Pad([]int64{1, 1}, c.mode, 9), c.want, 0)
	}
	if e := row.Pad([]int64{1, 1}, torch.PadMode(4), 0).Err(); opOf(e) != "pad" || !strings.Contains(e.Error(), "unknown mode") {
		t.Errorf("an unknown padding mode: %v", e)
	}

	acc := torch.Ones([]int64{2}, s)
	t1 := torch.FromSlice([]float32{2, 3}, []int64{2}, s)
	t2 := torch.FromSlice([]float32{4, 6}, []int64{2}, s)
	if err := acc.AddcmulInPlace(t1, t2, 0.5); err != nil {
		t.Fatal(err)
	}
	wantValues(t, "addcmul_", acc, []float64{5, 10}, 0)
	if err := acc.AddcdivInPlace(t1, t2, 2); err != nil {
		t.Fatal(err)
	}
	wantValues(t, "addcdiv_", acc, []float64{6, 11}, 0)
	if err := acc.AddcdivInPlace(t1, torch.Ones([]int64{3}, s), 1); opOf(err) != "addcdiv_" {
		t.Errorf("AddcdivInPlace's error: %v", err)
	}

	u := torch.Zeros([]int64{1000}, s)
	if err := u.FillInPlace(7); err != nil {
		t.Fatal(err)
	}
	wantValues(t, "fill_", u.Narrow(0, 0, 2), []float64{7, 7}, 0)
	if err := u.ZeroInPlace(); err != nil {
		t.Fatal(err)
	}
	wantValues(t, "zero_", u.Narrow(0, 0, 2), []float64{0, 0}, 0)
	if err := u.UniformInPlace(2, 3); err != nil {
		t.Fatal(err)
	}
	if lo, hi := item(t, u.Min()), item(t, u.Max()); lo < 2 || hi > 3 {
		t.Errorf("uniform_(2, 3) gave [%v, %v]", lo, hi)
	}
	if err := u.NormalInPlace(100, 1); err != nil {
		t.Fatal(err)
	}
	if m := item(t, u.Mean()); math.Abs(m-100) > 0.5 {
		t.Errorf("normal_(100, 1) has mean %v", m)
	}
	if err := u.BernoulliInPlace(1); err != nil {
		t.Fatal(err)
	}
	if sum := item(t, u.Sum()); sum != 1000 {
		t.Errorf("bernoulli_(1) sums to %v", sum)
	}
	if err := u.UniformInPlace(3, 2); opOf(err) != "uniform_" {
		t.Errorf("UniformInPlace's error: %v", err)
	}
}

func item(t *testing.T, x *torch.Tensor) float64 {
	t.Helper()
	v, err := x.Item()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Loss reductions: the three codes, and any other value taken as the mean.
func TestLossReductionCodes(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	a := torch.FromSlice([]float32{1, 2, 3}, []int64{3}, s)
	b := torch.Zeros([]int64{3}, s)
	wantValues(t, "none", torch.MSELoss(a, b, torch.ReduceNone), []float64{1, 4, 9}, 0)
	wantValues(t, "sum", torch.MSELoss(a, b, torch.ReduceSum), []float64{14}, 0)
	wantValues(t, "mean", torch.MSELoss(a, b, torch.ReduceMean), []float64{14.0 / 3}, 1e-6)
	for _, r := range []torch.Reduction{-1, 3, 7} {
		wantValues(t, "unknown reduction", torch.MSELoss(a, b, r), []float64{14.0 / 3}, 1e-6)
	}
	var zero torch.Reduction
	if zero != torch.ReduceMean {
		t.Error("Reduction's zero value is not the mean")
	}
}

func TestATenCPUCapabilityName(t *testing.T) {
	switch c := torch.ATenCPUCapability(); c {
	case "default", "avx2", "avx512":
	default:
		t.Fatalf("ATenCPUCapability() = %q", c)
	}
}
