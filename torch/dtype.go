package torch

import "fmt"

// DType is a tensor's element type. The values are libtorch's ScalarType
// codes; the element types (Uint8 to BFloat16) are declared in ops.def
// (ops_gen.go).
type DType int8

// Invalid is the DType of a tensor that holds an error. It is no libtorch
// code and never crosses the C interface.
const Invalid DType = -1

// ElemSize returns the size of one element in bytes, or 0 if unknown.
func (d DType) ElemSize() int {
	switch d {
	case Uint8, Int8, Bool:
		return 1
	case Int16, Float16, BFloat16:
		return 2
	case Int32, Float32:
		return 4
	case Int64, Float64:
		return 8
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	return d == Float16 || d == Float32 || d == Float64 || d == BFloat16
}

func (d DType) String() string {
	if d >= 0 && int(d) < len(dtypeNames) && dtypeNames[d] != "" {
		return dtypeNames[d]
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// DeviceType is libtorch's device type code. The device types (CPUDevice,
// CUDADevice) are declared in ops.def (ops_gen.go).
type DeviceType int8

// Device names where a tensor lives.
type Device struct {
	Type  DeviceType
	Index int
}

// CPU is the host device.
var CPU = Device{Type: CPUDevice}

// CUDA returns the CUDA device with the given index.
func CUDA(index int) Device { return Device{Type: CUDADevice, Index: index} }

// ParseDevice reads "cpu", "cuda" or "cuda:N".
func ParseDevice(s string) (Device, error) {
	switch s {
	case "cpu", "":
		return CPU, nil
	case "cuda":
		return CUDA(0), nil
	}
	var i int
	if _, err := fmt.Sscanf(s, "cuda:%d", &i); err == nil && i >= 0 {
		return CUDA(i), nil
	}
	return CPU, fmt.Errorf("unknown device %q (want cpu, cuda or cuda:N)", s)
}

// OpenDevice parses a device name (see ParseDevice) and checks that this
// process can use it: a CUDA device needs a libtorch built with CUDA and a
// GPU of that index. The error names the flag's value and where to look.
func OpenDevice(s string) (Device, error) {
	d, err := ParseDevice(s)
	if err != nil {
		return d, err
	}
	if d.Type == CUDADevice && (!CUDAAvailable() || d.Index >= CUDADeviceCount()) {
		return d, fmt.Errorf("--device %s: this libtorch has no CUDA or sees no such GPU (dimtorch env shows what it found)", d)
	}
	return d, nil
}

func (d Device) String() string {
	if d.Type == CUDADevice {
		return fmt.Sprintf("cuda:%d", d.Index)
	}
	if d.Type == CPUDevice {
		return "cpu"
	}
	return fmt.Sprintf("device(%d:%d)", d.Type, d.Index)
}

// Option configures a tensor created by a factory: a DType, a Device or a
// *Scope may be passed, in any order.
type Option interface{ apply(*options) }

type options struct {
	dtype    DType
	dtypeSet bool
	device   Device
	scope    *Scope
}

func (d DType) apply(o *options)  { o.dtype = d; o.dtypeSet = true }
func (d Device) apply(o *options) { o.device = d }
func (s *Scope) apply(o *options) { o.scope = s }

func makeOptions(def DType, opts []Option) options {
	o := options{dtype: def}
	for _, op := range opts {
		if op != nil {
			op.apply(&o)
		}
	}
	return o
}
