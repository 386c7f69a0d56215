package objectives

import (
	"fmt"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
)

// A Method trains an encoder: Deep InfoMax, or one of the baselines of the
// paper's Table 1 (VAE, AAE, BiGAN, NAT, CPC). Every method trains the
// same encoder family with the same taps, so evaluation, export and
// embedding treat its checkpoints alike.
//
// The method's module holds the networks trained with the encoder by the
// same optimiser (DIM's MI heads, a decoder, a generator, a context network);
// its Critic, when it has one, is a second player with its own optimiser
// that trains on what the last Loss call kept, after the encoder's step.
type Method interface {
	nn.Module
	// Loss encodes the batch and returns the weighted loss, its parts and
	// the taps.
	Loss(enc models.Encoder, in Input) (Terms, models.Taps)
	// Critic returns the second player, or nil.
	Critic() Critic
	// Free releases the method's networks and its critic.
	Free()
}

// Input is one batch as a method sees it.
type Input struct {
	X       *torch.Tensor // [N, C, H, W] in [-1, 1]
	Indices []int         // the dataset index of each row (Noise As Targets)
}

// Critic is an adversarial method's second player.
type Critic interface {
	// Name is the prefix of its weights and optimiser state in checkpoints.
	Name() string
	Net() nn.Module
	Optimizer() optim.Optimizer
	// Step trains the critic one step on what the last Loss kept and
	// returns its loss and gradient penalty (before the update).
	Step() (CriticLosses, error)
}

// MethodConfig selects a method and the baselines' settings. It is stored
// in checkpoints; DIM's own settings are DIMConfig.
type MethodConfig struct {
	Name string `json:"name" flag:"method" default:"dim" choices:"methods" help:"what trains the encoder: Deep InfoMax, or a baseline of the paper's Table 1"`
	// Likelihood of the VAE's and AAE's decoder: "bernoulli" (pixels in
	// [0, 1] as probabilities), "gaussian" (with a learned noise level) or
	// "auto": Bernoulli for one-channel images, Gaussian for colour ones.
	Likelihood string `json:"likelihood,omitempty" flag:"likelihood" default:"auto" methods:"vae,aae" help:"pixel model of the vae and aae decoders: bernoulli, gaussian (learned noise level), or auto (bernoulli for one channel, gaussian for colour)"`
	// CPCRows is how many rows below each position CPC predicts, after
	// skipping CPCSkip rows (whose codes share input pixels with the
	// context's newest row when receptive fields overlap).
	CPCRows int `json:"cpc_rows,omitempty" flag:"cpc-rows" default:"3" methods:"cpc" help:"rows of the local map below each position that cpc predicts"`
	CPCSkip int `json:"cpc_skip,omitempty" flag:"cpc-skip" methods:"cpc" help:"rows below each position that cpc skips before the predicted ones (their codes share input pixels with the context's when receptive fields overlap)"`
	// AMDIMPairs are multi-scale DIM's predictions (AMDIM's names: 1 is Y,
	// 7 the local map, 5 the conv map).
	AMDIMPairs string `json:"amdim_pairs,omitempty" flag:"amdim-pairs" default:"1-7,1-5,5-5" methods:"amdim" help:"the predictions of amdim, in AMDIM's names: 1-7 (Y -> every position of the other view's local map), 1-5 (Y -> its conv map), 5-5 (one position of the conv map -> every position of the other view's)"`
}

// Validate checks the settings ("" is dim, and the likelihood "" auto).
func (c *MethodConfig) Validate() error {
	if _, err := Lookup(c.Name); err != nil {
		return err
	}
	switch c.Likelihood {
	case "", "auto", "bernoulli", "gaussian":
	default:
		return fmt.Errorf("unknown likelihood %q (want auto, bernoulli or gaussian)", c.Likelihood)
	}
	if c.CPCRows < 0 || c.CPCSkip < 0 {
		return fmt.Errorf("cpc: predict at least 1 row (got %d) after skipping none or more (got %d)", c.CPCRows, c.CPCSkip)
	}
	return nil
}

// Resolve replaces the VAE's and AAE's "auto" likelihood by the one the
// data's channels choose: Bernoulli for one channel, Gaussian for colour.
func (c *MethodConfig) Resolve(channels int) {
	if (c.Likelihood == "auto" || c.Likelihood == "") && (c.Name == "vae" || c.Name == "aae") {
		c.Likelihood = "gaussian"
		if channels == 1 {
			c.Likelihood = "bernoulli"
		}
	}
}

// Env is what building a method needs besides its settings.
type Env struct {
	Spec         models.Spec       // the encoder's
	Images       int               // the training set's size (Noise As Targets keeps one target per image)
	Adam         optim.AdamOptions // for the critic's own optimiser
	Device       torch.Device      // where the networks live
	ChannelsLast bool              // lay the method's convolution weights out as NHWC
	World        int               // processes in a data-parallel job (1: alone)
}

// NewMethod builds a method's networks (and its critic's) on env.Device,
// from libtorch's generator: mc's, with DIM's settings dim for DIM (and
// the prior game's gradient penalty for the AAE).
func NewMethod(mc MethodConfig, dim DIMConfig, env Env) (Method, error) {
	if err := mc.Validate(); err != nil {
		return nil, err
	}
	info, err := Lookup(mc.Name)
	if err != nil {
		return nil, err
	}
	if info.OneProcess != "" && env.World > 1 {
		return nil, fmt.Errorf("%s", info.OneProcess)
	}
	mc.Resolve(env.Spec.Input[0])
	if mc.CPCRows == 0 {
		mc.CPCRows = 3 // the declared default (train's); 0 from callers that leave it out
	}
	m, err := info.Build(mc, dim, env)
	if err != nil || info.PlacesItself {
		return m, err
	}
	if err := place(m, env); err != nil {
		m.Free()
		return nil, err
	}
	return m, nil
}

// built reports the first error of a freshly built module, freeing it
// then.
func built(m nn.Module) error {
	err := nn.FirstError(m)
	if err != nil {
		nn.Free(m)
	}
	return err
}

// place moves a module to the device and layout of env.
func place(m nn.Module, env Env) error {
	if err := nn.FirstError(m); err != nil {
		return err
	}
	if err := nn.MoveTo(m, env.Device); err != nil {
		return err
	}
	if env.ChannelsLast {
		return nn.ToChannelsLast(m)
	}
	return nil
}

// Gatherer is a method whose negatives can come from every rank of a
// data-parallel job (--global-negatives): g concatenates a tensor's rows
// over the ranks, differentiably.
type Gatherer interface {
	SetGather(g func(*torch.Tensor) *torch.Tensor)
}

// SetGather implements Gatherer.
func (m *DIMMethod) SetGather(g func(*torch.Tensor) *torch.Tensor) { m.DIM.Gather = g }

// DIMMethod is Deep InfoMax as a Method; its critic is the prior game's
// discriminator (when gamma > 0).
type DIMMethod struct {
	*DIM
	prior *priorCritic
}

func newDIMMethod(cfg DIMConfig, env Env) (*DIMMethod, error) {
	d, err := NewDIM(cfg, env.Spec)
	if err != nil {
		return nil, err
	}
	m := &DIMMethod{DIM: d}
	if err := place(d, env); err != nil {
		m.Free()
		return nil, err
	}
	if cfg.Gamma > 0 {
		p, err := NewPrior(int64(env.Spec.Y), env.Adam, cfg.GPWeight, env.Device)
		if err != nil {
			m.Free()
			return nil, err
		}
		m.prior = &priorCritic{Prior: p}
	}
	return m, nil
}

// Loss implements Method.
func (m *DIMMethod) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	var p *Prior
	if m.prior != nil {
		p = m.prior.Prior
	}
	t, taps := m.DIM.Loss(enc, in.X, p)
	if m.prior != nil {
		m.prior.y = taps.Y
	}
	return t, taps
}

// Critic implements Method.
func (m *DIMMethod) Critic() Critic {
	if m.prior == nil {
		return nil
	}
	return m.prior
}

// Free implements Method.
func (m *DIMMethod) Free() {
	if m.prior != nil {
		m.prior.Free()
	}
	nn.Free(m.DIM)
}

// priorCritic plays the prior game on the Y of the last Loss call.
type priorCritic struct {
	*Prior
	y *torch.Tensor
}

func (c *priorCritic) Name() string               { return "prior" }
func (c *priorCritic) Net() nn.Module             { return c.D }
func (c *priorCritic) Optimizer() optim.Optimizer { return c.Opt }
func (c *priorCritic) Step() (CriticLosses, error) {
	if c.y == nil {
		return CriticLosses{}, fmt.Errorf("prior: Step before Loss")
	}
	y := c.y
	c.y = nil
	return c.Prior.Step(y)
}

// noise draws standard normal values of the given shape like x (on its
// device, in its scope), or calls the test hook.
func noise(hook func([]int64, *torch.Tensor) *torch.Tensor, shape []int64, like *torch.Tensor) *torch.Tensor {
	if hook != nil {
		return hook(shape, like)
	}
	return torch.Randn(shape, like.Device(), like.Scope())
}
