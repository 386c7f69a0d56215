//go:build !dimtorch_nodist && !dimtorch_shim

package dist

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// The tests start copies of the test binary as the ranks of a job: a copy
// with DIMTORCH_DIST_TEST set runs that scenario (see TestMain) and prints
// one JSON result line.
const envScenario = "DIMTORCH_DIST_TEST"

func TestMain(m *testing.M) {
	if s := os.Getenv(envScenario); s != "" {
		out, err := runScenario(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "scenario error:", err)
			fmt.Printf("{\"error\": %q}\n", err.Error())
			os.Exit(3)
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// port returns a TCP port that was free a moment ago.
func port(t *testing.T) int {
	t.Helper()
	p, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type rankResult struct {
	out    map[string][]float64
	stderr string
	err    error
	took   time.Duration
}

// spawn runs scenario on world ranks (extra environment per rank from env)
// and returns each rank's result.
func spawn(t *testing.T, scenario string, world int, env func(rank int) []string) []rankResult {
	t.Helper()
	port := port(t)
	cmds := make([]*exec.Cmd, world)
	outs := make([]*strings.Builder, world)
	errs := make([]*strings.Builder, world)
	for r := 0; r < world; r++ {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), envScenario+"="+scenario, "RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(world),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port), EnvTimeout+"=60")
		if env != nil {
			c.Env = append(c.Env, env(r)...)
		}
		outs[r], errs[r] = &strings.Builder{}, &strings.Builder{}
		c.Stdout, c.Stderr = outs[r], errs[r]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[r] = c
	}
	res := make([]rankResult, world)
	start := time.Now()
	for r, c := range cmds {
		res[r].err = c.Wait()
		res[r].took = time.Since(start)
		res[r].stderr = errs[r].String()
		lines := strings.Split(strings.TrimSpace(outs[r].String()), "\n")
		_ = json.Unmarshal([]byte(lines[len(lines)-1]), &res[r].out)
	}
	return res
}

func join() (*Group, error) {
	cfg, ok, err := FromEnv()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no WORLD_SIZE")
	}
	return New(cfg)
}

func runScenario(name string) (map[string][]float64, error) {
	if name == "mismatch" {
		// Every rank but 0 claims a world one larger than rank 0's.
		if os.Getenv("RANK") != "0" {
			os.Setenv("WORLD_SIZE", "3")
		}
	}
	g, err := join()
	if err != nil {
		return nil, err
	}
	defer g.Close()
	out := map[string][]float64{}
	r := float32(g.Rank())
	switch name {
	case "collectives":
		x := torch.FromSlice([]float32{1 + r, 10 * (1 + r)}, []int64{2})
		defer x.Free()
		if err := g.AllReduce(Sum, x); err != nil {
			return nil, err
		}
		m := torch.FromSlice([]float64{float64(r)}, []int64{1})
		defer m.Free()
		if err := g.AllReduce(Max, m); err != nil {
			return nil, err
		}
		// A channels-last tensor broadcast from rank 1.
		b := torch.FromSlice([]float32{r, r, r, r, r, r, r, r}, []int64{1, 2, 2, 2}).ChannelsLast()
		defer b.Free()
		if err := g.Broadcast(1, b); err != nil {
			return nil, err
		}
		out["sum"], _ = float64s(x)
		out["max"], _ = float64s(m)
		out["bcast"], _ = float64s(b)
		// All-gather with gradients: loss_r = sum(w_r * gathered) with
		// w_r = rank+1, so d(sum_r loss_r)/dx = sum_r (r+1) on every rank.
		v := torch.FromSlice([]float32{r, -r, 2 * r}, []int64{1, 3}).SetRequiresGrad(true)
		defer v.Free()
		s := torch.NewScope()
		defer s.Close()
		gathered := g.AllGather(v.Mul(torch.Scalar(1.0, s)))
		loss := gathered.MulScalar(float64(r) + 1).Sum()
		if err := loss.Backward(); err != nil {
			return nil, err
		}
		out["gathered"], _ = float64s(gathered)
		out["grad"], _ = float64s(v.Grad())
		// bfloat16 (as under autocast) travels as float32 and comes back
		// in bfloat16, in both directions.
		u := torch.FromSlice([]float32{r + 1, 2}, []int64{2}).SetRequiresGrad(true)
		defer u.Free()
		gb := g.AllGather(u.Mul(torch.Scalar(1.0, s)).To(torch.BFloat16))
		if gb.DType() != torch.BFloat16 {
			return nil, fmt.Errorf("gathered dtype %v", gb.DType())
		}
		if err := gb.To(torch.Float32).MulScalar(float64(r) + 1).Sum().Backward(); err != nil {
			return nil, err
		}
		out["gathered_bf16"], _ = float64s(gb)
		out["grad_bf16"], _ = float64s(u.Grad())
	case "reducer":
		// A linear layer trained on each rank's own data: after the reducer
		// the gradient must be the mean of the ranks' gradients, that is
		// the gradient of the mean loss over both shards.
		torch.ManualSeed(uint64(7 + g.Rank())) // different weights: the broadcast must align them
		lin := nn.NewLinear(3, 2, true)
		defer nn.Free(lin)
		ps := nn.Parameters(lin)
		if err := g.Verify(ps...); err != nil {
			return nil, err
		}
		if err := g.Broadcast(0, ps...); err != nil {
			return nil, err
		}
		red, err := g.NewReducer(ps)
		if err != nil {
			return nil, err
		}
		defer red.Close()
		for step := 0; step < 3; step++ {
			s := torch.NewScope()
			x := torch.FromSlice([]float32{1 + r, 2, -r, 0.5, r * r, 1, float32(step), 1, 1}, []int64{3, 3}, s)
			backward := func(prepare bool, key string) error {
				for _, p := range ps {
					_ = p.ZeroGrad()
				}
				if prepare {
					if err := red.Prepare(); err != nil {
						return err
					}
				}
				if err := lin.Forward(x).Square().Mean().Backward(); err != nil {
					return err
				}
				for i, p := range ps {
					out[fmt.Sprintf("%s%d_%d", key, step, i)], _ = float64s(p.Grad())
				}
				return nil
			}
			// This rank's own gradient (no Prepare: the reducer stays out),
			// then the averaged one.
			if err := backward(false, "local"); err != nil {
				return nil, err
			}
			if err := backward(true, "reduced"); err != nil {
				return nil, err
			}
			torch.NoGrad(func() {
				for _, p := range ps {
					_ = p.SubInPlace(p.Grad().MoveTo(s), 0.1)
				}
			})
			s.Close()
		}
		for i, p := range ps {
			out[fmt.Sprintf("param%d", i)], _ = float64s(p)
		}
	case "syncbn":
		// Every rank builds the same full batches and BatchNorms (same seed)
		// and runs its own rows through a synchronised BatchNorm.
		for _, c := range syncBNCases {
			res, err := syncBNCase(c, func(x *torch.Tensor) *torch.Tensor {
				lo, hi := c.split[g.Rank()], c.split[g.Rank()+1]
				return x.Narrow(0, lo, hi-lo)
			}, g.AllGather)
			if err != nil {
				return nil, err
			}
			for k, v := range res {
				out[c.name+"."+k] = v
			}
		}
	case "die":
		x := torch.FromSlice([]float32{1}, []int64{1})
		defer x.Free()
		if g.Rank() == 1 {
			os.Exit(9) // a crash: no goodbye
		}
		start := time.Now()
		for i := 0; i < 1000; i++ {
			if err := g.AllReduce(Sum, x); err != nil {
				return map[string][]float64{"seconds": {time.Since(start).Seconds()}}, err
			}
		}
		return nil, fmt.Errorf("the collectives kept working without rank 1")
	case "mismatch":
	}
	return out, nil
}

func float64s(t *torch.Tensor) ([]float64, error) {
	return t.Contiguous().To(torch.Float64).Float64s()
}

func TestCollectives(t *testing.T) {
	res := spawn(t, "collectives", 2, nil)
	for r, x := range res {
		if x.err != nil {
			t.Fatalf("rank %d: %v\n%s", r, x.err, x.stderr)
		}
		want := map[string][]float64{"sum": {3, 30}, "max": {1}, "bcast": {1, 1, 1, 1, 1, 1, 1, 1},
			"gathered": {0, 0, 0, 1, -1, 2}, "grad": {3, 3, 3}, "gathered_bf16": {1, 2, 2, 2}, "grad_bf16": {3, 3}}
		for k, w := range want {
			if !close(x.out[k], w, 1e-6) {
				t.Errorf("rank %d %s = %v, want %v", r, k, x.out[k], w)
			}
		}
	}
}

func close(a, b []float64, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !(math.Abs(a[i]-b[i]) <= tol*(1+math.Abs(b[i]))) {
			return false
		}
	}
	return true
}

// TestReducer: DDP's Reducer leaves on every rank the mean of the ranks'
// own gradients, step after step, and the parameters stay equal.
func TestReducer(t *testing.T) {
	res := spawn(t, "reducer", 2, nil)
	for r, x := range res {
		if x.err != nil {
			t.Fatalf("rank %d: %v\n%s", r, x.err, x.stderr)
		}
	}
	a, b := res[0].out, res[1].out
	for step := 0; step < 3; step++ {
		for i := 0; i < 2; i++ {
			k := fmt.Sprintf("%d_%d", step, i)
			la, lb := a["local"+k], b["local"+k]
			if len(la) == 0 || close(la, lb, 1e-3) {
				t.Fatalf("step %d param %d: the ranks' own gradients should differ: %v %v", step, i, la, lb)
			}
			mean := make([]float64, len(la))
			for j := range la {
				mean[j] = (la[j] + lb[j]) / 2
			}
			for r, x := range []map[string][]float64{a, b} {
				if !close(x["reduced"+k], mean, 1e-5) {
					t.Errorf("rank %d step %d param %d: reduced gradient %v, want the mean %v", r, step, i, x["reduced"+k], mean)
				}
			}
		}
	}
	for i := 0; i < 2; i++ {
		k := fmt.Sprintf("param%d", i)
		if !close(a[k], b[k], 0) {
			t.Errorf("%s differs between the ranks: %v vs %v", k, a[k], b[k])
		}
	}
}

type bnCase struct {
	name         string
	shape        []int64
	channelsLast bool
	split        []int64 // rank r takes rows split[r] to split[r+1]
}

// Uneven parts on purpose: the statistics weigh each rank by its count.
var syncBNCases = []bnCase{
	{"maps", []int64{6, 3, 4, 5}, true, []int64{0, 2, 6}},
	{"vectors", []int64{9, 5}, false, []int64{0, 5, 9}},
}

// syncBNCase runs a BatchNorm in training mode over part(x) of a seeded
// batch x, with gather (nil: not synchronised), backpropagates the loss
// sum(y * part(r)) for a seeded r, and returns y, the input's gradient, the
// weight's and bias's gradients and the running statistics.
func syncBNCase(c bnCase, part func(*torch.Tensor) *torch.Tensor, gather func(*torch.Tensor) *torch.Tensor) (map[string][]float64, error) {
	if err := torch.ManualSeed(7); err != nil {
		return nil, err
	}
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn(c.shape, s).MulScalar(3).AddScalar(5) // a mean far from 0: the variance must not cancel
	r := torch.Randn(c.shape, s)
	bn := nn.NewBatchNorm(c.shape[1], true)
	defer nn.Free(bn)
	torch.NoGrad(func() {
		_ = bn.Weight.UniformInPlace(0.5, 1.5)
		_ = bn.Bias.UniformInPlace(-1, 1)
	})
	if c.channelsLast {
		x, r = x.ChannelsLast(), r.ChannelsLast()
	}
	xs := part(x).Detach().SetRequiresGrad(true)
	bn.Gather = gather
	y := bn.Forward(xs)
	if err := y.Mul(part(r)).Sum().Backward(); err != nil {
		return nil, err
	}
	out := map[string][]float64{}
	for k, t := range map[string]*torch.Tensor{"y": y, "gx": xs.Grad(), "gw": bn.Weight.Grad(), "gb": bn.Bias.Grad(),
		"mean": bn.RunningMean, "var": bn.RunningVar} {
		v, err := float64s(t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

// TestSyncBatchNorm: two ranks, each with its own (uneven) part of a batch,
// get from a synchronised BatchNorm what one process gets from a plain
// BatchNorm over the whole batch: each rank's outputs and input gradients
// are its rows of the whole's, the ranks' weight and bias gradients add up
// to the whole's, and both hold the whole batch's running statistics.
func TestSyncBatchNorm(t *testing.T) {
	res := spawn(t, "syncbn", 2, nil)
	for r, x := range res {
		if x.err != nil {
			t.Fatalf("rank %d: %v\n%s", r, x.err, x.stderr)
		}
	}
	for _, c := range syncBNCases {
		whole, err := syncBNCase(c, func(x *torch.Tensor) *torch.Tensor { return x }, nil)
		if err != nil {
			t.Fatal(err)
		}
		row := int64(len(whole["y"])) / c.shape[0]
		for r := 0; r < 2; r++ {
			got := res[r].out
			lo, hi := c.split[r]*row, c.split[r+1]*row
			for _, k := range []string{"y", "gx"} {
				if !close(got[c.name+"."+k], whole[k][lo:hi], 1e-5) {
					t.Errorf("%s rank %d %s = %v, want the whole batch's rows %v", c.name, r, k, got[c.name+"."+k], whole[k][lo:hi])
				}
			}
			for _, k := range []string{"mean", "var"} {
				if !close(got[c.name+"."+k], whole[k], 1e-5) {
					t.Errorf("%s rank %d running %s = %v, want %v", c.name, r, k, got[c.name+"."+k], whole[k])
				}
			}
		}
		for _, k := range []string{"gw", "gb"} {
			a, b := res[0].out[c.name+"."+k], res[1].out[c.name+"."+k]
			if len(a) != len(whole[k]) || len(b) != len(whole[k]) {
				t.Fatalf("%s %s: %v and %v", c.name, k, a, b)
			}
			sum := make([]float64, len(a))
			for i := range a {
				sum[i] = a[i] + b[i]
			}
			if !close(sum, whole[k], 1e-5) {
				t.Errorf("%s %s: the ranks' sum %v, the whole batch's %v", c.name, k, sum, whole[k])
			}
		}
	}
}

// TestPeerDies: when a rank dies, the other's next collective fails with
// an error well within the timeout instead of hanging.
func TestPeerDies(t *testing.T) {
	res := spawn(t, "die", 2, nil)
	if res[1].err == nil {
		t.Fatal("rank 1 should have died")
	}
	if res[0].err == nil {
		t.Fatalf("rank 0 carried on without rank 1: %s", res[0].stderr)
	}
	if res[0].took > 20*time.Second {
		t.Errorf("rank 0 took %v to notice", res[0].took)
	}
	t.Logf("rank 0: %v after %v: %s", res[0].err, res[0].took, strings.TrimSpace(res[0].stderr))
}

// TestWorldMismatch: ranks started with different world sizes are told so.
func TestWorldMismatch(t *testing.T) {
	res := spawn(t, "mismatch", 2, func(int) []string { return []string{EnvTimeout + "=20"} })
	if res[1].err == nil || !strings.Contains(res[1].stderr, "world size of 3 but rank 0 with 2") {
		t.Errorf("rank 1: %v %s", res[1].err, res[1].stderr)
	}
}
