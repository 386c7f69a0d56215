package objectives

import (
	"fmt"
	"math"
	"strings"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// DIMConfig selects and weighs DIM's objectives. It is stored in checkpoints.
type DIMConfig struct {
	Mode      string  `json:"mode" flag:"mode" default:"local" methods:"dim" help:"local, global or local+global"`
	Estimator string  `json:"estimator" flag:"estimator" default:"jsd" methods:"dim" choices:"estimators" help:"the mutual-information estimator"`
	Scorer    string  `json:"scorer" flag:"scorer" default:"dot" methods:"dim" help:"dot (encode-and-dot) or concat (concat-and-convolve)"`
	Alpha     float64 `json:"alpha" flag:"alpha" methods:"dim" defaulttext:"the mode's" help:"weight of global DIM (local 0, global 1, local+global 0.5)"`
	Beta      float64 `json:"beta" flag:"beta" methods:"dim" defaulttext:"the mode's" help:"weight of local DIM (local 1, global 0, local+global 1)"`
	Gamma     float64 `json:"gamma" flag:"gamma" methods:"dim" defaulttext:"the mode's" help:"weight of prior matching, 0 turns it off (local 0.1, global 1, local+global 0.1)"`
	MIUnits   int     `json:"mi_units" flag:"mi-units" default:"256" methods:"dim,amdim" help:"width of the critic's space (the paper: 2048; 256 is CPU-sized)"`
	// CoordWeight weighs the coordinate-prediction task (0: off).
	CoordWeight float64 `json:"coord_weight" flag:"coord" methods:"dim" help:"weight of the coordinate-prediction task (0: off)"`
	Occlusion   bool    `json:"occlusion" flag:"occlusion" methods:"dim" help:"compute the global features from an image with a random block occluded"`
	// OcclusionSize is the side of the occluded block; 0: half the image.
	OcclusionSize int     `json:"occlusion_size" flag:"occlusion-size" methods:"dim" help:"side of --occlusion's block in pixels (0: half the image)"`
	GPWeight      float64 `json:"gp_weight" flag:"gp-weight" default:"1" methods:"dim,aae" help:"weight of the gradient penalty on the prior's discriminator (DIM's prior game, the AAE's; 0: none)"`
	// Views is the number of augmented views of each image in a batch. With
	// two or more, the global vector of one view is scored against the
	// local features (local DIM) or the critic's vector (global DIM) of
	// every other view of the same image, as in AMDIM (Bachman et al.,
	// 2019); the other images' features in the batch are the negatives.
	// 0 or 1: one view, the paper's DIM.
	Views int `json:"views,omitempty" flag:"views" default:"1" methods:"dim,amdim" help:"augmented views per image: 2 or more scores each view's global vector against the other views' local features (AMDIM-style); augments (--augment auto: crops) (amdim: 2 unless given)"`
	// ScoreClip > 0 stabilises the critic's scores as AMDIM does: they are
	// divided by sqrt(MIUnits), penalised by 0.05 mean(s^2) and soft-clipped
	// to (-ScoreClip, ScoreClip) by ScoreClip*tanh(s/ScoreClip) before the
	// estimator. 0: raw scores, the paper's DIM.
	ScoreClip float64 `json:"score_clip,omitempty" flag:"score-clip" methods:"dim,amdim" help:"stabilise the critic's scores as AMDIM: divide by sqrt(mi-units), penalise their square (0.05), soft-clip to +-C with C*tanh(s/C) (AMDIM: 10; 0: off; amdim: 10 unless given)"`
	// CrossView > 0 adds, with this weight, a global-to-global cross-view
	// term (not in the paper; as contrastive methods after DIM do, e.g.
	// SimCLR and CLIP's symmetric loss): Y of each view, mapped by its own
	// MI head and scaled to unit length, is scored against Y of every other
	// view of the batch by cosine similarity / CrossViewTemp, and infoNCE
	// takes the same image's other view as the positive and the other
	// images' as negatives. Needs Views >= 2.
	CrossView     float64 `json:"cross_view,omitempty" flag:"cross-view" methods:"dim" help:"weight of a global-to-global cross-view term (not in the paper; SimCLR-like): Y of one view against Y of the other views, infoNCE on cosine similarities; needs --views 2 (0: off)"`
	CrossViewTemp float64 `json:"cross_view_temperature,omitempty" flag:"cross-view-temperature" default:"0.2" methods:"dim" help:"temperature of --cross-view's cosine similarities"`
}

// DefaultWeights returns alpha, beta and gamma for a mode, as in the paper:
// DIM(L) 0, 1, 0.1; DIM(G) 1, 0, 1; local+global 0.5, 1, 0.1.
func DefaultWeights(mode string) (alpha, beta, gamma float64) {
	switch mode {
	case "global":
		return 1, 0, 1
	case "local+global":
		return 0.5, 1, 0.1
	}
	return 0, 1, 0.1
}

// Validate checks a configuration; it changes nothing. Zero values mean
// zero (GPWeight 0: no gradient penalty) or are refused (MIUnits 0), except
// Scorer "" ("dot") and Views 0 (one view), which New spells out.
func (c *DIMConfig) Validate() error {
	switch c.Mode {
	case "local", "global", "local+global":
	default:
		return fmt.Errorf("unknown mode %q (want local, global or local+global)", c.Mode)
	}
	if _, err := GetEstimator(c.Estimator); err != nil {
		return err
	}
	if c.Scorer != "" && c.Scorer != "dot" && c.Scorer != "concat" {
		return fmt.Errorf("unknown scorer %q (want dot or concat)", c.Scorer)
	}
	if c.Views < 0 || c.Views > 8 {
		return fmt.Errorf("views must be between 1 and 8, got %d", c.Views)
	}
	if c.MIUnits < 1 {
		return fmt.Errorf("mi-units must be at least 1, got %d", c.MIUnits)
	}
	switch {
	case c.CrossView < 0:
		return fmt.Errorf("cross-view must be non-negative (0: off), got %v", c.CrossView)
	case c.CrossView > 0 && c.Views < 2:
		return fmt.Errorf("cross-view scores one view's Y against another's: it needs --views 2 or more")
	case c.CrossView > 0 && !(c.CrossViewTemp > 0):
		return fmt.Errorf("cross-view-temperature must be positive, got %v", c.CrossViewTemp)
	}
	for _, w := range []struct {
		name string
		v    float64
	}{{"alpha", c.Alpha}, {"beta", c.Beta}, {"gamma", c.Gamma}, {"coord", c.CoordWeight}, {"score-clip", c.ScoreClip}, {"gp-weight", c.GPWeight}} {
		if !(w.v >= 0) || math.IsInf(w.v, 0) {
			return fmt.Errorf("%s must be finite and non-negative, got %v", w.name, w.v)
		}
	}
	if c.OcclusionSize < 0 {
		return fmt.Errorf("occlusion-size must be non-negative (0: half the image), got %d", c.OcclusionSize)
	}
	if c.usesLocal() && c.Beta == 0 && c.Mode == "local" {
		return fmt.Errorf("mode local with beta 0 trains nothing")
	}
	if c.Mode == "global" && c.Alpha == 0 {
		return fmt.Errorf("mode global with alpha 0 trains nothing")
	}
	return nil
}

func (c *DIMConfig) usesLocal() bool  { return strings.Contains(c.Mode, "local") && c.Beta > 0 }
func (c *DIMConfig) usesGlobal() bool { return strings.Contains(c.Mode, "global") && c.Alpha > 0 }

// DIM holds the trainable parts of the objective that are optimised with the
// encoder: the MI heads or critics and the auxiliary task networks. The
// prior's discriminator is separate (see Prior): it plays against them.
type DIM struct {
	nn.Base
	Cfg  DIMConfig
	est  Estimator
	spec models.Spec

	localHead   *models.MIHead // local DIM, encode-and-dot
	globalHeadL *models.MIHead
	concat      *ConcatScorer  // local DIM, concat-and-convolve
	critic      *nn.Sequential // global DIM: local map -> vector
	globalHeadG *models.MIHead
	coord       *CoordPredictor
	crossHead   *models.MIHead // the cross-view term's head on Y

	// Gather, when set, concatenates a tensor's rows over the ranks of a
	// data-parallel job, differentiably (dist.Group.AllGather): the
	// estimators then score every rank's locals against every rank's
	// globals, so each image has the negatives of the whole global batch.
	// Every rank computes the whole score tensor; the gradients the ranks
	// receive through Gather add up to those of one process holding the
	// global batch.
	Gather func(*torch.Tensor) *torch.Tensor
}

// New builds the objective's networks for an encoder with the given spec.
func NewDIM(cfg DIMConfig, spec models.Spec) (*DIM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Scorer == "" {
		cfg.Scorer = "dot"
	}
	cfg.Views = max(cfg.Views, 1)
	est, _ := GetEstimator(cfg.Estimator)
	d := &DIM{Cfg: cfg, est: est, spec: spec}
	u := int64(cfg.MIUnits)
	lc, lh, lw := int64(spec.Local[0]), int64(spec.Local[1]), int64(spec.Local[2])
	yd := int64(spec.Y)
	if cfg.usesLocal() {
		if cfg.Scorer == "concat" {
			if spec.Globals > 1 {
				return nil, fmt.Errorf("the concat scorer takes one global vector; %s has %d: use the dot scorer", spec.Name, spec.Globals)
			}
			d.concat = nn.Child(&d.Base, "local_concat", NewConcatScorer(lc, yd, u))
		} else {
			d.localHead = nn.Child(&d.Base, "local_head", models.NewLocalHead(lc, u))
			d.globalHeadL = nn.Child(&d.Base, "local_global_head", models.NewGlobalHead(yd, u))
		}
	}
	if cfg.usesGlobal() {
		d.critic = nn.Child(&d.Base, "global_critic", nn.NewSequential(
			nn.NewConv2d(lc, 64, 3, torch.ConvOptions{Padding: 1}, true), nn.ReLU(),
			nn.NewConv2d(64, 32, 3, torch.ConvOptions{Padding: 1}, true), nn.ReLU(),
			nn.Flatten(), nn.NewLinear(32*lh*lw, 512, true), nn.ReLU(),
			nn.NewLinear(512, u, true), nn.NewLayerNorm(u)))
		d.globalHeadG = nn.Child(&d.Base, "global_head", models.NewGlobalHead(yd, u))
	}
	if cfg.CoordWeight > 0 {
		d.coord = nn.Child(&d.Base, "coord", NewCoordPredictor(lc, yd, lh, lw))
	}
	if cfg.CrossView > 0 {
		d.crossHead = nn.Child(&d.Base, "cross_view_head", models.NewGlobalHead(yd, u))
	}
	if err := nn.FirstError(d); err != nil {
		nn.Free(d)
		return nil, err
	}
	return d, nil
}

// Terms are the parts of one step's loss (nil where unused): DIM's, and
// the baselines' (see Method). Each part declares, by its tags, its key in
// metrics.jsonl (term) and its legend in loss.png (label): a new part is a
// new tagged field here, and the trainer, the metrics and the curves pick
// it up (TermList).
type Terms struct {
	Total     *torch.Tensor
	Local     *torch.Tensor `term:"local" label:"local MI"`
	Global    *torch.Tensor `term:"global" label:"global MI"`
	Prior     *torch.Tensor `term:"prior" label:"prior (generator)"`
	Coord     *torch.Tensor `term:"coord" label:"coordinates"`
	CrossView *torch.Tensor `term:"cross_view" label:"cross-view Y"`
	// ScorePenalty is what --score-clip's penalty on the squared scores adds
	// to Local and Global (already inside them, unweighted): reported to
	// show the critic's scores growing.
	ScorePenalty *torch.Tensor `term:"score_penalty" label:"score penalty (in local/global)"`
	// Recon is an autoencoder's reconstruction term (the VAE's negative
	// log-likelihood per image; the AAE's per pixel), KL the VAE's
	// Kullback-Leibler term, Adversarial the encoder's and generator's
	// side of BiGAN's game, NAT the distance to the assigned noise targets,
	// CPC the mean infoNCE loss of the predicted rows.
	Recon       *torch.Tensor `term:"recon" label:"reconstruction"`
	KL          *torch.Tensor `term:"kl" label:"KL"`
	Adversarial *torch.Tensor `term:"adversarial" label:"encoder + generator"`
	NAT         *torch.Tensor `term:"nat" label:"noise as targets"`
	CPC         *torch.Tensor `term:"cpc" label:"CPC infoNCE"`
	// The predictions of multi-scale DIM (method amdim), each with its
	// share of the score penalty: Y to the local map (AMDIM's 1-7), Y to
	// the conv map (1-5), and one position of the conv map to all of the
	// other view's (5-5).
	Pred1to7 *torch.Tensor `term:"amdim_1t7" label:"Y -> local map (1-7)"`
	Pred1to5 *torch.Tensor `term:"amdim_1t5" label:"Y -> conv map (1-5)"`
	Pred5to5 *torch.Tensor `term:"amdim_5t5" label:"conv -> conv map (5-5)"`
}

// Loss encodes x and returns the weighted objective and the taps. prior may
// be nil when gamma is 0. With Cfg.Views = V > 1, x holds V views of N
// images, view-major ([V*N, C, H, W], as the loader stacks them), and the
// returned taps cover all V*N rows.
func (d *DIM) Loss(enc models.Encoder, x *torch.Tensor, prior *Prior) (Terms, models.Taps) {
	taps := enc.Encode(x)
	globalTaps := taps
	if d.Cfg.Occlusion {
		size := int64(d.Cfg.OcclusionSize)
		if size <= 0 {
			size = x.Size(2) / 2
		}
		globalTaps = enc.Encode(Occlude(x, size))
	}
	y := globalTaps.Y
	var t Terms
	total := torch.Zeros(nil, x.Device(), x.Scope())
	if d.Cfg.usesLocal() {
		if d.concat != nil {
			t.Local, t.ScorePenalty = d.crossViews(taps.Local, y, func(l, g *torch.Tensor) *torch.Tensor { return d.concat.Scores(l, g) })
		} else {
			g := y
			if globalTaps.Globals != nil {
				g = globalTaps.Globals
			}
			t.Local, t.ScorePenalty = d.crossViews(d.localHead.Forward(taps.Local), d.globalHeadL.Forward(g), DotScores)
		}
		total = total.Add(t.Local.MulScalar(d.Cfg.Beta))
	}
	if d.Cfg.usesGlobal() {
		v := d.critic.Forward(taps.Local).Unsqueeze(1)
		var pen *torch.Tensor
		t.Global, pen = d.crossViews(v, d.globalHeadG.Forward(y).Unsqueeze(1), DotScores)
		if pen != nil && t.ScorePenalty != nil {
			pen = pen.Add(t.ScorePenalty)
		}
		if pen != nil {
			t.ScorePenalty = pen
		}
		total = total.Add(t.Global.MulScalar(d.Cfg.Alpha))
	}
	if d.Cfg.Gamma > 0 && prior != nil {
		t.Prior = prior.GeneratorLoss(taps.Y)
		total = total.Add(t.Prior.MulScalar(d.Cfg.Gamma))
	}
	if d.coord != nil {
		t.Coord = d.coord.Loss(taps.Local, y)
		total = total.Add(t.Coord.MulScalar(d.Cfg.CoordWeight))
	}
	if d.crossHead != nil {
		t.CrossView = d.crossViewGlobal(y)
		total = total.Add(t.CrossView.MulScalar(d.Cfg.CrossView))
	}
	t.Total = total
	return t, taps
}

// crossViewGlobal is the global-to-global cross-view term: infoNCE over
// the cosine similarities of the views' Y (through the term's head) divided
// by the temperature, averaged over the ordered pairs of distinct views.
// The unit vectors and scores are float32 under autocast, as crossViews'.
func (d *DIM) crossViewGlobal(y *torch.Tensor) *torch.Tensor {
	z := d.crossHead.Forward(y).To(torch.Float32)
	z = z.Div(z.Square().SumDims([]int64{1}, true).ClampMin(1e-24).Sqrt()) // rows of unit length
	q := z.DivScalar(d.Cfg.CrossViewTemp).Unsqueeze(1)                     // [V*N, 1, U]: the "locals"
	if d.Gather != nil {
		q, z = d.gather(q), d.gather(z)
	}
	return d.views().pairs(infoNCE{}, q, z, DotScores)
}

// views is DIM's scoring across the views of a batch (views.go).
func (d *DIM) views() multiView {
	return multiView{views: int64(d.Cfg.Views), clip: d.Cfg.ScoreClip, units: d.Cfg.MIUnits, allGather: d.Gather}
}

func (d *DIM) crossViews(local, global *torch.Tensor, score func(l, g *torch.Tensor) *torch.Tensor) (loss, penalty *torch.Tensor) {
	return d.views().loss(d.est, local, global, score)
}

func (d *DIM) gather(x *torch.Tensor) *torch.Tensor { return d.views().gather(x) }
