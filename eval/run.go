package eval

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/rs/zerolog"
)

// Options configure Run: one evaluation of `dimtorch eval`. Each field
// names the flag it comes from; Validate's messages name the flags too.
type Options struct {
	// The features' source: exactly one of Checkpoint, RandomInit and Pixels.
	Checkpoint string // --checkpoint: a run directory (or its checkpoint/) of a trained encoder
	// LoadCheckpoint reads Checkpoint (this package does not import train,
	// which imports it); needed with Checkpoint.
	LoadCheckpoint func(path string) (*Checkpoint, error)
	RandomInit     bool   // --random-init: an untrained Encoder initialised from Seed
	Encoder        string // --encoder: the encoder of RandomInit
	BNStats        string // --bn-stats: RandomInit's BatchNorm statistics, "train" (measured) or "init"
	Pixels         bool   // --pixels: raw pixels as the features

	Data    string // --data: the dataset ("": the checkpoint's, else fashion-mnist)
	DataDir string // --data-dir

	Probe      string   // --probe: linear, mlp, knn or svm
	Features   []string // --features: a subset of conv, fc, y (ignored with Pixels)
	LimitTrain int      // --limit-train: train the probe on the first N training images (0: all)
	PerClass   int      // --labels-per-class: train the probe on the first N images of each class (0: off)
	Epochs     *int     // --epochs (nil: the probe's default)
	ProbeLR    *float64 // --probe-lr (nil: the probe's default)
	C          float64  // --c
	K          int      // --k

	NDM            bool   // --ndm
	MINE           bool   // --mine
	MSSSIM         bool   // --msssim
	DecoderEpochs  int    // --decoder-epochs
	MeasureSteps   int    // --measure-steps
	Plots          bool   // --plots
	ExportFeatures string // --export-features: a directory for .npy files ("": none)

	Seed         uint64 // --seed
	Threads      int    // --threads
	FeatureDType string // --feature-dtype: auto, float32 or bfloat16
	Device       string // --device: cpu, cuda or cuda:N
	Out          string // --out ("": the checkpoint's run directory, else no files)

	Log zerolog.Logger // progress (the zero Logger is silent)
}

// Checkpoint is a trained encoder as Options.LoadCheckpoint returns it.
type Checkpoint struct {
	Encoder  models.Encoder // in evaluation mode, on the CPU; Run frees it
	Describe string         // the training configuration, in words
	Data     string         // the dataset it was trained on
	DataDir  string
	RunDir   string // the run directory: Run's default Out
}

// DefaultOptions are the flags' defaults (no source chosen yet).
func DefaultOptions() Options {
	return Options{Encoder: "basic28", BNStats: "train", Probe: "linear", Features: []string{"conv", "fc", "y"},
		C: 1, K: 20, DecoderEpochs: 20, MeasureSteps: 1000, Seed: 1, Threads: 2, FeatureDType: "auto", Device: "cpu",
		Log: zerolog.Nop()}
}

// probeKind is one of the probes Options.Probe names.
type probeKind struct {
	fn       func(xTr, yTr, xTe, yTe *torch.Tensor, o ProbeOptions) (Result, error)
	protocol func(o ProbeOptions) string
}

var probeKinds = map[string]probeKind{
	"linear": {LinearProbe, func(o ProbeOptions) string {
		return fmt.Sprintf("softmax regression on standardised features, L2 1/(2CN) with C=%g (scikit-learn's LogisticRegression objective), full-batch L-BFGS to convergence", o.C)
	}},
	"mlp": {MLPProbe, func(ProbeOptions) string {
		return "the paper's MLP: 200 hidden units with BatchNorm, ReLU and dropout 0.5, Adam with a cosine schedule, on standardised features"
	}},
	"knn": {KNN, func(o ProbeOptions) string {
		return fmt.Sprintf("k-nearest neighbours (k=%d) by cosine similarity, votes weighted by exp(similarity/0.1)", o.K)
	}},
	"svm": {SVMProbe, func(o ProbeOptions) string {
		return fmt.Sprintf("linear SVM (Crammer-Singer hinge, L2 1/(2CN) with C=%g) on standardised features, mean and standard deviation of 5 seeds", o.C)
	}},
}

// Validate refuses values that mean nothing (a zero or negative count, an
// unknown choice, a device this libtorch cannot use, no source or several)
// instead of replacing them by defaults. It reports the first, naming its
// flag.
func (o *Options) Validate() error {
	atLeastOne := func(flag string, v int) error {
		if v < 1 {
			return fmt.Errorf("--%s must be at least 1, got %d", flag, v)
		}
		return nil
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"threads", o.Threads}, {"k", o.K}, {"decoder-epochs", o.DecoderEpochs}, {"measure-steps", o.MeasureSteps}} {
		if err := atLeastOne(n.flag, n.v); err != nil {
			return err
		}
	}
	if o.Epochs != nil {
		if err := atLeastOne("epochs", *o.Epochs); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		flag string
		v    *float64
	}{{"c", &o.C}, {"probe-lr", o.ProbeLR}} {
		if f.v != nil && !(*f.v > 0) {
			return fmt.Errorf("--%s must be positive, got %v", f.flag, *f.v)
		}
	}
	if o.LimitTrain < 0 {
		return fmt.Errorf("--limit-train must be non-negative (0: all)")
	}
	if o.PerClass < 0 {
		return fmt.Errorf("--labels-per-class must be non-negative (0: off)")
	}
	if o.PerClass > 0 && o.LimitTrain > 0 {
		return fmt.Errorf("--labels-per-class and --limit-train both choose the probe's training images: give one")
	}
	probes := make([]string, 0, len(probeKinds))
	for p := range probeKinds {
		probes = append(probes, p)
	}
	for _, ch := range []struct {
		flag, v string
		choices []string
	}{{"probe", o.Probe, probes}, {"bn-stats", o.BNStats, []string{"train", "init"}}, {"feature-dtype", o.FeatureDType, []string{"auto", "float32", "bfloat16"}}} {
		if !contains(ch.choices, ch.v) {
			sort.Strings(ch.choices)
			return fmt.Errorf("--%s %s: want one of %s", ch.flag, strconv.Quote(ch.v), strings.Join(ch.choices, ", "))
		}
	}
	if _, err := torch.OpenDevice(o.Device); err != nil {
		return err
	}
	modes := 0
	for _, on := range []bool{o.Checkpoint != "", o.RandomInit, o.Pixels} {
		if on {
			modes++
		}
	}
	if modes != 1 {
		return fmt.Errorf("give exactly one of --checkpoint DIR, --random-init --encoder NAME, --pixels")
	}
	for _, t := range o.Features {
		if t != "conv" && t != "fc" && t != "y" {
			return fmt.Errorf("--features: unknown feature %q (want conv, fc, y)", t)
		}
	}
	if o.Checkpoint != "" && o.LoadCheckpoint == nil {
		return errors.New("eval: Options.LoadCheckpoint is needed to read --checkpoint")
	}
	return nil
}

// source is the features' source Run opened, with what it decided from it.
type source struct {
	src       Source
	enc       models.Encoder // freed by close
	untrained models.Encoder // RandomInit with BNStats "train": its statistics are to be measured
	inH, inW  int            // the encoder's input size (0: the data's)
	data      string
	dataDir   string
	out       string
	taps      []string // the requested features
}

func (s *source) close() {
	if s.enc != nil {
		nn.Free(s.enc)
	}
}

// openSource opens o's source on dev (o is valid).
func openSource(o *Options, dev torch.Device) (*source, error) {
	s := &source{data: o.Data, dataDir: o.DataDir, out: o.Out, taps: o.Features}
	switch {
	case o.Checkpoint != "":
		ck, err := o.LoadCheckpoint(o.Checkpoint)
		if err != nil {
			return nil, err
		}
		s.enc = ck.Encoder
		if err := nn.MoveTo(s.enc, dev); err != nil {
			return s, err
		}
		s.src = EncoderSource{Enc: s.enc, Desc: fmt.Sprintf("%s (%s)", ck.Describe, o.Checkpoint)}
		if s.data == "" {
			s.data = ck.Data
			if s.dataDir == "" {
				s.dataDir = ck.DataDir
			}
		}
		if s.out == "" {
			s.out = ck.RunDir
		}
	case o.RandomInit:
		if s.data == "" {
			s.data = "fashion-mnist"
		}
		ds, err := datasets.Open(s.data, datasets.Train, s.dataDir)
		if err != nil {
			return nil, err
		}
		ch := ds.Shape().C
		datasets.Close(ds)
		if err := torch.ManualSeed(o.Seed); err != nil {
			return nil, err
		}
		if s.enc, err = models.New(models.Config{Name: o.Encoder, InChannels: ch}); err != nil {
			return nil, err
		}
		if err := nn.MoveTo(s.enc, dev); err != nil {
			return s, err
		}
		s.enc.Train(false)
		if o.BNStats == "train" {
			s.untrained = s.enc
		}
		s.src = EncoderSource{Enc: s.enc, Desc: fmt.Sprintf("untrained %s (seed %d; BatchNorm at its initial statistics)", o.Encoder, o.Seed)}
	default:
		if s.data == "" {
			s.data = "fashion-mnist"
		}
		s.src = PixelSource{}
		s.taps = []string{"pixels"}
	}
	if s.enc != nil {
		s.inH, s.inW = s.enc.Spec().Input[1], s.enc.Spec().Input[2]
	}
	return s, nil
}

// Run evaluates a frozen encoder (or a baseline) as o says: it extracts the
// features of the training and test splits once, trains and scores the
// probe on each, measures NDM, MINE and MS-SSIM when asked, writes the
// report (OUT/eval/NAME.json and .md) and pictures when there is an Out,
// and returns the report. It validates o first. libtorch's thread count is
// set to o.Threads for the process.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	// libtorch's thread pool and grad mode belong to the OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := torch.SetNumThreads(o.Threads); err != nil {
		return nil, err
	}
	log := o.Log
	start := time.Now()
	dev, err := torch.OpenDevice(o.Device)
	if err != nil {
		return nil, err
	}
	s, err := openSource(&o, dev)
	if s != nil {
		defer s.close()
	}
	if err != nil {
		return nil, err
	}
	src, data, taps := s.src, s.data, s.taps
	trainSet, err := datasets.Open(data, datasets.Train, s.dataDir)
	if err != nil {
		return nil, err
	}
	defer datasets.Close(trainSet)
	testSet, err := datasets.Open(data, datasets.Test, s.dataDir)
	if err != nil {
		return nil, fmt.Errorf("the probe is scored on the test split: %w", err)
	}
	defer datasets.Close(testSet)
	classes := trainSet.Classes()
	if classes == nil {
		return nil, fmt.Errorf("%s is unlabeled: probes need class labels", data)
	}
	tf := InputTransform(data, trainSet.Shape(), s.inH, s.inW)
	trainPart := datasets.Subset(trainSet, o.LimitTrain)
	if o.PerClass > 0 {
		if trainPart, err = datasets.PerClass(trainSet, o.PerClass); err != nil {
			return nil, fmt.Errorf("--labels-per-class: %w", err)
		}
	}
	if s.untrained != nil {
		n, err := CalibrateBatchNorm(ctx, s.untrained, datasets.Subset(trainPart, 10000), tf, dev)
		if err != nil {
			return nil, err
		}
		src = EncoderSource{Enc: s.untrained, Desc: fmt.Sprintf("untrained %s (seed %d; BatchNorm statistics of %d training images)", o.Encoder, o.Seed, n)}
		log.Info().Int("images", n).Msg("untrained encoder: BatchNorm statistics measured on training images")
	}
	plots := o.Plots && !o.Pixels
	extractTaps := taps
	if (o.NDM || o.MINE || o.MSSSIM || plots) && !contains(taps, "y") && !o.Pixels {
		extractTaps = append(append([]string(nil), taps...), "y")
	}
	log.Info().Str("source", src.Name()).Str("data", data).Int("train", trainPart.Len()).Int("test", testSet.Len()).Strs("features", extractTaps).Str("device", dev.String()).Msg("extracting features")
	eo := ExtractOptions{Transform: tf, Taps: extractTaps, KeepImages: plots || o.MINE || o.MSSSIM, Device: dev}
	if o.FeatureDType == "bfloat16" || (o.FeatureDType == "auto" && dev.Type == torch.CPUDevice && torch.FastBFloat16()) {
		eo.WideBFloat16 = true
		log.Info().Str("feature_dtype", "bfloat16").Int("wider_than", WideDims).
			Msg("features wider than this are kept in bfloat16 (the CPU has bfloat16 units; --feature-dtype float32 turns this off)")
	}
	tr, err := Extract(ctx, src, trainPart, eo)
	if err != nil {
		return nil, err
	}
	defer tr.Free()
	te, err := Extract(ctx, src, testSet, eo)
	if err != nil {
		return nil, err
	}
	defer te.Free()
	if dir := o.ExportFeatures; dir != "" {
		if err := ExportNPY(dir, tr, te); err != nil {
			return nil, err
		}
		log.Info().Str("dir", dir).Msg("features written")
	}
	rep := &Report{Source: src.Name(), Data: data, Probe: o.Probe, Features: map[string]Result{},
		TrainImages: tr.Len(), PerClass: o.PerClass, TestImages: te.Len(), Seed: o.Seed}
	if err := runProbes(&o, dev, taps, tr, te, rep); err != nil {
		return nil, err
	}
	if err := runMeasures(&o, dev, tr, te, rep); err != nil {
		return nil, err
	}
	rep.Seconds = time.Since(start).Seconds()
	if s.out != "" {
		name := fmt.Sprintf("%s-%s-n%d", o.Probe, strings.Join(taps, "-"), tr.Len())
		if o.PerClass > 0 {
			name = fmt.Sprintf("%s-%s-c%d", o.Probe, strings.Join(taps, "-"), o.PerClass)
		}
		if err := rep.Save(s.out, name); err != nil {
			return nil, err
		}
		if plots {
			if err := MapPNG(filepath.Join(s.out, "eval", "y-pca.png"), te.Feats["y"], te.Labels, classes, "Y (first two principal components), test split"); err != nil {
				return nil, err
			}
			queries := firstOfEachClass(te.Labels, len(classes))
			if err := NeighboursPNG(filepath.Join(s.out, "eval", "neighbours.png"), te.Feats["y"], te.Images, tr.Feats["y"], tr.Images, queries, 8); err != nil {
				return nil, err
			}
		}
		log.Info().Str("dir", filepath.Join(s.out, "eval")).Msg("report written")
	}
	return rep, nil
}

// runProbes trains and scores o.Probe on each of taps, into rep (with the
// protocol).
func runProbes(o *Options, dev torch.Device, taps []string, tr, te *Set, rep *Report) error {
	log := o.Log
	po := ProbeOptions{C: o.C, K: o.K, Seed: o.Seed}
	if o.Epochs != nil {
		po.Epochs = *o.Epochs
	}
	if o.ProbeLR != nil {
		po.LR = *o.ProbeLR
	}
	kind := probeKinds[o.Probe]
	rep.Protocol = fmt.Sprintf("Offline probe on frozen features: the encoder in evaluation mode without gradients; %s; trained on the first %d training images of %s, scored on all %d test images.", kind.protocol(po), tr.Len(), rep.Data, te.Len())
	for _, t := range taps {
		log.Info().Str("feature", t).Int64("dims", tr.Feats[t].Size(1)).Str("probe", o.Probe).Msg("probing")
		pstart, last := time.Now(), time.Now()
		po.Progress = func(step int, loss float64) {
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				ev := log.Info().Str("feature", t).Int("step", step).Str("elapsed", time.Since(pstart).Round(time.Second).String())
				if loss != 0 {
					ev = ev.Float64("loss", loss)
				}
				ev.Msg("probe training")
			}
		}
		res, err := probeOn(dev, kind.fn, tr.Feats[t], tr.Labels, te.Feats[t], te.Labels, po)
		if err != nil {
			return fmt.Errorf("%s probe on %s: %w", o.Probe, t, err)
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
	return nil
}

// runMeasures adds NDM, MINE and the decoder's MS-SSIM on Y to rep, as o
// asks (when Y was extracted).
func runMeasures(o *Options, dev torch.Device, tr, te *Set, rep *Report) error {
	ms := MeasureOptions{Steps: o.MeasureSteps, Seed: o.Seed}
	if dev.Type != torch.CPUDevice && (o.NDM || o.MINE || o.MSSSIM) {
		o.Log.Warn().Str("device", dev.String()).Msg("NDM, MINE and MS-SSIM run on the CPU (only the encoder and the probes run on the device)")
	}
	y, yTe := tr.Feats["y"], te.Feats["y"]
	if y == nil {
		return nil
	}
	if o.NDM {
		v, err := NDM(y, yTe, ms)
		if err != nil {
			return err
		}
		rep.NDM = &v
	}
	if o.MINE {
		v, err := MINE(tr.Images, y, te.Images, yTe, ms)
		if err != nil {
			return err
		}
		rep.MINE = &v
	}
	if o.MSSSIM {
		v, scales, err := ReconstructionMSSSIM(y, tr.Images, yTe, te.Images, DecoderOptions{Epochs: o.DecoderEpochs, Seed: o.Seed})
		if err != nil {
			return err
		}
		rep.MSSSIM, rep.MSSSIMScales = &v, scales
	}
	return nil
}

// probeOn runs a probe with its features and labels copied to dev (the
// extracted set stays on the CPU, where the measures and pictures read it).
func probeOn(dev torch.Device, fn func(a, b, c, d *torch.Tensor, o ProbeOptions) (Result, error), xTr, yTr, xTe, yTe *torch.Tensor, o ProbeOptions) (Result, error) {
	if dev.Type == torch.CPUDevice {
		return fn(xTr, yTr, xTe, yTe, o)
	}
	s := torch.NewScope()
	defer s.Close()
	args := []*torch.Tensor{xTr, yTr, xTe, yTe}
	for i, a := range args {
		args[i] = a.To(dev).MoveTo(s)
		if err := args[i].Err(); err != nil {
			return Result{}, err
		}
	}
	return fn(args[0], args[1], args[2], args[3], o)
}

// InputTransform is the transform of evaluation images: a resize to the
// encoder's input (h x w) when the data's images (shape s) differ, after
// the dataset's test transform; nil when nothing is to be done (h 0: no
// encoder). No augmentation.
func InputTransform(data string, s datasets.Shape, h, w int) datasets.Transform {
	if h == 0 {
		return nil // pixels: no encoder
	}
	return datasets.InputTransform(data, s, h, w)
}

func contains(v []string, s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
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
