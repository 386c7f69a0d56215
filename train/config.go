// Package train runs the training of an encoder by Deep InfoMax or one of
// the baselines (objectives.Method): the loop over batches, the critic's
// steps (the prior's two-player game, BiGAN's discriminator), an online
// probe, metrics, plots, atomic checkpoints, exact resumption and clean
// interruption.
package train

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
)

// Config is everything that defines a run: the Recipe (what a step
// computes) and the Execution (how the run is carried out). Each setting is
// declared once, on its field (settings.go); checkpoints store the whole
// Config.
type Config struct {
	Recipe
	Execution
}

// Recipe is what one training step computes: the ranks of a data-parallel
// job must agree on every field, and a resumed run cannot change one.
type Recipe struct {
	Data  string `json:"data" flag:"data" default:"fashion-mnist" help:"dataset name, folder:PATH (a folder of images, one subfolder a class) or shards:DIR (tar shards from dimtorch data shard)"`
	Limit int    `json:"limit" flag:"limit" help:"train on the first N training images (0: all)"`
	// Shards (--data shards:DIR).
	ShuffleBuffer int `json:"shuffle_buffer,omitempty" flag:"shuffle-buffer" default:"1000" help:"--data shards:DIR: samples in the shuffle buffer (how far apart in the shards a batch's samples may come from)"`
	// Augment is the training augmentation's policy (datasets.Policies);
	// "auto" is resolved when a run starts (derive): resized-crops with
	// --crop-scale, crops with several views, none otherwise.
	Augment   string        `json:"augment" flag:"augment" default:"auto" choices:"policies" defaulttext:"auto: resized-crops with --crop-scale, crops with --views 2 or more, none otherwise; amdim for --method amdim" help:"the training augmentation's policy (every view draws its own)"`
	CropScale float64       `json:"crop_scale,omitempty" flag:"crop-scale" help:"the least fraction of the image that the random resized crops of --augment resized-crops (default 0.4) and amdim (images over 32 pixels; default 0.3) cover; selects resized-crops when --augment is not given (0: the policy's)"`
	Encoder   models.Config `json:"encoder"`
	// Method is what trains the encoder: DIM (Objective's settings) or a
	// baseline of the paper's Table 1.
	Method    objectives.MethodConfig `json:"method"`
	Objective objectives.DIMConfig    `json:"objective"`
	BatchSize int                     `json:"batch_size" flag:"batch-size" default:"64" help:"images per step (per process in a data-parallel job)"`
	LR        float64                 `json:"lr" flag:"lr" default:"1e-4" help:"Adam learning rate"`
	Schedule  string                  `json:"lr_schedule,omitempty" flag:"lr-schedule" default:"constant" help:"constant, or cosine: anneal the learning rate to 0 over the planned steps"`
	Beta1     float64                 `json:"beta1" flag:"beta1" default:"0.5" help:"Adam beta1"`
	Beta2     float64                 `json:"beta2" flag:"beta2" default:"0.999" help:"Adam beta2"`
	ProbeLR   float64                 `json:"probe_lr" flag:"probe-lr" default:"1e-3" help:"Adam learning rate of the online probe (linear on Y, trained on the side)"`
	Seed      uint64                  `json:"seed" flag:"seed" default:"1" help:"fixes every weight, batch and augmentation"`
	// GlobalNegatives: in a data-parallel job, the MI estimators take their
	// negatives from every rank's batch instead of the rank's own.
	GlobalNegatives bool `json:"global_negatives,omitempty" flag:"global-negatives" category:"data-parallel" help:"score every rank's features against every rank's: negatives from the global batch (all-gather with gradients)"`
	// SyncBN: in a data-parallel job, every BatchNorm of the encoder and
	// the method normalises with the statistics of the global batch
	// (nn.SyncBatchNorm) instead of the rank's own.
	SyncBN bool `json:"sync_bn,omitempty" flag:"sync-bn" category:"data-parallel" help:"BatchNorm with the statistics of the global batch (all ranks' parts, gathered with gradients) instead of each rank's own"`
}

// Execution is how a run is carried out: its length, where and how fast it
// runs and logs. The change tag says which settings a resumed run may
// change and which may differ between ranks; the others are fixed like the
// recipe (bf16 and the layout change the last bits of a step).
type Execution struct {
	Epochs      int    `json:"epochs" flag:"epochs" default:"1" change:"resume" help:"passes over the training images (on --resume: the new total, to train longer)"`
	DataDir     string `json:"data_dir,omitempty" flag:"data-dir" change:"resume,ranks" help:"directory holding the dataset"`
	Threads     int    `json:"threads" flag:"threads" default:"2" change:"resume,ranks" help:"libtorch intra-op threads"`
	Workers     int    `json:"workers" flag:"workers" default:"2" change:"resume,ranks" help:"data-loading goroutines"`
	SkipCorrupt bool   `json:"skip_corrupt,omitempty" flag:"skip-corrupt" change:"resume" help:"--data shards:DIR: leave out (and log) samples that do not decode and the rest of a damaged shard, instead of stopping"`
	Device      string `json:"device" flag:"device" default:"cpu" help:"cpu, cuda or cuda:N"`
	// ChannelsLast lays images and convolution weights out as NHWC, oneDNN's
	// and cuDNN's preferred layout (the same values; docs/performance.md,
	// "What each change bought", gives the measured gain). Checkpoints written before it existed
	// resume without it.
	ChannelsLast bool `json:"channels_last" flag:"channels-last" default:"true" help:"NHWC layout for images and convolution weights (--channels-last=false: NCHW)"`
	// FlushDenormals treats denormal floats as zero on the CPU (x86 FTZ and
	// DAZ; torch.SetFlushDenormal): CPC's softmax over thousands of
	// confident scores makes so many that its step slows down tenfold.
	FlushDenormals bool `json:"flush_denormals,omitempty" flag:"flush-denormals" help:"treat denormal floats as zero on the CPU (x86 FTZ/DAZ): cpc's step is several times faster with it; changes results only where denormals occur"`
	BF16           bool `json:"bf16" flag:"bf16" help:"bfloat16 autocast of the forward pass, on the CPU (fast with AVX512-BF16/AMX) or CUDA (Ampere and later)"`
	LogEvery       int  `json:"log_every" flag:"log-every" default:"20" change:"resume,ranks" help:"steps between metrics records"`
}

// Validate checks the configuration; it changes nothing (defaults and the
// migration of older checkpoints happen where a configuration is made:
// NewConfig, UnmarshalJSON).
func (c *Config) Validate() error {
	if err := c.Method.Validate(); err != nil {
		return err
	}
	if err := c.Objective.Validate(); err != nil {
		return err
	}
	if m, _ := objectives.Lookup(c.Method.Name); !m.MultiView {
		switch {
		case c.Objective.Views > 1:
			return fmt.Errorf("--views is DIM's multi-view objective; method %s trains on one view", c.Method.Name)
		case c.GlobalNegatives:
			return fmt.Errorf("--global-negatives shares DIM's negatives between processes; method %s has none", c.Method.Name)
		}
	}
	if c.Schedule != "constant" && c.Schedule != "cosine" {
		return fmt.Errorf("unknown --lr-schedule %q (want constant or cosine)", c.Schedule)
	}
	if c.CropScale < 0 || c.CropScale > 1 {
		return fmt.Errorf("--crop-scale must be in (0, 1], got %v", c.CropScale)
	}
	switch a := c.Augment; {
	case a == "auto" || a == "true" || a == "false": // resolved by derive ("true", "false": --augment before policies)
	case !slices.Contains(datasets.Policies(), a):
		return fmt.Errorf("unknown --augment policy %q (want %s)", a, strings.Join(datasets.Policies(), ", "))
	case c.CropScale > 0 && a != "resized-crops" && a != "amdim":
		return fmt.Errorf("--crop-scale sizes the crops of --augment resized-crops and amdim; --augment %s has none", a)
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
	case c.Workers < 1:
		return fmt.Errorf("--workers must be at least 1")
	case c.LogEvery < 1:
		return fmt.Errorf("--log-every must be at least 1")
	case c.Encoder.YDim < 1:
		return fmt.Errorf("--y-dim must be at least 1, got %d", c.Encoder.YDim)
	case c.Encoder.InChannels < 0:
		return fmt.Errorf("--in-channels must be non-negative (0: the data's), got %d", c.Encoder.InChannels)
	case !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("--beta1 and --beta2 must be in [0, 1)")
	case !(c.ProbeLR > 0):
		return fmt.Errorf("--probe-lr must be positive")
	case c.Limit < 0:
		return fmt.Errorf("--limit must be non-negative")
	case c.ShuffleBuffer < 1:
		return fmt.Errorf("--shuffle-buffer must be at least 1")
	}
	if err := c.validateShardsLimit(); err != nil {
		return err
	}
	if _, err := torch.ParseDevice(c.Device); err != nil {
		return err
	}
	return nil
}

func (c *Config) validateShardsLimit() error {
	if strings.HasPrefix(c.Data, datasets.ShardsPrefix) && c.Limit > 0 {
		return fmt.Errorf("--limit takes the first images of a dataset; shards are read whole (write a smaller set with dimtorch data shard)")
	}
	return nil
}

// transforms returns the training and test transforms: the dataset's
// default (random 64x64 crops for STL-10 and folders, none for the others,
// as the original), its optional augmentation with Augment (padded random
// crops, flips where they keep the classes), and a resize to the encoder's
// input where the sizes differ; the test split is fed as evaluation feeds
// it (datasets.InputTransform).
func (c *Config) transforms(trainShape datasets.Shape) (train, test datasets.Transform) {
	h, w, _ := models.InputSize(c.Encoder.Name)
	d := *c
	d.derive()
	train, err := datasets.Augmentation(d.Augment, c.Data, h, w, c.CropScale)
	if err != nil { // Validate refuses unknown policies
		train = datasets.DefaultTransform(c.Data, datasets.Train)
	}
	switch {
	case train == nil && trainShape.H == h && trainShape.W == w:
	case train == nil:
		train = datasets.Resize(h, w)
	default:
		train = datasets.Compose(train, datasets.Resize(h, w))
	}
	return train, datasets.InputTransform(c.Data, trainShape, h, w)
}

// Describe names the run's method and its main settings, as reports and
// evaluations show it: "DIM(L) jsd, basic28, 256 MI units, prior",
// "VAE (bernoulli likelihood), basic28".
func (c Config) Describe() string {
	m, err := objectives.Lookup(c.Method.Name)
	if err != nil {
		return fmt.Sprintf("%s, %s", c.Method.Name, c.Encoder.Name)
	}
	return m.Describe(c.Method, c.Objective, c.Encoder.Name)
}
