package torch_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// Every libtorch exception must come back as a Go error with libtorch's
// message; the process must survive.
func TestLibtorchErrorsBecomeGoErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	a := torch.Zeros([]int64{2, 3}, s)
	b := torch.Zeros([]int64{4, 5}, s)
	cases := []struct {
		name    string
		result  *torch.Tensor
		op      string
		message string
	}{
		{"matmul shape mismatch", a.Matmul(b), "matmul", "cannot be multiplied"},
		{"broadcast mismatch", a.Add(b), "add", "must match"},
		{"reshape to a wrong size", a.Reshape(7), "reshape", "invalid for input of size 6"},
		{"cat of mismatched shapes", torch.Cat([]*torch.Tensor{a, b}, 0), "cat", "Sizes of tensors must match"},
		{"conv2d with a wrong channel count", torch.Conv2d(torch.Zeros([]int64{1, 3, 8, 8}, s), torch.Zeros([]int64{4, 2, 3, 3}, s), nil, torch.ConvOptions{}), "conv2d", "channels"},
		{"index out of range", a.Select(0, 5), "select", "out of range"},
		{"dimension out of range", a.SumDims([]int64{3}, false), "sum", "Dimension out of range"},
		{"dtype: cross entropy with float targets", torch.CrossEntropy(a, torch.Zeros([]int64{2}, s), torch.ReduceMean), "cross_entropy", "Float"},
		{"dtype: bitwise op on floats", torch.Zeros([]int64{2}, s).LogicalNot().Sub(torch.Zeros([]int64{2}, torch.Bool, s)), "sub", "bool"},
		{"view on non-contiguous data", a.T().View(6), "view", "view size is not compatible"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.result.Err()
			var te *torch.Error
			if !errors.As(err, &te) {
				t.Fatalf("want *torch.Error, got %v", err)
			}
			if te.Op != c.op {
				t.Errorf("op %q, want %q", te.Op, c.op)
			}
			if !strings.Contains(err.Error(), c.message) {
				t.Errorf("message %q does not contain %q", err.Error(), c.message)
			}
			if strings.Contains(err.Error(), "Exception raised from") {
				t.Errorf("message keeps the C++ backtrace: %q", err.Error())
			}
		})
	}
}

func TestDeviceErrors(t *testing.T) {
	dev := torch.CUDA(0) // without CUDA: no such device
	if torch.CUDAAvailable() {
		dev = torch.CUDA(torch.CUDADeviceCount()) // one past the last GPU
	}
	err := torch.Zeros([]int64{2}, dev).Err()
	if err == nil {
		t.Fatalf("creating a tensor on the missing device %v must fail", dev)
	}
	if !strings.Contains(strings.ToLower(err.Error()), "cuda") {
		t.Fatalf("error does not mention CUDA: %v", err)
	}
}

// Errors propagate through chains of operators without further C calls, and
// surface from Item, Backward and Data.
func TestErrorsPropagate(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	bad := torch.Zeros([]int64{2, 3}, s).Matmul(torch.Zeros([]int64{2, 3}, s))
	chain := bad.Relu().Exp().Sum().MulScalar(2)
	if !strings.Contains(chain.Err().Error(), "matmul") {
		t.Fatalf("the chain lost the first error: %v", chain.Err())
	}
	if _, err := chain.Item(); err == nil {
		t.Fatal("Item must report the error")
	}
	if err := chain.Backward(); err == nil {
		t.Fatal("Backward must report the error")
	}
	if _, err := torch.Data[float32](chain); err == nil {
		t.Fatal("Data must report the error")
	}
	if err := torch.Cat([]*torch.Tensor{torch.Ones([]int64{1}, s), bad}, 0).Err(); err == nil {
		t.Fatal("Cat must report an errored operand")
	}
	if chain.Shape() != nil || chain.Numel() != -1 {
		t.Fatal("an errored tensor has no shape")
	}
}

func TestUseAfterFreeAndNil(t *testing.T) {
	x := torch.Ones([]int64{2})
	x.Free()
	x.Free() // idempotent
	if err := x.Exp().Err(); err == nil || !strings.Contains(err.Error(), "freed") {
		t.Fatalf("use after free: %v", err)
	}
	s := torch.NewScope()
	y := torch.Ones([]int64{2}, s)
	s.Close()
	if err := y.Err(); err == nil {
		t.Fatal("a tensor of a closed scope must report it was freed")
	}
	var nilT *torch.Tensor
	if err := nilT.Add(torch.Ones([]int64{1})).Err(); err == nil || !strings.Contains(err.Error(), "nil") {
		t.Fatalf("nil tensor: %v", err)
	}
}

func TestBackwardErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Ones([]int64{3}, s).SetRequiresGrad(true)
	if err := x.MulScalar(2).Backward(); err == nil || !strings.Contains(err.Error(), "scalar") {
		t.Fatalf("backward of a non-scalar: %v", err)
	}
	if err := torch.Ones([]int64{1}, s).Sum().Backward(); err == nil {
		t.Fatal("backward without any tensor requiring grad must fail")
	}
	if err := torch.Ones([]int64{2}, torch.Int64, s).SetRequiresGrad(true).Err(); err == nil {
		t.Fatal("integer tensors cannot require gradients")
	}
	y := x.Exp().Sum() // exp saves its result for backward
	if err := y.Backward(); err != nil {
		t.Fatal(err)
	}
	if err := y.Backward(); err == nil || !strings.Contains(err.Error(), "second time") {
		t.Fatalf("second backward through a freed graph: %v", err)
	}
}

// TestInPlaceNilOperand: an in-place operator given a nil or freed operand
// returns an error (a nil one reached C++ as NULL and crashed the process).
func TestInPlaceNilOperand(t *testing.T) {
	x := torch.Zeros([]int64{3})
	defer x.Free()
	freed := torch.Ones([]int64{3})
	freed.Free()
	ops := map[string]func(o *torch.Tensor) error{
		"AddInPlace":  func(o *torch.Tensor) error { return x.AddInPlace(o, 1) },
		"SubInPlace":  func(o *torch.Tensor) error { return x.SubInPlace(o, 1) },
		"MulInPlace":  x.MulInPlace,
		"DivInPlace":  x.DivInPlace,
		"CopyFrom":    x.CopyFrom,
		"LerpInPlace": func(o *torch.Tensor) error { return x.LerpInPlace(o, 0.5) },
		"AddcmulInPlace": func(o *torch.Tensor) error {
			return x.AddcmulInPlace(o, o, 1)
		},
	}
	for name, op := range ops {
		if err := op(nil); err == nil {
			t.Errorf("%s(nil): no error", name)
		}
		err := op(freed)
		if err == nil {
			t.Errorf("%s(freed tensor): no error", name)
		} else if !errors.Is(err, torch.ErrFreed) {
			t.Errorf("%s(freed tensor): %v does not match ErrFreed", name, err)
		}
	}
	if v, err := x.Float32s(); err != nil || v[0] != 0 {
		t.Fatalf("x changed: %v %v", v, err)
	}
}

// TestErrFreedMatches: errors.Is recognises use after Free, through Err,
// Item and operators on the freed tensor.
func TestErrFreedMatches(t *testing.T) {
	x := torch.Ones([]int64{2})
	x.Free()
	if err := x.Err(); !errors.Is(err, torch.ErrFreed) {
		t.Fatalf("Err: %v", err)
	}
	if _, err := x.Sum().Item(); !errors.Is(err, torch.ErrFreed) {
		t.Fatalf("Item of a result: %v", err)
	}
	var te *torch.Error
	if err := x.Err(); !errors.As(err, &te) || te.Op != "tensor" {
		t.Fatalf("not a *torch.Error: %v", err)
	}
	if err := torch.Ones([]int64{2}).Matmul(torch.Ones([]int64{3})).Err(); errors.Is(err, torch.ErrFreed) {
		t.Fatalf("a shape error matches ErrFreed: %v", err)
	}
}
