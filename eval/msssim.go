package eval

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
)

// MS-SSIM (Wang, Simoncelli and Bovik, 2003): SSIM's contrast-structure term
// at several scales (each half the size of the previous, by 2x2 average
// pooling) and the luminance term at the coarsest, combined as a weighted
// geometric mean with the published weights. Windows are Gaussian (11 taps,
// sigma 1.5), valid positions only, as in the reference implementation.

// msssimWeights are the published weights for 5 scales.
var msssimWeights = []float64{0.0448, 0.2856, 0.3001, 0.2363, 0.1333}

// SSIMOptions configure SSIM and MS-SSIM. Zero values: window 11, sigma 1.5,
// data range 2 (images in [-1, 1]), K1 0.01, K2 0.03, and for MS-SSIM as many
// of the 5 scales as fit the image (the weights of the scales used are
// renormalised to sum to 1).
type SSIMOptions struct {
	Window    int
	Sigma     float64
	DataRange float64
	Scales    int
}

func (o SSIMOptions) withDefaults() SSIMOptions {
	orDefault(&o.Window, 11)
	orDefault(&o.Sigma, 1.5)
	orDefault(&o.DataRange, 2)
	return o
}

// gaussWindow returns a [C, 1, w, w] depthwise convolution kernel.
func gaussWindow(c int64, w int, sigma float64, s *torch.Scope) *torch.Tensor {
	g := make([]float64, w)
	var sum float64
	for i := range g {
		x := float64(i) - float64(w-1)/2
		g[i] = math.Exp(-x * x / (2 * sigma * sigma))
		sum += g[i]
	}
	k := make([]float32, w*w)
	for i := range g {
		for j := range g {
			k[i*w+j] = float32(g[i] * g[j] / (sum * sum))
		}
	}
	return torch.FromSlice(k, []int64{1, 1, int64(w), int64(w)}, s).Expand(c, 1, int64(w), int64(w)).Contiguous()
}

// ssimParts returns the per-image mean SSIM and contrast-structure terms of
// x and y [N, C, H, W] (float32).
func ssimParts(x, y *torch.Tensor, o SSIMOptions, s *torch.Scope) (ssim, cs *torch.Tensor) {
	c := x.Size(1)
	win := gaussWindow(c, o.Window, o.Sigma, s)
	blur := func(t *torch.Tensor) *torch.Tensor { return torch.Conv2d(t, win, nil, torch.ConvOptions{Groups: c}) }
	c1 := math.Pow(0.01*o.DataRange, 2)
	c2 := math.Pow(0.03*o.DataRange, 2)
	mx, my := blur(x), blur(y)
	sxx := blur(x.Mul(x)).Sub(mx.Mul(mx))
	syy := blur(y.Mul(y)).Sub(my.Mul(my))
	sxy := blur(x.Mul(y)).Sub(mx.Mul(my))
	csMap := sxy.MulScalar(2).AddScalar(c2).Div(sxx.Add(syy).AddScalar(c2))
	lMap := mx.Mul(my).MulScalar(2).AddScalar(c1).Div(mx.Square().Add(my.Square()).AddScalar(c1))
	dims := []int64{1, 2, 3}
	return lMap.Mul(csMap).MeanDims(dims, false), csMap.MeanDims(dims, false)
}

// SSIM returns the mean structural similarity of image pairs x, y
// [N, C, H, W], one value per image.
func SSIM(x, y *torch.Tensor, o SSIMOptions) ([]float64, error) {
	o = o.withDefaults()
	if err := checkPair(x, y, o.Window); err != nil {
		return nil, err
	}
	s := torch.NewScope()
	defer s.Close()
	v, _ := ssimParts(x.Ref(s).To(torch.Float32), y.Ref(s).To(torch.Float32), o, s)
	return v.Float64s()
}

func checkPair(x, y *torch.Tensor, window int) error {
	xs, ys := x.Shape(), y.Shape()
	if len(xs) != 4 || fmt.Sprint(xs) != fmt.Sprint(ys) {
		return fmt.Errorf("SSIM needs two batches of the same [N, C, H, W] shape, got %v and %v", xs, ys)
	}
	if xs[2] < int64(window) || xs[3] < int64(window) {
		return fmt.Errorf("images of %dx%d are smaller than the %d-pixel window", xs[2], xs[3], window)
	}
	return nil
}

// MSSSIM returns the multi-scale SSIM of image pairs, one value per image,
// and the number of scales used.
func MSSSIM(x, y *torch.Tensor, o SSIMOptions) ([]float64, int, error) {
	o = o.withDefaults()
	if err := checkPair(x, y, o.Window); err != nil {
		return nil, 0, err
	}
	scales := o.Scales
	if scales == 0 {
		scales = 1
		for h, w := x.Size(2), x.Size(3); scales < 5 && h/2 >= int64(o.Window) && w/2 >= int64(o.Window); scales++ {
			h, w = h/2, w/2
		}
	}
	weights := msssimWeights[:scales]
	var total float64
	for _, w := range weights {
		total += w
	}
	s := torch.NewScope()
	defer s.Close()
	a, b := x.Ref(s).To(torch.Float32), y.Ref(s).To(torch.Float32)
	n := x.Size(0)
	logv := torch.Zeros([]int64{n}, s)
	for i, w := range weights {
		ssim, cs := ssimParts(a, b, o, s)
		term := cs
		if i == len(weights)-1 {
			term = ssim
		}
		// Negative values (anti-correlated structure) are clamped as in the
		// reference implementations' relu variant.
		logv = logv.Add(term.ClampMin(1e-8).Log().MulScalar(w / total))
		if i < len(weights)-1 {
			a = torch.AvgPool2d(a, 2, torch.ConvOptions{})
			b = torch.AvgPool2d(b, 2, torch.ConvOptions{})
		}
	}
	v, err := logv.Exp().Float64s()
	return v, scales, err
}
