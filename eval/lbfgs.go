package eval

import (
	"fmt"
	"math"

	"github.com/dimtorch/dimtorch/torch"
)

// maxHalvings bounds the backtracking line search: 2^-20 of the first trial
// step is below what a float32 loss can resolve.
const maxHalvings = 20

// lbfgsOptions configure minimize.
type lbfgsOptions struct {
	MaxIter int     // 500
	History int     // 10
	Tol     float64 // stop when the largest gradient component falls below Tol (1e-5)
}

// objective returns the loss at theta and its gradient (owned by the caller).
type objective func(theta *torch.Tensor) (float64, *torch.Tensor, error)

func dot(a, b *torch.Tensor) float64 {
	v, _ := a.Mul(b).Sum().Item()
	return v
}

// minimize runs L-BFGS with a backtracking (Armijo) line search from theta,
// a 1-D tensor it updates in place, and returns the final loss and the
// number of iterations. Full-batch and deterministic, it converges on the
// smooth convex problems of linear probes, as scikit-learn's lbfgs does.
func minimize(f objective, theta *torch.Tensor, o lbfgsOptions) (float64, int, error) {
	if o.MaxIter == 0 {
		o.MaxIter = 500
	}
	if o.History == 0 {
		o.History = 10
	}
	if o.Tol == 0 {
		o.Tol = 1e-5
	}
	hist := torch.NewScope() // s and y pairs
	defer hist.Close()
	var ss, ys []*torch.Tensor
	var rhos []float64
	loss, g, err := f(theta)
	if err != nil {
		return 0, 0, err
	}
	g.MoveTo(hist)
	it := 0
	for ; it < o.MaxIter; it++ {
		gmax, err := g.Abs().Max().Item()
		if err != nil {
			return 0, it, err
		}
		if gmax < o.Tol {
			break
		}
		s := torch.NewScope()
		// Two-loop recursion: d = -H g.
		q := g.Ref(s)
		alpha := make([]float64, len(ss))
		for i := len(ss) - 1; i >= 0; i-- {
			alpha[i] = rhos[i] * dot(ss[i], q)
			q = q.Sub(ys[i].MulScalar(alpha[i]))
		}
		gamma := 1.0
		if n := len(ss); n > 0 {
			gamma = dot(ss[n-1], ys[n-1]) / dot(ys[n-1], ys[n-1])
		} else {
			gamma = 1 / math.Max(1, math.Sqrt(dot(g, g)))
		}
		r := q.MulScalar(gamma)
		for i := range ss {
			beta := rhos[i] * dot(ys[i], r)
			r = r.Add(ss[i].MulScalar(alpha[i] - beta))
		}
		d := r.Neg()
		gd := dot(g, d)
		if !(gd < 0) { // not a descent direction: restart from the gradient
			d = g.Neg().MulScalar(1 / math.Max(1, math.Sqrt(dot(g, g))))
			gd = dot(g, d)
			ss, ys, rhos = nil, nil, nil
		}
		// Backtracking line search.
		t := 1.0
		var newLoss float64
		var newG *torch.Tensor
		var cand *torch.Tensor
		found := false
		for ls := 0; ls <= maxHalvings; ls++ {
			cand = theta.Add(d.MulScalar(t)).MoveTo(s)
			newLoss, newG, err = f(cand)
			if err != nil {
				s.Close()
				return 0, it, err
			}
			if newLoss <= loss+1e-4*t*gd {
				found = true
				break
			}
			newG.Free()
			t /= 2
		}
		if !found && math.IsNaN(newLoss) {
			s.Close()
			return 0, it, fmt.Errorf("L-BFGS: the loss became NaN")
		}
		if !found {
			// No step along a descent direction lowers the loss any more:
			// the minimum is reached to the precision of the loss (float32
			// sums over many samples). Stop, keeping theta, as scipy's
			// L-BFGS does after a failed line search.
			s.Close()
			break
		}
		newG.MoveTo(hist)
		sk := cand.Sub(theta).MoveTo(hist)
		yk := newG.Sub(g).MoveTo(hist)
		if sy := dot(sk, yk); sy > 1e-10 {
			ss, ys, rhos = append(ss, sk), append(ys, yk), append(rhos, 1/sy)
			if len(ss) > o.History {
				ss[0].Free()
				ys[0].Free()
				ss, ys, rhos = ss[1:], ys[1:], rhos[1:]
			}
		}
		var cerr error
		torch.NoGrad(func() { cerr = theta.CopyFrom(cand) })
		s.Close()
		if cerr != nil {
			return 0, it, cerr
		}
		g.Free()
		g = newG
		improved := loss - newLoss
		loss = newLoss
		if improved < 1e-9*math.Max(1, math.Abs(loss)) {
			it++
			break
		}
	}
	return loss, it, nil
}
