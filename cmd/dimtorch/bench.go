package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/dimtorch/dimtorch/torch"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure speed (compare with bench/*.py on PyTorch: see docs/performance.md)",
		Subcommands: []*cli.Command{
			benchTrainCommand(),
			benchEmbedCommand(),
			benchAllreduceCommand(),
			benchServeCommand(),
			benchGalleryCommand(),
			benchDataCommand(),
			{
				Name:  "ops",
				Usage: "the binding's per-op overhead (a one-element add) and a DIM-sized conv2d forward+backward",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "threads", Value: 2, Usage: "libtorch intra-op threads"},
					&cli.IntFlag{Name: "rounds", Value: 7, Usage: "timed rounds; the median is reported"},
					&cli.BoolFlag{Name: "json", Usage: "print one JSON object per benchmark"},
				},
				Action: benchOps,
			},
		},
	}
}

// benchResult is one benchmark's median time per iteration. bench/ops.py
// prints the same fields for PyTorch.
type benchResult struct {
	Bench     string  `json:"bench"`
	Impl      string  `json:"impl"`
	Threads   int     `json:"threads"`
	USPerIter float64 `json:"us_per_iter"`
	Iters     int     `json:"iters_per_round"`
	Rounds    int     `json:"rounds"`
}

// timeRounds runs fn iters times per round and returns the median
// microseconds per iteration, after one untimed warm-up round.
func timeRounds(rounds, iters int, fn func() error) (float64, error) {
	var per []float64
	for r := -1; r < rounds; r++ {
		start := time.Now()
		for i := 0; i < iters; i++ {
			if err := fn(); err != nil {
				return 0, err
			}
		}
		if r >= 0 {
			per = append(per, float64(time.Since(start).Microseconds())/float64(iters))
		}
	}
	sort.Float64s(per)
	return per[len(per)/2], nil
}

func benchOps(c *cli.Context) error {
	// libtorch's OpenMP pool belongs to the calling OS thread: keep the
	// benchmark on one thread, as a training loop does.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	threads, rounds := c.Int("threads"), c.Int("rounds")
	if err := torch.SetNumThreads(threads); err != nil {
		return err
	}
	if rounds < 1 {
		return fmt.Errorf("--rounds must be at least 1")
	}
	_ = torch.ManualSeed(0)
	var results []benchResult

	// A one-element add: what the binding costs per operator call. Results
	// go to a scope reset every 1000 calls, as in a training step; results
	// that the caller frees one by one pay for the finalizer safety net too
	// (add_1elem_free).
	a, b := torch.Ones([]int64{1}), torch.Ones([]int64{1})
	defer a.Free()
	defer b.Free()
	step := torch.NewScope()
	defer step.Close()
	as := a.Ref(step)
	n := 0
	us, err := timeRounds(rounds, 20000, func() error {
		r := as.Add(b)
		if n++; n%1000 == 0 {
			err := r.Err()
			step.Reset()
			as = a.Ref(step)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	results = append(results, benchResult{"add_1elem", "dimtorch", threads, us, 20000, rounds})
	us, err = timeRounds(rounds, 20000, func() error {
		r := a.Add(b)
		err := r.Err()
		r.Free()
		return err
	})
	if err != nil {
		return err
	}
	results = append(results, benchResult{"add_1elem_free", "dimtorch", threads, us, 20000, rounds})

	// dcgan32's first two convolutions on a batch of 64 CIFAR-sized images,
	// forward and backward.
	x := torch.Randn([]int64{64, 3, 32, 32})
	w1 := torch.Randn([]int64{64, 3, 4, 4}).MulScalar(0.1).SetRequiresGrad(true)
	w2 := torch.Randn([]int64{128, 64, 4, 4}).MulScalar(0.02).SetRequiresGrad(true)
	defer x.Free()
	defer w1.Free()
	defer w2.Free()
	conv := torch.ConvOptions{Stride: 2, Padding: 1}
	s := torch.NewScope()
	defer s.Close()
	us, err = timeRounds(rounds, 20, func() error {
		xs := x.Ref(s)
		out := torch.Conv2d(torch.Conv2d(xs, w1, nil, conv).Relu(), w2, nil, conv).Relu().Mean()
		if err := out.Backward(); err != nil {
			return err
		}
		_ = w1.ZeroGrad()
		_ = w2.ZeroGrad()
		s.Reset()
		return nil
	})
	if err != nil {
		return err
	}
	results = append(results, benchResult{"conv2d_dcgan32_b64_fwd_bwd", "dimtorch", threads, us, 20, rounds})

	for _, r := range results {
		if c.Bool("json") {
			_ = json.NewEncoder(os.Stdout).Encode(r)
		} else {
			fmt.Printf("%-30s %10.2f us/iter  (%d threads)\n", r.Bench, r.USPerIter, r.Threads)
		}
	}
	return nil
}
