package objectives

import (
	"math"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// likelihood is an autoencoder's model of the pixels given the decoder's
// output: Bernoulli (the output is logits, the pixels mapped from [-1, 1]
// to [0, 1] are the probabilities' targets) or Gaussian (the output is the
// mean; logScale, a learned parameter, is log sigma, shared by all pixels).
type likelihood struct {
	logScale *torch.Tensor // nil: Bernoulli
}

// nll is the negative log-likelihood of the images x [N, C, H, W] given the
// decoder's output, summed over each image's pixels and averaged over the
// batch; in float32 whatever the forward pass's precision.
func (l likelihood) nll(out, x *torch.Tensor) *torch.Tensor {
	out = out.To(torch.Float32)
	n := float64(x.Size(0))
	if l.logScale == nil {
		return torch.BCEWithLogits(out, x.AddScalar(1).MulScalar(0.5), torch.ReduceSum).DivScalar(n)
	}
	d := float64(x.Numel()) / n // pixels per image
	r := x.Sub(out).Mul(l.logScale.Neg().Exp())
	return r.Square().Sum().MulScalar(0.5 / n).Add(l.logScale.Sum().MulScalar(d)).AddScalar(0.5 * d * math.Log(2*math.Pi))
}

func newLikelihood(b *nn.Base, bernoulli bool) likelihood {
	if bernoulli {
		return likelihood{}
	}
	return likelihood{logScale: b.Param("log_scale", torch.Zeros([]int64{1}))}
}

func newImageDecoder(spec models.Spec, tanh bool) *nn.Sequential {
	return models.NewDecoder(int64(spec.Y), int64(spec.Input[0]), int64(spec.Input[1]), int64(spec.Input[2]), tanh)
}

// VAE is the variational autoencoder (Kingma and Welling, 2014) on the
// encoder: Y is the mean of a diagonal Gaussian posterior whose log-variance
// a linear layer computes from the fc tap, a code is drawn by the
// reparameterisation trick, and the loss is the negative evidence lower
// bound: the decoder's negative log-likelihood of the image plus the KL
// divergence from the standard normal prior, both per image.
type VAE struct {
	nn.Base
	logvar *nn.Linear
	dec    *nn.Sequential
	lik    likelihood
	// Noise, when set, draws the reparameterisation's standard normal
	// values (tests hand them to a reference).
	Noise func(shape []int64, like *torch.Tensor) *torch.Tensor
}

func newVAE(spec models.Spec, bernoulli bool) (*VAE, error) {
	v := &VAE{}
	v.logvar = nn.Child(&v.Base, "logvar", nn.NewLinear(int64(spec.FC), int64(spec.Y), true))
	v.dec = nn.Child(&v.Base, "decoder", newImageDecoder(spec, false))
	v.lik = newLikelihood(&v.Base, bernoulli)
	return v, built(v)
}

// Loss implements Method.
func (v *VAE) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	taps := enc.Encode(in.X)
	mu := taps.Y.To(torch.Float32)
	lv := v.logvar.Forward(taps.FC).To(torch.Float32)
	z := mu.Add(lv.MulScalar(0.5).Exp().Mul(noise(v.Noise, mu.Shape(), mu)))
	var t Terms
	t.Recon = v.lik.nll(v.dec.Forward(z), in.X)
	t.KL = lv.AddScalar(1).Sub(mu.Square()).Sub(lv.Exp()).Sum().MulScalar(-0.5 / float64(in.X.Size(0)))
	t.Total = t.Recon.Add(t.KL)
	return t, taps
}

// Critic implements Method: a VAE has none.
func (v *VAE) Critic() Critic { return nil }

// Free implements Method.
func (v *VAE) Free() { nn.Free(v) }

// AAE is the adversarial autoencoder (Makhzani et al., 2016): a
// deterministic autoencoder through Y whose codes a discriminator, DIM's
// prior game with a standard normal prior, pushes towards the prior. The
// paper alternates a reconstruction phase and a regularisation phase; here
// one step minimises their sum, with the reconstruction term per pixel so
// that neither dominates the other's gradient.
type AAE struct {
	nn.Base
	dec   *nn.Sequential
	lik   likelihood
	prior *priorCritic
}

func newAAE(spec models.Spec, bernoulli bool, gpWeight float64, env Env) (*AAE, error) {
	a := &AAE{}
	a.dec = nn.Child(&a.Base, "decoder", newImageDecoder(spec, false))
	a.lik = newLikelihood(&a.Base, bernoulli)
	if err := built(a); err != nil {
		return nil, err
	}
	p, err := NewPrior(int64(spec.Y), env.Adam, gpWeight, env.Device)
	if err != nil {
		nn.Free(a)
		return nil, err
	}
	p.Gaussian = true
	a.prior = &priorCritic{Prior: p}
	return a, nil
}

// Loss implements Method.
func (a *AAE) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	taps := enc.Encode(in.X)
	var t Terms
	pixels := float64(in.X.Numel() / in.X.Size(0))
	t.Recon = a.lik.nll(a.dec.Forward(taps.Y), in.X).DivScalar(pixels)
	t.Prior = a.prior.GeneratorLoss(taps.Y)
	a.prior.y = taps.Y
	t.Total = t.Recon.Add(t.Prior)
	return t, taps
}

// Critic implements Method.
func (a *AAE) Critic() Critic { return a.prior }

// Free implements Method.
func (a *AAE) Free() {
	a.prior.Free()
	nn.Free(a)
}
