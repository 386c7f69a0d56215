package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
	"github.com/rs/zerolog"
)

// Options are how a run reports, not what it computes.
type Options struct {
	Out      string         // the run directory
	Log      zerolog.Logger // structured logs
	Progress io.Writer      // where the progress bar goes; nil for periodic log lines instead
	// Group, when set, makes this process one rank of a data-parallel job
	// (see parallel.go); rank 0 alone writes to Out.
	Group *dist.Group
}

// Trainer owns everything a run needs. Close releases it.
type Trainer struct {
	cfg     Config
	o       Options
	dev     torch.Device
	enc     models.Encoder
	method  objectives.Method
	critic  objectives.Critic // the method's second player; nil when it has none
	opt     *optim.Adam
	probe   *probe // nil for unlabeled data
	train   trainingData
	test    *datasets.Loader // nil without a labeled test split
	classes []string
	state   State
	metrics *metrics
	closers []func()
	par     *parallel // nil when training alone
	lock    *runLock  // the run directory's lock (nil on ranks other than 0)
	// savedStep is the step of the last checkpoint written by this run (-1: none).
	savedStep int64
	// When this session's Run began, and the state's times then.
	runWall           time.Time
	runCPU            float64
	baseWall, baseCPU float64

	// Test hooks: called after each step, and to replace a step's loss value.
	afterStep func(step int64)
	// afterBackward, when set, sees the gradients before the optimiser's
	// step (Bench.OnBackward).
	afterBackward func() error
	lossHook      func(step int64, loss float64) float64
}

// Summary is what a finished (or interrupted) run reports.
type Summary struct {
	Out          string   `json:"out"`
	Epochs       int      `json:"epochs"`
	Steps        int64    `json:"steps"`
	Seconds      float64  `json:"seconds"`               // this session's wall-clock time
	CPUSeconds   float64  `json:"cpu_seconds,omitempty"` // the run's processor time over all its sessions (this process's)
	Images       int64    `json:"images"`                // the images this session trained on (0: the run was already complete)
	ImagesPerSec float64  `json:"images_per_sec"`
	Loss         float64  `json:"loss"`
	ProbeTestAcc *float64 `json:"probe_test_acc,omitempty"`
}

// New prepares a fresh run in o.Out. A directory that already holds a
// checkpoint is refused: resume it, or choose another directory.
func New(cfg Config, o Options) (*Trainer, error) {
	cfg.derive()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := FindCheckpoint(o.Out); err == nil {
		return nil, fmt.Errorf("%s already holds a run: continue it with --resume, or choose another --out", o.Out)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	lock, err := claimRun(o)
	if err != nil {
		return nil, err
	}
	if _, err := FindCheckpoint(o.Out); err == nil { // written while we took the lock
		lock.release()
		return nil, fmt.Errorf("%s already holds a run: continue it with --resume, or choose another --out", o.Out)
	}
	t, err := build(cfg, o)
	if err != nil {
		lock.release()
		return nil, err
	}
	t.lock = lock
	if err := t.start(o, -1); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// start joins the data-parallel group, if any, and (rank 0 only) writes
// the run's configuration and opens the metrics after the record of step
// from (-1: a fresh run).
func (t *Trainer) start(o Options, from int64) error {
	if o.Group != nil {
		if err := t.joinGroup(o.Group); err != nil {
			return err
		}
	}
	if !t.leader() {
		return nil
	}
	if err := writeConfigFile(o.Out, t.cfg, t.world()); err != nil {
		return err
	}
	var err error
	t.metrics, err = openMetrics(o.Out, from)
	return err
}

// Resume continues the run in o.Out from its checkpoint exactly where it
// stopped: same batches, same random numbers, same optimiser state. change,
// when not nil, returns the configuration to continue with from the saved
// one; it may change only the Resumable settings (more epochs, say), and
// anything else is refused.
func Resume(o Options, change func(saved Config) (Config, error)) (*Trainer, error) {
	var lock *runLock
	if fi, err := os.Stat(o.Out); err == nil && fi.IsDir() {
		if lock, err = claimRun(o); err != nil {
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok {
			lock.release()
		}
	}()
	ck, err := LoadCheckpoint(o.Out, true)
	if err != nil {
		return nil, err
	}
	defer ck.Free()
	cfg := ck.Meta.Config
	if was, now := max(1, ck.Meta.World), o.Group.World(); was != now {
		return nil, fmt.Errorf("checkpoint %s was trained by %d processes and cannot continue with %d: the shards, the "+
			"global batch and the random streams depend on the number of processes (resume with --nproc-per-node/--nnodes giving %d)",
			ck.Dir, was, now, was)
	}
	if change != nil {
		next, err := change(cfg)
		if err != nil {
			return nil, err
		}
		if bad := unresumable(cfg, next); len(bad) > 0 {
			return nil, fmt.Errorf("checkpoint %s: a resumed run keeps its settings, and these would change: %s (only %s may)",
				ck.Dir, strings.Join(bad, ", "), strings.Join(Resumable(), ", "))
		}
		cfg = next
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", ck.Dir, err)
	}
	t, err := build(cfg, o)
	if err != nil {
		return nil, err
	}
	t.lock, ok = lock, true
	if err := t.load(ck); err != nil {
		t.Close()
		return nil, fmt.Errorf("checkpoint %s: %w", ck.Dir, err)
	}
	t.state = ck.Meta.State
	t.state.Completed = false
	if t.probe != nil && o.Group != nil && o.Group.Rank() > 0 {
		t.probe.reset() // the checkpoint's counts are those of every rank, summed; rank 0 carries them
	}
	if err := t.start(o, t.state.Step); err != nil {
		t.Close()
		return nil, err
	}
	o.Log.Info().Str("checkpoint", ck.Dir).Int("epoch", t.state.Epoch+1).Int("batch", t.state.Batch).Int64("step", t.state.Step).Msg("resuming")
	return t, nil
}

// claimRun makes this process the writer of the run directory: the
// leader (rank 0, or a process training alone) takes its lock and removes
// the temporary directories that crashed saves left. Other ranks write
// nothing and take nothing (nil).
func claimRun(o Options) (*runLock, error) {
	if o.Group != nil && o.Group.Rank() > 0 {
		return nil, nil
	}
	lock, err := lockRun(o.Out)
	if err != nil {
		return nil, err
	}
	if name, err := rescueTemp(o.Out); err != nil {
		lock.release()
		return nil, fmt.Errorf("recover the checkpoint in %s: %w", filepath.Join(o.Out, name), err)
	} else if name != "" {
		o.Log.Warn().Str("from", name).Msg("the run had no checkpoint but a complete one in a temporary directory (a crash during a save by an earlier dimtorch): recovered it")
	}
	if n, bytes, err := cleanStale(o.Out); err != nil {
		o.Log.Warn().Err(err).Msg("could not remove the temporary files of interrupted checkpoint saves")
	} else if n > 0 {
		o.Log.Info().Int("dirs", n).Int64("bytes", bytes).Msg("removed the temporary files of interrupted checkpoint saves")
	}
	return lock, nil
}

// setUp sets up libtorch for cfg (threads, the seed) and returns a
// trainer on its device, with nothing built yet.
func setUp(cfg Config, o Options) (*Trainer, error) {
	dev, err := torch.OpenDevice(cfg.Device)
	if err != nil {
		return nil, err
	}
	if err := torch.SetNumThreads(cfg.Threads); err != nil {
		return nil, err
	}
	if cfg.BF16 {
		if err := torch.BF16Supported(dev); err != nil {
			return nil, fmt.Errorf("--bf16: %w", err)
		}
	}
	if err := torch.ManualSeed(cfg.Seed); err != nil {
		return nil, err
	}
	return &Trainer{cfg: cfg, o: o, dev: dev, savedStep: -1}, nil
}

// build constructs the networks, optimisers and loaders from the seed.
func build(cfg Config, o Options) (*Trainer, error) {
	t, err := setUp(cfg, o)
	if err != nil {
		return nil, err
	}
	dev := t.dev
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()

	// Data.
	// The training split: a dataset read in any order, or shards streamed.
	var trainSet datasets.Dataset
	var shards *datasets.ShardSet
	var trainShape datasets.Shape
	if dir, ok := strings.CutPrefix(cfg.Data, datasets.ShardsPrefix); ok {
		if shards, err = datasets.OpenShards(dir); err != nil {
			return nil, err
		}
		first, err := shards.FirstImage()
		if err != nil {
			return nil, err
		}
		t.classes, trainShape = shards.Manifest.Classes, datasets.Shape{C: first.C, H: first.H, W: first.W}
	} else {
		if trainSet, err = datasets.Open(cfg.Data, datasets.Train, cfg.DataDir); err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() { datasets.Close(trainSet) })
		t.classes, trainShape = trainSet.Classes(), trainSet.Shape()
	}
	if cfg.Encoder.InChannels == 0 {
		cfg.Encoder.InChannels = trainShape.C
		t.cfg.Encoder.InChannels = cfg.Encoder.InChannels
	}
	cfg.Method.Resolve(cfg.Encoder.InChannels) // and saved resolved
	t.cfg.Method = cfg.Method
	trainT, testT := cfg.transforms(trainShape)
	workers := cfg.Workers // Validate gave it a value
	rank, world := o.Group.Rank(), o.Group.World()
	lo := datasets.LoaderOptions{
		BatchSize: cfg.BatchSize, Shuffle: true, Seed: cfg.Seed, Workers: workers, DropLast: true, Transform: trainT,
		Views: cfg.Objective.Views, Device: dev, Rank: rank, World: world,
	}
	if shards != nil {
		log := o.Log
		t.train, err = datasets.NewShardLoader(shards, datasets.ShardLoaderOptions{LoaderOptions: lo, Buffer: cfg.ShuffleBuffer,
			SkipCorrupt: cfg.SkipCorrupt, OnCorrupt: func(err error) { log.Warn().Err(err).Msg("sample skipped") }})
	} else {
		t.train, err = datasets.NewLoader(datasets.Subset(trainSet, cfg.Limit), lo)
	}
	if err != nil {
		return nil, fmt.Errorf("training data: %w", err)
	}
	if shards != nil {
		warnUnserved(o.Log, t.train.NumBatches()*cfg.BatchSize*world, t.train.Len(), world)
	}
	if t.classes != nil {
		if testSet, err := datasets.Open(cfg.Data, datasets.Test, cfg.DataDir); err == nil && testSet.Classes() != nil {
			t.closers = append(t.closers, func() { datasets.Close(testSet) })
			t.test, err = datasets.NewLoader(testSet, datasets.LoaderOptions{BatchSize: 256, Workers: workers, Transform: testT, Device: dev,
				Rank: rank, World: world})
			if err != nil {
				return nil, fmt.Errorf("test data: %w", err)
			}
		}
	}
	if s := t.train.Shape(); s.C != cfg.Encoder.InChannels {
		return nil, fmt.Errorf("%s has %d-channel images but the encoder takes %d", cfg.Data, s.C, cfg.Encoder.InChannels)
	}
	if err := t.buildNetworks(t.train.Len(), world, len(t.classes)); err != nil {
		return nil, err
	}
	ok = true
	return t, nil
}

// warnUnserved warns when an epoch over shards leaves out more than 5% of
// the samples: every process takes as many batches as its fewest samples
// fill, so a few large shards dealt to several processes leave the rest of
// the larger processes' samples for later epochs.
func warnUnserved(log zerolog.Logger, served, samples, world int) {
	if samples == 0 || float64(served) >= 0.95*float64(samples) {
		return
	}
	log.Warn().Int("samples", samples).Int("trained_each_epoch", served).Int("processes", world).
		Msgf("an epoch trains %.0f%% of the samples (each process takes the batches its fewest samples fill): "+
			"write smaller shards, many more than processes (dimtorch data shard --shard-size), to train on more of them",
			100*float64(served)/float64(samples))
}

// buildNetworks builds the encoder, the method's networks, the online
// probe (for classes > 0) and the optimiser, in a fixed order so that the
// seed fixes every weight.
func (t *Trainer) buildNetworks(images, world, classes int) error {
	cfg, dev := t.cfg, t.dev
	var err error
	if t.enc, err = models.New(cfg.Encoder); err != nil {
		return err
	}
	if err := nn.MoveTo(t.enc, dev); err != nil {
		return err
	}
	if cfg.ChannelsLast {
		if err := nn.ToChannelsLast(t.enc); err != nil {
			return err
		}
	}
	adam := optim.AdamOptions{LR: cfg.LR, Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: 1e-8}
	t.method, err = objectives.NewMethod(cfg.Method, cfg.Objective, objectives.Env{Spec: t.enc.Spec(), Images: images, Adam: adam,
		Device: dev, ChannelsLast: cfg.ChannelsLast, World: world})
	if err != nil {
		return err
	}
	t.critic = t.method.Critic()
	if classes > 0 {
		if t.probe, err = newProbe(int64(t.enc.Spec().Y), int64(classes), cfg.ProbeLR, dev); err != nil {
			return err
		}
	}
	params := append(nn.Parameters(t.enc), nn.Parameters(t.method)...)
	t.opt, err = optim.NewAdam(params, adam)
	return err
}

// Close releases networks, optimisers and data files.
func (t *Trainer) Close() {
	t.par.close()
	if t.opt != nil {
		t.opt.Free()
	}
	if t.probe != nil {
		t.probe.free()
	}
	if t.method != nil {
		t.method.Free()
	}
	if t.enc != nil {
		nn.Free(t.enc)
	}
	if t.metrics != nil {
		t.metrics.close()
	}
	for _, c := range t.closers {
		c()
	}
	t.lock.release()
	t.lock = nil
}

// Config returns the run's configuration, with what the run derived (the
// encoder's input channels) filled in.
func (t *Trainer) Config() Config { return t.cfg }

// Encoder returns the encoder being trained.
func (t *Trainer) Encoder() models.Encoder { return t.enc }

// State returns the run's position.
func (t *Trainer) State() State { return t.state }

// part is one of the run's networks with its optimiser, by the prefix of
// its weights in model.safetensors and of its optimiser's state in
// optim.safetensors. The method's networks share the encoder's optimiser
// (opt nil: saved with the encoder's).
type part struct {
	prefix string
	mod    nn.Module
	opt    optim.Optimizer
}

// parts lists the run's networks: the encoder, the method's, its critic's
// and the online probe's. Checkpoints, resumption and the ranks' shared
// state read this list.
func (t *Trainer) parts() []part {
	ps := []part{{"encoder.", t.enc, t.opt}, {"objective.", t.method, nil}}
	if t.critic != nil {
		ps = append(ps, part{t.critic.Name() + ".", t.critic.Net(), t.critic.Optimizer()})
	}
	if t.probe != nil {
		ps = append(ps, part{"probe.", t.probe.lin, t.probe.opt})
	}
	return ps
}

func (t *Trainer) modelDict() map[string]*torch.Tensor {
	m := map[string]*torch.Tensor{}
	for _, p := range t.parts() {
		prefixed(nn.StateDict(p.mod, ""), p.prefix, m)
	}
	return m
}

func (t *Trainer) save() error {
	optState := map[string]*torch.Tensor{}
	for _, p := range t.parts() {
		if p.opt != nil {
			prefixed(p.opt.State(), p.prefix, optState)
		}
	}
	if t.probe != nil {
		optState["probe_counts"] = torch.FromSlice([]int64{t.probe.correct, t.probe.seen}, []int64{2})
		defer optState["probe_counts"].Free()
	}
	rng := torch.RNGState()
	defer rng.Free()
	optState["rng"] = rng
	if !t.runWall.IsZero() {
		t.state.Seconds = t.baseWall + time.Since(t.runWall).Seconds()
		t.state.CPUSeconds = t.baseCPU + sysinfo.CPUSeconds() - t.runCPU
	}
	machine := sysinfo.Describe()
	meta := Meta{Config: t.cfg, Spec: t.enc.Spec(), State: t.state, Classes: t.classes, World: t.world(), Machine: &machine}
	return saveCheckpoint(t.o.Out, meta, t.modelDict(), optState)
}

func (t *Trainer) load(ck *Checkpoint) error {
	m := ck.Model
	for _, p := range t.parts() {
		if err := nn.LoadStateDict(p.mod, subDict(m, p.prefix), ""); err != nil {
			if p.prefix == "objective." && hasSuffixKey(m, "head.shortcut.bias") {
				return fmt.Errorf("this checkpoint's MI heads have a shortcut bias: it was written by a dimtorch from before 2026-11-29, " +
					"whose heads differed from the original DIM's; its encoder still evaluates, exports and embeds, but training cannot resume from it")
			}
			return fmt.Errorf("%s: %w", p.prefix[:len(p.prefix)-1], err)
		}
	}
	for _, p := range t.parts() {
		if p.opt != nil {
			if err := p.opt.LoadState(subDict(ck.Optim, p.prefix)); err != nil {
				return err
			}
		}
	}
	if t.probe != nil {
		if c, ok := ck.Optim["probe_counts"]; ok {
			v, err := c.Int64s()
			if err == nil && len(v) == 2 {
				t.probe.correct, t.probe.seen = v[0], v[1]
			}
		}
	}
	rng, ok := ck.Optim["rng"]
	if !ok {
		return errors.New("no random generator state")
	}
	return torch.SetRNGState(rng)
}

func hasSuffixKey(m map[string]*torch.Tensor, suffix string) bool {
	for k := range m {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

// stepValues are the scalars of one step: the loss and its parts, indexed
// as objectives.TermList.
type stepValues struct {
	loss  float64
	terms []float64
	has   []bool
}

// newStepValues has room for every declared loss part.
func newStepValues() stepValues {
	n := len(objectives.TermList())
	return stepValues{terms: make([]float64, n), has: make([]bool, n)}
}

// step runs one optimisation step on a batch (which it frees).
func (t *Trainer) step(b *datasets.Batch) (stepValues, error) {
	s := torch.NewScope()
	defer s.Close()
	b.MoveTo(s)
	var terms objectives.Terms
	var taps models.Taps
	x := t.layout(b.X)
	if err := t.par.beforeStep(t); err != nil {
		return stepValues{}, err
	}
	forward := func() { terms, taps = t.method.Loss(t.enc, objectives.Input{X: x, Indices: b.Indices}) }
	if t.cfg.BF16 {
		if err := torch.AutocastOn(t.dev, torch.BFloat16, forward); err != nil {
			return stepValues{}, err
		}
	} else {
		forward()
	}
	v := newStepValues()
	var err error
	if v.loss, err = terms.Total.Item(); err != nil {
		return v, err
	}
	if err := terms.Each(func(i int, p *torch.Tensor) error {
		var err error
		v.terms[i], err = p.Item()
		v.has[i] = true
		return err
	}); err != nil {
		return v, err
	}
	if t.lossHook != nil {
		v.loss = t.lossHook(t.state.Step+1, v.loss)
	}
	// In a data-parallel job every rank finishes the step and the decision
	// is taken on the loss shared by all ranks (Run), so that no rank waits
	// in a collective for one that left.
	if t.par.alone() && !finite(v.loss) {
		return v, t.diverged(v)
	}
	if err := t.opt.ZeroGrad(); err != nil {
		return v, err
	}
	if err := terms.Total.Backward(); err != nil {
		return v, t.par.collective(t, err)
	}
	if t.afterBackward != nil {
		if err := t.afterBackward(); err != nil {
			return v, err
		}
	}
	if err := t.opt.Step(); err != nil {
		return v, err
	}
	if t.critic != nil {
		if err := t.par.beforeCritic(t); err != nil {
			return v, err
		}
		pl, err := t.critic.Step()
		if errors.Is(err, objectives.ErrNonFinite) {
			return v, fmt.Errorf("%w at step %d (epoch %d): %v", ErrDiverged, t.state.Step+1, t.state.Epoch+1, err)
		}
		if err != nil {
			return v, err
		}
		pl.Each(func(i int, x float64) { v.terms[i], v.has[i] = x, true })
	}
	if t.probe != nil {
		// The online probe sees the first view of each image.
		if err := t.probe.step(taps.Y.Narrow(0, 0, b.Y.Size(0)), b.Y, t.par.probeReducer()); err != nil {
			return v, err
		}
	}
	return v, nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func (t *Trainer) diverged(v stepValues) error {
	var ps []string
	for i, has := range v.has {
		if has {
			ps = append(ps, fmt.Sprintf("%s %v", objectives.TermList()[i].Key, v.terms[i]))
		}
	}
	return fmt.Errorf("%w: the loss became %v at step %d (epoch %d; %s)",
		ErrDiverged, v.loss, t.state.Step+1, t.state.Epoch+1, strings.Join(ps, ", "))
}

// layout returns a batch of images in the configured memory layout.
func (t *Trainer) layout(x *torch.Tensor) *torch.Tensor {
	if t.cfg.ChannelsLast && x.Dim() == 4 {
		return x.ChannelsLast()
	}
	return x
}

// lr returns the encoder's learning rate for the next step: constant, or a
// cosine from --lr down to 0 over all planned steps (PyTorch's
// CosineAnnealingLR stepped per batch). Extending a run on resume stretches
// the cosine over the new total.
func (t *Trainer) lr() float64 {
	if t.cfg.Schedule != "cosine" {
		return t.cfg.LR
	}
	total := t.cfg.Epochs * t.train.NumBatches()
	return optim.CosineLR{TMax: total}.LR(t.cfg.LR, int(t.state.Step))
}

// evalProbe scores the online probe on the test split with the encoder in
// evaluation mode.
func (t *Trainer) evalProbe(ctx context.Context) (float64, error) {
	if t.probe == nil || t.test == nil {
		return 0, errors.New("no probe")
	}
	if err := t.shareBuffers(); err != nil {
		return 0, err
	}
	var correct, seen int64
	err := eval.ForEachBatch(ctx, t.enc, t.test, t.layout, func(b *datasets.Batch, taps models.Taps) error {
		c, err := t.probe.lin.Forward(taps.Y).Argmax(1, false).Eq(b.Y).Sum().Item()
		correct += int64(c)
		seen += int64(len(b.Indices))
		return err
	})
	if err != nil {
		return 0, err
	}
	if err := t.sumCounts(&correct, &seen); err != nil {
		return 0, err
	}
	return float64(correct) / float64(seen), nil
}

// Run trains until the planned epochs are done, ctx is cancelled (the run is
// saved, then ErrInterrupted is returned) or the loss diverges (the last
// checkpoint is kept, ErrDiverged is returned). The loop itself only steps;
// its side jobs are hooks (hooks.go).
func (t *Trainer) Run(ctx context.Context) (*Summary, error) {
	// libtorch's thread pool and grad mode belong to the OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := torch.SetNumThreads(t.cfg.Threads); err != nil {
		return nil, err
	}
	if t.cfg.FlushDenormals && t.dev.Type == torch.CPUDevice {
		if torch.SetFlushDenormal(true) {
			defer torch.SetFlushDenormal(false)
		} else {
			t.o.Log.Warn().Msg("--flush-denormals: this CPU cannot flush denormal floats to zero; training without")
		}
	}
	r := &run{ctx: ctx, data: t.par.dataContext(ctx), start: time.Now(), sum: &Summary{Out: t.o.Out, Epochs: t.cfg.Epochs}}
	t.runWall, t.runCPU = r.start, sysinfo.CPUSeconds()
	t.baseWall, t.baseCPU = t.state.Seconds, t.state.CPUSeconds
	t.logStart()
	hooks := t.hooks()
	for t.state.Epoch < t.cfg.Epochs {
		stop, err := t.epoch(r, hooks)
		if err != nil {
			return r.sum, err
		}
		if stop {
			return r.sum, t.interrupt()
		}
	}
	r.sum.Steps = t.state.Step
	r.sum.Seconds = time.Since(r.start).Seconds()
	r.sum.Images = r.images
	r.sum.CPUSeconds = t.baseCPU + sysinfo.CPUSeconds() - t.runCPU
	if r.sum.Seconds > 0 {
		r.sum.ImagesPerSec = float64(r.images) / r.sum.Seconds
	}
	return r.sum, nil
}

// run is the state of one call of Run that its hooks share.
type run struct {
	ctx  context.Context // cancelled by an interrupt
	data context.Context // what the loaders read under (see parallel.dataContext)
	// start is when Run began; images counts the images trained on since.
	start  time.Time
	images int64
	sum    *Summary
	// wait is the time this epoch's steps waited for their batches.
	wait time.Duration
}

// epoch trains the rest of the current epoch and ends it; stop reports an
// interrupt (the caller saves).
func (t *Trainer) epoch(r *run, hooks []hook) (stop bool, err error) {
	epoch := t.state.Epoch
	t.enc.Train(true)
	t.method.Train(true)
	for _, h := range hooks {
		if err := h.epochStart(t, r); err != nil {
			return false, err
		}
	}
	began := time.Now()
	r.wait = 0
	if stop, err := t.steps(r, hooks); stop || err != nil {
		return stop, err
	}
	took := time.Since(began)
	rec := Record{Kind: "epoch", Epoch: epoch, Step: t.state.Step, Loss: r.sum.Loss, Seconds: time.Since(r.start).Seconds(),
		EpochSeconds: took.Seconds(), DataWaitSeconds: r.wait.Seconds()}
	t.state.Epoch++
	t.state.Batch = 0
	t.state.Completed = t.state.Epoch >= t.cfg.Epochs
	for _, h := range hooks {
		if err := h.epochEnd(t, r, &rec); err != nil {
			return false, err
		}
	}
	// The epoch's time split: waiting for data (the loader is the bottleneck when it is large) and the rest (steps, probe).
	ev := t.o.Log.Info().Int("epoch", epoch+1).Float64("loss", r.sum.Loss).Str("checkpoint", filepath.Join(t.o.Out, CheckpointDir)).
		Str("took", took.Round(time.Millisecond).String()).Str("waiting_for_data", r.wait.Round(time.Millisecond).String()).
		Str("stepping", (took - r.wait).Round(time.Millisecond).String())
	if rec.ProbeTrainAcc != nil {
		ev = ev.Float64("probe_train_acc", *rec.ProbeTrainAcc)
	}
	if rec.ProbeTestAcc != nil {
		ev = ev.Float64("probe_test_acc (online)", *rec.ProbeTestAcc)
	}
	ev.Msg("epoch done")
	empty := newStepValues()
	stop, err = t.shareStep(&empty, r.ctx.Err() != nil)
	return stop && t.state.Epoch < t.cfg.Epochs, err
}

// steps trains on the epoch's remaining batches.
func (t *Trainer) steps(r *run, hooks []hook) (stop bool, err error) {
	it := t.train.EpochFrom(r.data, t.state.Epoch, t.state.Batch)
	defer it.Close()
	for {
		t0 := time.Now()
		b, err := it.Next()
		r.wait += time.Since(t0)
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			if r.ctx.Err() != nil && t.par.alone() {
				return true, nil
			}
			return false, err
		}
		n := int64(len(b.Indices) * t.world())
		t.opt.SetLR(t.lr())
		v, err := t.step(b)
		if errors.Is(err, ErrDiverged) {
			return false, fmt.Errorf("%w; the last good checkpoint is %s (try a lower --lr or another --estimator)", err, t.lastCheckpoint())
		}
		if err != nil {
			return false, err
		}
		stop, err := t.shareStep(&v, r.ctx.Err() != nil)
		if err == nil && !finite(v.loss) {
			err = fmt.Errorf("%w; the last good checkpoint is %s (try a lower --lr or another --estimator)", t.diverged(v), t.lastCheckpoint())
		}
		if err != nil {
			return false, err
		}
		t.state.Batch++
		t.state.Step++
		r.images += n
		r.sum.Loss = v.loss
		for _, h := range hooks {
			if err := h.afterStep(t, r, v, n); err != nil {
				return false, err
			}
		}
		if t.afterStep != nil {
			t.afterStep(t.state.Step)
		}
		if stop || t.par.alone() && r.ctx.Err() != nil {
			return true, nil
		}
	}
}

// logStart logs what the run trains.
func (t *Trainer) logStart() {
	ev := t.o.Log.Info().Str("data", t.cfg.Data).Int("images", t.train.Len()).Str("encoder", t.cfg.Encoder.Name).Str("method", t.cfg.Method.Name)
	if t.cfg.Method.Name == "dim" {
		ev = ev.Str("mode", t.cfg.Objective.Mode).Str("estimator", t.cfg.Objective.Estimator).Int("mi_units", t.cfg.Objective.MIUnits)
	}
	ev.Int("batch", t.cfg.BatchSize).Int("epochs", t.cfg.Epochs).Str("device", t.dev.String()).Int("threads", t.cfg.Threads).
		Int64("parameters", nn.NumParameters(t.enc)+nn.NumParameters(t.method)).Int("processes", t.world()).Msg("training")
}

func (t *Trainer) interrupt() error {
	if t.probe != nil && !t.par.alone() {
		// The checkpoint keeps the epoch's probe counts of every rank.
		if err := t.sumCounts(&t.probe.correct, &t.probe.seen); err != nil {
			return err
		}
	}
	if !t.leader() {
		return fmt.Errorf("%w at epoch %d, batch %d (step %d); rank 0 saves the checkpoint", ErrInterrupted, t.state.Epoch+1, t.state.Batch, t.state.Step)
	}
	if t.savedStep != t.state.Step { // not just saved at the end of an epoch
		if err := t.save(); err != nil {
			return fmt.Errorf("%w, and saving the checkpoint failed: %v", ErrInterrupted, err)
		}
	}
	if err := t.metrics.plot(t.o.Out); err != nil {
		t.o.Log.Warn().Err(err).Msg("could not draw loss.png")
	}
	return fmt.Errorf("%w at epoch %d, batch %d (step %d); the checkpoint is saved: continue with `dimtorch train --resume --out %s`",
		ErrInterrupted, t.state.Epoch+1, t.state.Batch, t.state.Step, t.o.Out)
}

func (t *Trainer) lastCheckpoint() string {
	if d, err := FindCheckpoint(t.o.Out); err == nil {
		return d
	}
	return "none yet (the run diverged in its first epoch)"
}

// stepAccumulator averages step values between metric records.
type stepAccumulator struct {
	n      int
	images int64
	sum    stepValues
}

func (a *stepAccumulator) add(v stepValues, images int64) {
	a.n++
	a.images += images
	if a.sum.terms == nil {
		a.sum = newStepValues()
	}
	a.sum.loss += v.loss
	for i := range v.terms {
		a.sum.terms[i] += v.terms[i]
	}
	copy(a.sum.has, v.has)
}

func (a *stepAccumulator) record(epoch int, step int64, rate float64) Record {
	n := float64(max(1, a.n))
	opt := func(has bool, v float64) *float64 {
		if !has {
			return nil
		}
		x := v / n
		return &x
	}
	r := Record{Kind: "step", Epoch: epoch, Step: step, Loss: a.sum.loss / n, ImagesPerSec: rate}
	for i, t := range objectives.TermList() {
		if i >= len(a.sum.has) {
			break
		}
		if v := opt(a.sum.has[i], a.sum.terms[i]); v != nil {
			if r.Terms == nil {
				r.Terms = map[string]float64{}
			}
			r.Terms[t.Key] = *v
		}
	}
	return r
}

// trainingData is what the trainer takes its batches from: a Loader over a
// dataset read in any order, or a ShardLoader streaming shards.
type trainingData interface {
	NumBatches() int
	EpochFrom(ctx context.Context, epoch, start int) *datasets.EpochIter
	Shape() datasets.Shape
	Views() int
	Len() int // images in the training set, all ranks'
}
