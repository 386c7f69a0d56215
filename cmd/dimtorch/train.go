package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/train"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

func trainFlags() []cli.Flag {
	d := train.Defaults()
	return []cli.Flag{
		&cli.StringFlag{Name: "data", Value: d.Data, Usage: "dataset name or folder:PATH"},
		&cli.StringFlag{Name: "data-dir", Usage: "directory holding the dataset"},
		&cli.IntFlag{Name: "limit", Usage: "train on the first N training images (0: all)"},
		&cli.BoolFlag{Name: "augment", Usage: "augment training images: padded random crops, plus flips for Fashion-MNIST and CIFAR (STL-10 and folders always use random 64x64 crops)"},
		&cli.Float64Flag{Name: "crop-scale", Usage: "augment with random resized crops covering at least this fraction of the image (e.g. 0.4), plus flips where they keep the classes; implies --augment"},
		&cli.IntFlag{Name: "views", Value: 1, Usage: "augmented views per image: 2 or more scores each view's global vector against the other views' local features (AMDIM-style); implies --augment"},
		&cli.Float64Flag{Name: "score-clip", Usage: "stabilise the critic's scores as AMDIM: divide by sqrt(mi-units), penalise their square (0.05), soft-clip to +-C with C*tanh(s/C) (AMDIM: 10; 0: off)"},
		&cli.StringFlag{Name: "encoder", Value: d.Encoder.Name, Usage: "one of: " + fmt.Sprint(models.Names())},
		&cli.StringFlag{Name: "mode", Value: "local", Usage: "local, global or local+global"},
		&cli.StringFlag{Name: "estimator", Value: "jsd", Usage: "one of: " + fmt.Sprint(objectives.Estimators())},
		&cli.StringFlag{Name: "scorer", Value: "dot", Usage: "dot (encode-and-dot) or concat (concat-and-convolve)"},
		&cli.Float64Flag{Name: "alpha", Usage: "weight of global DIM (local 0, global 1, local+global 0.5)", DefaultText: "the mode's"},
		&cli.Float64Flag{Name: "beta", Usage: "weight of local DIM (local 1, global 0, local+global 1)", DefaultText: "the mode's"},
		&cli.Float64Flag{Name: "gamma", Usage: "weight of prior matching, 0 turns it off (local 0.1, global 1, local+global 0.1)", DefaultText: "the mode's"},
		&cli.Float64Flag{Name: "gp-weight", Value: d.Objective.GPWeight, Usage: "weight of the gradient penalty on the prior's discriminator (0: none)"},
		&cli.Float64Flag{Name: "coord", Usage: "weight of the coordinate-prediction task (0: off)"},
		&cli.BoolFlag{Name: "occlusion", Usage: "compute the global features from an image with a random block occluded"},
		&cli.IntFlag{Name: "mi-units", Value: d.Objective.MIUnits, Usage: "width of the critic's space (the paper: 2048; 256 is CPU-sized)"},
		&cli.IntFlag{Name: "batch-size", Value: d.BatchSize},
		&cli.IntFlag{Name: "epochs", Value: d.Epochs},
		&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "Adam learning rate"},
		&cli.StringFlag{Name: "lr-schedule", Value: "constant", Usage: "constant, or cosine: anneal the learning rate to 0 over the planned steps"},
		&cli.Float64Flag{Name: "beta1", Value: d.Beta1, Usage: "Adam beta1"},
		&cli.Float64Flag{Name: "beta2", Value: d.Beta2, Usage: "Adam beta2"},
		&cli.Uint64Flag{Name: "seed", Value: d.Seed},
		&cli.IntFlag{Name: "threads", Value: d.Threads, Usage: "libtorch intra-op threads"},
		&cli.IntFlag{Name: "workers", Usage: "data-loading goroutines (default 2)"},
		&cli.StringFlag{Name: "device", Value: d.Device, Usage: "cpu, cuda or cuda:N"},
		&cli.BoolFlag{Name: "channels-last", Value: d.ChannelsLast, Usage: "NHWC layout for images and convolution weights (--channels-last=false: NCHW)"},
		&cli.BoolFlag{Name: "bf16", Usage: "bfloat16 autocast of the forward pass, on the CPU (fast with AVX512-BF16/AMX) or CUDA (Ampere and later)"},
		&cli.IntFlag{Name: "log-every", Value: d.LogEvery, Usage: "steps between metrics records"},
		&cli.StringFlag{Name: "out", Usage: "run directory: checkpoint, metrics.jsonl, loss.png", Required: true},
		&cli.BoolFlag{Name: "resume", Usage: "continue the run in --out from its checkpoint (--epochs may extend it)"},
		&cli.BoolFlag{Name: "json", Usage: "print the summary as one JSON object"},
		&cli.IntFlag{Name: "nproc-per-node", Value: 1, Category: "data-parallel", Usage: "worker processes on this machine (each reads its shard, with --batch-size images per step; gradients averaged with c10d/Gloo)"},
		&cli.IntFlag{Name: "nnodes", Value: 1, Category: "data-parallel", Usage: "machines in the job (run the same command on each, with its --node-rank)"},
		&cli.IntFlag{Name: "node-rank", Category: "data-parallel", Usage: "this machine's index among --nnodes"},
		&cli.StringFlag{Name: "master-addr", Category: "data-parallel", Usage: "address of node 0, where rank 0 serves the rendezvous (default 127.0.0.1 on one machine)"},
		&cli.IntFlag{Name: "master-port", Category: "data-parallel", Usage: "rendezvous port (default: a free port on one machine, 29500 across machines)"},
		&cli.DurationFlag{Name: "dist-timeout", Value: dist.DefaultTimeout, Category: "data-parallel", Usage: "how long ranks wait for each other (rendezvous, every collective) before failing"},
		&cli.BoolFlag{Name: "global-negatives", Category: "data-parallel", Usage: "score every rank's features against every rank's: negatives from the global batch (all-gather with gradients)"},
	}
}

func configFromFlags(c *cli.Context) train.Config {
	cfg := train.Defaults()
	cfg.Data, cfg.DataDir, cfg.Limit, cfg.Augment = c.String("data"), c.String("data-dir"), c.Int("limit"), c.Bool("augment")
	cfg.Encoder = models.Config{Name: c.String("encoder"), YDim: 64}
	mode := c.String("mode")
	a, b, g := objectives.DefaultWeights(mode)
	pick := func(name string, def float64) float64 {
		if c.IsSet(name) {
			return c.Float64(name)
		}
		return def
	}
	cfg.Objective = objectives.Config{
		Mode: mode, Estimator: c.String("estimator"), Scorer: c.String("scorer"),
		Alpha: pick("alpha", a), Beta: pick("beta", b), Gamma: pick("gamma", g),
		MIUnits: c.Int("mi-units"), CoordWeight: c.Float64("coord"), Occlusion: c.Bool("occlusion"), GPWeight: c.Float64("gp-weight"),
		Views: c.Int("views"), ScoreClip: c.Float64("score-clip"),
	}
	cfg.CropScale, cfg.Schedule = c.Float64("crop-scale"), c.String("lr-schedule")
	cfg.BatchSize, cfg.Epochs, cfg.LR = c.Int("batch-size"), c.Int("epochs"), c.Float64("lr")
	cfg.Beta1, cfg.Beta2, cfg.Seed = c.Float64("beta1"), c.Float64("beta2"), c.Uint64("seed")
	cfg.Threads, cfg.Workers, cfg.Device, cfg.BF16 = c.Int("threads"), c.Int("workers"), c.String("device"), c.Bool("bf16")
	cfg.LogEvery = c.Int("log-every")
	cfg.ChannelsLast = c.Bool("channels-last")
	cfg.GlobalNegatives = c.Bool("global-negatives")
	return cfg
}

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "train a Deep InfoMax encoder",
		Flags: trainFlags(),
		Action: func(c *cli.Context) error {
			job, inJob, err := dist.FromEnv()
			if err != nil {
				return fmt.Errorf("data-parallel environment: %w", err)
			}
			if !inJob && (c.Int("nproc-per-node") > 1 || c.Int("nnodes") > 1) {
				return launch(c)
			}
			if inJob && job.World > 1 {
				return trainRank(c, job)
			}
			return trainRun(c, nil)
		},
	}
}

// launch starts this machine's workers: this same command line, which each
// worker runs with torchrun's environment set.
func launch(c *cli.Context) error {
	if d := c.String("device"); d != "cpu" {
		return fmt.Errorf("--device %s with several processes: data-parallel training runs on Gloo (CPU) in this build; NCCL for CUDA is not built in", d)
	}
	if !dist.Available() {
		return dist.ErrUnavailable
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// The workers finish their step and rank 0 saves; a second
		// interrupt ends the launcher, and its workers die with it.
		fmt.Fprintln(os.Stderr, "dimtorch: interrupt: the workers finish the step and save a checkpoint (interrupt again to quit at once)")
		stop()
	}()
	err = dist.Launch(ctx, dist.LaunchOptions{
		Command: append([]string{exe}, os.Args[1:]...), NProc: c.Int("nproc-per-node"), NNodes: c.Int("nnodes"),
		NodeRank: c.Int("node-rank"), MasterAddr: c.String("master-addr"), MasterPort: c.Int("master-port"),
		Timeout: c.Duration("dist-timeout"),
	})
	var we *dist.WorkerError
	switch {
	case errors.As(err, &we):
		return cli.Exit("dimtorch: "+err.Error(), max(1, we.ExitCode()))
	case errors.Is(err, dist.ErrWorkersInterrupted):
		return cli.Exit("dimtorch: every worker stopped; rank 0 saved the checkpoint: continue with the same command and --resume", 130)
	}
	return err
}

// trainRank runs one rank of a data-parallel job.
func trainRank(c *cli.Context, job dist.Config) error {
	if d := c.String("device"); d != "cpu" {
		return fmt.Errorf("--device %s with several processes: data-parallel training runs on Gloo (CPU) in this build; NCCL for CUDA is not built in", d)
	}
	if job.Timeout == 0 {
		job.Timeout = c.Duration("dist-timeout")
	}
	g, err := dist.New(job)
	if err != nil {
		return fmt.Errorf("rank %d: %w", job.Rank, err)
	}
	defer g.Close()
	if err := trainRun(c, g); err != nil {
		if g.Rank() > 0 && !errors.Is(err, train.ErrInterrupted) {
			return fmt.Errorf("rank %d: %w", g.Rank(), err)
		}
		return err
	}
	return nil
}

// trainRun trains alone (g nil) or as one rank of g.
func trainRun(c *cli.Context, g *dist.Group) error {
	// A worker takes interrupts from its launcher from the start: one that
	// arrives while the job is still starting stops it after its first
	// step. Alone, an interrupt while starting simply ends the process.
	var ctx context.Context
	var stop context.CancelFunc
	listen := func() {
		ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	}
	if g != nil {
		listen()
		defer stop()
	}
	log := logger(c)
	if g != nil {
		log = log.With().Int("rank", g.Rank()).Logger()
		if g.Rank() > 0 {
			log = log.Level(zerolog.WarnLevel) // rank 0 reports the run
		}
	}
	train.Version = version
	opts := train.Options{Out: c.String("out"), Log: log, Group: g}
	if isatty.IsTerminal(os.Stderr.Fd()) {
		opts.Progress = os.Stderr
	}
	var tr *train.Trainer
	var err error
	if c.Bool("resume") {
		epochs := 0
		if c.IsSet("epochs") {
			epochs = c.Int("epochs")
		}
		tr, err = train.Resume(opts, epochs)
	} else {
		tr, err = train.New(configFromFlags(c), opts)
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	if g == nil {
		listen()
		defer stop()
	}
	done := make(chan struct{})
	defer close(done) // runs before stop: no warning when the run simply ends
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
			select {
			case <-done:
			default:
				log.Warn().Msg("interrupt: finishing the step and saving a checkpoint (interrupt again to quit at once)")
				stop() // a second signal terminates the process
			}
		}
	}()
	sum, err := tr.Run(ctx)
	if errors.Is(err, train.ErrInterrupted) {
		return cli.Exit("dimtorch: "+err.Error(), 130)
	}
	if err != nil {
		return err
	}
	if g != nil && g.Rank() > 0 {
		return nil
	}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(sum)
	}
	fmt.Printf("trained %d epochs (%d steps) in %.1fs, %.0f images/s; final loss %.4f\n", sum.Epochs, sum.Steps, sum.Seconds, sum.ImagesPerSec, sum.Loss)
	if sum.ProbeTestAcc != nil {
		fmt.Printf("online probe (linear on Y, trained during pretraining): %.2f%% test accuracy\n", 100**sum.ProbeTestAcc)
	}
	fmt.Printf("run directory: %s (checkpoint/, metrics.jsonl, loss.png)\n", sum.Out)
	return nil
}
