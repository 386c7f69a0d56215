// Package objectives holds Deep InfoMax's training objectives: scorers that
// turn features into critic scores, the mutual-information estimators that
// turn scores into losses, and the prior-matching game and auxiliary tasks.
// Scorers, estimators and encoders are independent of each other.
//
// Scores follow one layout throughout: S[n, k, l, m] is the critic's score
// for local position l of image n paired with global vector m of image k.
// Pairs with n == k are drawn from the joint distribution (positives); pairs
// with n != k from the product of marginals (negatives).
package objectives

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	"github.com/dimtorch/dimtorch/torch"
)

// Estimator turns a score tensor [N, N, L, M] into a scalar loss to minimise
// (the negative of a lower bound on, or a proxy for, the mutual information).
type Estimator interface {
	Name() string
	Loss(scores *torch.Tensor) *torch.Tensor
}

// fDiv is an estimator of the form loss = -(E_P[pos(T)] - E_Q[neg(T)]).
type fDiv struct {
	name     string
	pos, neg func(t *torch.Tensor) *torch.Tensor
}

func (f fDiv) Name() string { return f.name }

// Loss computes the negatives' term over all N x N pairs and takes the
// positives' share out again, instead of copying the N(N-1) negative scores
// out of the score tensor (a gather forward, a scatter of the whole tensor
// backward): the positives are a strided view of the diagonal.
func (f fDiv) Loss(s *torch.Tensor) *torch.Tensor {
	p, err := positives(s)
	if err != nil {
		return torch.Errored(err)
	}
	n := s.Size(0)
	negCount := float64(n*(n-1)) * float64(p.Numel()/n)
	negSum := f.neg(s).Sum().Sub(f.neg(p).Sum())
	return negSum.DivScalar(negCount).Sub(f.pos(p).Mean())
}

var log2 = math.Log(2)

// The estimators, by the names the command line uses.
var estimators = map[string]Estimator{
	// GAN: the discriminator's log-likelihood.
	"gan": fDiv{"gan",
		func(t *torch.Tensor) *torch.Tensor { return t.Neg().Softplus().Neg() },
		func(t *torch.Tensor) *torch.Tensor { return t.Softplus() }},
	// Jensen-Shannon (the GAN objective shifted by log 2 on both sides).
	"jsd": fDiv{"jsd",
		func(t *torch.Tensor) *torch.Tensor { return t.Neg().Softplus().RSub(log2) },
		func(t *torch.Tensor) *torch.Tensor { return t.Softplus().SubScalar(log2) }},
	// KL in its f-divergence (NWJ) form.
	"kl": fDiv{"kl",
		func(t *torch.Tensor) *torch.Tensor { return t },
		func(t *torch.Tensor) *torch.Tensor { return t.SubScalar(1).Exp() }},
	// Reverse KL.
	"rkl": fDiv{"rkl",
		func(t *torch.Tensor) *torch.Tensor { return t.Neg().Exp().Neg() },
		func(t *torch.Tensor) *torch.Tensor { return t.SubScalar(1) }},
	// Squared Hellinger.
	"h2": fDiv{"h2",
		func(t *torch.Tensor) *torch.Tensor { return t.Neg().Exp().RSub(1) },
		func(t *torch.Tensor) *torch.Tensor { return t.Exp().SubScalar(1) }},
	// Pearson chi-squared: f*(T) = T^2/4 + T (bounded below, unlike the
	// original code's form).
	"x2": fDiv{"x2",
		func(t *torch.Tensor) *torch.Tensor { return t },
		func(t *torch.Tensor) *torch.Tensor { return t.Square().DivScalar(4).Add(t) }},
	"dv":  dv{},
	"nce": infoNCE{},
}

// Estimators lists the estimator names.
func Estimators() []string {
	var n []string
	for k := range estimators {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// GetEstimator returns the estimator with the given name ("infonce" is an
// alias of "nce").
func GetEstimator(name string) (Estimator, error) {
	name = strings.ToLower(name)
	if name == "infonce" {
		name = "nce"
	}
	e, ok := estimators[name]
	if !ok {
		return nil, fmt.Errorf("unknown estimator %q (known: %s)", name, strings.Join(Estimators(), ", "))
	}
	return e, nil
}

// dv is the Donsker-Varadhan bound: E_P[T] - log E_Q[exp T], with the log
// of the mean computed as logsumexp minus the log of the count.
type dv struct{}

func (dv) Name() string { return "dv" }

func (dv) Loss(s *torch.Tensor) *torch.Tensor {
	p, err := positives(s)
	if err != nil {
		return torch.Errored(err)
	}
	n := s.Size(0)
	self := eyeMask(n, s.Device(), s.Scope()).Reshape(n, n, 1, 1)
	negCount := float64(n*(n-1)) * float64(p.Numel()/n)
	logMeanExp := s.MaskedFill(self, math.Inf(-1)).Flatten(0, -1).LogSumExp([]int64{0}, false).SubScalar(math.Log(negCount))
	return logMeanExp.Sub(p.Mean())
}

// infoNCE scores each positive against every negative of its global vector:
// for positive (n, l, m) the candidates are S[n, n, l, m] and S[j, n, l', m]
// for all j != n and all l'. The positive's own other locals are excluded,
// not down-weighted.
type infoNCE struct{}

func (infoNCE) Name() string { return "nce" }

func (infoNCE) Loss(s *torch.Tensor) *torch.Tensor {
	n := s.Size(0)
	if err := checkScores(s); err != nil {
		return torch.Errored(err)
	}
	p, _ := positives(s) // [N, L, M]
	// Negatives of global (k, m): entries S[j, k, l', m] with j != k.
	g := s.Permute(1, 3, 0, 2) // [K, M, N, L]
	self := eyeMask(n, s.Device(), s.Scope()).Reshape(n, 1, n, 1)
	negLSE := g.MaskedFill(self, math.Inf(-1)).LogSumExp([]int64{2, 3}, false) // [K, M]
	negLSE = negLSE.Unsqueeze(1).Expand(p.Shape()...)                          // [N, L, M]
	lse := torch.Stack([]*torch.Tensor{p, negLSE}, 0).LogSumExp([]int64{0}, false)
	return lse.Sub(p).Mean()
}

func checkScores(s *torch.Tensor) error {
	if err := s.Err(); err != nil {
		return err
	}
	sh := s.Shape()
	if len(sh) != 4 || sh[0] != sh[1] {
		return fmt.Errorf("scores must be [N, N, L, M], got %v", sh)
	}
	if sh[0] < 2 {
		return fmt.Errorf("a batch of %d image has no negative pairs: use a batch size of at least 2", sh[0])
	}
	return nil
}

// positives returns the positive scores S[n, n] as a view [N, L, M] (every
// (N+1)-th row of the flattened pairs: no copy).
func positives(s *torch.Tensor) (*torch.Tensor, error) {
	if err := checkScores(s); err != nil {
		return nil, err
	}
	sh := s.Shape()
	n := sh[0]
	return s.Reshape(n*n, sh[2], sh[3]).Slice(0, 0, n*n, n+1), nil
}

type idxKey struct {
	n   int64
	dev torch.Device
}

var (
	idxMu    sync.Mutex
	eyeCache = map[idxKey]*torch.Tensor{}
)

// eyeMask returns a boolean N x N identity, cached per batch size and
// device (the cache owns it; the returned handle is a new reference in s).
func eyeMask(n int64, dev torch.Device, s *torch.Scope) *torch.Tensor {
	idxMu.Lock()
	defer idxMu.Unlock()
	k := idxKey{n, dev}
	e, ok := eyeCache[k]
	if !ok {
		e = torch.Eye(n, n, torch.Bool, dev)
		eyeCache[k] = e
	}
	return e.Ref(s)
}
