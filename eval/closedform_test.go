package eval

import (
	"math"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// correlatedPairs returns n samples of k independent pairs of unit Gaussians
// (a_i, b_i) with correlation rho within each pair, as a [n, k] and b [n, k].
// Closed forms: I(a; b) = -k/2 log(1 - rho^2) nats, and the total correlation
// of the 2k dimensions [a, b] is the same number.
func correlatedPairs(n, k int64, rho float64, s *torch.Scope) (a, b *torch.Tensor) {
	a = torch.Randn([]int64{n, k}, s)
	b = a.MulScalar(rho).Add(torch.Randn([]int64{n, k}, s).MulScalar(math.Sqrt(1 - rho*rho)))
	return a, b
}

func gaussianMI(k int64, rho float64) float64 { return -float64(k) / 2 * math.Log(1-rho*rho) }

// NDM estimates the total correlation KL(P(Y) || prod_j P(Y_j)); for Y made
// of correlated Gaussian pairs that is -k/2 log(1 - rho^2). The estimate is
// a lower bound, so it may fall short, but only by a little; and it must
// not exceed the truth by more than the held-out estimate's noise.
func TestNDMClosedForm(t *testing.T) {
	for _, rho := range []float64{0, 0.6, 0.9} {
		_ = torch.ManualSeed(7)
		s := torch.NewScope()
		a, b := correlatedPairs(6000, 1, rho, s)
		y := torch.Cat([]*torch.Tensor{a, b}, 1)
		got, err := NDM(y.Narrow(0, 0, 4000), y.Narrow(0, 4000, 2000), MeasureOptions{Steps: 400, BatchSize: 256, LR: 1e-3, Seed: 1})
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := gaussianMI(1, rho)
		t.Logf("rho %.1f: NDM %.3f nats, closed form %.3f", rho, got, want)
		if !(got >= want-0.1 && got <= want+0.08) { // NaN fails too
			t.Errorf("rho %.1f: NDM %.3f nats, closed form %.3f", rho, got, want)
		}
	}
}

// MINE's Donsker-Varadhan bound on I(X; Y) for correlated Gaussian pairs
// approaches -k/2 log(1 - rho^2) from below.
func TestMINEClosedForm(t *testing.T) {
	for _, rho := range []float64{0, 0.6, 0.9} {
		_ = torch.ManualSeed(8)
		s := torch.NewScope()
		x, y := correlatedPairs(6000, 2, rho, s)
		got, err := MINE(x.Narrow(0, 0, 4000), y.Narrow(0, 0, 4000), x.Narrow(0, 4000, 2000), y.Narrow(0, 4000, 2000),
			MeasureOptions{Steps: 600, BatchSize: 256, LR: 1e-3, Seed: 1})
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := gaussianMI(2, rho)
		t.Logf("rho %.1f: MINE %.3f nats, closed form %.3f", rho, got, want)
		if !(got >= want-0.15 && got <= want+0.1) { // NaN fails too
			t.Errorf("rho %.1f: MINE %.3f nats, closed form %.3f", rho, got, want)
		}
	}
}

// MINE's bias correction: the surrogate (the negated bound) has gradient
// exp(tm) / (B ma) through the marginal statistics, with ma the moving average of
// mean(exp tm) including the current batch (rate 0.25 here), not the
// batch's own mean; through the joint statistics, -1/B.
func TestMINEBiasCorrectedGradient(t *testing.T) {
	ma := movingAverage{rate: 0.25}
	batches := [][]float64{{0.1, -0.4, 0.7, 0.2}, {1.2, 0.3, -0.5, 0.9}, {0.0, 2.0, -1.0, 0.5}}
	var want float64
	for i, tmv := range batches {
		s := torch.NewScope()
		tm := torch.FromSlice(tmv, []int64{4}, s).SetRequiresGrad(true)
		tj := torch.FromSlice([]float64{0.5, 0.5, 1, 1}, []int64{4}, s).SetRequiresGrad(true)
		var mean float64
		for _, v := range tmv {
			mean += math.Exp(v) / 4
		}
		if i == 0 {
			want = mean
		} else {
			want = 0.75*want + 0.25*mean
		}
		loss, err := mineSurrogate(tj, tm, &ma)
		if err != nil {
			t.Fatal(err)
		}
		g, err := torch.Grad([]*torch.Tensor{loss}, []*torch.Tensor{tj, tm}, torch.GradOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gj, _ := g[0].Float64s()
		gm, _ := g[1].Float64s()
		for k, v := range tmv {
			if e := math.Exp(v) / (4 * want); !(math.Abs(gm[k]-e) <= 1e-12) {
				t.Fatalf("batch %d: d loss / d tm[%d] = %v, want exp(tm)/(B ma) = %v (ma %v)", i, k, gm[k], e, want)
			}
			if !(math.Abs(gj[k]+0.25) <= 1e-12) {
				t.Fatalf("batch %d: d loss / d tj[%d] = %v, want -1/B", i, k, gj[k])
			}
		}
		s.Close()
	}
}
