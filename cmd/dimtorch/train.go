package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/train"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

// trainFlags are train's flags: one per setting of a run's configuration
// (declared on train.Config's fields; see train/settings.go), grouped in
// --help by the methods that use them, then the flags of the invocation.
func trainFlags() []cli.Flag {
	var flags []cli.Flag
	d := train.Defaults() // declared in the tags
	for _, s := range d.Settings() {
		flags = append(flags, settingFlag(s, s.Value()))
	}
	return append(flags,
		&cli.StringFlag{Name: "out", Usage: "run directory: checkpoint, config.yaml, metrics.jsonl, loss.png", Required: true},
		&cli.BoolFlag{Name: "resume", Usage: "continue the run in --out from its checkpoint; only --" + strings.Join(train.Resumable(), ", --") + " may differ from the run's settings"},
		configFlag(),
		&cli.BoolFlag{Name: "json", Usage: "print the summary as one JSON object"},
		&cli.IntFlag{Name: "nproc-per-node", Value: 1, Category: "data-parallel", Usage: "worker processes on this machine (each reads its shard, with --batch-size images per step; gradients averaged with c10d/Gloo)"},
		&cli.IntFlag{Name: "nnodes", Value: 1, Category: "data-parallel", Usage: "machines in the job (run the same command on each, with its --node-rank)"},
		&cli.IntFlag{Name: "node-rank", Category: "data-parallel", Usage: "this machine's index among --nnodes"},
		&cli.StringFlag{Name: "master-addr", Category: "data-parallel", Usage: "address of node 0, where rank 0 serves the rendezvous (default 127.0.0.1 on one machine)"},
		&cli.IntFlag{Name: "master-port", Category: "data-parallel", Usage: "rendezvous port", DefaultText: "a free port on one machine, 29500 across machines"},
		&cli.DurationFlag{Name: "dist-timeout", Value: dist.DefaultTimeout, Category: "data-parallel", Usage: "how long ranks wait for each other (rendezvous, every collective) before failing"},
	)
}

// settingFlag is the flag of a declared setting with default v.
func settingFlag(s train.Setting, v any) cli.Flag {
	cat := s.Category
	if cat == "" && s.Methods != nil {
		cat = "--method " + strings.Join(s.Methods, ", ")
	}
	switch v := v.(type) {
	case string:
		return &cli.StringFlag{Name: s.Name, Usage: s.Help, Value: v, DefaultText: s.DefaultText, Category: cat}
	case int:
		return &cli.IntFlag{Name: s.Name, Usage: s.Help, Value: v, DefaultText: s.DefaultText, Category: cat}
	case float64:
		return &cli.Float64Flag{Name: s.Name, Usage: s.Help, Value: v, DefaultText: s.DefaultText, Category: cat}
	case bool:
		return &cli.BoolFlag{Name: s.Name, Usage: s.Help, Value: v, DefaultText: s.DefaultText, Category: cat}
	case uint64:
		return &cli.Uint64Flag{Name: s.Name, Usage: s.Help, Value: v, DefaultText: s.DefaultText, Category: cat}
	}
	panic(fmt.Sprintf("setting %s of type %T has no flag type", s.Name, v))
}

// settingValues are the settings given on the command line or in
// --config, by name, with their flags' values.
func settingValues(c *cli.Context) map[string]any {
	out := map[string]any{}
	var cfg train.Config
	for _, s := range cfg.Settings() {
		if !c.IsSet(s.Name) {
			continue
		}
		switch s.Value().(type) {
		case string:
			out[s.Name] = c.String(s.Name)
		case int:
			out[s.Name] = c.Int(s.Name)
		case float64:
			out[s.Name] = c.Float64(s.Name)
		case bool:
			out[s.Name] = c.Bool(s.Name)
		case uint64:
			out[s.Name] = c.Uint64(s.Name)
		}
	}
	return out
}

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "train an encoder: Deep InfoMax, or a baseline of the paper (--method)",
		Flags: trainFlags(),
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
	finished := make(chan struct{})
	defer close(finished) // before stop: the context's end is then no interrupt
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		select {
		case <-finished:
			return
		default:
		}
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
		values := settingValues(c)
		tr, err = train.Resume(opts, func(saved train.Config) (train.Config, error) { return train.Resumed(saved, values, c.String("out")) })
	} else {
		var cfg train.Config
		if cfg, err = train.NewConfig(settingValues(c)); err == nil {
			tr, err = train.New(cfg, opts)
		}
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	if cfg := tr.Config(); !cfg.BF16 && cfg.Device == "cpu" && g.Rank() == 0 && slices.Contains(sysinfo.Describe().Features, "amx_bf16") {
		log.Info().Msg("this CPU has AMX: --bf16 (bfloat16 autocast) runs this step about 2x faster, at the same probe accuracy in docs/performance.md's comparison (\"bfloat16 autocast\")")
	}
	if cfg := tr.Config(); g == nil && (cfg.SyncBN || cfg.GlobalNegatives) {
		log.Warn().Bool("sync_bn", cfg.SyncBN).Bool("global_negatives", cfg.GlobalNegatives).
			Msg("--sync-bn and --global-negatives share statistics and negatives between the processes of a data-parallel job; this run has one process, so they change nothing")
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
	if sum.Images == 0 {
		fmt.Printf("nothing to train: %s has finished its %d epochs (resume with a larger --epochs to train on)\n", sum.Out, sum.Epochs)
		return nil
	}
	fmt.Printf("trained %d epochs (%d steps) in %.1fs, %.0f images/s; final loss %.4f\n", sum.Epochs, sum.Steps, sum.Seconds, sum.ImagesPerSec, sum.Loss)
	if sum.ProbeTestAcc != nil {
		fmt.Printf("online probe (linear on Y, trained during pretraining): %.2f%% test accuracy\n", 100**sum.ProbeTestAcc)
	}
	fmt.Printf("run directory: %s (checkpoint/, metrics.jsonl, loss.png)\n", sum.Out)
	return nil
}
