package objectives

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// AMDIM is multi-scale Deep InfoMax across views (Bachman, Hjelm and
// Buchwalter, 2019): for two (or more) augmented views of each image, Y of
// one view predicts every position of the other view's local map (AMDIM's
// "1-7") and of its conv map ("1-5"), and one random position of one view's
// conv map predicts every position of the other view's ("5-5"). Each
// prediction is infoNCE over all positions of all the other images of the
// batch as negatives, in both directions, with AMDIM's score stabilisation
// (scores divided by sqrt(units), 0.05 mean(s^2) added, soft-clipped to
// c*tanh(s/c); --score-clip, 10 by default for this method, 0 for raw
// scores). The loss is the sum of the chosen predictions.
//
// Which maps play AMDIM's 7x7 and 5x5 roles: the encoder's local tap and
// its conv tap. On amdim28 and amdim32 they are 7x7 and 5x5 maps, as in
// AMDIM's 32x32 encoder; on dcgan32 8x8 and 4x4. Y, the representation,
// plays the 1x1 map's role. Each map has its own head into the critic's
// space (models.MIHead, as AMDIM's "fake RKHS" networks).
type AMDIM struct {
	nn.Base
	pairs []string
	mv    multiView

	global *models.MIHead // Y
	local  *models.MIHead // the local map ("7")
	conv   *models.MIHead // the conv map ("5"), when a pair uses it

	// Gather is DIM.Gather: set, every rank's features are every rank's
	// negatives.
	Gather func(*torch.Tensor) *torch.Tensor
	// Positions, when set, replaces the uniform draw of the position of
	// each row's conv map that predicts in 5-5 ([rows] int64 in [0, L)):
	// a test hook.
	Positions func(rows, l int64, like *torch.Tensor) *torch.Tensor
}

// AMDIMPairs are the predictions multi-scale DIM can make, in AMDIM's names.
var AMDIMPairs = []string{"1-7", "1-5", "5-5"}

func parsePairs(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(AMDIMPairs, p) {
			return nil, fmt.Errorf("unknown amdim pair %q (want some of %s)", p, strings.Join(AMDIMPairs, ", "))
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("amdim pair %q given twice", p)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--amdim-pairs names no prediction (want some of %s)", strings.Join(AMDIMPairs, ", "))
	}
	return out, nil
}

// NewAMDIM builds multi-scale DIM's heads for an encoder with the given
// spec: pairs is a comma-separated list of AMDIMPairs; DIM's settings give
// the views (at least 2), the critic's width and the score clipping.
func NewAMDIM(pairs string, dim DIMConfig, spec models.Spec) (*AMDIM, error) {
	ps, err := parsePairs(pairs)
	if err != nil {
		return nil, err
	}
	if dim.Views < 2 {
		return nil, fmt.Errorf("amdim predicts across views: it needs --views 2 or more, got %d", dim.Views)
	}
	if dim.MIUnits < 1 {
		return nil, fmt.Errorf("mi-units must be at least 1, got %d", dim.MIUnits)
	}
	if !(dim.ScoreClip >= 0) {
		return nil, fmt.Errorf("score-clip must be non-negative (0: off), got %v", dim.ScoreClip)
	}
	usesConv := slices.Contains(ps, "1-5") || slices.Contains(ps, "5-5")
	if usesConv && spec.Conv == spec.Local {
		return nil, fmt.Errorf("amdim's 1-5 and 5-5 pairs predict the conv map, a second scale below the local map; %s's local and conv taps are the same %dx%dx%d map: "+
			"use an encoder with two scales (amdim28, amdim32, dcgan32, basic64) or --amdim-pairs 1-7", spec.Name, spec.Local[0], spec.Local[1], spec.Local[2])
	}
	if spec.Globals > 1 {
		return nil, fmt.Errorf("amdim takes one global vector; %s has %d", spec.Name, spec.Globals)
	}
	u := int64(dim.MIUnits)
	a := &AMDIM{pairs: ps, mv: multiView{views: int64(dim.Views), clip: dim.ScoreClip, units: dim.MIUnits}}
	a.global = nn.Child(&a.Base, "global_head", models.NewGlobalHead(int64(spec.Y), u))
	if slices.Contains(ps, "1-7") {
		a.local = nn.Child(&a.Base, "local_head", models.NewLocalHead(int64(spec.Local[0]), u))
	}
	if usesConv {
		a.conv = nn.Child(&a.Base, "conv_head", models.NewLocalHead(int64(spec.Conv[0]), u))
	}
	if err := built(a); err != nil {
		return nil, err
	}
	return a, nil
}

// Loss implements Method. x holds V views of N images, view-major.
func (a *AMDIM) Loss(enc models.Encoder, in Input) (Terms, models.Taps) {
	taps := enc.Encode(in.X)
	mv := a.mv
	mv.allGather = a.Gather
	g := a.global.Forward(taps.Y) // [V*N, U]
	var t Terms
	total := torch.Zeros(nil, in.X.Device(), in.X.Scope())
	add := func(dst **torch.Tensor, loss, pen *torch.Tensor) {
		*dst = loss
		total = total.Add(loss)
		if pen != nil {
			if t.ScorePenalty == nil {
				t.ScorePenalty = pen
			} else {
				t.ScorePenalty = t.ScorePenalty.Add(pen)
			}
		}
	}
	var conv *torch.Tensor
	if a.conv != nil {
		conv = a.conv.Forward(taps.Conv) // [V*N, L5, U]
	}
	for _, p := range a.pairs {
		switch p {
		case "1-7":
			l, pen := mv.loss(infoNCE{}, a.local.Forward(taps.Local), g, DotScores)
			add(&t.Pred1to7, l, pen)
		case "1-5":
			l, pen := mv.loss(infoNCE{}, conv, g, DotScores)
			add(&t.Pred1to5, l, pen)
		case "5-5":
			l, pen := mv.loss(infoNCE{}, conv, a.position(conv), DotScores)
			add(&t.Pred5to5, l, pen)
		}
	}
	t.Total = total
	return t, taps
}

// position picks one position of each row's map [R, L, U]: [R, U].
func (a *AMDIM) position(m *torch.Tensor) *torch.Tensor {
	if err := m.Err(); err != nil {
		return m
	}
	r, l, u := m.Size(0), m.Size(1), m.Size(2)
	var idx *torch.Tensor
	if a.Positions != nil {
		idx = a.Positions(r, l, m)
	} else {
		idx = torch.RandInt(0, l, []int64{r}, m.Device(), m.Scope())
	}
	return m.Gather(1, idx.Reshape(r, 1, 1).Expand(r, 1, u)).Squeeze(1)
}

// SetGather implements Gatherer.
func (a *AMDIM) SetGather(g func(*torch.Tensor) *torch.Tensor) { a.Gather = g }

// Critic implements Method: AMDIM has none.
func (a *AMDIM) Critic() Critic { return nil }

// Free implements Method.
func (a *AMDIM) Free() { nn.Free(a) }

func describeAMDIM(mc MethodConfig, o DIMConfig, enc string) string {
	ps, err := parsePairs(mc.AMDIMPairs)
	if err != nil {
		ps = []string{mc.AMDIMPairs}
	}
	s := fmt.Sprintf("AMDIM (%s), %s, %d MI units, %d views", strings.Join(ps, ", "), enc, o.MIUnits, o.Views)
	if o.ScoreClip == 0 {
		s += ", raw scores"
	}
	return s
}
