package objectives

import (
	"fmt"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// BiGAN is the bidirectional GAN (Donahue et al., 2017; ALI, Dumoulin et
// al., 2017): a generator G maps codes z ~ N(0, I) to images, the encoder
// maps images to codes Y, and a discriminator D(x, z) tells the pairs
// (x, E(x)) from (G(z), z). The encoder and generator, trained together by
// the encoder's optimiser, play the non-saturating game with the labels
// flipped: they minimise softplus(D(x, E(x))) + softplus(-D(G(z), z));
// the discriminator, with its own optimiser, minimises
// softplus(-D(x, E(x))) + softplus(D(G(z), z)).
type BiGAN struct {
	nn.Base
	gen *nn.Sequential
	d   *biganCritic
	// Noise, when set, draws the codes z (tests hand them to a reference).
	Noise func(shape []int64, like *torch.Tensor) *torch.Tensor
}

// jointD is BiGAN's discriminator on an (image, code) pair: a convolutional
// branch for the image (4x4 stride-2 convolutions, leaky ReLU, no
// BatchNorm, so that each pair's score is its own), a linear branch for the
// code, and a joint layer on their concatenation.
type jointD struct {
	nn.Base
	x, z, joint *nn.Sequential
}

func newJointD(spec models.Spec) *jointD {
	c, h, w := int64(spec.Input[0]), int64(spec.Input[1]), int64(spec.Input[2])
	j := &jointD{}
	j.x = nn.Child(&j.Base, "x", nn.NewSequential(
		nn.NewConv2d(c, 64, 4, torch.ConvOptions{Stride: 2, Padding: 1}, true), nn.LeakyReLU(0.2),
		nn.NewConv2d(64, 128, 4, torch.ConvOptions{Stride: 2, Padding: 1}, true), nn.LeakyReLU(0.2), nn.Flatten()))
	j.z = nn.Child(&j.Base, "z", nn.NewSequential(nn.NewLinear(int64(spec.Y), 512, true), nn.LeakyReLU(0.2)))
	j.joint = nn.Child(&j.Base, "joint", nn.NewSequential(
		nn.NewLinear(128*(h/4)*(w/4)+512, 1024, true), nn.LeakyReLU(0.2), nn.NewLinear(1024, 1, true)))
	return j
}

// Forward scores pairs: images [N, C, H, W] and codes [N, D] to [N] logits
// (float32).
func (j *jointD) Forward(x, z *torch.Tensor) *torch.Tensor {
	h := torch.Cat([]*torch.Tensor{j.x.Forward(x), j.z.Forward(z)}, 1)
	return j.joint.Forward(h).Flatten(0, -1).To(torch.Float32)
}

// biganCritic trains the discriminator on the pairs of the last Loss call.
type biganCritic struct {
	net          *jointD
	opt          *optim.Adam
	params       []*torch.Tensor
	x, ex, gz, z *torch.Tensor
}

func newBiGAN(spec models.Spec, env Env) (*BiGAN, error) {
	b := &BiGAN{}
	b.gen = nn.Child(&b.Base, "generator", newImageDecoder(spec, true))
	if err := built(b); err != nil {
		return nil, err
	}
	d := newJointD(spec)
	if err := place(d, env); err != nil {
		nn.Free(d)
		nn.Free(b)
		return nil, err
	}
	c := &biganCritic{net: d, params: nn.Parameters(d)}
	var err error
	if c.opt, err = optim.NewAdam(c.params, env.Adam); err != nil {
		nn.Free(d)
		nn.Free(b)
		return nil, err
	}
	b.d = c
	return b, nil
}

// Loss implements Method.
func (b *BiGAN) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	taps := enc.Encode(in.X)
	ex := taps.Y
	z := noise(b.Noise, ex.Shape(), ex)
	gz := b.gen.Forward(z)
	b.d.train(false)
	real := b.d.net.Forward(in.X, ex)
	fake := b.d.net.Forward(gz, z)
	var t Terms
	t.Adversarial = real.Softplus().Mean().Add(fake.Neg().Softplus().Mean())
	t.Total = t.Adversarial
	b.d.x, b.d.ex, b.d.gz, b.d.z = in.X, ex.Detach().To(torch.Float32), gz.Detach().To(torch.Float32), z
	return t, taps
}

// Critic implements Method.
func (b *BiGAN) Critic() Critic { return b.d }

// Free implements Method.
func (b *BiGAN) Free() {
	b.d.opt.Free()
	nn.Free(b.d.net)
	nn.Free(b)
}

func (c *biganCritic) Name() string               { return "discriminator" }
func (c *biganCritic) Net() nn.Module             { return c.net }
func (c *biganCritic) Optimizer() optim.Optimizer { return c.opt }

// train turns gradients of the discriminator's weights on or off: off
// while the encoder and generator take theirs through it.
func (c *biganCritic) train(on bool) {
	for _, w := range c.params {
		w.SetRequiresGrad(on)
	}
}

// loss is the discriminator's loss on the kept pairs.
func (c *biganCritic) loss() *torch.Tensor {
	return c.net.Forward(c.x, c.ex).Neg().Softplus().Mean().Add(c.net.Forward(c.gz, c.z).Softplus().Mean())
}

// Step implements Critic.
func (c *biganCritic) Step() (CriticLosses, error) {
	if c.x == nil {
		return CriticLosses{}, fmt.Errorf("discriminator: Step before Loss")
	}
	defer func() { c.x, c.ex, c.gz, c.z = nil, nil, nil, nil }()
	c.train(true)
	if err := c.opt.ZeroGrad(); err != nil {
		return CriticLosses{}, err
	}
	l := c.loss()
	var out CriticLosses
	var err error
	if out.D, err = l.Item(); err != nil {
		return out, fmt.Errorf("discriminator: %w", err)
	}
	if err := l.Backward(); err != nil {
		return out, fmt.Errorf("discriminator: %w", err)
	}
	norm, err := optim.GradNorm(c.params)
	if err != nil {
		return out, fmt.Errorf("discriminator: %w", err)
	}
	if !finite(out.D) || !finite(norm) {
		return out, fmt.Errorf("discriminator: %w: loss %v, gradient norm %v", ErrNonFinite, out.D, norm)
	}
	if err := c.opt.Step(); err != nil {
		return out, err
	}
	return out, c.opt.ZeroGrad()
}
