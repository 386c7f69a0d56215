package export

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/torch"
)

// QuantizeCalibrated calibrates the float model m on n images (float32 NCHW
// in [0, 1]) through onnxruntime (library lib, "" to look it up as embed
// does) and returns its int8 QDQ form; how says what calibrated it.
func QuantizeCalibrated(m *onnxpb.ModelProto, images []float32, n int, lib, how string) (*onnxpb.ModelProto, error) {
	dir, err := os.MkdirTemp("", "dimtorch-calibration")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	values := CalibrationValues(m)
	aug := filepath.Join(dir, "calibration.onnx")
	if err := Write(aug, WithOutputs(m, values)); err != nil {
		return nil, err
	}
	raw, err := embed.Ranges(aug, embed.Options{Library: lib, Threads: 2}, images, n, 64, values)
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	ranges := make(map[string]Range, len(raw))
	for k, v := range raw {
		ranges[k] = Range{Min: v[0], Max: v[1]}
	}
	return Quantize(m, ranges, how)
}

// CalibrationImages returns the first n images of a shuffled order (seed 0)
// of a dataset's training split, fed as for an encoder of input h x w
// (datasets.InputTransform), as float32 NCHW in [0, 1], and how many there
// were.
func CalibrationImages(data, dataDir string, n, h, w int) ([]float32, int, error) {
	ds, err := datasets.Open(data, datasets.Train, dataDir)
	if err != nil {
		return nil, 0, fmt.Errorf("calibration images: %w", err)
	}
	defer datasets.Close(ds)
	n = min(n, ds.Len())
	l, err := datasets.NewLoader(ds, datasets.LoaderOptions{BatchSize: 256, Shuffle: true, Seed: 0, Workers: 2,
		Transform: datasets.InputTransform(data, ds.Shape(), h, w)})
	if err != nil {
		return nil, 0, err
	}
	it := l.Epoch(context.Background(), 0)
	defer it.Close()
	var out []float32
	got := 0
	for got < n {
		b, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		s := torch.NewScope()
		b.MoveTo(s)
		k := min(int(b.X.Size(0)), n-got)
		v, err := InputValues(b.X.Narrow(0, 0, int64(k)))
		s.Close()
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v...)
		got += k
	}
	return out, got, nil
}
