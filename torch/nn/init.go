package nn

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
)

// Fans returns the fan-in and fan-out of a weight tensor as PyTorch computes
// them: dims 1 and 0 times the receptive field (the product of dims 2...).
func Fans(t *torch.Tensor) (fanIn, fanOut int64, err error) {
	s := t.Shape()
	if len(s) < 2 {
		return 0, 0, fmt.Errorf("nn: fans need a tensor with at least 2 dimensions, got shape %v", s)
	}
	rf := int64(1)
	for _, d := range s[2:] {
		rf *= d
	}
	return s[1] * rf, s[0] * rf, nil
}

// Gain returns the recommended gain for a nonlinearity: "linear", "sigmoid",
// "conv2d", "tanh", "relu" or "leaky_relu" (with negative slope a).
func Gain(nonlinearity string, a float64) (float64, error) {
	switch nonlinearity {
	case "linear", "conv2d", "sigmoid":
		return 1, nil
	case "tanh":
		return 5.0 / 3, nil
	case "relu":
		return math.Sqrt2, nil
	case "leaky_relu":
		return math.Sqrt(2 / (1 + a*a)), nil
	}
	return 0, fmt.Errorf("nn: unknown nonlinearity %q", nonlinearity)
}

// KaimingUniform fills t from U(-b, b) with b = gain * sqrt(3 / fan_in) (fan_out
// when fanOut is true), He et al. 2015.
func KaimingUniform(t *torch.Tensor, a float64, nonlinearity string, fanOut bool) error {
	g, fan, err := kaimingFan(t, a, nonlinearity, fanOut)
	if err != nil {
		return err
	}
	b := g * math.Sqrt(3/fan)
	return t.UniformInPlace(-b, b)
}

// KaimingNormal fills t from N(0, std^2) with std = gain / sqrt(fan).
func KaimingNormal(t *torch.Tensor, a float64, nonlinearity string, fanOut bool) error {
	g, fan, err := kaimingFan(t, a, nonlinearity, fanOut)
	if err != nil {
		return err
	}
	return t.NormalInPlace(0, g/math.Sqrt(fan))
}

// kaimingFan returns the nonlinearity's gain and t's fan-in (fan-out when
// fanOut).
func kaimingFan(t *torch.Tensor, a float64, nonlinearity string, fanOut bool) (gain, fan float64, err error) {
	fi, fo, err := Fans(t)
	if err != nil {
		return 0, 0, err
	}
	if gain, err = Gain(nonlinearity, a); err != nil {
		return 0, 0, err
	}
	if fanOut {
		return gain, float64(fo), nil
	}
	return gain, float64(fi), nil
}

// XavierUniform fills t from U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)).
func XavierUniform(t *torch.Tensor, gain float64) error {
	fi, fo, err := Fans(t)
	if err != nil {
		return err
	}
	b := gain * math.Sqrt(6/float64(fi+fo))
	return t.UniformInPlace(-b, b)
}

// XavierNormal fills t from N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
func XavierNormal(t *torch.Tensor, gain float64) error {
	fi, fo, err := Fans(t)
	if err != nil {
		return err
	}
	return t.NormalInPlace(0, gain*math.Sqrt(2/float64(fi+fo)))
}

// defaultInit applies PyTorch's default initialisation of Linear and Conv
// layers: kaiming_uniform(a=sqrt(5)) on the weight, U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)) on the bias.
func defaultInit(w, b *torch.Tensor) error {
	if err := KaimingUniform(w, math.Sqrt(5), "leaky_relu", false); err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	fi, _, err := Fans(w)
	if err != nil {
		return err
	}
	bound := 1 / math.Sqrt(float64(fi))
	return b.UniformInPlace(-bound, bound)
}
