package eval

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/datasets/datasetstest"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Each bad option is refused once, with the message the eval command's flag
// gives; the defaults with one source are valid.
func TestOptionsValidate(t *testing.T) {
	intp := func(v int) *int { return &v }
	floatp := func(v float64) *float64 { return &v }
	noLoader := func(string) (*Checkpoint, error) { return nil, errors.New("unused") }
	for _, c := range []struct {
		name string
		edit func(o *Options)
		want string // "": valid
	}{
		{"pixels", func(o *Options) {}, ""},
		{"random-init", func(o *Options) { o.Pixels, o.RandomInit = false, true }, ""},
		{"checkpoint", func(o *Options) { o.Pixels, o.Checkpoint, o.LoadCheckpoint = false, "run", noLoader }, ""},
		{"optional set", func(o *Options) { o.Epochs, o.ProbeLR, o.LimitTrain = intp(1), floatp(1e-9), 10 }, ""},
		{"threads", func(o *Options) { o.Threads = 0 }, "--threads must be at least 1, got 0"},
		{"k", func(o *Options) { o.K = -3 }, "--k must be at least 1, got -3"},
		{"decoder-epochs", func(o *Options) { o.DecoderEpochs = 0 }, "--decoder-epochs must be at least 1, got 0"},
		{"measure-steps", func(o *Options) { o.MeasureSteps = -1 }, "--measure-steps must be at least 1, got -1"},
		{"epochs", func(o *Options) { o.Epochs = intp(0) }, "--epochs must be at least 1, got 0"},
		{"c zero", func(o *Options) { o.C = 0 }, "--c must be positive, got 0"},
		{"c negative", func(o *Options) { o.C = -1 }, "--c must be positive, got -1"},
		{"probe-lr", func(o *Options) { o.ProbeLR = floatp(0) }, "--probe-lr must be positive, got 0"},
		{"limit-train", func(o *Options) { o.LimitTrain = -1 }, "--limit-train must be non-negative (0: all)"},
		{"labels-per-class", func(o *Options) { o.PerClass = -1 }, "--labels-per-class must be non-negative (0: off)"},
		{"both subsets", func(o *Options) { o.PerClass, o.LimitTrain = 10, 100 }, "--labels-per-class and --limit-train both choose the probe's training images: give one"},
		{"probe", func(o *Options) { o.Probe = "foo" }, `--probe "foo": want one of knn, linear, mlp, svm`},
		{"bn-stats", func(o *Options) { o.BNStats = "x" }, `--bn-stats "x": want one of init, train`},
		{"feature-dtype", func(o *Options) { o.FeatureDType = "x" }, `--feature-dtype "x": want one of auto, bfloat16, float32`},
		{"device", func(o *Options) { o.Device = "bogus" }, `unknown device "bogus" (want cpu, cuda or cuda:N)`},
		{"no such GPU", func(o *Options) { o.Device = "cuda:99" }, "--device cuda:99: this libtorch has no CUDA or sees no such GPU (dimtorch env shows what it found)"},
		{"no source", func(o *Options) { o.Pixels = false }, "give exactly one of --checkpoint DIR, --random-init --encoder NAME, --pixels"},
		{"two sources", func(o *Options) { o.RandomInit = true }, "give exactly one of --checkpoint DIR, --random-init --encoder NAME, --pixels"},
		{"features", func(o *Options) { o.Features = []string{"y", "z"} }, `--features: unknown feature "z" (want conv, fc, y)`},
		{"empty feature", func(o *Options) { o.Features = []string{"y", "", "fc"} }, `--features: unknown feature "" (want conv, fc, y)`},
		{"no loader", func(o *Options) { o.Pixels, o.Checkpoint = false, "run" }, "eval: Options.LoadCheckpoint is needed to read --checkpoint"},
		// The first bad option in the command's order is the one reported.
		{"first of several", func(o *Options) { o.Probe, o.Threads = "foo", 0 }, "--threads must be at least 1, got 0"},
		{"device before source", func(o *Options) { o.Device, o.RandomInit = "bogus", true }, `unknown device "bogus" (want cpu, cuda or cuda:N)`},
	} {
		o := DefaultOptions()
		o.Pixels = true
		c.edit(&o)
		err := o.Validate()
		if c.want == "" && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if c.want != "" && (err == nil || err.Error() != c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

func openMNISTLike(t *testing.T, train, test int) (tr, te datasets.Dataset) {
	t.Helper()
	dir := t.TempDir()
	if err := datasetstest.WriteMNISTLike(dir, train, test, 2); err != nil {
		t.Fatal(err)
	}
	tr, err := datasets.Open("mnist", datasets.Train, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { datasets.Close(tr) })
	te, err = datasets.Open("mnist", datasets.Test, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { datasets.Close(te) })
	return tr, te
}

// ForEachBatch visits every image once, in evaluation mode without
// gradients, through layout; frees each batch; stops at fn's first error;
// and leaves the encoder in the mode it found.
func TestForEachBatch(t *testing.T) {
	d, _ := openMNISTLike(t, 300, 10)
	_ = torch.ManualSeed(1)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	l, err := datasets.NewLoader(d, datasets.LoaderOptions{BatchSize: 128, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, training := range []bool{true, false} {
		enc.Train(training)
		live := torch.LiveTensors()
		images, batches, layouts := 0, 0, 0
		layout := func(x *torch.Tensor) *torch.Tensor { layouts++; return x.MulScalar(1) }
		err := ForEachBatch(ctx, enc, l, layout, func(b *datasets.Batch, taps models.Taps) error {
			if enc.Training() {
				t.Error("encoder in training mode inside the loop")
			}
			if taps.Y.RequiresGrad() {
				t.Error("taps computed with gradients")
			}
			if taps.Y.Size(0) != b.X.Size(0) || b.Y.Size(0) != b.X.Size(0) {
				t.Errorf("batch of %d images, %d labels, %d rows of Y", b.X.Size(0), b.Y.Size(0), taps.Y.Size(0))
			}
			_ = taps.Y.Sum() // a result of fn's, freed with the batch
			images += int(b.X.Size(0))
			batches++
			return nil
		})
		if err != nil || images != 300 || batches != 3 || layouts != 3 {
			t.Fatalf("%d images in %d batches (%d layouts): %v", images, batches, layouts, err)
		}
		if enc.Training() != training {
			t.Fatalf("encoder left in training mode %v, found in %v", enc.Training(), training)
		}
		if after := torch.LiveTensors(); after != live {
			t.Fatalf("%d live tensors before the loop, %d after", live, after)
		}
	}
	enc.Train(true)
	stop := errors.New("stop")
	batches := 0
	err = ForEachBatch(ctx, enc, l, nil, func(*datasets.Batch, models.Taps) error { batches++; return stop })
	if err != stop || batches != 1 || !enc.Training() {
		t.Fatalf("after an error in fn: %v after %d batches, training mode %v", err, batches, enc.Training())
	}
	wrong := func(x *torch.Tensor) *torch.Tensor { return x.Narrow(2, 0, 20) }
	err = ForEachBatch(ctx, enc, l, wrong, func(*datasets.Batch, models.Taps) error { t.Error("fn called on a wrong shape"); return nil })
	if err == nil || !strings.Contains(err.Error(), "takes images of 1x28x28") {
		t.Fatalf("wrong input shape: %v", err)
	}
}

// Extract of an encoder reads the same features as the encoder's own
// forward pass on the extracted images, in evaluation mode.
func TestExtractEncoderFeatures(t *testing.T) {
	d, _ := openMNISTLike(t, 300, 10)
	_ = torch.ManualSeed(2)
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	enc.Train(true)
	set, err := Extract(context.Background(), EncoderSource{Enc: enc}, d, ExtractOptions{Taps: []string{"fc", "y"}, KeepImages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Free()
	if !enc.Training() || set.Len() != 300 {
		t.Fatalf("training mode %v after Extract, %d rows", enc.Training(), set.Len())
	}
	s := torch.NewScope()
	defer s.Close()
	enc.Train(false)
	var want *torch.Tensor
	torch.NoGrad(func() { want = enc.Encode(set.Images.Ref(s)).Y })
	diff, err := set.Feats["y"].Ref(s).Sub(want).Abs().Max().Item()
	if err != nil || diff > 1e-5 || set.Feats["fc"].Size(1) <= set.Feats["y"].Size(1) {
		t.Fatalf("Y differs from the encoder's by %v (%v); fc %v", diff, err, set.Feats["fc"].Shape())
	}
}

// Run on a checkpoint reads it through LoadCheckpoint, writes the report
// to its run directory by default and frees its encoder; on pixels it
// scores the pixels.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	if err := datasetstest.WriteMNISTLike(dir, 400, 100, 4); err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	live := torch.LiveTensors()
	o := DefaultOptions()
	o.Checkpoint = filepath.Join(run, "checkpoint")
	o.LoadCheckpoint = func(path string) (*Checkpoint, error) {
		_ = torch.ManualSeed(3)
		enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
		if err != nil {
			return nil, err
		}
		enc.Train(false)
		return &Checkpoint{Encoder: enc, Describe: "a test encoder", Data: "mnist", DataDir: dir, RunDir: run}, nil
	}
	o.Probe, o.Features, o.Threads = "knn", []string{"fc", "y"}, 1
	o.NDM, o.MeasureSteps = true, 5
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Source != "a test encoder ("+o.Checkpoint+")" || rep.Data != "mnist" || rep.TrainImages != 400 || rep.TestImages != 100 ||
		len(rep.Features) != 2 || rep.NDM == nil || !strings.Contains(rep.Protocol, "k-nearest neighbours (k=20)") {
		t.Fatalf("report: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(run, "eval", "knn-fc-y-n400.json")); err != nil {
		t.Fatal(err)
	}
	if torch.LiveTensors() != live {
		t.Fatalf("%d live tensors before Run, %d after (the checkpoint's encoder must be freed)", live, torch.LiveTensors())
	}

	o = DefaultOptions()
	o.Pixels, o.Data, o.DataDir, o.Threads, o.LimitTrain = true, "mnist", dir, 1, 200
	rep, err = Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Source != "raw pixels" || rep.TrainImages != 200 || rep.Features["pixels"].Accuracy < 0.9 {
		t.Fatalf("pixels: %+v", rep)
	}
	o.LimitTrain, o.PerClass = 0, 10 // the few-label protocol
	if rep, err = Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if rep.TrainImages != 100 || rep.PerClass != 10 {
		t.Fatalf("10 labels per class: %+v", rep)
	}
	o.Probe = "nope"
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--probe") {
		t.Fatalf("Run does not validate: %v", err)
	}
}
