package main

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
	"github.com/dimtorch/dimtorch/train"
	"github.com/urfave/cli/v2"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write a trained encoder as an ONNX model (float32 NCHW input in [0, 1], dynamic batch)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "onnx", Usage: "ONNX format (the only one)", Value: true},
			&cli.StringFlag{Name: "checkpoint", Usage: "run directory of a trained encoder", Required: true},
			&cli.StringFlag{Name: "out", Usage: "the .onnx file to write", Required: true},
			&cli.StringFlag{Name: "outputs", Value: "y", Usage: "comma-separated outputs: y, fc, conv, local"},
			&cli.BoolFlag{Name: "int8", Usage: "static int8 quantisation (QDQ: int8 weights per output channel, uint8 activations calibrated on training images)"},
			&cli.IntFlag{Name: "calibration-images", Value: 512, Usage: "training images whose activation ranges calibrate --int8"},
			&cli.StringFlag{Name: "onnxruntime-lib", Usage: "path of the onnxruntime library (calibration runs the float model)"},
		},
		Action: func(c *cli.Context) error {
			enc, meta, err := train.LoadEncoder(c.String("checkpoint"))
			if err != nil {
				return err
			}
			defer nn.Free(enc)
			cfg, _ := json.Marshal(meta.Config)
			spec, _ := json.Marshal(enc.Spec())
			in := enc.Spec().Input
			m, err := export.Model(enc, export.Options{
				Outputs:         strings.Split(c.String("outputs"), ","),
				ProducerVersion: version,
				Data:            meta.Config.Data, // the "data" entry, and the preprocessing recorded from it
				Metadata: map[string]string{
					"dimtorch_version": version, "libtorch_version": torch.Version(), "encoder": enc.Spec().Name,
					"input":           fmt.Sprintf("float32 [N, %d, %d, %d] in [0, 1]", in[0], in[1], in[2]),
					"training_config": string(cfg), "spec": string(spec),
				},
			})
			if err != nil {
				return err
			}
			log := logger(c)
			if c.Bool("int8") {
				if c.Int("calibration-images") < 1 {
					return fmt.Errorf("--calibration-images %d: must be at least 1", c.Int("calibration-images"))
				}
				imgs, n, err := calibrationImages(meta.Config.Data, meta.Config.DataDir, c.Int("calibration-images"), in[1], in[2])
				if err != nil {
					return err
				}
				how := fmt.Sprintf("min-max over %d %s training images", n, meta.Config.Data)
				if m, err = quantizeModel(m, imgs, n, c.String("onnxruntime-lib"), how); err != nil {
					return err
				}
				log.Info().Int("calibration_images", n).Msg("quantised to int8")
			}
			if err := export.Write(c.String("out"), m); err != nil {
				return err
			}
			log.Info().Str("file", c.String("out")).Str("encoder", enc.Spec().Name).Str("outputs", c.String("outputs")).Bool("int8", c.Bool("int8")).Msg("exported")
			return nil
		},
	}
}

func embedCommand() *cli.Command {
	return &cli.Command{
		Name:  "embed",
		Usage: "embed a dataset's images with an exported model (onnxruntime) or a checkpoint (libtorch)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "the .onnx file (backend onnx)"},
			&cli.StringFlag{Name: "backend", Value: "onnx", Usage: "onnx or torch"},
			&cli.StringFlag{Name: "checkpoint", Usage: "run directory (backend torch)"},
			&cli.StringFlag{Name: "output", Value: "y", Usage: "which output to write (y, fc, conv, local)"},
			&cli.StringFlag{Name: "data", Value: "fashion-mnist"},
			&cli.StringFlag{Name: "data-dir"},
			&cli.StringFlag{Name: "split", Value: "test"},
			&cli.IntFlag{Name: "limit", Usage: "first N images (0: all)"},
			&cli.IntFlag{Name: "batch-size", Value: 256},
			&cli.IntFlag{Name: "threads", Value: 2},
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "cpu, cuda or cuda:N (backend torch; onnxruntime runs on the CPU)"},
			&cli.StringFlag{Name: "onnxruntime-lib", Usage: "path of the onnxruntime library"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "OUT.npy (float32 [N, dim]), OUT.csv or OUT.jsonl"},
		},
		Action: runEmbed,
	}
}

func runEmbed(c *cli.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	split, err := datasets.ParseSplit(c.String("split"))
	if err != nil {
		return err
	}
	ds, err := datasets.Open(c.String("data"), split, c.String("data-dir"))
	if err != nil {
		return err
	}
	defer datasets.Close(ds)
	ds = datasets.Subset(ds, c.Int("limit"))
	var h, w int
	var run func(x *torch.Tensor) ([][]float32, error) // x: [N, C, H, W] in [-1, 1]
	dev, err := torch.OpenDevice(c.String("device"))
	if err != nil {
		return err
	}
	if dev.Type != torch.CPUDevice && c.String("backend") != "torch" {
		return fmt.Errorf("--device %s: only --backend torch runs on a GPU (onnxruntime runs on the CPU here)", dev)
	}
	switch c.String("backend") {
	case "onnx":
		if c.String("model") == "" {
			return fmt.Errorf("--backend onnx needs --model FILE.onnx")
		}
		m, err := embed.Open(c.String("model"), embed.Options{Library: c.String("onnxruntime-lib"), Threads: c.Int("threads"), Output: c.String("output")})
		if err != nil {
			return err
		}
		defer m.Close()
		_, h, w = m.InputShape()
		run = func(x *torch.Tensor) ([][]float32, error) {
			v, err := export.InputValues(x)
			if err != nil {
				return nil, err
			}
			return m.EmbedBatch(v, int(x.Size(0)))
		}
	case "torch":
		if c.String("checkpoint") == "" {
			return fmt.Errorf("--backend torch needs --checkpoint DIR")
		}
		if err := torch.SetNumThreads(c.Int("threads")); err != nil {
			return err
		}
		enc, _, err := train.LoadEncoder(c.String("checkpoint"))
		if err != nil {
			return err
		}
		defer nn.Free(enc)
		if err := nn.MoveTo(enc, dev); err != nil {
			return err
		}
		h, w = enc.Spec().Input[1], enc.Spec().Input[2]
		run = func(x *torch.Tensor) ([][]float32, error) {
			var out [][]float32
			var err error
			torch.NoGrad(func() {
				if err = models.CheckInput(enc, x); err != nil {
					return
				}
				t, e := enc.Encode(x).Tap(c.String("output"))
				if e != nil {
					err = e
					return
				}
				t = t.Flatten(1, -1)
				v, e := t.Float32s()
				if e != nil {
					err = e
					return
				}
				d := int(t.Size(1))
				for i := 0; i < int(t.Size(0)); i++ {
					out = append(out, v[i*d:(i+1)*d])
				}
			})
			return out, err
		}
	default:
		return fmt.Errorf("unknown --backend %q (want onnx or torch)", c.String("backend"))
	}
	l, err := datasets.NewLoader(ds, datasets.LoaderOptions{BatchSize: c.Int("batch-size"), Workers: 2, Transform: datasets.InputTransform(c.String("data"), ds.Shape(), h, w), Device: dev})
	if err != nil {
		return err
	}
	it := l.Epoch(context.Background(), 0)
	defer it.Close()
	var rows [][]float32
	for {
		b, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		s := torch.NewScope()
		b.MoveTo(s)
		v, err := run(b.X)
		s.Close()
		if err != nil {
			return err
		}
		rows = append(rows, v...)
	}
	if err := writeRows(c.String("out"), rows); err != nil {
		return err
	}
	log := logger(c)
	log.Info().Int("images", len(rows)).Str("file", c.String("out")).Msg("embedded")
	return nil
}

// writeRows writes embeddings as .npy, .csv or .jsonl by the file's extension.
func writeRows(path string, rows [][]float32) error {
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
