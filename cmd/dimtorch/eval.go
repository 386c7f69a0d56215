package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/train"
	"github.com/urfave/cli/v2"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "score a frozen encoder: linear/MLP/kNN/SVM probes on conv, fc and Y features; NDM; MINE; pictures",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "checkpoint", Usage: "run directory (or its checkpoint/) of a trained encoder"},
			&cli.BoolFlag{Name: "random-init", Usage: "baseline: an untrained encoder (--encoder) initialised from --seed"},
			&cli.BoolFlag{Name: "pixels", Usage: "baseline: raw pixels as the features"},
			&cli.StringFlag{Name: "encoder", Value: "basic28", Usage: "encoder for --random-init"},
			&cli.StringFlag{Name: "bn-stats", Value: "train", Usage: "--random-init's BatchNorm statistics: train (measured on up to 10,000 training images, as a trained encoder's are) or init (mean 0, variance 1: BatchNorm is the identity)"},
			&cli.StringFlag{Name: "data", Usage: "dataset (default: the checkpoint's, else fashion-mnist)"},
			&cli.StringFlag{Name: "data-dir", Usage: "directory holding the dataset"},
			&cli.StringFlag{Name: "probe", Value: "linear", Usage: "linear, mlp, knn or svm"},
			&cli.StringFlag{Name: "features", Value: "conv,fc,y", Usage: "comma-separated subset of conv, fc, y"},
			&cli.IntFlag{Name: "limit-train", Usage: "train the probe on the first N training images (0: all)"},
			&cli.IntFlag{Name: "epochs", Usage: "probe epochs; for the linear probe, the most L-BFGS iterations", DefaultText: "linear/svm 50, mlp 100"},
			&cli.Float64Flag{Name: "probe-lr", Usage: "probe learning rate (MLP and SVM)", DefaultText: "svm 1e-3, mlp 1e-4"},
			&cli.Float64Flag{Name: "c", Value: 1, Usage: "inverse L2 strength of linear and SVM probes (as scikit-learn's C)"},
			&cli.IntFlag{Name: "k", Value: 20, Usage: "kNN neighbours"},
			&cli.BoolFlag{Name: "ndm", Usage: "also measure NDM on Y"},
			&cli.BoolFlag{Name: "mine", Usage: "also estimate I(X; Y) with MINE"},
			&cli.BoolFlag{Name: "msssim", Usage: "also train a decoder from Y to the images and report MS-SSIM of its reconstructions"},
			&cli.IntFlag{Name: "decoder-epochs", Value: 20, Usage: "training epochs of the MS-SSIM decoder"},
			&cli.IntFlag{Name: "measure-steps", Value: 1000, Usage: "training steps of NDM and MINE"},
			&cli.BoolFlag{Name: "plots", Usage: "draw a PCA map of Y and a nearest-neighbour grid (PNG)"},
			&cli.StringFlag{Name: "export-features", Usage: "write the features and labels to DIR as .npy (for bench/sklearn_probe.py)"},
			&cli.Uint64Flag{Name: "seed", Value: 1},
			&cli.IntFlag{Name: "threads", Value: 2},
			&cli.StringFlag{Name: "feature-dtype", Value: "auto", Usage: "precision of features wider than 512 (conv, fc): float32, bfloat16, or auto (bfloat16 on CPUs with AMX or AVX512-BF16 when probing on the CPU)"},
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "cpu, cuda or cuda:N: where the encoder and the probes run (NDM, MINE and MS-SSIM run on the CPU)"},
			&cli.StringFlag{Name: "out", Usage: "where to write eval/*.json, eval/*.md and pictures (default: the checkpoint's run directory)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object: a key per feature with its test accuracy"},
			configFlag(),
		},
		Action: runEval,
	}
}

// checkEvalFlags refuses values that mean nothing (a zero or negative
// count, an unknown choice) instead of replacing them by defaults.
func checkEvalFlags(c *cli.Context) error {
	if err := checkPositive(c, "threads", "k", "decoder-epochs", "measure-steps"); err != nil {
		return err
	}
	if c.IsSet("epochs") {
		if err := checkPositive(c, "epochs"); err != nil {
			return err
		}
	}
	for _, f := range []string{"c", "probe-lr"} {
		if c.IsSet(f) && !(c.Float64(f) > 0) {
			return fmt.Errorf("--%s must be positive, got %v", f, c.Float64(f))
		}
	}
	if c.Int("limit-train") < 0 {
		return fmt.Errorf("--limit-train must be non-negative (0: all)")
	}
	for _, ch := range []struct {
		name    string
		choices []string
	}{{"probe", []string{"linear", "mlp", "knn", "svm"}}, {"bn-stats", []string{"train", "init"}}, {"feature-dtype", []string{"auto", "float32", "bfloat16"}}} {
		if err := checkChoice(c, ch.name, ch.choices...); err != nil {
			return err
		}
	}
	return nil
}

func runEval(c *cli.Context) error {
	if err := applyConfigFile(c); err != nil {
		return err
	}
	if err := checkEvalFlags(c); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := torch.SetNumThreads(c.Int("threads")); err != nil {
		return err
	}
	log := logger(c)
	start := time.Now()
	seed := c.Uint64("seed")
	dev, err := torch.OpenDevice(c.String("device"))
	if err != nil {
		return err
	}
	modes := 0
	for _, f := range []string{"checkpoint", "random-init", "pixels"} {
		if c.IsSet(f) {
			modes++
		}
	}
	if modes != 1 {
		return fmt.Errorf("give exactly one of --checkpoint DIR, --random-init --encoder NAME, --pixels")
	}
	taps := strings.Split(c.String("features"), ",")
	for _, t := range taps {
		if t != "conv" && t != "fc" && t != "y" {
			return fmt.Errorf("--features: unknown feature %q (want conv, fc, y)", t)
		}
	}
	data, dataDir, out := c.String("data"), c.String("data-dir"), c.String("out")
	var src eval.Source
	var untrained models.Encoder // --random-init with --bn-stats train
	var inH, inW int
	var classes []string
	switch {
	case c.IsSet("checkpoint"):
		enc, meta, err := train.LoadEncoder(c.String("checkpoint"))
		if err != nil {
			return err
		}
		defer nn.Free(enc)
		if err := nn.MoveTo(enc, dev); err != nil {
			return err
		}
		src = eval.EncoderSource{Enc: enc, Desc: fmt.Sprintf("%s (%s)", meta.Config.Describe(), c.String("checkpoint"))}
		if data == "" {
			data = meta.Config.Data
			if dataDir == "" {
				dataDir = meta.Config.DataDir
			}
		}
		if out == "" {
			out = c.String("checkpoint")
			if filepath.Base(out) == train.CheckpointDir {
				out = filepath.Dir(out)
			}
		}
		inH, inW = enc.Spec().Input[1], enc.Spec().Input[2]
	case c.Bool("random-init"):
		if data == "" {
			data = "fashion-mnist"
		}
		ds, err := datasets.Open(data, datasets.Train, dataDir)
		if err != nil {
			return err
		}
		ch := ds.Shape().C
		datasets.Close(ds)
		if err := torch.ManualSeed(seed); err != nil {
			return err
		}
		enc, err := models.New(models.Config{Name: c.String("encoder"), InChannels: ch})
		if err != nil {
			return err
		}
		defer nn.Free(enc)
		if err := nn.MoveTo(enc, dev); err != nil {
			return err
		}
		enc.Train(false)
		switch c.String("bn-stats") {
		case "train":
			untrained = enc
		case "init":
		default:
			return fmt.Errorf("--bn-stats %q: want train or init", c.String("bn-stats"))
		}
		src = eval.EncoderSource{Enc: enc, Desc: fmt.Sprintf("untrained %s (seed %d; BatchNorm at its initial statistics)", c.String("encoder"), seed)}
		inH, inW = enc.Spec().Input[1], enc.Spec().Input[2]
	default:
		if data == "" {
			data = "fashion-mnist"
		}
		src = eval.PixelSource{}
		taps = []string{"pixels"}
	}
	trainSet, err := datasets.Open(data, datasets.Train, dataDir)
	if err != nil {
		return err
	}
	defer datasets.Close(trainSet)
	testSet, err := datasets.Open(data, datasets.Test, dataDir)
	if err != nil {
		return fmt.Errorf("the probe is scored on the test split: %w", err)
	}
	defer datasets.Close(testSet)
	classes = trainSet.Classes()
	if classes == nil {
		return fmt.Errorf("%s is unlabeled: probes need class labels", data)
	}
	tf := evalTransform(data, trainSet.Shape(), inH, inW)
	trainPart := datasets.Subset(trainSet, c.Int("limit-train"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if untrained != nil {
		n, err := eval.CalibrateBatchNorm(ctx, untrained, datasets.Subset(trainPart, 10000), tf, dev)
		if err != nil {
			return err
		}
		src = eval.EncoderSource{Enc: untrained, Desc: fmt.Sprintf("untrained %s (seed %d; BatchNorm statistics of %d training images)", c.String("encoder"), seed, n)}
		log.Info().Int("images", n).Msg("untrained encoder: BatchNorm statistics measured on training images")
	}
	plots := c.Bool("plots") && (c.IsSet("checkpoint") || c.Bool("random-init"))
	keep := plots || c.Bool("mine") || c.Bool("msssim")
	extractTaps := taps
	if (c.Bool("ndm") || c.Bool("mine") || c.Bool("msssim") || plots) && !contains(taps, "y") && src.Name() != "raw pixels" {
		extractTaps = append(append([]string(nil), taps...), "y")
	}
	log.Info().Str("source", src.Name()).Str("data", data).Int("train", trainPart.Len()).Int("test", testSet.Len()).Strs("features", extractTaps).Str("device", dev.String()).Msg("extracting features")
	eo := eval.ExtractOptions{Transform: tf, Taps: extractTaps, KeepImages: keep, Device: dev}
	switch fd := c.String("feature-dtype"); {
	case fd == "bfloat16" || (fd == "auto" && dev.Type == torch.CPUDevice && torch.FastBFloat16()):
		eo.WideBFloat16 = true
		log.Info().Str("feature_dtype", "bfloat16").Int("wider_than", eval.WideDims).
			Msg("features wider than this are kept in bfloat16 (the CPU has bfloat16 units; --feature-dtype float32 turns this off)")
	case fd == "auto" || fd == "float32":
	default:
		return fmt.Errorf("--feature-dtype %q: want auto, float32 or bfloat16", fd)
	}
	tr, err := eval.Extract(ctx, src, trainPart, eo)
	if err != nil {
		return err
	}
	defer tr.Free()
	te, err := eval.Extract(ctx, src, testSet, eo)
	if err != nil {
		return err
	}
	defer te.Free()
	if dir := c.String("export-features"); dir != "" {
		if err := eval.ExportNPY(dir, tr, te); err != nil {
			return err
		}
		log.Info().Str("dir", dir).Msg("features written")
	}
	opts := eval.ProbeOptions{Epochs: c.Int("epochs"), LR: c.Float64("probe-lr"), C: c.Float64("c"), K: c.Int("k"), Seed: seed}
	probe := c.String("probe")
	fn, protocol, err := probeFunc(probe, opts)
	if err != nil {
		return err
	}
	rep := &eval.Report{Source: src.Name(), Data: data, Probe: probe, Features: map[string]eval.Result{},
		TrainImages: tr.Len(), TestImages: te.Len(), Seed: seed,
		Protocol: fmt.Sprintf("Offline probe on frozen features: the encoder in evaluation mode without gradients; %s; trained on the first %d training images of %s, scored on all %d test images.", protocol, tr.Len(), data, te.Len())}
	for _, t := range taps {
		log.Info().Str("feature", t).Int64("dims", tr.Feats[t].Size(1)).Str("probe", probe).Msg("probing")
		pstart, last := time.Now(), time.Now()
		opts.Progress = func(step int, loss float64) {
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				ev := log.Info().Str("feature", t).Int("step", step).Str("elapsed", time.Since(pstart).Round(time.Second).String())
				if loss != 0 {
					ev = ev.Float64("loss", loss)
				}
				ev.Msg("probe training")
			}
		}
		res, err := probeOn(dev, fn, tr.Feats[t], tr.Labels, te.Feats[t], te.Labels, opts)
		if err != nil {
			return fmt.Errorf("%s probe on %s: %w", probe, t, err)
		}
		if res.Converged != nil {
			ev := log.Info()
			if !*res.Converged {
				ev = log.Warn()
			}
			ev.Str("feature", t).Int("iterations", res.Iterations).Float64("grad_max", res.GradMax).Bool("converged", *res.Converged).
				Str("stop", res.Stop).Str("took", time.Since(pstart).Round(time.Millisecond).String()).Msg("linear probe solved")
		}
		rep.Features[t] = res
	}
	ms := eval.MeasureOptions{Steps: c.Int("measure-steps"), Seed: seed}
	if dev.Type != torch.CPUDevice && (c.Bool("ndm") || c.Bool("mine") || c.Bool("msssim")) {
		log.Warn().Str("device", dev.String()).Msg("NDM, MINE and MS-SSIM run on the CPU (only the encoder and the probes run on the device)")
	}
	if c.Bool("ndm") && tr.Feats["y"] != nil {
		v, err := eval.NDM(tr.Feats["y"], te.Feats["y"], ms)
		if err != nil {
			return err
		}
		rep.NDM = &v
	}
	if c.Bool("mine") && tr.Feats["y"] != nil {
		v, err := eval.MINE(tr.Images, tr.Feats["y"], te.Images, te.Feats["y"], ms)
		if err != nil {
			return err
		}
		rep.MINE = &v
	}
	if c.Bool("msssim") && tr.Feats["y"] != nil {
		v, scales, err := eval.ReconstructionMSSSIM(tr.Feats["y"], tr.Images, te.Feats["y"], te.Images, eval.DecoderOptions{Epochs: c.Int("decoder-epochs"), Seed: seed})
		if err != nil {
			return err
		}
		rep.MSSSIM, rep.MSSSIMScales = &v, scales
	}
	rep.Seconds = time.Since(start).Seconds()
	if out != "" {
		name := fmt.Sprintf("%s-%s-n%d", probe, strings.Join(taps, "-"), tr.Len())
		if err := rep.Save(out, name); err != nil {
			return err
		}
		if plots {
			if err := eval.MapPNG(filepath.Join(out, "eval", "y-pca.png"), te.Feats["y"], te.Labels, classes, "Y (first two principal components), test split"); err != nil {
				return err
			}
			queries := firstOfEachClass(te.Labels, len(classes))
			if err := eval.NeighboursPNG(filepath.Join(out, "eval", "neighbours.png"), te.Feats["y"], te.Images, tr.Feats["y"], tr.Images, queries, 8); err != nil {
				return err
			}
		}
		log.Info().Str("dir", filepath.Join(out, "eval")).Msg("report written")
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

// probeOn runs a probe with its features and labels copied to dev (the
// extracted set stays on the CPU, where the measures and pictures read it).
func probeOn(dev torch.Device, fn func(a, b, c, d *torch.Tensor, o eval.ProbeOptions) (eval.Result, error), xTr, yTr, xTe, yTe *torch.Tensor, o eval.ProbeOptions) (eval.Result, error) {
	if dev.Type == torch.CPUDevice {
		return fn(xTr, yTr, xTe, yTe, o)
	}
	s := torch.NewScope()
	defer s.Close()
	args := []*torch.Tensor{xTr, yTr, xTe, yTe}
	for i, a := range args {
		args[i] = a.To(dev).MoveTo(s)
		if err := args[i].Err(); err != nil {
			return eval.Result{}, err
		}
	}
	return fn(args[0], args[1], args[2], args[3], o)
}

func contains(v []string, s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
}

func probeFunc(name string, o eval.ProbeOptions) (func(a, b, c, d *torch.Tensor, o eval.ProbeOptions) (eval.Result, error), string, error) {
	switch name {
	case "linear":
		return eval.LinearProbe, fmt.Sprintf("softmax regression on standardised features, L2 1/(2CN) with C=%g (scikit-learn's LogisticRegression objective), full-batch L-BFGS to convergence", o.C), nil
	case "mlp":
		return eval.MLPProbe, "the paper's MLP: 200 hidden units with BatchNorm, ReLU and dropout 0.5, Adam with a cosine schedule, on standardised features", nil
	case "knn":
		return eval.KNN, fmt.Sprintf("k-nearest neighbours (k=%d) by cosine similarity, votes weighted by exp(similarity/0.1)", o.K), nil
	case "svm":
		return eval.SVMProbe, fmt.Sprintf("linear SVM (Crammer-Singer hinge, L2 1/(2CN) with C=%g) on standardised features, mean and standard deviation of 5 seeds", o.C), nil
	}
	return nil, "", fmt.Errorf("unknown probe %q (want linear, mlp, knn or svm)", name)
}

// evalTransform resizes to the encoder's input when the data differs; no
// augmentation.
func evalTransform(data string, s datasets.Shape, h, w int) datasets.Transform {
	if h == 0 || (s.H == h && s.W == w) {
		return nil
	}
	if t := datasets.DefaultTransform(data, datasets.Test); t != nil {
		return datasets.Compose(t, datasets.Resize(h, w))
	}
	return datasets.Resize(h, w)
}

func firstOfEachClass(labels *torch.Tensor, k int) []int {
	v, _ := labels.Int64s()
	seen := map[int64]bool{}
	var out []int
	for i, l := range v {
		if !seen[l] {
			seen[l] = true
			out = append(out, i)
		}
		if len(out) == k {
			break
		}
	}
	return out
}
