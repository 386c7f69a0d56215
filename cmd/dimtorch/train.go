package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/train"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

// trainSettings are train's flags; those with a field set a field of the
// run's configuration (train.Config), which a run directory keeps in
// config.yaml under the flags' names.
// dimOnly marks the settings of --method dim.
var dimOnly = []string{"dim"}

func trainSettings() []setting {
	list := trainSettingList()
	for _, s := range list {
		if s.methods == nil {
			continue
		}
		cat := "--method " + strings.Join(s.methods, ", ")
		switch f := s.flag.(type) {
		case *cli.StringFlag:
			f.Category = cat
		case *cli.IntFlag:
			f.Category = cat
		case *cli.Float64Flag:
			f.Category = cat
		case *cli.BoolFlag:
			f.Category = cat
		}
	}
	return list
}

func trainSettingList() []setting {
	d := train.Defaults()
	str := func(f func(*train.Config) *string) func(*train.Config) any {
		return func(c *train.Config) any { return f(c) }
	}
	num := func(f func(*train.Config) *int) func(*train.Config) any {
		return func(c *train.Config) any { return f(c) }
	}
	flt := func(f func(*train.Config) *float64) func(*train.Config) any {
		return func(c *train.Config) any { return f(c) }
	}
	bln := func(f func(*train.Config) *bool) func(*train.Config) any {
		return func(c *train.Config) any { return f(c) }
	}
	return []setting{
		{flag: &cli.StringFlag{Name: "data", Value: d.Data, Usage: "dataset name or folder:PATH"}, field: str(func(c *train.Config) *string { return &c.Data })},
		{flag: &cli.StringFlag{Name: "data-dir", Usage: "directory holding the dataset"}, field: str(func(c *train.Config) *string { return &c.DataDir }), resumable: true},
		{flag: &cli.IntFlag{Name: "limit", Usage: "train on the first N training images (0: all)"}, field: num(func(c *train.Config) *int { return &c.Limit })},
		{flag: &cli.BoolFlag{Name: "augment", Usage: "augment training images: padded random crops, plus flips for Fashion-MNIST and CIFAR (STL-10 and folders always use random 64x64 crops)"}, field: bln(func(c *train.Config) *bool { return &c.Augment })},
		{flag: &cli.Float64Flag{Name: "crop-scale", Usage: "augment with random resized crops covering at least this fraction of the image (e.g. 0.4), plus flips where they keep the classes; implies --augment (0: off)"}, field: flt(func(c *train.Config) *float64 { return &c.CropScale })},
		{flag: &cli.IntFlag{Name: "views", Value: d.Objective.Views, Usage: "augmented views per image: 2 or more scores each view's global vector against the other views' local features (AMDIM-style); implies --augment"}, field: num(func(c *train.Config) *int { return &c.Objective.Views }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "score-clip", Usage: "stabilise the critic's scores as AMDIM: divide by sqrt(mi-units), penalise their square (0.05), soft-clip to +-C with C*tanh(s/C) (AMDIM: 10; 0: off)"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.ScoreClip }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "cross-view", Usage: "weight of a global-to-global cross-view term (not in the paper; SimCLR-like): Y of one view against Y of the other views, infoNCE on cosine similarities; needs --views 2 (0: off)"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.CrossView }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "cross-view-temperature", Value: d.Objective.CrossViewTemp, Usage: "temperature of --cross-view's cosine similarities"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.CrossViewTemp }), methods: dimOnly},
		{flag: &cli.StringFlag{Name: "method", Value: d.Method.Name, Usage: "what trains the encoder: dim (Deep InfoMax), or a baseline of the paper's Table 1: vae, aae, bigan, nat, cpc"}, field: str(func(c *train.Config) *string { return &c.Method.Name })},
		{flag: &cli.StringFlag{Name: "likelihood", Value: d.Method.Likelihood, Usage: "pixel model of the vae and aae decoders: bernoulli, gaussian (learned noise level), or auto (bernoulli for one channel, gaussian for colour)"}, field: str(func(c *train.Config) *string { return &c.Method.Likelihood }), methods: []string{"vae", "aae"}},
		{flag: &cli.IntFlag{Name: "cpc-rows", Value: d.Method.CPCRows, Usage: "rows of the local map below each position that cpc predicts"}, field: num(func(c *train.Config) *int { return &c.Method.CPCRows }), methods: []string{"cpc"}},
		{flag: &cli.IntFlag{Name: "cpc-skip", Usage: "rows below each position that cpc skips before the predicted ones (their codes share input pixels with the context's when receptive fields overlap)"}, field: num(func(c *train.Config) *int { return &c.Method.CPCSkip }), methods: []string{"cpc"}},
		{flag: &cli.StringFlag{Name: "encoder", Value: d.Encoder.Name, Usage: "one of: " + strings.Join(models.Names(), ", ")}, field: str(func(c *train.Config) *string { return &c.Encoder.Name })},
		{flag: &cli.IntFlag{Name: "y-dim", Value: d.Encoder.YDim, Usage: "size of the global feature Y, the representation"}, field: num(func(c *train.Config) *int { return &c.Encoder.YDim })},
		{flag: &cli.StringFlag{Name: "mode", Value: d.Objective.Mode, Usage: "local, global or local+global"}, field: str(func(c *train.Config) *string { return &c.Objective.Mode }), methods: dimOnly},
		{flag: &cli.StringFlag{Name: "estimator", Value: d.Objective.Estimator, Usage: "one of: " + strings.Join(objectives.Estimators(), ", ")}, field: str(func(c *train.Config) *string { return &c.Objective.Estimator }), methods: dimOnly},
		{flag: &cli.StringFlag{Name: "scorer", Value: d.Objective.Scorer, Usage: "dot (encode-and-dot) or concat (concat-and-convolve)"}, field: str(func(c *train.Config) *string { return &c.Objective.Scorer }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "alpha", Usage: "weight of global DIM (local 0, global 1, local+global 0.5)", DefaultText: "the mode's"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.Alpha }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "beta", Usage: "weight of local DIM (local 1, global 0, local+global 1)", DefaultText: "the mode's"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.Beta }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "gamma", Usage: "weight of prior matching, 0 turns it off (local 0.1, global 1, local+global 0.1)", DefaultText: "the mode's"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.Gamma }), methods: dimOnly},
		{flag: &cli.Float64Flag{Name: "gp-weight", Value: d.Objective.GPWeight, Usage: "weight of the gradient penalty on the prior's discriminator (DIM's prior game, the AAE's; 0: none)"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.GPWeight }), methods: []string{"dim", "aae"}},
		{flag: &cli.Float64Flag{Name: "coord", Usage: "weight of the coordinate-prediction task (0: off)"}, field: flt(func(c *train.Config) *float64 { return &c.Objective.CoordWeight }), methods: dimOnly},
		{flag: &cli.BoolFlag{Name: "occlusion", Usage: "compute the global features from an image with a random block occluded"}, field: bln(func(c *train.Config) *bool { return &c.Objective.Occlusion }), methods: dimOnly},
		{flag: &cli.IntFlag{Name: "mi-units", Value: d.Objective.MIUnits, Usage: "width of the critic's space (the paper: 2048; 256 is CPU-sized)"}, field: num(func(c *train.Config) *int { return &c.Objective.MIUnits }), methods: dimOnly},
		{flag: &cli.IntFlag{Name: "batch-size", Value: d.BatchSize, Usage: "images per step (per process in a data-parallel job)"}, field: num(func(c *train.Config) *int { return &c.BatchSize })},
		{flag: &cli.IntFlag{Name: "epochs", Value: d.Epochs, Usage: "passes over the training images (on --resume: the new total, to train longer)"}, field: num(func(c *train.Config) *int { return &c.Epochs }), resumable: true},
		{flag: &cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "Adam learning rate"}, field: flt(func(c *train.Config) *float64 { return &c.LR })},
		{flag: &cli.StringFlag{Name: "lr-schedule", Value: d.Schedule, Usage: "constant, or cosine: anneal the learning rate to 0 over the planned steps"}, field: str(func(c *train.Config) *string { return &c.Schedule })},
		{flag: &cli.Float64Flag{Name: "beta1", Value: d.Beta1, Usage: "Adam beta1"}, field: flt(func(c *train.Config) *float64 { return &c.Beta1 })},
		{flag: &cli.Float64Flag{Name: "beta2", Value: d.Beta2, Usage: "Adam beta2"}, field: flt(func(c *train.Config) *float64 { return &c.Beta2 })},
		{flag: &cli.Float64Flag{Name: "probe-lr", Value: d.ProbeLR, Usage: "Adam learning rate of the online probe (linear on Y, trained on the side)"}, field: flt(func(c *train.Config) *float64 { return &c.ProbeLR })},
		{flag: &cli.Uint64Flag{Name: "seed", Value: d.Seed, Usage: "fixes every weight, batch and augmentation"}, field: func(c *train.Config) any { return &c.Seed }},
		{flag: &cli.IntFlag{Name: "threads", Value: d.Threads, Usage: "libtorch intra-op threads"}, field: num(func(c *train.Config) *int { return &c.Threads }), resumable: true},
		{flag: &cli.IntFlag{Name: "workers", Value: d.Workers, Usage: "data-loading goroutines"}, field: num(func(c *train.Config) *int { return &c.Workers }), resumable: true},
		{flag: &cli.StringFlag{Name: "device", Value: d.Device, Usage: "cpu, cuda or cuda:N"}, field: str(func(c *train.Config) *string { return &c.Device })},
		{flag: &cli.BoolFlag{Name: "channels-last", Value: d.ChannelsLast, Usage: "NHWC layout for images and convolution weights (--channels-last=false: NCHW)"}, field: bln(func(c *train.Config) *bool { return &c.ChannelsLast })},
		{flag: &cli.BoolFlag{Name: "flush-denormals", Usage: "treat denormal floats as zero on the CPU (x86 FTZ/DAZ): cpc's step is several times faster with it; changes results only where denormals occur"}, field: bln(func(c *train.Config) *bool { return &c.FlushDenormals })},
		{flag: &cli.BoolFlag{Name: "bf16", Usage: "bfloat16 autocast of the forward pass, on the CPU (fast with AVX512-BF16/AMX) or CUDA (Ampere and later)"}, field: bln(func(c *train.Config) *bool { return &c.BF16 })},
		{flag: &cli.IntFlag{Name: "log-every", Value: d.LogEvery, Usage: "steps between metrics records"}, field: num(func(c *train.Config) *int { return &c.LogEvery }), resumable: true},
		{flag: &cli.StringFlag{Name: "out", Usage: "run directory: checkpoint, config.yaml, metrics.jsonl, loss.png", Required: true}},
		{flag: &cli.BoolFlag{Name: "resume", Usage: "continue the run in --out from its checkpoint; only --epochs, --log-every, --threads, --workers and --data-dir may differ from the run's settings"}},
		{flag: configFlag()},
		{flag: &cli.BoolFlag{Name: "json", Usage: "print the summary as one JSON object"}},
		{flag: &cli.IntFlag{Name: "nproc-per-node", Value: 1, Category: "data-parallel", Usage: "worker processes on this machine (each reads its shard, with --batch-size images per step; gradients averaged with c10d/Gloo)"}},
		{flag: &cli.IntFlag{Name: "nnodes", Value: 1, Category: "data-parallel", Usage: "machines in the job (run the same command on each, with its --node-rank)"}},
		{flag: &cli.IntFlag{Name: "node-rank", Category: "data-parallel", Usage: "this machine's index among --nnodes"}},
		{flag: &cli.StringFlag{Name: "master-addr", Category: "data-parallel", Usage: "address of node 0, where rank 0 serves the rendezvous (default 127.0.0.1 on one machine)"}},
		{flag: &cli.IntFlag{Name: "master-port", Category: "data-parallel", Usage: "rendezvous port", DefaultText: "a free port on one machine, 29500 across machines"}},
		{flag: &cli.DurationFlag{Name: "dist-timeout", Value: dist.DefaultTimeout, Category: "data-parallel", Usage: "how long ranks wait for each other (rendezvous, every collective) before failing"}},
		{flag: &cli.BoolFlag{Name: "global-negatives", Category: "data-parallel", Usage: "score every rank's features against every rank's: negatives from the global batch (all-gather with gradients)"}, field: bln(func(c *train.Config) *bool { return &c.GlobalNegatives })},
		{flag: &cli.BoolFlag{Name: "sync-bn", Category: "data-parallel", Usage: "BatchNorm with the statistics of the global batch (all ranks' parts, gathered with gradients) instead of each rank's own"}, field: bln(func(c *train.Config) *bool { return &c.SyncBN })},
	}
}

// configFromFlags is the configuration of a new run: the defaults with the
// flags given (on the command line or in --config) applied, and the mode's
// weights for those of alpha, beta and gamma not given.
func configFromFlags(c *cli.Context) (train.Config, error) {
	cfg := train.Defaults()
	for _, s := range trainSettings() {
		if s.field != nil && c.IsSet(s.name()) {
			if err := s.set(c, &cfg); err != nil {
				return cfg, err
			}
		}
	}
	method := cfg.Method.Name
	if method == "" {
		method = "dim"
	}
	var unused []string
	for _, s := range trainSettings() {
		if s.methods != nil && !slices.Contains(s.methods, method) && c.IsSet(s.name()) {
			unused = append(unused, fmt.Sprintf("--%s (a setting of --method %s)", s.name(), strings.Join(s.methods, " or ")))
		}
	}
	if len(unused) > 0 {
		return cfg, fmt.Errorf("method %s does not use %s", method, strings.Join(unused, ", "))
	}
	a, b, g := objectives.DefaultWeights(cfg.Objective.Mode)
	for _, w := range []struct {
		name string
		v    *float64
		def  float64
	}{{"alpha", &cfg.Objective.Alpha, a}, {"beta", &cfg.Objective.Beta, b}, {"gamma", &cfg.Objective.Gamma, g}} {
		if !c.IsSet(w.name) {
			*w.v = w.def
		}
	}
	return cfg, nil
}

// resumeConfig is the configuration a resumed run continues with: the
// saved one, with the resumable flags applied. Any other flag given with a
// value other than the run's is an error naming each of them: a resumed run
// never silently ignores a flag.
func resumeConfig(c *cli.Context, saved train.Config) (train.Config, error) {
	next := saved
	var differ []string
	for _, s := range trainSettings() {
		if s.field == nil || !c.IsSet(s.name()) {
			continue
		}
		tmp := saved
		if err := s.set(c, &tmp); err != nil {
			return saved, err
		}
		now, was := s.value(&tmp), s.value(&saved)
		if now == was {
			continue
		}
		if s.resumable {
			_ = s.set(c, &next)
			continue
		}
		differ = append(differ, fmt.Sprintf("--%s %v (the run's: %v)", s.name(), now, was))
	}
	if len(differ) > 0 {
		return saved, fmt.Errorf("--resume continues a run with the settings it started with, and these flags differ from them: %s. "+
			"Leave them out to continue the run (only --epochs, --log-every, --threads, --workers and --data-dir may change), "+
			"or start a new run with them: --config %s --out NEW_DIR", strings.Join(differ, ", "), filepath.Join(c.String("out"), configFile))
	}
	return next, nil
}

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "train an encoder: Deep InfoMax, or a baseline of the paper (--method)",
		Flags: flagsOf(trainSettings()),
		Action: func(c *cli.Context) error {
			if err := applyConfigFile(c); err != nil {
				return err
			}
			if err := checkPositive(c, "nproc-per-node", "nnodes", "workers"); err != nil {
				return err
			}
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
		tr, err = train.Resume(opts, func(saved train.Config) (train.Config, error) { return resumeConfig(c, saved) })
	} else {
		var cfg train.Config
		if cfg, err = configFromFlags(c); err == nil {
			tr, err = train.New(cfg, opts)
		}
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	if cfg := tr.Config(); !cfg.BF16 && cfg.Device == "cpu" && g.Rank() == 0 && slices.Contains(sysinfo.Describe().Features, "amx_bf16") {
		log.Info().Msg("this CPU has AMX: --bf16 (bfloat16 autocast) runs this step about 2x faster, at the same probe accuracy in the README's comparison (\"Performance\")")
	}
	if cfg := tr.Config(); g == nil && (cfg.SyncBN || cfg.GlobalNegatives) {
		log.Warn().Bool("sync_bn", cfg.SyncBN).Bool("global_negatives", cfg.GlobalNegatives).
			Msg("--sync-bn and --global-negatives share statistics and negatives between the processes of a data-parallel job; this run has one process, so they change nothing")
	}
	if g.Rank() == 0 {
		if err := writeRunConfig(c.String("out"), trainSettings(), tr.Config(), g.World()); err != nil {
			return err
		}
	}
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
	if g.Rank() > 0 {
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
