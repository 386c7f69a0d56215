package train

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/datasets/datasetstest"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/rs/zerolog"
)

func smallConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	if err := datasetstest.WriteMNISTLike(dir, 256, 64, 1); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.Data, cfg.DataDir = "mnist", dir
	cfg.Limit = 128
	cfg.BatchSize = 32
	cfg.Objective.MIUnits = 32
	cfg.Epochs = 2
	cfg.LR = 1e-3
	cfg.Threads = 1
	cfg.LogEvery = 1
	return cfg
}

func opts(out string) Options { return Options{Out: out, Log: zerolog.Nop()} }

func runAll(t *testing.T, tr *Trainer) *Summary {
	t.Helper()
	defer tr.Close()
	s, err := tr.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func loadWeights(t *testing.T, run string) map[string][]float64 {
	t.Helper()
	ck, err := LoadCheckpoint(run, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Free()
	out := map[string][]float64{}
	for k, v := range ck.Model {
		out[k], _ = v.Float64s()
	}
	return out
}

func sameWeights(t *testing.T, a, b map[string][]float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%d vs %d tensors", len(a), len(b))
	}
	for k, va := range a {
		vb := b[k]
		for i := range va {
			if va[i] != vb[i] {
				t.Fatalf("%s[%d]: %v vs %v", k, i, va[i], vb[i])
			}
		}
	}
}

func TestTrainWritesRunDirectory(t *testing.T) {
	cfg := smallConfig(t)
	out := t.TempDir()
	tr, err := New(cfg, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	s := runAll(t, tr)
	if s.Steps != 8 || s.ProbeTestAcc == nil {
		t.Fatalf("summary %+v", s)
	}
	for _, f := range []string{"checkpoint/model.safetensors", "checkpoint/optim.safetensors", "checkpoint/checkpoint.json", "metrics.jsonl", "loss.png"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	m, err := openMetrics(out, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	m.close()
	steps, epochs := 0, 0
	for _, r := range m.recs {
		switch r.Kind {
		case "step":
			steps++
			if r.Term("local") == nil || r.Term("prior") == nil || r.Term("d_loss") == nil {
				t.Fatalf("step record lacks terms: %+v", r)
			}
		case "epoch":
			epochs++
			if !(r.EpochSeconds > 0) || r.DataWaitSeconds < 0 || r.DataWaitSeconds > r.EpochSeconds {
				t.Fatalf("epoch record's time split: %+v", r)
			}
		}
	}
	if steps != 8 || epochs != 2 {
		t.Fatalf("%d step and %d epoch records", steps, epochs)
	}
	ck, err := LoadCheckpoint(out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Free()
	if !ck.Meta.State.Completed || ck.Meta.Config.Encoder.InChannels != 1 || ck.Meta.Spec.Y != 64 {
		t.Fatalf("checkpoint meta %+v", ck.Meta)
	}
	// A second fresh run into the same directory is refused.
	if _, err := New(cfg, opts(out)); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("reusing a run directory: %v", err)
	}
}

// Two epochs in one go and one epoch plus a resumed epoch give identical
// weights, discriminator and probe included.
func TestResumeIsExact(t *testing.T) {
	cfg := smallConfig(t)
	straight := t.TempDir()
	tr, err := New(cfg, opts(straight))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)

	split := t.TempDir()
	one := cfg
	one.Epochs = 1
	tr, err = New(one, opts(split))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)
	tr, err = Resume(opts(split), withEpochs(2))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)
	sameWeights(t, loadWeights(t, straight), loadWeights(t, split))
}

// An interruption mid-epoch saves the position; resuming finishes the run
// with the same weights as an uninterrupted one.
func TestInterruptMidEpochAndResume(t *testing.T) {
	straight, resumed := interruptAndResume(t, smallConfig(t))
	sameWeights(t, straight, resumed)
}

// interruptAndResume trains cfg (2 epochs of 4 steps) straight through, and
// again interrupted at step 6 (epoch 2, batch 2) and resumed, checking the
// interruption's message and saved position; it returns both runs' weights.
func interruptAndResume(t *testing.T, cfg Config) (straight, resumed map[string][]float64) {
	t.Helper()
	dir := t.TempDir()
	tr, err := New(cfg, opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)

	out := t.TempDir()
	tr, err = New(cfg, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr.afterStep = func(step int64) {
		if step == 6 { // epoch 2, batch 2
			cancel()
		}
	}
	_, err = tr.Run(ctx)
	tr.Close()
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("want an interruption telling how to resume, got %v", err)
	}
	ck, err := LoadCheckpoint(out, false)
	if err != nil {
		t.Fatal(err)
	}
	st := ck.Meta.State
	ck.Free()
	if st.Epoch != 1 || st.Batch != 2 || st.Step != 6 {
		t.Fatalf("saved position %+v", st)
	}
	tr, err = Resume(opts(out), nil)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)
	return loadWeights(t, dir), loadWeights(t, out)
}

// A NaN loss stops the run with a clear error and leaves the last good
// checkpoint untouched.
func TestDivergenceKeepsLastCheckpoint(t *testing.T) {
	cfg := smallConfig(t)
	out := t.TempDir()
	tr, err := New(cfg, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	tr.lossHook = func(step int64, loss float64) float64 {
		if step == 6 {
			return math.NaN()
		}
		return loss
	}
	_, err = tr.Run(context.Background())
	tr.Close()
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), "NaN") || !strings.Contains(err.Error(), "checkpoint") {
		t.Fatalf("want a divergence error naming the checkpoint, got %v", err)
	}
	ck, err := LoadCheckpoint(out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Free()
	if ck.Meta.State.Epoch != 1 || ck.Meta.State.Batch != 0 {
		t.Fatalf("the checkpoint should be the end of epoch 1, got %+v", ck.Meta.State)
	}
}

// Every kind of damage to a checkpoint is refused with the damaged file
// named: a truncated file, bytes appended to a tensor file (the format alone
// would accept them if the reader did not demand exact coverage), one flipped
// bit inside tensor data or inside checkpoint.json (only the recorded
// checksums can see those); a checkpoint from before checksums still loads.
func TestDamagedCheckpointIsReported(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Epochs = 1
	out := t.TempDir()
	tr, err := New(cfg, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)
	dir := filepath.Join(out, CheckpointDir)
	pristine := map[string][]byte{}
	for _, f := range []string{modelFile, optimFile, "checkpoint.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		pristine[f] = b
	}
	restore := func() {
		for f, b := range pristine {
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	flip := func(b []byte, at int) []byte {
		c := append([]byte{}, b...)
		c[at] ^= 0x10
		return c
	}
	hlen := int(binary.LittleEndian.Uint64(pristine[modelFile][:8]))
	metaAt := strings.Index(string(pristine["checkpoint.json"]), `"lr"`) + 8 // a digit of the learning rate
	cases := []struct {
		name, file string
		data       []byte
	}{
		{"truncated", modelFile, pristine[modelFile][:len(pristine[modelFile])/2]},
		{"appended bytes", modelFile, append(append([]byte{}, pristine[modelFile]...), make([]byte, 1000)...)},
		{"flipped bit in a weight", modelFile, flip(pristine[modelFile], 8+hlen+100)},
		{"flipped bit in an optimiser moment", optimFile, flip(pristine[optimFile], len(pristine[optimFile])-3)},
		{"flipped bit in checkpoint.json", "checkpoint.json", flip(pristine["checkpoint.json"], metaAt)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer restore()
			if err := os.WriteFile(filepath.Join(dir, c.file), c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Resume(opts(out), withEpochs(2)); err == nil || !strings.Contains(err.Error(), c.file) {
				t.Fatalf("damaged %s: %v", c.file, err)
			}
		})
	}
	// Written by an older dimtorch: no checksums; it loads.
	var m map[string]any
	if err := json.Unmarshal(pristine["checkpoint.json"], &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "files")
	delete(m, "checksum")
	old, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "checkpoint.json"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(out, true)
	if err != nil {
		t.Fatalf("a checkpoint without checksums: %v", err)
	}
	ck.Free()
	restore()
	if _, err := Resume(opts(t.TempDir()), nil); err == nil || !strings.Contains(err.Error(), "no checkpoint") {
		t.Fatalf("missing checkpoint: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	cfg := smallConfig(t)
	bad := map[string]func(c *Config){
		"batch of one":       func(c *Config) { c.BatchSize = 1 },
		"unknown encoder":    func(c *Config) { c.Encoder.Name = "vgg" },
		"unknown estimator":  func(c *Config) { c.Objective.Estimator = "mine" },
		"unknown device":     func(c *Config) { c.Device = "tpu" },
		"no epochs":          func(c *Config) { c.Epochs = 0 },
		"no y":               func(c *Config) { c.Encoder.YDim = 0 },
		"cross-view, 1 view": func(c *Config) { c.Objective.CrossView = 1 },
		"cross-view at temperature 0": func(c *Config) {
			c.Objective.CrossView, c.Objective.Views, c.Objective.CrossViewTemp = 1, 2, 0
		},
		"negative cross-view": func(c *Config) { c.Objective.CrossView, c.Objective.Views = -1, 2 },
	}
	for name, f := range bad {
		c := cfg
		f(&c)
		if _, err := New(c, opts(t.TempDir())); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// An encoder of another input size trains on resized images (28x28 -> 32x32).
func TestResizesToEncoderInput(t *testing.T) {
	c := smallConfig(t)
	c.Encoder.Name = "dcgan32"
	c.Limit, c.Epochs = 64, 1
	tr, err := New(c, opts(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if s := tr.train.Shape(); s.H != 32 || s.W != 32 {
		t.Fatalf("batches of %v", s)
	}
	runAll(t, tr)
}

func TestAugmentSelectsTransforms(t *testing.T) {
	c := Defaults()
	native := datasets.Shape{C: 1, H: 28, W: 28}
	if tr, te := c.transforms(native); tr != nil || te != nil {
		t.Fatalf("no augmentation by default at native size: %v %v", tr, te)
	}
	c.Augment = "crops"
	tr, te := c.transforms(native)
	if tr == nil || te != nil || !strings.Contains(tr.String(), "random_crop") {
		t.Fatalf("--augment: train %v, test %v", tr, te)
	}
	c.Encoder.Name = "dcgan32"
	if tr, te := c.transforms(native); !strings.Contains(tr.String(), "resize(32x32)") || !strings.Contains(te.String(), "resize(32x32)") {
		t.Fatalf("resize to the encoder's input: %v %v", tr, te)
	}
}

// Multi-view training: the loader serves two augmented views per image, the
// online probe sees the first, and the settings survive in the checkpoint.
func TestTrainTwoViews(t *testing.T) {
	c := smallConfig(t)
	c.Epochs, c.Limit = 1, 64
	c.Objective.Estimator, c.Objective.Views, c.CropScale = "nce", 2, 0.5
	out := t.TempDir()
	tr, err := New(c, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	trT, _ := tr.cfg.transforms(datasets.Shape{C: 1, H: 28, W: 28})
	if tr.train.Views() != 2 || tr.cfg.Augment != "resized-crops" || !strings.Contains(trT.String(), "random_resized_crop(28x28, scale 0.5-1)") {
		t.Fatalf("views %d, augment %v, transform %s", tr.train.Views(), tr.cfg.Augment, trT)
	}
	s := runAll(t, tr)
	if math.IsNaN(s.Loss) || s.Steps != 2 {
		t.Fatalf("summary %+v", s)
	}
	ck, err := LoadCheckpoint(out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Free()
	if ck.Meta.Config.Objective.Views != 2 || ck.Meta.Config.CropScale != 0.5 {
		t.Fatalf("stored config %+v", ck.Meta.Config)
	}
	bad := smallConfig(t)
	bad.CropScale = 1.5
	if _, err := New(bad, opts(t.TempDir())); err == nil {
		t.Fatal("crop scale 1.5 accepted")
	}
}

func TestCosineSchedule(t *testing.T) {
	c := smallConfig(t)
	c.Schedule = "cosine" // 2 epochs of 4 batches
	tr, err := New(c, opts(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for step, want := range map[int64]float64{0: c.LR, 4: c.LR / 2, 8: 0, 2: c.LR * (1 + math.Cos(math.Pi/4)) / 2} {
		tr.state.Step = step
		if got := tr.lr(); math.Abs(got-want) > 1e-12 {
			t.Errorf("step %d: lr %v, want %v", step, got, want)
		}
	}
	c.Schedule = "linear"
	if _, err := New(c, opts(t.TempDir())); err == nil {
		t.Fatal("unknown schedule accepted")
	}
}

// TestTrainingDoesNotLeak: the live tensor handles, sampled at the same
// point of every step, stay flat across steps and epochs (with the prior
// game, the online probe, its evaluation and the checkpoints in between).
func TestTrainingDoesNotLeak(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*Config)
	}{
		{"prior", func(c *Config) { c.Objective.Gamma = 0.1 }}, // the prior game on
		{"two-views-cross-view", func(c *Config) { c.Objective.Views, c.Objective.CrossView = 2, 0.5 }},
		{"vae", func(c *Config) { c.Method.Name = "vae" }},
		{"aae", func(c *Config) { c.Method.Name = "aae" }}, // a critic with a gradient penalty
		{"bigan", func(c *Config) { c.Method.Name = "bigan" }},
		{"nat", func(c *Config) { c.Method.Name = "nat" }},
		{"cpc", func(c *Config) { c.Method.Name = "cpc" }},
		{"amdim", func(c *Config) { // multi-scale DIM: three heads, the 5-5 positions drawn each step
			c.Method.Name, c.Encoder.Name, c.Encoder.Width = "amdim", "amdim28", 8
			c.Objective.Views, c.Objective.ScoreClip, c.Objective.Gamma, c.Augment = 2, 10, 0, "amdim"
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.Epochs = 4
			c.set(&cfg)
			tr, err := New(cfg, opts(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			var live []int64
			tr.lossHook = func(step int64, loss float64) float64 {
				live = append(live, torch.LiveTensors())
				return loss
			}
			runAll(t, tr)
			if err := flatAcrossEpochs(live, cfg.Epochs); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// flatAcrossEpochs checks live-tensor counts taken at every step of a run of
// the given epochs. Within an epoch the count depends on how many batches the
// loader's workers have prefetched when the step runs, which is timing (a fast
// step on a fast CPU finds fewer ready), so only the last step of each epoch is
// compared: all of that epoch's batches have been taken by then and the next
// epoch's loader has not started. Those counts must be equal from the second
// epoch on (the optimisers' state exists by then); a handle kept per step would
// add one per step to each epoch's count.
func flatAcrossEpochs(live []int64, epochs int) error {
	perEpoch := len(live) / epochs
	if perEpoch < 1 || epochs < 3 || len(live) != perEpoch*epochs {
		return fmt.Errorf("%d steps over %d epochs: too few to compare", len(live), epochs)
	}
	ref := live[2*perEpoch-1]
	for e := 3; e <= epochs; e++ {
		if got := live[e*perEpoch-1]; got != ref {
			return fmt.Errorf("live tensors at the last step of epoch %d: %d, of epoch 2: %d (every step: %v)", e, got, ref, live)
		}
	}
	return nil
}

// withEpochs extends a resumed run to n epochs.
func withEpochs(n int) func(Config) (Config, error) {
	return func(c Config) (Config, error) {
		c.Epochs = n
		return c, nil
	}
}

// Resume refuses a change of anything but the Resumable settings, whatever
// the caller asks, and names what would change.
func TestResumeRefusesChangedSettings(t *testing.T) {
	saved := Defaults()
	now := saved
	now.LR, now.Objective.MIUnits, now.Epochs, now.Threads = 0.5, 999, 9, 1
	bad := unresumable(saved, now)
	if len(bad) != 2 || !strings.HasPrefix(bad[0], "lr 0.0001 -> 0.5") || !strings.HasPrefix(bad[1], "mi-units 256 -> 999") {
		t.Fatalf("unresumable: %q", bad)
	}
	cfg := smallConfig(t)
	out := t.TempDir()
	tr, err := New(cfg, opts(out))
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, tr)
	_, err = Resume(opts(out), func(c Config) (Config, error) {
		c.BatchSize++
		return c, nil
	})
	if err == nil || !strings.Contains(err.Error(), "batch-size 32 -> 33") {
		t.Fatalf("resume with another batch size: %v", err)
	}
}
