package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/train"
	"github.com/urfave/cli/v2"
)

func evalCommand() *cli.Command {
	d := eval.DefaultOptions()
	return &cli.Command{
		Name:  "eval",
		Usage: "score a frozen encoder: linear/MLP/kNN/SVM probes on conv, fc and Y features; NDM; MINE; pictures",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "checkpoint", Usage: "run directory (or its checkpoint/) of a trained encoder"},
			&cli.BoolFlag{Name: "random-init", Usage: "baseline: an untrained encoder (--encoder) initialised from --seed"},
			&cli.BoolFlag{Name: "pixels", Usage: "baseline: raw pixels as the features"},
			&cli.StringFlag{Name: "encoder", Value: d.Encoder, Usage: "encoder for --random-init"},
			&cli.StringFlag{Name: "bn-stats", Value: d.BNStats, Usage: "--random-init's BatchNorm statistics: train (measured on up to 10,000 training images, as a trained encoder's are) or init (mean 0, variance 1: BatchNorm is the identity)"},
			&cli.StringFlag{Name: "data", Usage: "dataset (default: the checkpoint's, else fashion-mnist)"},
			&cli.StringFlag{Name: "data-dir", Usage: "directory holding the dataset"},
			&cli.StringFlag{Name: "probe", Value: d.Probe, Usage: "linear, mlp, knn or svm"},
			&cli.StringFlag{Name: "features", Value: strings.Join(d.Features, ","), Usage: "comma-separated subset of conv, fc, y"},
			&cli.IntFlag{Name: "limit-train", Usage: "train the probe on the first N training images (0: all)"},
			&cli.IntFlag{Name: "labels-per-class", Usage: "train the probe on the first N training images of each class (the few-label protocol, e.g. 100; 0: off)"},
			&cli.IntFlag{Name: "epochs", Usage: "probe epochs; for the linear probe, the most L-BFGS iterations", DefaultText: "linear/svm 50, mlp 100"},
			&cli.Float64Flag{Name: "probe-lr", Usage: "probe learning rate (MLP and SVM)", DefaultText: "svm 1e-3, mlp 1e-4"},
			&cli.Float64Flag{Name: "c", Value: d.C, Usage: "inverse L2 strength of linear and SVM probes (as scikit-learn's C)"},
			&cli.IntFlag{Name: "k", Value: d.K, Usage: "kNN neighbours"},
			&cli.BoolFlag{Name: "ndm", Usage: "also measure NDM on Y"},
			&cli.BoolFlag{Name: "mine", Usage: "also estimate I(X; Y) with MINE"},
			&cli.BoolFlag{Name: "msssim", Usage: "also train a decoder from Y to the images and report MS-SSIM of its reconstructions"},
			&cli.IntFlag{Name: "decoder-epochs", Value: d.DecoderEpochs, Usage: "training epochs of the MS-SSIM decoder"},
			&cli.IntFlag{Name: "measure-steps", Value: d.MeasureSteps, Usage: "training steps of NDM and MINE"},
			&cli.BoolFlag{Name: "plots", Usage: "draw a PCA map of Y and a nearest-neighbour grid (PNG)"},
			&cli.StringFlag{Name: "export-features", Usage: "write the features and labels to DIR as .npy (for bench/sklearn_probe.py)"},
			&cli.Uint64Flag{Name: "seed", Value: d.Seed},
			&cli.IntFlag{Name: "threads", Value: d.Threads},
			&cli.StringFlag{Name: "feature-dtype", Value: d.FeatureDType, Usage: "precision of features wider than 512 (conv, fc): float32, bfloat16, or auto (bfloat16 on CPUs with AMX or AVX512-BF16 when probing on the CPU)"},
			&cli.StringFlag{Name: "device", Value: d.Device, Usage: "cpu, cuda or cuda:N: where the encoder and the probes run (NDM, MINE and MS-SSIM run on the CPU)"},
			&cli.StringFlag{Name: "out", Usage: "where to write eval/*.json, eval/*.md and pictures (default: the checkpoint's run directory)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object: a key per feature with its test accuracy"},
			configFlag(),
		},
		Action: runEval,
	}
}

// runEval reads the flags into eval.Options (eval.Run validates them, with
// messages that name the flags) and prints the report: a table, or with
// --json one object.
func runEval(c *cli.Context) error {
	if err := applyConfigFile(c); err != nil {
		return err
	}
	o := eval.Options{
		Checkpoint: c.String("checkpoint"), LoadCheckpoint: loadCheckpoint,
		RandomInit: c.Bool("random-init"), Encoder: c.String("encoder"), BNStats: c.String("bn-stats"), Pixels: c.Bool("pixels"),
		Data: c.String("data"), DataDir: c.String("data-dir"),
		Probe: c.String("probe"), Features: strings.Split(c.String("features"), ","), LimitTrain: c.Int("limit-train"), PerClass: c.Int("labels-per-class"),
		C: c.Float64("c"), K: c.Int("k"),
		NDM: c.Bool("ndm"), MINE: c.Bool("mine"), MSSSIM: c.Bool("msssim"), DecoderEpochs: c.Int("decoder-epochs"),
		MeasureSteps: c.Int("measure-steps"), Plots: c.Bool("plots"), ExportFeatures: c.String("export-features"),
		Seed: c.Uint64("seed"), Threads: c.Int("threads"), FeatureDType: c.String("feature-dtype"), Device: c.String("device"),
		Out: c.String("out"), Log: logger(c),
	}
	if c.IsSet("epochs") {
		v := c.Int("epochs")
		o.Epochs = &v
	}
	if c.IsSet("probe-lr") {
		v := c.Float64("probe-lr")
		o.ProbeLR = &v
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := eval.Run(ctx, o)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		b, err := rep.FlatJSON()
		if err != nil {
			return err
		}
		fmt.Println(string(b))
		return nil
	}
	fmt.Print(rep.Markdown())
	return nil
}

// loadCheckpoint reads a run's trained encoder for eval.Run (eval does not
// import train).
func loadCheckpoint(path string) (*eval.Checkpoint, error) {
	enc, meta, err := train.LoadEncoder(path)
	if err != nil {
		return nil, err
	}
	run := path
	if filepath.Base(run) == train.CheckpointDir {
		run = filepath.Dir(run)
	}
	return &eval.Checkpoint{Encoder: enc, Describe: meta.Config.Describe(), Data: meta.Config.Data, DataDir: meta.Config.DataDir, RunDir: run}, nil
}
