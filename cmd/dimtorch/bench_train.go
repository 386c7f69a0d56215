package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/internal/npy"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/train"
	"github.com/urfave/cli/v2"
)

// benchDefaults are bench train's defaults where they differ from train's:
// a colour 32x32 encoder with the paper's wider critic, no prior game, and
// seed 0 (bench/train_dim.py's).
var benchDefaults = map[string]any{"encoder": "dcgan32", "in-channels": 3, "mi-units": 512, "gamma": 0.0, "seed": uint64(0)}

// benchSkips are train's settings that a step on synthetic data does not
// read: where the data comes from and how a run is paced and logged.
var benchSkips = map[string]bool{"data": true, "data-dir": true, "limit": true, "augment": true, "crop-scale": true,
	"epochs": true, "workers": true, "log-every": true, "probe-lr": true, "lr-schedule": true}

func benchTrainCommand() *cli.Command {
	var flags []cli.Flag
	d := train.Defaults()
	for _, s := range d.Settings() {
		if benchSkips[s.Name] {
			continue
		}
		v, ok := benchDefaults[s.Name]
		if ok {
			s.DefaultText = "" // bench's own default, not the declared rule
		} else {
			v = s.Value()
		}
		f := settingFlag(s, v)
		if s.Name == "in-channels" {
			f.(*cli.IntFlag).Aliases = []string{"channels"}
		}
		flags = append(flags, f)
	}
	flags = append(flags,
		&cli.IntFlag{Name: "steps", Value: 20, Usage: "timed steps"},
		&cli.IntFlag{Name: "warmup", Value: 3, Usage: "untimed steps first"},
		&cli.BoolFlag{Name: "json", Usage: "end with one JSON object"},
		&cli.StringFlag{Name: "dump-grads", Usage: "write every trained parameter's gradient after the first step's backward pass to `DIR`/NNN.npy (float32, in the optimiser's order; bench/train_dim.py --dump-grads writes the same), for cross-checks"},
		&cli.BoolFlag{Name: "lockstep", Usage: "after the warm-up print {\"ready\":true}, then before each timed step wait for a line on standard input and print {\"step_ms\":T} after it (bench/compare_train.py runs two implementations turn by turn this way); images/s then count the steps' own time"},
	)
	return &cli.Command{
		Name: "train",
		Usage: "time dimtorch train's own training step (Trainer.step) on synthetic data of the encoder's input shape; " +
			"every setting of train applies (compare DIM with bench/train_dim.py)",
		Flags:  flags,
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
	values := settingValues(c)
	method, _ := values["method"].(string)
	used := map[string]bool{}
	d := train.Defaults()
	for _, s := range d.Settings() {
		used[s.Name] = s.UsedBy(cmp.Or(method, "dim"))
	}
	for k, v := range benchDefaults {
		if _, set := values[k]; !set && used[k] {
			values[k] = v
		}
	}
	cfg, err := train.NewConfig(values)
	if err != nil {
		return err
	}
	b, err := train.NewBench(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	dev, _ := torch.ParseDevice(cfg.Device) // NewBench opened it
	threads, bs := cfg.Threads, cfg.BatchSize
	in := b.Spec().Input
	x := torch.Rand([]int64{int64(max(1, cfg.Objective.Views) * bs), int64(in[0]), int64(in[1]), int64(in[2])}).MulScalar(2).SubScalar(1).To(dev).MoveTo(nil)
	if cfg.ChannelsLast {
		xc := x.ChannelsLast()
		x.Free()
		x = xc
	}
	defer x.Free()
	if dir := c.String("dump-grads"); dir != "" {
		params := b.Parameters()
		b.OnBackward(func() error {
			b.OnBackward(nil) // the first step's only
			return dumpGrads(dir, params)
		})
	}
	step := func() (float64, *float64, error) { return b.Step(x) }
	for i := 0; i < c.Int("warmup"); i++ {
		if _, _, err := step(); err != nil {
			return err
		}
	}
	steps := c.Int("steps")
	if steps < 1 {
		return fmt.Errorf("--steps must be at least 1")
	}
	r := benchTrainResult{Impl: "dimtorch", Encoder: cfg.Encoder.Name, BatchSize: bs, MIUnits: cfg.Objective.MIUnits, Threads: threads, Device: dev.String(), BF16: cfg.BF16, Steps: steps}
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
