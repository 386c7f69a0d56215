package train

import (
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/objectives"
)

var baselines = []string{"vae", "aae", "bigan", "nat", "cpc"}

// Every baseline resumes exactly from a checkpoint written mid-epoch: its
// networks, its critic and optimiser, NAT's assignment of targets and the
// random streams all come back, so the weights end equal to an
// uninterrupted run's.
func TestBaselinesResumeExactly(t *testing.T) {
	for _, m := range baselines {
		t.Run(m, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.Method.Name = m
			a, b := interruptAndResume(t, cfg)
			if _, ok := a["objective.assign"]; m == "nat" && !ok {
				t.Fatal("the checkpoint lacks NAT's assignment")
			}
			sameWeights(t, a, b)
		})
	}
}

// Multi-scale DIM resumes exactly too: its 5-5 positions and AMDIM's
// augmentation draw from generators the checkpoint must carry.
func TestAMDIMResumesExactly(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Method.Name, cfg.Encoder.Name, cfg.Encoder.Width = "amdim", "amdim28", 8
	cfg.Objective.Views, cfg.Objective.ScoreClip, cfg.Objective.Gamma, cfg.Augment = 2, 10, 0, "amdim"
	a, b := interruptAndResume(t, cfg)
	sameWeights(t, a, b)
}

// Each baseline's objective falls on a small dataset: the mean of its
// first three records against its last three (for the AAE, the
// reconstruction; BiGAN's two players are tested in objectives).
func TestBaselinesLearn(t *testing.T) {
	for _, m := range []string{"vae", "aae", "nat", "cpc"} {
		t.Run(m, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.Method.Name = m
			cfg.Epochs = 5
			out := t.TempDir()
			tr, err := New(cfg, opts(out))
			if err != nil {
				t.Fatal(err)
			}
			runAll(t, tr)
			recs, err := ReadMetrics(out)
			if err != nil {
				t.Fatal(err)
			}
			var vals []float64
			for _, r := range recs {
				if r.Kind != "step" {
					continue
				}
				v := r.Loss
				if m == "aae" {
					v = *r.Term("recon")
				}
				vals = append(vals, v)
			}
			if len(vals) < 10 {
				t.Fatalf("%d step records", len(vals))
			}
			first := (vals[0] + vals[1] + vals[2]) / 3
			last := (vals[len(vals)-1] + vals[len(vals)-2] + vals[len(vals)-3]) / 3
			if !(last < first) {
				t.Fatalf("%s's loss went from %.4g to %.4g", m, first, last)
			}
			t.Logf("%s: %.4g -> %.4g over %d steps", m, first, last, len(vals))
		})
	}
}

// DIM's multi-view and global-negative settings are refused for the
// baselines, with the method named.
func TestBaselineConfigErrors(t *testing.T) {
	cfg := Defaults()
	cfg.Method.Name = "vae"
	cfg.Objective.Views = 2
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "vae") {
		t.Fatalf("views 2 for vae: %v", err)
	}
	cfg = Defaults()
	cfg.Method = objectives.MethodConfig{Name: "simclr"}
	if err := cfg.Validate(); err == nil {
		t.Fatal("unknown method accepted")
	}
	cfg = smallConfig(t)
	cfg.Method = objectives.MethodConfig{Name: "cpc", CPCRows: 7}
	if _, err := New(cfg, opts(t.TempDir())); err == nil || !strings.Contains(err.Error(), "7 rows") {
		t.Fatalf("cpc predicting 7 rows of a 7-row map: %v", err)
	}
}

// Reports and evaluations name each run's method.
func TestDescribeNamesTheMethod(t *testing.T) {
	for _, c := range []struct {
		m    objectives.MethodConfig
		want string
	}{
		{objectives.MethodConfig{Name: "dim"}, "DIM(L) jsd, basic28, 256 MI units, prior"},
		{objectives.MethodConfig{Name: "vae", Likelihood: "bernoulli"}, "VAE (bernoulli likelihood), basic28"},
		{objectives.MethodConfig{Name: "bigan"}, "BiGAN, basic28"},
		{objectives.MethodConfig{Name: "cpc", CPCRows: 3, CPCSkip: 2}, "CPC (3 rows after 2), basic28"},
	} {
		cfg := Defaults()
		cfg.Method = c.m
		if got := cfg.Describe(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.m, got, c.want)
		}
	}
}
