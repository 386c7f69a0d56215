package eval

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/internal/npy"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// EmbedOptions say which images to embed (`dimtorch embed`), and with
// what: an exported model through onnxruntime, or an encoder on libtorch.
type EmbedOptions struct {
	Backend string         // "onnx" (Model) or "torch" (Encoder)
	Model   string         // the .onnx file
	Library string         // onnxruntime's library ("": looked up as embed does)
	Encoder models.Encoder // a trained encoder (the caller loads and frees it)
	Output  string         // the tap: y, fc, conv or local
	Data    string         // dataset name or folder:PATH
	DataDir string
	Split   string // train or test
	Limit   int    // the first N images (0: all)
	// BatchSize images are embedded at once with Threads threads, on Device
	// (the torch backend; onnxruntime runs on the CPU).
	BatchSize, Threads int
	Device             string
}

// EmbedDataset embeds every image of the dataset's split in order, fed as
// the model or encoder expects (datasets.InputTransform), and returns one
// row per image.
func EmbedDataset(ctx context.Context, o EmbedOptions) ([][]float32, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	split, err := datasets.ParseSplit(o.Split)
	if err != nil {
		return nil, err
	}
	dev, err := torch.OpenDevice(o.Device)
	if err != nil {
		return nil, err
	}
	if dev.Type != torch.CPUDevice && o.Backend != "torch" {
		return nil, fmt.Errorf("--device %s: only --backend torch runs on a GPU (onnxruntime runs on the CPU here)", dev)
	}
	var h, w int
	var run func(x *torch.Tensor) ([][]float32, error) // x: [N, C, H, W] in [-1, 1]
	switch o.Backend {
	case "onnx":
		if o.Model == "" {
			return nil, fmt.Errorf("--backend onnx needs --model FILE.onnx")
		}
		m, err := embed.Open(o.Model, embed.Options{Library: o.Library, Threads: o.Threads, Output: o.Output})
		if err != nil {
			return nil, err
		}
		defer m.Close()
		_, h, w = m.InputShape()
		run = func(x *torch.Tensor) ([][]float32, error) {
			v, err := export.InputValues(x)
			if err != nil {
				return nil, err
			}
			return m.EmbedBatchContext(ctx, v, int(x.Size(0)))
		}
	case "torch":
		if o.Encoder == nil {
			return nil, fmt.Errorf("--backend torch needs --checkpoint DIR")
		}
		if err := torch.SetNumThreads(o.Threads); err != nil {
			return nil, err
		}
		if err := nn.MoveTo(o.Encoder, dev); err != nil {
			return nil, err
		}
		h, w = o.Encoder.Spec().Input[1], o.Encoder.Spec().Input[2]
		run = func(x *torch.Tensor) ([][]float32, error) { return encodeRows(o.Encoder, x, o.Output) }
	default:
		return nil, fmt.Errorf("unknown --backend %q (want onnx or torch)", o.Backend)
	}
	ds, err := datasets.Open(o.Data, split, o.DataDir)
	if err != nil {
		return nil, err
	}
	defer datasets.Close(ds)
	ds = datasets.Subset(ds, o.Limit)
	l, err := datasets.NewLoader(ds, datasets.LoaderOptions{BatchSize: o.BatchSize, Workers: 2, Transform: datasets.InputTransform(o.Data, ds.Shape(), h, w), Device: dev})
	if err != nil {
		return nil, err
	}
	var rows [][]float32
	err = eachBatch(ctx, l, func(b *datasets.Batch, _ *torch.Scope) error {
		v, err := run(b.X)
		rows = append(rows, v...)
		return err
	})
	return rows, err
}

// encodeRows runs x through the encoder and returns the tap's rows.
func encodeRows(enc models.Encoder, x *torch.Tensor, tap string) ([][]float32, error) {
	if err := models.CheckInput(enc, x); err != nil {
		return nil, err
	}
	t, err := enc.Encode(x).Tap(tap)
	if err != nil {
		return nil, err
	}
	t = t.Flatten(1, -1)
	v, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	d := int(t.Size(1))
	out := make([][]float32, t.Size(0))
	for i := range out {
		out[i] = v[i*d : (i+1)*d]
	}
	return out, nil
}

// WriteRows writes embeddings as .npy (float32 [N, dim]), .csv or .jsonl
// ({"index": i, "embedding": [...]}), by the file's extension, atomically.
func WriteRows(path string, rows [][]float32) error {
	if len(rows) == 0 {
		return fmt.Errorf("no images to embed")
	}
	d := len(rows[0])
	switch strings.ToLower(filepath.Ext(path)) {
	case ".npy":
		flat := make([]float32, 0, len(rows)*d)
		for _, r := range rows {
			flat = append(flat, r...)
		}
		return npy.WriteFloat32(path, flat, len(rows), d)
	case ".csv":
		return atomicfile.Write(path, 0o644, func(w io.Writer) error {
			cw := csv.NewWriter(w)
			rec := make([]string, d)
			for _, r := range rows {
				for j, v := range r {
					rec[j] = strconv.FormatFloat(float64(v), 'g', -1, 32)
				}
				if err := cw.Write(rec); err != nil {
					return err
				}
			}
			cw.Flush()
			return cw.Error()
		})
	case ".jsonl":
		return atomicfile.Write(path, 0o644, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			for i, r := range rows {
				if err := enc.Encode(map[string]any{"index": i, "embedding": r}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return fmt.Errorf("--out %s: write .npy, .csv or .jsonl", path)
}
