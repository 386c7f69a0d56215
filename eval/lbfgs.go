package eval

import (
	"errors"
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
	// Progress, when set, is called after each iteration with its number,
	// the loss and the largest gradient component.
	Progress func(iter int, loss, gmax float64)
}

// lbfgsResult says how the minimisation ended.
type lbfgsResult struct {
	Loss       float64
	Iterations int
	GradMax    float64 // largest gradient component at the end
	Converged  bool    // the gradient fell below Tol, or the loss stopped changing
	Reason     string
}

// objective returns the loss at theta and its gradient (owned by the caller).
type objective func(theta *torch.Tensor) (float64, *torch.Tensor, error)

// dot returns a . b; its temporaries live in their own scope, so that dots
// of long-lived tensors (the history) free them at once.
func dot(a, b *torch.Tensor) (float64, error) {
	s := torch.NewScope()
	defer s.Close()
	return a.Ref(s).Mul(b).Sum().Item()
}

// absMax returns the largest absolute component of g.
func absMax(g *torch.Tensor) (float64, error) {
	s := torch.NewScope()
	defer s.Close()
	return g.Ref(s).Abs().Max().Item()
}

// minimize runs L-BFGS with a backtracking (Armijo) line search from theta,
// a 1-D tensor it updates in place, and says how it ended. Full-batch and
// deterministic, it converges on the smooth convex problems of linear probes,
// as scikit-learn's lbfgs does. Every temporary of an iteration is freed with
// it: the live tensors are the history (2 x History vectors), theta and the
// gradient, whatever the number of iterations.
func minimize(f objective, theta *torch.Tensor, o lbfgsOptions) (lbfgsResult, error) {
	orDefault(&o.MaxIter, 500)
	orDefault(&o.History, 10)
	orDefault(&o.Tol, 1e-5)
	var res lbfgsResult
	var ss, ys []*torch.Tensor // the history, owned here
	var rhos []float64
	defer func() {
		for i := range ss {
			ss[i].Free()
			ys[i].Free()
		}
	}()
	loss, g, err := f(theta)
	if err != nil {
		return res, err
	}
	defer func() { g.Free() }()
	res.Loss = loss
	res.Reason = "iteration limit"
	for res.Iterations < o.MaxIter {
		gmax, err := absMax(g)
		if err != nil {
			return res, err
		}
		res.GradMax = gmax
		if gmax < o.Tol {
			res.Converged, res.Reason = true, "gradient below tolerance"
			break
		}
		step, err := lbfgsIteration(f, theta, g, loss, ss, ys, rhos)
		if err != nil {
			return res, err
		}
		if step.restart {
			for i := range ss {
				ss[i].Free()
				ys[i].Free()
			}
			ss, ys, rhos = nil, nil, nil
		}
		if step.newG == nil {
			// No step along a descent direction lowers the loss any more:
			// the minimum is reached to the precision of the loss (float32
			// sums over many samples). Stop, keeping theta, as scipy's
			// L-BFGS does after a failed line search.
			res.Converged, res.Reason = true, "line search found no decrease (the precision of the loss is reached)"
			break
		}
		if step.sy > 1e-10 {
			ss, ys, rhos = append(ss, step.sk), append(ys, step.yk), append(rhos, 1/step.sy)
			if len(ss) > o.History {
				ss[0].Free()
				ys[0].Free()
				ss, ys, rhos = ss[1:], ys[1:], rhos[1:]
			}
		} else {
			step.sk.Free()
			step.yk.Free()
		}
		g.Free()
		g = step.newG
		improved := loss - step.loss
		loss = step.loss
		res.Loss = loss
		res.Iterations++
		if o.Progress != nil {
			o.Progress(res.Iterations, loss, gmax)
		}
		if improved < 1e-9*math.Max(1, math.Abs(loss)) {
			res.Converged, res.Reason = true, "loss stopped changing"
			break
		}
	}
	if res.Converged && res.Reason != "gradient below tolerance" {
		if gmax, err := absMax(g); err == nil {
			res.GradMax = gmax
		}
	}
	return res, nil
}

// lbfgsStep is one iteration's outcome: the new gradient (nil when the line
// search failed), the loss there, and the curvature pair (sk, yk) with sk.yk.
type lbfgsStep struct {
	newG, sk, yk *torch.Tensor
	loss, sy     float64
	restart      bool // the history gave no descent direction and was dropped
}

// lbfgsIteration computes the direction -H g by the two-loop recursion, runs
// the line search and, on success, moves theta. Its temporaries live in a
// scope of its own; what it returns is owned by the caller.
func lbfgsIteration(f objective, theta, g *torch.Tensor, loss float64, ss, ys []*torch.Tensor, rhos []float64) (lbfgsStep, error) {
	var out lbfgsStep
	s := torch.NewScope()
	defer s.Close()
	q := g.Ref(s)
	alpha := make([]float64, len(ss))
	for i := len(ss) - 1; i >= 0; i-- {
		a, err := dot(ss[i], q)
		if err != nil {
			return out, err
		}
		alpha[i] = rhos[i] * a
		q = q.Sub(ys[i].Ref(s).MulScalar(alpha[i]))
	}
	var gamma float64
	if n := len(ss); n > 0 {
		sy, err1 := dot(ss[n-1], ys[n-1])
		yy, err2 := dot(ys[n-1], ys[n-1])
		if err := errors.Join(err1, err2); err != nil {
			return out, err
		}
		gamma = sy / yy
	} else {
		gg, err := dot(g, g)
		if err != nil {
			return out, err
		}
		gamma = 1 / math.Max(1, math.Sqrt(gg))
	}
	r := q.MulScalar(gamma)
	for i := range ss {
		b, err := dot(ys[i], r)
		if err != nil {
			return out, err
		}
		r = r.Add(ss[i].Ref(s).MulScalar(alpha[i] - rhos[i]*b))
	}
	d := r.Neg()
	gd, err := dot(g, d)
	if err != nil {
		return out, err
	}
	if !(gd < 0) { // not a descent direction: restart from the gradient
		gg, err := dot(g, g)
		if err != nil {
			return out, err
		}
		d = g.Ref(s).Neg().MulScalar(1 / math.Max(1, math.Sqrt(gg)))
		if gd, err = dot(g, d); err != nil {
			return out, err
		}
		out.restart = true
	}
	// Backtracking line search.
	t := 1.0
	for ls := 0; ls <= maxHalvings; ls++ {
		cand := theta.Ref(s).Add(d.MulScalar(t))
		newLoss, newG, err := f(cand)
		if err != nil {
			return out, err
		}
		if newLoss <= loss+1e-4*t*gd {
			out.loss = newLoss
			out.newG = newG
			out.sk = cand.Sub(theta).MoveTo(nil)
			out.yk = newG.Ref(s).Sub(g).MoveTo(nil)
			if out.sy, err = dot(out.sk, out.yk); err != nil {
				out.newG.Free()
				out.sk.Free()
				out.yk.Free()
				return lbfgsStep{}, err
			}
			var cerr error
			torch.NoGrad(func() { cerr = theta.CopyFrom(cand) })
			if cerr != nil {
				out.newG.Free()
				out.sk.Free()
				out.yk.Free()
				return lbfgsStep{}, cerr
			}
			return out, nil
		}
		newG.Free()
		if math.IsNaN(newLoss) && ls == maxHalvings {
			return out, fmt.Errorf("L-BFGS: the loss became NaN")
		}
		t /= 2
	}
	return out, nil
}
