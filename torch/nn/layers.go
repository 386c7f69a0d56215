package nn

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
)

// initialised returns w unchanged, or a tensor carrying err.
func initialised(w *torch.Tensor, err error) *torch.Tensor {
	if err != nil {
		w.Free()
		return torch.Errored(err)
	}
	return w
}

// Linear is y = x W^T + b.
type Linear struct {
	Base
	Weight, Bias *torch.Tensor // [out, in], [out] (nil without bias)
}

// NewLinear returns a Linear layer with PyTorch's default initialisation.
func NewLinear(in, out int64, bias bool) *Linear {
	l := &Linear{}
	w := torch.Empty([]int64{out, in})
	var b *torch.Tensor
	if bias {
		b = torch.Empty([]int64{out})
	}
	err := defaultInit(w, b)
	l.Weight = l.Param("weight", initialised(w, err))
	if bias {
		l.Bias = l.Param("bias", initialised(b, err))
	}
	return l
}

// Forward applies the layer to x [..., in].
func (l *Linear) Forward(x *torch.Tensor) *torch.Tensor { return torch.Linear(x, l.Weight, l.Bias) }

// Conv2d is a 2-D convolution.
type Conv2d struct {
	Base
	Weight, Bias *torch.Tensor // [out, in/groups, k, k], [out] (nil without bias)
	Opts         torch.ConvOptions
}

// NewConv2d returns a k x k convolution with PyTorch's default initialisation.
func NewConv2d(in, out, k int64, opts torch.ConvOptions, bias bool) *Conv2d {
	c := &Conv2d{Opts: opts}
	g := opts.Groups
	if g == 0 {
		g = 1
	}
	w := torch.Empty([]int64{out, in / g, k, k})
	var b *torch.Tensor
	if bias {
		b = torch.Empty([]int64{out})
	}
	err := defaultInit(w, b)
	c.Weight = c.Param("weight", initialised(w, err))
	if bias {
		c.Bias = c.Param("bias", initialised(b, err))
	}
	return c
}

// Forward convolves x [N, in, H, W].
func (c *Conv2d) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Conv2d(x, c.Weight, c.Bias, c.Opts)
}

// ConvTranspose2d is a 2-D transposed convolution.
type ConvTranspose2d struct {
	Base
	Weight, Bias *torch.Tensor // [in, out/groups, k, k], [out]
	Opts         torch.ConvOptions
}

// NewConvTranspose2d returns a k x k transposed convolution.
func NewConvTranspose2d(in, out, k int64, opts torch.ConvOptions, bias bool) *ConvTranspose2d {
	c := &ConvTranspose2d{Opts: opts}
	g := opts.Groups
	if g == 0 {
		g = 1
	}
	w := torch.Empty([]int64{in, out / g, k, k})
	var b *torch.Tensor
	if bias {
		b = torch.Empty([]int64{out})
	}
	err := defaultInit(w, b)
	c.Weight = c.Param("weight", initialised(w, err))
	if bias {
		c.Bias = c.Param("bias", initialised(b, err))
	}
	return c
}

// Forward applies the transposed convolution to x [N, in, H, W].
func (c *ConvTranspose2d) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.ConvTranspose2d(x, c.Weight, c.Bias, c.Opts)
}

// BatchNorm normalises each channel (dimension 1) over the batch and any
// spatial dimensions: it serves as BatchNorm1d ([N, C] or [N, C, L]) and
// BatchNorm2d ([N, C, H, W]).
type BatchNorm struct {
	Base
	Weight, Bias            *torch.Tensor // affine [C], nil when not affine
	RunningMean, RunningVar *torch.Tensor // [C]
	NumBatchesTracked       *torch.Tensor // int64 scalar
	Momentum, Eps           float64
	// Cumulative makes the running statistics, in training mode, the plain
	// average over the batches counted by NumBatchesTracked instead of a
	// moving average (PyTorch's momentum=None): reset the count to 0 and
	// run batches to measure a data set's statistics.
	Cumulative bool
	// Gather, when set, synchronises the batch statistics in training mode
	// across the processes of a data-parallel job (SyncBatchNorm): it must
	// return every process's tensor concatenated along dimension 0 in the
	// same order everywhere, differentiably (dist.Group.AllGather). Each
	// process then normalises its part of the batch with the mean and
	// variance of the whole global batch, and the gradients flow through
	// the other processes' statistics. Set it with SyncBatchNorm.
	Gather func(*torch.Tensor) *torch.Tensor
}

// NewBatchNorm returns a BatchNorm over c channels with PyTorch's defaults
// (momentum 0.1, eps 1e-5, affine).
func NewBatchNorm(c int64, affine bool) *BatchNorm {
	b := &BatchNorm{Momentum: 0.1, Eps: 1e-5}
	if affine {
		b.Weight = b.Param("weight", torch.Ones([]int64{c}))
		b.Bias = b.Param("bias", torch.Zeros([]int64{c}))
	}
	b.RunningMean = b.Buffer("running_mean", torch.Zeros([]int64{c}))
	b.RunningVar = b.Buffer("running_var", torch.Ones([]int64{c}))
	b.NumBatchesTracked = b.Buffer("num_batches_tracked", torch.Zeros(nil, torch.Int64))
	return b
}

// NewBatchNorm1d is NewBatchNorm, named as in PyTorch.
func NewBatchNorm1d(c int64) *BatchNorm { return NewBatchNorm(c, true) }

// NewBatchNorm2d is NewBatchNorm, named as in PyTorch.
func NewBatchNorm2d(c int64) *BatchNorm { return NewBatchNorm(c, true) }

// Forward normalises x with batch statistics in training mode (updating the
// running statistics) and with the running statistics in evaluation mode.
func (b *BatchNorm) Forward(x *torch.Tensor) *torch.Tensor {
	m := b.Momentum
	if b.Training() {
		_ = b.NumBatchesTracked.AddScalarInPlace(1)
		if b.Cumulative {
			n, err := b.NumBatchesTracked.Item()
			if err != nil {
				return torch.Errored(err)
			}
			m = 1 / n
		}
	}
	if b.Training() && b.Gather != nil {
		return b.syncForward(x, m)
	}
	return torch.BatchNorm(x, b.Weight, b.Bias, b.RunningMean, b.RunningVar, b.Training(), m, b.Eps)
}

// syncForward is training-mode BatchNorm over the global batch of a
// data-parallel job. Each process computes its part's count, per-channel mean
// and sum of squared deviations (in float32, or float64 for float64 input;
// every process needs a non-empty part), gathers every process's three
// in one differentiable all-gather, and combines them as Chan et al.'s
// parallel variance does (no E[x^2] - E[x]^2 cancellation): N = sum n_r,
// mean = sum n_r mean_r / N, M2 = sum M2_r + sum n_r (mean_r - mean)^2, the
// biased variance M2 / N normalising, the unbiased M2 / (N - 1) entering the
// running variance, as in PyTorch.
func (b *BatchNorm) syncForward(x *torch.Tensor, momentum float64) *torch.Tensor {
	if x.Dim() < 2 {
		return torch.Errored(fmt.Errorf("nn: BatchNorm needs [N, C, ...] input, got shape %v", x.Shape()))
	}
	c := x.Size(1)
	var dims []int64
	bshape := []int64{1, c} // per-channel values broadcast over x
	for d := 0; d < x.Dim(); d++ {
		if d != 1 {
			dims = append(dims, int64(d))
		}
		if d > 1 {
			bshape = append(bshape, 1)
		}
	}
	xf := x // statistics in float32 at least (bfloat16 under autocast), float64 when x is
	if x.DType() != torch.Float64 {
		xf = x.To(torch.Float32)
	}
	n := float64(xf.Numel() / c)
	mean := xf.MeanDims(dims, false)                                    // [C]
	m2 := xf.Sub(mean.Reshape(bshape...)).Square().SumDims(dims, false) // [C]
	count := torch.OnesLike(mean.Narrow(0, 0, 1)).MulScalar(n)
	all := b.Gather(torch.Cat([]*torch.Tensor{count, mean, m2}, 0).Unsqueeze(0)) // [W, 1+2C]
	if err := all.Err(); err != nil {
		return torch.Errored(fmt.Errorf("nn: synchronised BatchNorm: %w", err))
	}
	counts := all.Narrow(1, 0, 1) // [W, 1]
	total, err := counts.Sum().Item()
	if err != nil {
		return torch.Errored(err)
	}
	means := all.Narrow(1, 1, c) // [W, C]
	gmean := means.Mul(counts).SumDims([]int64{0}, false).DivScalar(total)
	dev := means.Sub(gmean.Unsqueeze(0))
	gm2 := all.Narrow(1, 1+c, c).SumDims([]int64{0}, false).Add(dev.Square().Mul(counts).SumDims([]int64{0}, false))
	varB := gm2.DivScalar(total)
	y := xf.Sub(gmean.Reshape(bshape...)).Mul(varB.AddScalar(b.Eps).Rsqrt().Reshape(bshape...))
	if b.Weight != nil {
		sc := x.Scope() // the parameters' views live as long as the step's tensors
		y = y.Mul(b.Weight.Ref(sc).Reshape(bshape...)).Add(b.Bias.Ref(sc).Reshape(bshape...))
	}
	var upd error
	torch.NoGrad(func() {
		unbiased := gm2.DivScalar(math.Max(total-1, 1))
		if upd = b.RunningMean.MulScalarInPlace(1 - momentum); upd == nil {
			upd = b.RunningMean.AddInPlace(gmean.Detach(), momentum)
		}
		if upd == nil {
			if upd = b.RunningVar.MulScalarInPlace(1 - momentum); upd == nil {
				upd = b.RunningVar.AddInPlace(unbiased.Detach(), momentum)
			}
		}
	})
	if upd != nil {
		return torch.Errored(upd)
	}
	return y.To(x.DType())
}

// SyncBatchNorm makes every BatchNorm in m synchronise its training-mode
// statistics through gather (BatchNorm.Gather); nil makes them per process
// again.
func SyncBatchNorm(m Module, gather func(*torch.Tensor) *torch.Tensor) {
	Walk(m, func(_ string, sub Module) {
		if bn, ok := sub.(*BatchNorm); ok {
			bn.Gather = gather
		}
	})
}

// LayerNorm normalises over the trailing dimensions Shape.
type LayerNorm struct {
	Base
	Shape        []int64
	Weight, Bias *torch.Tensor
	Eps          float64
}

// NewLayerNorm returns an affine LayerNorm (eps 1e-5) over trailing dims shape.
func NewLayerNorm(shape ...int64) *LayerNorm {
	l := &LayerNorm{Shape: append([]int64(nil), shape...), Eps: 1e-5}
	l.Weight = l.Param("weight", torch.Ones(shape))
	l.Bias = l.Param("bias", torch.Zeros(shape))
	return l
}

// Forward normalises x.
//
// Reduced-precision input (bfloat16 or float16 activations under autocast)
// is normalised in the parameters' precision: libtorch 1.13's CPU kernel
// takes no mixed types, and the statistics want float32 anyway.
func (l *LayerNorm) Forward(x *torch.Tensor) *torch.Tensor {
	if d := x.DType(); (d == torch.BFloat16 || d == torch.Float16) && l.Weight != nil && l.Weight.DType() != d {
		x = x.To(l.Weight.DType())
	}
	return torch.LayerNorm(x, l.Shape, l.Weight, l.Bias, l.Eps)
}

// Dropout zeroes activations with probability P in training mode.
type Dropout struct {
	Base
	P float64
}

// NewDropout returns a Dropout layer.
func NewDropout(p float64) *Dropout { return &Dropout{P: p} }

// Forward applies dropout when training and passes x through otherwise.
func (d *Dropout) Forward(x *torch.Tensor) *torch.Tensor { return torch.Dropout(x, d.P, d.Training()) }

// Func is a parameter-free layer made from a function (an activation, a
// reshape, a pooling).
type Func struct {
	Base
	Name string
	Fn   func(*torch.Tensor) *torch.Tensor
	// Args records the integer arguments the function was made with
	// (kernel, stride, padding for pooling; output size for adaptive
	// pooling), so that exporters can describe it.
	Args []int64
}

// Forward applies the function.
func (f *Func) Forward(x *torch.Tensor) *torch.Tensor { return f.Fn(x) }

// ReLU returns the ReLU activation as a layer.
func ReLU() *Func { return &Func{Name: "relu", Fn: (*torch.Tensor).Relu} }

// ReLUInPlace is ReLU overwriting its input (PyTorch's ReLU(inplace=True)):
// for use after a layer whose output nothing else reads, such as BatchNorm.
func ReLUInPlace() *Func { return &Func{Name: "relu", Fn: (*torch.Tensor).ReluInPlace} }

// LeakyReLU returns the leaky ReLU activation as a layer.
func LeakyReLU(slope float64) *Func {
	return &Func{Name: "leaky_relu", Fn: func(x *torch.Tensor) *torch.Tensor { return x.LeakyRelu(slope) }}
}

// Tanh returns the tanh activation as a layer.
func Tanh() *Func { return &Func{Name: "tanh", Fn: (*torch.Tensor).Tanh} }

// Sigmoid returns the logistic activation as a layer.
func Sigmoid() *Func { return &Func{Name: "sigmoid", Fn: (*torch.Tensor).Sigmoid} }

// Flatten returns a layer that flattens all dimensions after the first.
func Flatten() *Func {
	return &Func{Name: "flatten", Fn: func(x *torch.Tensor) *torch.Tensor { return x.Flatten(1, -1) }}
}

// MaxPool2d returns a max-pooling layer.
func MaxPool2d(kernel int64, opts torch.ConvOptions) *Func {
	stride := opts.Stride
	if stride == 0 {
		stride = kernel
	}
	return &Func{Name: "max_pool2d", Fn: func(x *torch.Tensor) *torch.Tensor { return torch.MaxPool2d(x, kernel, opts) },
		Args: []int64{kernel, stride, opts.Padding}}
}

// AvgPool2d returns an average-pooling layer.
func AvgPool2d(kernel int64, opts torch.ConvOptions) *Func {
	stride := opts.Stride
	if stride == 0 {
		stride = kernel
	}
	return &Func{Name: "avg_pool2d", Fn: func(x *torch.Tensor) *torch.Tensor { return torch.AvgPool2d(x, kernel, opts) },
		Args: []int64{kernel, stride, opts.Padding}}
}

// AdaptiveAvgPool2d returns a layer that averages into an h x w map.
func AdaptiveAvgPool2d(h, w int64) *Func {
	return &Func{Name: "adaptive_avg_pool2d", Fn: func(x *torch.Tensor) *torch.Tensor { return torch.AdaptiveAvgPool2d(x, h, w) },
		Args: []int64{h, w}}
}

// Sequential chains layers; children are named "0", "1", ... as in PyTorch.
type Sequential struct {
	Base
	Layers []Layer
}

// NewSequential returns the chain of layers.
func NewSequential(layers ...Layer) *Sequential {
	s := &Sequential{}
	for _, l := range layers {
		s.Append(l)
	}
	return s
}

// Append adds a layer at the end.
func (s *Sequential) Append(l Layer) {
	Child(&s.Base, itoa(len(s.Layers)), l)
	s.Layers = append(s.Layers, l)
}

// Forward runs x through every layer in order. Intermediate results join x's
// scope; without one, they are freed as soon as the next layer has used them.
func (s *Sequential) Forward(x *torch.Tensor) *torch.Tensor {
	h := x
	for _, l := range s.Layers {
		next := l.Forward(h)
		if h != x && h.Scope() == nil {
			h.Free()
		}
		h = next
	}
	return h
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}
