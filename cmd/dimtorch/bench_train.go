package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/internal/npy"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
	"github.com/urfave/cli/v2"
)

func benchTrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "time DIM(L) training steps on synthetic data of the encoder's input shape (compare: bench/train_dim.py)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "encoder", Value: "dcgan32"},
			&cli.IntFlag{Name: "channels", Value: 3, Usage: "input channels"},
			&cli.IntFlag{Name: "batch-size", Value: 64},
			&cli.IntFlag{Name: "mi-units", Value: 512},
			&cli.IntFlag{Name: "steps", Value: 20, Usage: "timed steps"},
			&cli.IntFlag{Name: "warmup", Value: 3, Usage: "untimed steps first"},
			&cli.IntFlag{Name: "threads", Value: 2},
			&cli.StringFlag{Name: "estimator", Value: "jsd"},
			&cli.StringFlag{Name: "scorer", Value: "dot", Usage: "dot or concat"},
			&cli.IntFlag{Name: "views", Value: 1, Usage: "views per image: the batch holds views x batch-size images"},
			&cli.Float64Flag{Name: "score-clip", Usage: "AMDIM's score clipping (0: off)"},
			&cli.Float64Flag{Name: "cross-view", Usage: "weight of the global-to-global cross-view term (needs --views 2; 0: off)"},
			&cli.Float64Flag{Name: "cross-view-temperature", Value: 0.2},
			&cli.Float64Flag{Name: "gamma", Usage: "weight of prior matching, with its discriminator's step (0: off; dimtorch train's default: 0.1)"},
			&cli.Float64Flag{Name: "gp-weight", Value: 1, Usage: "gradient penalty of the prior's discriminator"},
			&cli.BoolFlag{Name: "bf16", Usage: "bfloat16 autocast of the forward pass"},
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "cpu, cuda or cuda:N"},
			&cli.BoolFlag{Name: "channels-last", Value: true, Usage: "lay the images and convolution weights out as NHWC (channels_last), as dimtorch train does by default (--channels-last=false: NCHW)"},
			&cli.Uint64Flag{Name: "seed", Value: 0},
			&cli.BoolFlag{Name: "json", Usage: "end with one JSON object"},
			&cli.StringFlag{Name: "dump-grads", Usage: "write every trained parameter's gradient after the first step's backward pass to `DIR`/NNN.npy (float32, in the optimiser's order; bench/train_dim.py --dump-grads writes the same), for cross-checks"},
			&cli.BoolFlag{Name: "lockstep", Usage: "after the warm-up print {\"ready\":true}, then before each timed step wait for a line on standard input and print {\"step_ms\":T} after it (bench/compare_train.py runs two implementations turn by turn this way); images/s then count the steps' own time"},
		},
		Action: benchTrain,
	}
}

type benchTrainResult struct {
	Impl         string    `json:"impl"`
	Encoder      string    `json:"encoder"`
	BatchSize    int       `json:"batch_size"`
	MIUnits      int       `json:"mi_units"`
	Threads      int       `json:"threads"`
	Device       string    `json:"device"`
	BF16         bool      `json:"bf16"`
	Steps        int       `json:"steps"`
	ImagesPerSec float64   `json:"images_per_sec"`
	MSPerStep    float64   `json:"ms_per_step"`
	FirstLoss    float64   `json:"first_loss"`
	LastLoss     float64   `json:"last_loss"`
	FirstDLoss   *float64  `json:"first_d_loss"` // the prior's discriminator, when --gamma > 0
	LastDLoss    *float64  `json:"last_d_loss"`
	PeakRSSMB    float64   `json:"peak_rss_mb"`
	StepMS       []float64 `json:"step_ms,omitempty"` // each timed step, with --lockstep
}

// peakRSSMB reads the process's peak resident set size (VmHWM).
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func benchTrain(c *cli.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	threads := c.Int("threads")
	if err := torch.SetNumThreads(threads); err != nil {
		return err
	}
	if err := torch.ManualSeed(c.Uint64("seed")); err != nil {
		return err
	}
	dev, err := torch.OpenDevice(c.String("device"))
	if err != nil {
		return err
	}
	if c.Bool("bf16") {
		if err := torch.BF16Supported(dev); err != nil {
			return fmt.Errorf("--bf16: %w", err)
		}
	}
	enc, err := models.New(models.Config{Name: c.String("encoder"), InChannels: c.Int("channels")})
	if err != nil {
		return err
	}
	defer nn.Free(enc)
	dim, err := objectives.New(objectives.Config{Mode: "local", Estimator: c.String("estimator"), Scorer: c.String("scorer"), Beta: 1,
		Gamma: c.Float64("gamma"), GPWeight: c.Float64("gp-weight"), MIUnits: c.Int("mi-units"), Views: c.Int("views"), ScoreClip: c.Float64("score-clip"),
		CrossView: c.Float64("cross-view"), CrossViewTemp: c.Float64("cross-view-temperature")}, enc.Spec())
	if err != nil {
		return err
	}
	defer nn.Free(dim)
	adam := optim.AdamOptions{LR: 1e-4, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8} // dimtorch train's defaults
	var prior *objectives.Prior
	if dim.Cfg.Gamma > 0 {
		// Created after the objective, as the trainer does, so the seed gives the same weights.
		if prior, err = objectives.NewPrior(int64(enc.Spec().Y), adam, dim.Cfg.GPWeight, dev); err != nil {
			return err
		}
		defer prior.Free()
	}
	// Parameters are created on the CPU from the seed (the same weights on
	// every device) and then moved.
	for _, m := range []nn.Module{enc, dim} {
		if err := nn.MoveTo(m, dev); err != nil {
			return err
		}
		if c.Bool("channels-last") {
			if err := nn.ToChannelsLast(m); err != nil {
				return err
			}
		}
	}
	params := append(nn.Parameters(enc), nn.Parameters(dim)...)
	opt, err := optim.NewAdam(params, adam)
	if err != nil {
		return err
	}
	defer opt.Free()
	in := enc.Spec().Input
	bs := c.Int("batch-size")
	x := torch.Rand([]int64{int64(dim.Cfg.Views * bs), int64(in[0]), int64(in[1]), int64(in[2])}).MulScalar(2).SubScalar(1).To(dev).MoveTo(nil)
	if c.Bool("channels-last") {
		xc := x.ChannelsLast()
		x.Free()
		x = xc
	}
	defer x.Free()
	s := torch.NewScope()
	defer s.Close()
	// One step of dimtorch train: the encoder's update, then the
	// discriminator's on the same batch's Y.
	dumpDir := c.String("dump-grads")
	step := func() (loss float64, dLoss *float64, err error) {
		defer s.Reset()
		var terms objectives.Terms
		var taps models.Taps
		fwd := func() { terms, taps = dim.Loss(enc, x.Ref(s), prior) }
		if c.Bool("bf16") {
			if err := torch.AutocastOn(dev, torch.BFloat16, fwd); err != nil {
				return 0, nil, err
			}
		} else {
			fwd()
		}
		if err := opt.ZeroGrad(); err != nil {
			return 0, nil, err
		}
		if err := terms.Total.Backward(); err != nil {
			return 0, nil, err
		}
		if dumpDir != "" {
			if err := dumpGrads(dumpDir, params); err != nil {
				return 0, nil, err
			}
			dumpDir = ""
		}
		if err := opt.Step(); err != nil {
			return 0, nil, err
		}
		if loss, err = terms.Total.Item(); err != nil {
			return 0, nil, err
		}
		if prior != nil {
			pl, err := prior.Step(taps.Y)
			if err != nil {
				return 0, nil, err
			}
			dLoss = &pl.D
		}
		return loss, dLoss, nil
	}
	for i := 0; i < c.Int("warmup"); i++ {
		if _, _, err := step(); err != nil {
			return err
		}
	}
	steps := c.Int("steps")
	if steps < 1 {
		return fmt.Errorf("--steps must be at least 1")
	}
	r := benchTrainResult{Impl: "dimtorch", Encoder: c.String("encoder"), BatchSize: bs, MIUnits: c.Int("mi-units"), Threads: threads, Device: dev.String(), BF16: c.Bool("bf16"), Steps: steps}
	lockstep := c.Bool("lockstep")
	var turns *bufio.Reader
	if lockstep {
		turns = bufio.NewReader(os.Stdin)
	}
	if err := synchronize(dev); err != nil {
		return err
	}
	if lockstep {
		fmt.Println(`{"ready":true}`)
	}
	start := time.Now()
	var stepped time.Duration
	for i := 0; i < steps; i++ {
		if lockstep {
			if _, err := turns.ReadString('\n'); err != nil {
				return fmt.Errorf("--lockstep: waiting for step %d of %d on standard input: %w", i+1, steps, err)
			}
		}
		t0 := time.Now()
		l, dl, err := step()
		if err != nil {
			return err
		}
		if lockstep {
			if err := synchronize(dev); err != nil {
				return err
			}
			d := time.Since(t0)
			stepped += d
			r.StepMS = append(r.StepMS, float64(d.Microseconds())/1000)
			fmt.Printf("{\"step_ms\":%.3f}\n", float64(d.Microseconds())/1000)
		}
		if i == 0 {
			r.FirstLoss, r.FirstDLoss = l, dl
		}
		r.LastLoss, r.LastDLoss = l, dl
		if !c.Bool("json") && !lockstep && (i+1)%10 == 0 {
			fmt.Printf("step %d/%d loss %.4f\n", i+1, steps, l)
		}
	}
	if err := synchronize(dev); err != nil {
		return err
	}
	sec := time.Since(start).Seconds()
	if lockstep {
		sec = stepped.Seconds()
	}
	r.ImagesPerSec = float64(steps*bs) / sec
	r.MSPerStep = sec * 1000 / float64(steps)
	r.PeakRSSMB = peakRSSMB()
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	fmt.Printf("%s on %s, batch %d, %d MI units, %d threads, bf16 %v: %.1f images/s (%.1f ms/step), peak RSS %.0f MiB\n",
		r.Encoder, r.Device, bs, r.MIUnits, threads, r.BF16, r.ImagesPerSec, r.MSPerStep, r.PeakRSSMB)
	return nil
}

// synchronize waits for the device's queued work (a no-op on the CPU), so
// that timings cover the work and not only its launch.
func synchronize(dev torch.Device) error {
	if dev.Type != torch.CUDADevice {
		return nil
	}
	return torch.CUDASynchronize(dev.Index)
}

// dumpGrads writes each parameter's gradient as dir/NNN.npy (float32, NCHW
// order whatever the layout).
func dumpGrads(dir string, params []*torch.Tensor) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, p := range params {
		g := p.Grad()
		if g == nil {
			return fmt.Errorf("--dump-grads: parameter %d has no gradient", i)
		}
		cpu := g.To(torch.CPU)
		v, err := cpu.Float32s()
		shape := cpu.Shape()
		cpu.Free()
		g.Free()
		if err != nil {
			return fmt.Errorf("--dump-grads: parameter %d: %w", i, err)
		}
		dims := make([]int, len(shape))
		for j, d := range shape {
			dims[j] = int(d)
		}
		if err := npy.WriteFloat32(filepath.Join(dir, fmt.Sprintf("%03d.npy", i)), v, dims...); err != nil {
			return err
		}
	}
	return nil
}
