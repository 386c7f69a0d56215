package train

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Data-parallel tests start copies of the test binary as the ranks of a
// job: a copy with envRankConfig set trains that configuration as one rank
// (see TestMain) and writes its final weights next to the run.
const (
	envRankConfig = "DIMTORCH_TRAIN_TEST_CONFIG"
	envRankOut    = "DIMTORCH_TRAIN_TEST_OUT"
	envRankFlat   = "DIMTORCH_TRAIN_TEST_FLAT"  // each rank checks that its live tensors stay flat across epochs
	envRankStats  = "DIMTORCH_TRAIN_TEST_STATS" // each rank saves its BatchNorm statistics after the last step's forward pass as "step.NAME"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(envRankConfig); path != "" {
		if err := runRank(path, os.Getenv(envRankOut)); err != nil {
			fmt.Fprintln(os.Stderr, "rank error:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	if run := os.Getenv(envCrashRun); run != "" {
		crashingSave(run)
	}
	os.Exit(m.Run())
}

func runRank(cfgPath, out string) error {
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	job, _, err := dist.FromEnv()
	if err != nil {
		return err
	}
	if os.Getenv("DIMTORCH_TRAIN_TEST_SKEW") != "" && job.Rank == 1 {
		cfg.BatchSize++ // a rank started with another command line
	}
	g, err := dist.New(job)
	if err != nil {
		return err
	}
	defer g.Close()
	o := opts(out)
	o.Group = g
	tr, err := New(cfg, o)
	if err != nil {
		return err
	}
	defer tr.Close()
	var live []int64
	stats := map[string]*torch.Tensor{} // BatchNorm statistics as the last step left them
	tr.lossHook = func(step int64, loss float64) float64 {
		live = append(live, torch.LiveTensors())
		if os.Getenv(envRankStats) != "" {
			for _, b := range append(namedBuffers(tr.enc, "encoder."), namedBuffers(tr.method, "objective.")...) {
				if strings.Contains(b.Name, "running_") {
					stats[b.Name].Free()
					stats[b.Name] = b.Tensor.Clone()
				}
			}
		}
		return loss
	}
	sum, err := tr.Run(context.Background())
	if err != nil {
		return err
	}
	if os.Getenv(envRankFlat) != "" {
		if err := flatAcrossEpochs(live, cfg.Epochs); err != nil {
			return fmt.Errorf("rank %d: %w", g.Rank(), err)
		}
	}
	meta := map[string]string{"loss": strconv.FormatFloat(sum.Loss, 'g', -1, 64)}
	m := tr.modelDict()
	for k, v := range stats {
		m["step."+k] = v
		defer v.Free()
	}
	// The last step's (averaged) gradients of the encoder and heads.
	for _, p := range append(named(tr.enc, "encoder."), named(tr.method, "objective.")...) {
		if g := p.Tensor.Grad(); g != nil && g.Err() == nil {
			m["grad."+p.Name] = g
		}
	}
	return torch.SaveSafetensors(filepath.Join(out, fmt.Sprintf("rank%d.safetensors", g.Rank())), m, meta)
}

// runJob starts world ranks that train the configuration named by
// envRankConfig into out (set both with t.Setenv first) and returns each
// rank's weights and last logged loss.
func runJob(t *testing.T, world int, out string) ([]map[string][]float64, []string) {
	t.Helper()
	err := dist.Launch(context.Background(), dist.LaunchOptions{
		Command: []string{os.Args[0], "-test.run=^$"}, NProc: world, Timeout: 120e9, Grace: 5e9,
		Stdout: io.Discard, Stderr: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	weights := make([]map[string][]float64, world)
	losses := make([]string, world)
	for r := 0; r < world; r++ {
		m, meta, err := torch.LoadSafetensors(filepath.Join(out, fmt.Sprintf("rank%d.safetensors", r)))
		if err != nil {
			t.Fatal(err)
		}
		weights[r] = map[string][]float64{}
		for k, v := range m {
			weights[r][k], _ = v.Float64s()
			v.Free()
		}
		losses[r] = meta["loss"]
	}
	return weights, losses
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func maxDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
	}
	if math.IsNaN(d) {
		return math.Inf(1)
	}
	return d
}

// sharedParams drops the BatchNorm statistics, which are per rank.
func sharedParams(m map[string][]float64) map[string][]float64 {
	out := map[string][]float64{}
	for k, v := range m {
		if !strings.Contains(k, "running_") && !strings.Contains(k, "num_batches") && !strings.HasPrefix(k, "grad.") {
			out[k] = v
		}
	}
	return out
}

func jobConfig(t *testing.T, cfg Config) string {
	t.Helper()
	b, _ := json.Marshal(cfg)
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDataParallelMatchesShardAveraging: two ranks on loopback end with
// the same weights as one process that, at every step, computes the
// gradients of the same two shards' batches, averages them and takes the
// Adam step.
func TestDataParallelMatchesShardAveraging(t *testing.T) {
	cfg := smallConfig(t)
	cfg.BatchSize, cfg.Epochs = 16, 1
	cfg.Objective.Gamma = 0 // the prior's samples differ per rank; the test wants a step without randomness
	out := t.TempDir()
	t.Setenv(envRankConfig, jobConfig(t, cfg))
	t.Setenv(envRankOut, out)
	ws, _ := runJob(t, 2, out)
	a, b := sharedParams(ws[0]), sharedParams(ws[1])
	for k, v := range a {
		if d := maxDiff(v, b[k]); d != 0 {
			t.Errorf("%s differs between the ranks by %g", k, d)
		}
	}

	// The reference: one process, both shards, averaged gradients.
	ref, err := build(cfg, opts(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	set, err := datasets.Open(cfg.Data, datasets.Train, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer datasets.Close(set)
	trainT, _ := cfg.transforms(set.Shape())
	var its []*datasets.EpochIter
	steps := 0
	for r := 0; r < 2; r++ {
		l, err := datasets.NewLoader(datasets.Subset(set, cfg.Limit), datasets.LoaderOptions{BatchSize: cfg.BatchSize, Shuffle: true,
			Seed: cfg.Seed, Workers: 1, DropLast: true, Transform: trainT, Device: ref.dev, Rank: r, World: 2})
		if err != nil {
			t.Fatal(err)
		}
		it := l.Epoch(context.Background(), 0)
		defer it.Close()
		its = append(its, it)
		steps = l.NumBatches()
	}
	params := append(nn.Parameters(ref.enc), nn.Parameters(ref.method)...)
	for k := 0; k < steps; k++ {
		if err := ref.opt.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		for _, it := range its {
			bt, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			s := torch.NewScope()
			bt.MoveTo(s)
			terms, _ := ref.method.Loss(ref.enc, objectives.Input{X: ref.layout(bt.X)})
			if err := terms.Total.Backward(); err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
		for _, p := range params {
			g := p.Grad()
			if err := g.MulScalarInPlace(0.5); err != nil {
				t.Fatal(err)
			}
			g.Free()
		}
		if err := ref.opt.Step(); err != nil {
			t.Fatal(err)
		}
	}
	// The last step's gradients: the mean of the shards' (Adam alone could
	// not tell a mean from a sum).
	grads := 0
	for _, p := range append(named(ref.enc, "encoder."), named(ref.method, "objective.")...) {
		g := p.Tensor.Grad()
		want, _ := g.Float64s()
		g.Free()
		if d := maxDiff(ws[0]["grad."+p.Name], want); !(d <= 1e-5*(1+maxAbs(want))) {
			t.Errorf("gradient of %s: the two-rank run differs from the averaged shards by %g", p.Name, d)
		}
		grads++
	}
	checked := 0
	for k, v := range ref.modelDict() {
		if !strings.HasPrefix(k, "encoder.") && !strings.HasPrefix(k, "objective.") || strings.Contains(k, "running_") || strings.Contains(k, "num_batches") {
			continue
		}
		want, _ := v.Float64s()
		// The Reducer sums g0/2 + g1/2 where the reference halves g0 + g1:
		// rounding differs in the last bits, and Adam's normalised step
		// turns such differences on near-zero gradients into up to lr-sized
		// moves; the gradients above are the sharp check.
		if d := maxDiff(a[k], want); !(d <= 1e-4) {
			t.Errorf("%s: the two-rank run differs from the averaged shards by %g", k, d)
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("only %d tensors compared", checked)
	}
	t.Logf("%d steps; %d tensors and %d gradients equal to the shard-averaging reference", steps, checked, grads)
}

// TestDataParallelEveryPart: with the prior game, two views and negatives
// from both ranks, every reducer keeps the ranks' weights identical (encoder
// and heads, the prior's discriminator, the online probe), and training
// moves them.
func TestDataParallelEveryPart(t *testing.T) {
	cfg := smallConfig(t)
	cfg.BatchSize, cfg.Epochs = 16, 1
	cfg.Objective.Views, cfg.Augment = 2, "crops"
	cfg.GlobalNegatives = true
	if cfg.Objective.Gamma == 0 {
		t.Fatal("the default configuration should play the prior game")
	}
	out := t.TempDir()
	t.Setenv(envRankConfig, jobConfig(t, cfg))
	t.Setenv(envRankOut, out)
	ws, losses := runJob(t, 2, out)
	ranksAgree(t, ws, "encoder", "objective", "prior", "probe")
	if l, err := strconv.ParseFloat(losses[0], 64); err != nil || math.IsNaN(l) || math.IsInf(l, 0) {
		t.Errorf("loss %q", losses[0])
	}
}

// Multi-scale DIM trains data-parallel: the ranks' weights stay identical,
// and with --global-negatives each rank scores the other rank's features
// too (twice the negatives: each of its three infoNCE terms rises by about
// log 2 at the start, so the loss does by more than 1.5).
func TestDataParallelAMDIM(t *testing.T) {
	var loss [2]float64
	for i, global := range []bool{false, true} {
		cfg := smallConfig(t)
		cfg.BatchSize, cfg.Epochs, cfg.Limit, cfg.LR = 16, 1, 32, 1e-9
		cfg.Method.Name, cfg.Encoder.Name, cfg.Encoder.Width = "amdim", "amdim28", 8
		cfg.Objective.Views, cfg.Objective.ScoreClip, cfg.Objective.Gamma, cfg.Augment = 2, 10, 0, "amdim"
		cfg.GlobalNegatives = global
		out := t.TempDir()
		t.Setenv(envRankConfig, jobConfig(t, cfg))
		t.Setenv(envRankOut, out)
		ws, losses := runJob(t, 2, out)
		ranksAgree(t, ws, "encoder", "objective", "probe")
		var err error
		if loss[i], err = strconv.ParseFloat(losses[0], 64); err != nil || math.IsNaN(loss[i]) {
			t.Fatalf("loss %q", losses[0])
		}
	}
	t.Logf("loss %.4f with the rank's own negatives, %.4f with both ranks'", loss[0], loss[1])
	if loss[1]-loss[0] < 1.5 {
		t.Errorf("loss %v with the rank's own negatives, %v with both ranks': the negatives were not gathered", loss[0], loss[1])
	}
}

// TestDataParallelSyncBN: with --sync-bn every BatchNorm's running
// statistics come from the global batch, so during training the ranks hold
// the same ones (bit for bit: both combine the same gathered statistics);
// without it each rank's come from its own shard and differ (until the end,
// when rank 0's are broadcast). The weights agree either way.
func TestDataParallelSyncBN(t *testing.T) {
	for _, sync := range []bool{true, false} {
		cfg := smallConfig(t)
		cfg.BatchSize, cfg.Epochs = 16, 1
		cfg.SyncBN = sync
		out := t.TempDir()
		t.Setenv(envRankConfig, jobConfig(t, cfg))
		t.Setenv(envRankOut, out)
		t.Setenv(envRankStats, "1")
		ws, _ := runJob(t, 2, out)
		ranksAgree(t, ws, "encoder", "objective")
		n := 0
		for k, a := range ws[0] {
			if !strings.HasPrefix(k, "step.") {
				continue
			}
			n++
			if d := maxDiff(a, ws[1][k]); (d == 0) != sync {
				t.Errorf("sync %v: %s differs between the ranks by %g", sync, k, d)
			}
		}
		if n == 0 {
			t.Fatal("no BatchNorm statistics among the weights")
		}
	}
}

// TestDataParallelDoesNotLeak: with every reducer at work (the prior game,
// two views, negatives from both ranks, synchronised BatchNorm, the online
// probe), each rank's count of live tensors is the same at the last step of
// epochs 2 to 4 (see flatAcrossEpochs): the per-step
// collectives (gradient buckets, loss and stop-flag all-reduces, gathered
// features) free what they create.
func TestDataParallelDoesNotLeak(t *testing.T) {
	cfg := smallConfig(t)
	cfg.BatchSize, cfg.Epochs = 16, 4
	cfg.Objective.Views, cfg.Augment = 2, "crops"
	cfg.GlobalNegatives, cfg.SyncBN = true, true
	out := t.TempDir()
	t.Setenv(envRankConfig, jobConfig(t, cfg))
	t.Setenv(envRankOut, out)
	t.Setenv(envRankFlat, "1")
	runJob(t, 2, out)
}

// ranksAgree checks that two ranks' shared weights are identical, and that
// weights under each of the given prefixes were compared.
func ranksAgree(t *testing.T, ws []map[string][]float64, prefixes ...string) {
	t.Helper()
	a, b := sharedParams(ws[0]), sharedParams(ws[1])
	seen := map[string]int{}
	for k, v := range a {
		if d := maxDiff(v, b[k]); d != 0 {
			t.Errorf("%s differs between the ranks by %g", k, d)
		}
		seen[strings.SplitN(k, ".", 2)[0]]++
	}
	for _, p := range prefixes {
		if seen[p] == 0 {
			t.Errorf("no %s weights compared (%v)", p, seen)
		}
	}
}

func namedBuffers(m nn.Module, prefix string) []nn.Named {
	bs := m.NamedBuffers()
	for i := range bs {
		bs[i].Name = prefix + bs[i].Name
	}
	return bs
}

func named(m nn.Module, prefix string) []nn.Named {
	ps := m.NamedParameters()
	for i := range ps {
		ps[i].Name = prefix + ps[i].Name
	}
	return ps
}

// Ranks started with different settings stop at once with a message that
// names the setting, instead of hanging in mismatched collectives.
func TestDataParallelSettingsDiffer(t *testing.T) {
	cfg := smallConfig(t)
	out := t.TempDir()
	t.Setenv(envRankConfig, jobConfig(t, cfg))
	t.Setenv(envRankOut, out)
	t.Setenv("DIMTORCH_TRAIN_TEST_SKEW", "1")
	var stderr lockedBuilder
	err := dist.Launch(context.Background(), dist.LaunchOptions{
		Command: []string{os.Args[0], "-test.run=^$"}, NProc: 2, Timeout: 120e9, Grace: 5e9, Stdout: io.Discard, Stderr: &stderr,
	})
	if err == nil || !strings.Contains(stderr.String(), "different settings (batch-size)") {
		t.Fatalf("launch: %v\n%s", err, stderr.String())
	}
}

// lockedBuilder collects the output of several processes (exec copies each
// one's output from its own goroutine).
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

// The baselines train data-parallel too: the ranks of a BiGAN job and of
// an AAE job (whose discriminators have their own reducers) and of a VAE
// job end with the same weights; NAT, whose assignment table would drift
// apart, and CPC, which leaves the encoder's top layers without gradients,
// are refused.
func TestDataParallelBaselines(t *testing.T) {
	for _, m := range []string{"bigan", "aae", "vae"} {
		t.Run(m, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.BatchSize, cfg.Epochs = 16, 1
			cfg.Method.Name = m
			out := t.TempDir()
			t.Setenv(envRankConfig, jobConfig(t, cfg))
			t.Setenv(envRankOut, out)
			ws, _ := runJob(t, 2, out)
			want := []string{"encoder", "objective"}
			switch m {
			case "bigan":
				want = append(want, "discriminator")
			case "aae":
				want = append(want, "prior")
			}
			ranksAgree(t, ws, want...)
		})
	}
	for _, m := range []string{"nat", "cpc"} {
		mc := objectives.MethodConfig{Name: m, CPCRows: 3}
		if _, err := objectives.NewMethod(mc, objectives.DIMConfig{}, objectives.Env{Images: 10, World: 2}); err == nil || !strings.Contains(err.Error(), "one process") {
			t.Fatalf("%s with 2 processes: %v", m, err)
		}
	}
}
