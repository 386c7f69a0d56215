// Package train runs the training of an encoder by Deep InfoMax or one of
// the baselines (objectives.Method): the loop over batches, the critic's
// steps (the prior's two-player game, BiGAN's discriminator), an online
// probe, metrics, plots, atomic checkpoints, exact resumption and clean
// interruption.
package train

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
)

// Config is everything that defines a run; it is stored in every checkpoint.
type Config struct {
	Data      string        `json:"data"`
	DataDir   string        `json:"data_dir,omitempty"`
	Limit     int           `json:"limit"` // first N training images (0: all)
	Augment   bool          `json:"augment"`
	CropScale float64       `json:"crop_scale,omitempty"` // >0: augment with random resized crops of at least this fraction of the area
	Encoder   models.Config `json:"encoder"`
	// Method is what trains the encoder: DIM (Objective's settings) or a
	// baseline of the paper's Table 1.
	Method    objectives.MethodConfig `json:"method"`
	Objective objectives.Config       `json:"objective"`
	BatchSize int                     `json:"batch_size"`
	Epochs    int                     `json:"epochs"`
	LR        float64                 `json:"lr"`
	Schedule  string                  `json:"lr_schedule,omitempty"` // "" or "constant", or "cosine": annealed to 0 over the planned steps
	Beta1     float64                 `json:"beta1"`
	Beta2     float64                 `json:"beta2"`
	Seed      uint64                  `json:"seed"`
	Threads   int                     `json:"threads"`
	Device    string                  `json:"device"`
	Workers   int                     `json:"workers"`
	BF16      bool                    `json:"bf16"` // bfloat16 autocast of the forward pass on the training device (CPU or CUDA)
	// ChannelsLast lays images and convolution weights out as NHWC, oneDNN's
	// and cuDNN's preferred layout (the same values; the README's
	// "Channels-last layout" gives the measured gain). Checkpoints written
	// before it existed resume without it.
	ChannelsLast bool    `json:"channels_last"`
	ProbeLR      float64 `json:"probe_lr"` // the online probe's Adam learning rate
	// FlushDenormals treats denormal floats as zero on the CPU (x86 FTZ and
	// DAZ; torch.SetFlushDenormal): CPC's softmax over thousands of
	// confident scores makes so many that its step slows down tenfold.
	FlushDenormals bool `json:"flush_denormals,omitempty"`
	// GlobalNegatives: in a data-parallel job, the MI estimators take their
	// negatives from every rank's batch instead of the rank's own.
	GlobalNegatives bool `json:"global_negatives,omitempty"`
	// SyncBN: in a data-parallel job, every BatchNorm of the encoder and
	// the method normalises with the statistics of the global batch
	// (nn.SyncBatchNorm) instead of the rank's own.
	SyncBN   bool `json:"sync_bn,omitempty"`
	LogEvery int  `json:"log_every"`
}

// Defaults returns the original's hyperparameters (Adam 1e-4, betas 0.5 and
// 0.999, batch 64) with a CPU-sized 256 MI units, DIM(L) with JSD.
func Defaults() Config {
	a, b, g := objectives.DefaultWeights("local")
	return Config{
		Data:      "fashion-mnist",
		Encoder:   models.Config{Name: "basic28", YDim: 64},
		Method:    objectives.MethodConfig{Name: "dim", Likelihood: "auto", CPCRows: 3},
		Objective: objectives.Config{Mode: "local", Estimator: "jsd", Scorer: "dot", Alpha: a, Beta: b, Gamma: g, MIUnits: 256, GPWeight: 1, Views: 1, CrossViewTemp: 0.2},
		BatchSize: 64, Epochs: 1, LR: 1e-4, Schedule: "constant", Beta1: 0.5, Beta2: 0.999, Seed: 1, Threads: 2, Device: "cpu",
		Workers: 2, ProbeLR: 1e-3, LogEvery: 20, ChannelsLast: true,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if err := c.Method.Validate(); err != nil {
		return err
	}
	if err := c.Objective.Validate(); err != nil {
		return err
	}
	if c.Method.Name != "dim" {
		switch {
		case c.Objective.Views > 1:
			return fmt.Errorf("--views is DIM's multi-view objective; method %s trains on one view", c.Method.Name)
		case c.GlobalNegatives:
			return fmt.Errorf("--global-negatives shares DIM's negatives between processes; method %s has none", c.Method.Name)
		}
	}
	if c.Schedule == "" {
		c.Schedule = "constant" // checkpoints from before the field had a default
	}
	if c.Schedule != "constant" && c.Schedule != "cosine" {
		return fmt.Errorf("unknown --lr-schedule %q (want constant or cosine)", c.Schedule)
	}
	if c.CropScale < 0 || c.CropScale > 1 {
		return fmt.Errorf("--crop-scale must be in (0, 1], got %v", c.CropScale)
	}
	if c.CropScale > 0 || c.Objective.Views > 1 {
		c.Augment = true // identical views would teach nothing a single view does not
	}
	if _, _, err := models.InputSize(c.Encoder.Name); err != nil {
		return err
	}
	switch {
	case c.BatchSize < 2:
		return fmt.Errorf("--batch-size must be at least 2 (DIM needs negative pairs), got %d", c.BatchSize)
	case c.Epochs < 1:
		return fmt.Errorf("--epochs must be at least 1")
	case !(c.LR > 0):
		return fmt.Errorf("--lr must be positive")
	case c.Threads < 1:
		return fmt.Errorf("--threads must be at least 1")
	case c.Workers < 0:
		return fmt.Errorf("--workers must be at least 1")
	case c.LogEvery < 1:
		return fmt.Errorf("--log-every must be at least 1")
	case c.Encoder.YDim < 1:
		return fmt.Errorf("--y-dim must be at least 1, got %d", c.Encoder.YDim)
	case !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("--beta1 and --beta2 must be in [0, 1)")
	case !(c.ProbeLR > 0):
		return fmt.Errorf("--probe-lr must be positive")
	case c.Limit < 0:
		return fmt.Errorf("--limit must be non-negative")
	}
	if c.Workers == 0 {
		c.Workers = 2 // checkpoints from before the field had a default
	}
	if _, err := torch.ParseDevice(c.Device); err != nil {
		return err
	}
	return nil
}

// Resumable are the settings (by their JSON names) that a resumed run may
// change: they set how long it trains, how it logs and how fast it reads,
// not what one step computes. A longer run stretches a cosine schedule over
// the new total from the step reached. --threads can change the last bits of
// some kernels' sums.
var Resumable = []string{"epochs", "log_every", "threads", "workers", "data_dir"}

// unresumable lists the settings that differ between was and now, other
// than the Resumable ones.
func unresumable(was, now Config) []string {
	a, b := flatJSON(was), flatJSON(now)
	for _, k := range Resumable {
		delete(a, k)
		delete(b, k)
	}
	var bad []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			bad = append(bad, fmt.Sprintf("%s %s -> %s", k, v, b[k]))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s (none) -> %s", k, w))
		}
	}
	sort.Strings(bad)
	return bad
}

// flatJSON is a configuration as dotted JSON names and their JSON values.
func flatJSON(c Config) map[string]string {
	b, _ := json.Marshal(c)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if mm, ok := v.(map[string]any); ok {
			for k, x := range mm {
				walk(prefix+k+".", x)
			}
			return
		}
		j, _ := json.Marshal(v)
		out[strings.TrimSuffix(prefix, ".")] = string(j)
	}
	walk("", m)
	return out
}

// transforms returns the training and test transforms: the dataset's
// default (random 64x64 crops for STL-10 and folders, none for the others,
// as the original), its optional augmentation with Augment (padded random
// crops, flips where they keep the classes), and a resize to the encoder's
// input where the sizes differ.
func (c *Config) transforms(trainShape datasets.Shape) (train, test datasets.Transform) {
	h, w, _ := models.InputSize(c.Encoder.Name)
	train = datasets.DefaultTransform(c.Data, datasets.Train)
	test = datasets.DefaultTransform(c.Data, datasets.Test)
	switch {
	case c.CropScale > 0:
		train = datasets.ScaleAugment(c.Data, h, w, c.CropScale)
	case c.Augment:
		train = datasets.AugmentTransform(c.Data)
	}
	fits := trainShape.H == h && trainShape.W == w
	resize := func(t datasets.Transform) datasets.Transform {
		switch {
		case t == nil && fits:
			return nil
		case t == nil:
			return datasets.Resize(h, w)
		}
		return datasets.Compose(t, datasets.Resize(h, w))
	}
	return resize(train), resize(test)
}

// Describe names the run's method and its main settings, as reports and
// evaluations show it: "DIM(L) jsd, basic28, 256 MI units, prior",
// "VAE (bernoulli likelihood), basic28".
func (c Config) Describe() string {
	switch m := c.Method; m.Name {
	case "vae", "aae":
		return fmt.Sprintf("%s (%s likelihood), %s", strings.ToUpper(m.Name), m.Likelihood, c.Encoder.Name)
	case "bigan":
		return "BiGAN, " + c.Encoder.Name
	case "nat":
		return "NAT, " + c.Encoder.Name
	case "cpc":
		s := fmt.Sprintf("CPC (%d rows", m.CPCRows)
		if m.CPCSkip > 0 {
			s += fmt.Sprintf(" after %d", m.CPCSkip)
		}
		return s + "), " + c.Encoder.Name
	}
	o := c.Objective
	s := fmt.Sprintf("DIM(%s) %s, %s, %d MI units", strings.ToUpper(strings.ReplaceAll(strings.ReplaceAll(o.Mode, "local", "L"), "global", "G")), o.Estimator, c.Encoder.Name, o.MIUnits)
	if o.Views > 1 {
		s += fmt.Sprintf(", %d views", o.Views)
	}
	if o.CrossView > 0 {
		s += fmt.Sprintf(", cross-view %g", o.CrossView)
	}
	if o.Gamma > 0 {
		s += ", prior"
	}
	return s
}
