package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rs/zerolog/log"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// A checkpoint is the directory RUN/checkpoint holding model.safetensors
// (encoder, objective networks, discriminator, probe), optim.safetensors
// (optimiser states and the random generator) and checkpoint.json (the run's
// Config and position). It is written to a temporary directory and swapped
// in by renames, so a crash at any point leaves a complete checkpoint, the
// old or the new (rundir.go).

// CheckpointDir is the checkpoint's directory name inside a run directory.
const CheckpointDir = "checkpoint"

// State is the position of a run.
type State struct {
	Epoch     int   `json:"epoch"`     // epoch in progress (or the next one when Batch is 0)
	Batch     int   `json:"batch"`     // batches of Epoch already done
	Step      int64 `json:"step"`      // optimisation steps so far
	Completed bool  `json:"completed"` // every epoch is done
	// Seconds and CPUSeconds are the training's wall-clock time and this
	// process's processor time (user + system; rank 0's in a data-parallel
	// job) summed over the run's sessions, up to this checkpoint.
	Seconds    float64 `json:"seconds,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
}

// Meta is checkpoint.json.
type Meta struct {
	Format   int         `json:"format"`
	Dimtorch string      `json:"dimtorch"`
	Libtorch string      `json:"libtorch"`
	Config   Config      `json:"config"`
	Spec     models.Spec `json:"spec"`
	State    State       `json:"state"`
	Classes  []string    `json:"classes,omitempty"`
	// World is the number of data-parallel processes that trained the run
	// (0 in checkpoints from before it was recorded: one).
	World int `json:"world,omitempty"`
	// Machine is the machine that wrote the checkpoint (nil before it was
	// recorded).
	Machine *sysinfo.Machine `json:"machine,omitempty"`
	// Files are the SHA-256 checksums of the checkpoint's tensor files
	// ("sha256:HEX" by file name), verified on load (absent in checkpoints
	// written before dimtorch recorded them).
	Files map[string]string `json:"files,omitempty"`
	// Checksum is the SHA-256 of checkpoint.json itself, computed with this
	// field's hex digits all zero (absent before it was recorded).
	Checksum string `json:"checksum,omitempty"`
}

const checkpointFormat = 1

// Version is recorded in checkpoints; the command sets it.
var Version = "dev"

func saveCheckpoint(run string, meta Meta, model, optim map[string]*torch.Tensor) error {
	tmp, err := atomicfile.Sys.MkdirTemp(run, tmpPrefix)
	if err != nil {
		return err
	}
	savePoint("tmp-created")
	// No deferred clean-up: what a crash would leave is left by an error
	// too, minus the temporary directory, removed here.
	if err := writeCheckpoint(tmp, meta, model, optim); err != nil {
		_ = atomicfile.Sys.RemoveAll(tmp)
		return err
	}
	if err := swapIn(run, tmp); err != nil {
		_ = atomicfile.Sys.RemoveAll(tmp)
		return err
	}
	return nil
}

func writeCheckpoint(dir string, meta Meta, model, optim map[string]*torch.Tensor) error {
	meta.Format = checkpointFormat
	meta.Dimtorch = Version
	meta.Libtorch = torch.Version()
	meta.Files = map[string]string{}
	sum, err := torch.SaveSafetensorsSum(filepath.Join(dir, modelFile), model, map[string]string{"format": "dimtorch", "encoder": meta.Config.Encoder.Name})
	if err != nil {
		return err
	}
	meta.Files[modelFile] = sum
	savePoint("model-written")
	if sum, err = torch.SaveSafetensorsSum(filepath.Join(dir, optimFile), optim, nil); err != nil {
		return err
	}
	meta.Files[optimFile] = sum
	savePoint("optim-written")
	b, err := sealedJSON(meta)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "checkpoint.json"), b, 0o644); err != nil {
		return err
	}
	syncDir(dir)
	savePoint("meta-written")
	return nil
}

// Checkpoint is a loaded checkpoint.
type Checkpoint struct {
	Dir   string
	Meta  Meta
	Model map[string]*torch.Tensor
	Optim map[string]*torch.Tensor // nil unless requested
}

// Free releases the loaded tensors.
func (c *Checkpoint) Free() {
	for _, t := range c.Model {
		t.Free()
	}
	for _, t := range c.Optim {
		t.Free()
	}
}

// FindCheckpoint resolves a path to a checkpoint directory: the run
// directory, or the checkpoint directory itself. A swap interrupted by a
// crash is recovered from checkpoint.old.
func FindCheckpoint(path string) (string, error) {
	for _, d := range []string{path, filepath.Join(path, CheckpointDir), filepath.Join(path, CheckpointDir+".old")} {
		if _, err := os.Stat(filepath.Join(d, "checkpoint.json")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no checkpoint in %s (expected %s/checkpoint.json: is this a dimtorch run directory?)", path, CheckpointDir)
}

// The checkpoint's tensor files.
const (
	modelFile = "model.safetensors"
	optimFile = "optim.safetensors"
)

// zeroSum stands for checkpoint.json's own checksum while it is computed.
var zeroSum = "sha256:" + strings.Repeat("0", 64)

// sealedJSON marshals meta with its Checksum: the SHA-256 of the bytes
// written with the checksum's digits all zero, put in place of them (the same
// length, so nothing else moves).
func sealedJSON(meta Meta) ([]byte, error) {
	meta.Checksum = zeroSum
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	i := bytes.LastIndex(b, []byte(zeroSum))
	if i < 0 {
		return nil, errors.New("checkpoint.json: checksum placeholder not found")
	}
	h := sha256.Sum256(b)
	copy(b[i:], "sha256:"+hex.EncodeToString(h[:]))
	return b, nil
}

// verifySealed checks checkpoint.json's bytes against the checksum they hold.
func verifySealed(b []byte, sum string) error {
	i := bytes.LastIndex(b, []byte(sum))
	if i < 0 || len(sum) != len(zeroSum) {
		return errors.New("its checksum is malformed")
	}
	c := append([]byte{}, b...)
	copy(c[i:], zeroSum)
	h := sha256.Sum256(c)
	if got := "sha256:" + hex.EncodeToString(h[:]); got != sum {
		return fmt.Errorf("its content's checksum is %s, it records %s", got, sum)
	}
	return nil
}

// ReadMeta reads a checkpoint directory's checkpoint.json alone (no tensors),
// verifying its checksum when it has one.
func ReadMeta(dir string) (Meta, error) {
	var m Meta
	path := filepath.Join(dir, "checkpoint.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: damaged checkpoint.json: %v", dir, err)
	}
	if m.Checksum != "" {
		if err := verifySealed(b, m.Checksum); err != nil {
			return m, fmt.Errorf("%s is damaged: %v", path, err)
		}
	}
	if m.Format != checkpointFormat {
		return m, fmt.Errorf("%s: checkpoint format %d, this dimtorch reads format %d", dir, m.Format, checkpointFormat)
	}
	return m, nil
}

// LoadCheckpoint reads a checkpoint; withOptim also loads the optimiser state.
// Damaged files give an error naming them.
func LoadCheckpoint(path string, withOptim bool, opts ...torch.Option) (*Checkpoint, error) {
	dir, err := FindCheckpoint(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Dir: dir}
	if c.Meta, err = ReadMeta(dir); err != nil {
		return nil, err
	}
	if c.Meta.Files == nil {
		warnUnverified(dir)
	} else {
		for _, f := range []string{modelFile, optimFile} {
			if c.Meta.Files[f] == "" {
				return nil, fmt.Errorf("%s: checkpoint.json records no checksum of %s (damaged?)", dir, f)
			}
		}
	}
	if c.Model, _, err = torch.LoadSafetensorsChecked(filepath.Join(dir, modelFile), c.Meta.Files[modelFile], opts...); err != nil {
		return nil, err
	}
	if withOptim {
		if c.Optim, _, err = torch.LoadSafetensorsChecked(filepath.Join(dir, optimFile), c.Meta.Files[optimFile], opts...); err != nil {
			c.Free()
			return nil, err
		}
	}
	return c, nil
}

var unverifiedOnce sync.Once

// warnUnverified says once per process that a checkpoint predates checksums.
func warnUnverified(dir string) {
	unverifiedOnce.Do(func() {
		log.Warn().Str("checkpoint", dir).Msg("this checkpoint was written by an older dimtorch without checksums: damage inside its tensor data cannot be detected (the next save records them)")
	})
}

// subDict returns the entries of sd under prefix, with the prefix removed.
func subDict(sd map[string]*torch.Tensor, prefix string) map[string]*torch.Tensor {
	out := map[string]*torch.Tensor{}
	for k, v := range sd {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			out[k[len(prefix):]] = v
		}
	}
	return out
}

func prefixed(sd map[string]*torch.Tensor, prefix string, into map[string]*torch.Tensor) {
	for k, v := range sd {
		into[prefix+k] = v
	}
}

// ErrInterrupted reports a run stopped by a signal after saving its checkpoint.
var ErrInterrupted = errors.New("training interrupted")

// ErrDiverged reports a loss that became NaN or infinite.
var ErrDiverged = errors.New("training diverged")

// LoadEncoder rebuilds a checkpoint's encoder with its trained weights, in
// evaluation mode, on the CPU.
func LoadEncoder(path string) (models.Encoder, Meta, error) {
	ck, err := LoadCheckpoint(path, false)
	if err != nil {
		return nil, Meta{}, err
	}
	defer ck.Free()
	enc, err := models.New(ck.Meta.Config.Encoder)
	if err != nil {
		return nil, ck.Meta, fmt.Errorf("checkpoint %s: %w", ck.Dir, err)
	}
	if err := nn.LoadStateDict(enc, subDict(ck.Model, "encoder."), ""); err != nil {
		nn.Free(enc)
		return nil, ck.Meta, fmt.Errorf("checkpoint %s: encoder: %w", ck.Dir, err)
	}
	enc.Train(false)
	return enc, ck.Meta, nil
}
