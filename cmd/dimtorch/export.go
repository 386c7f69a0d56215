package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/export"
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
				imgs, n, err := export.CalibrationImages(meta.Config.Data, meta.Config.DataDir, c.Int("calibration-images"), in[1], in[2])
				if err != nil {
					return err
				}
				how := fmt.Sprintf("min-max over %d %s training images", n, meta.Config.Data)
				if m, err = export.QuantizeCalibrated(m, imgs, n, c.String("onnxruntime-lib"), how); err != nil {
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
	o := eval.EmbedOptions{Backend: c.String("backend"), Model: c.String("model"), Library: c.String("onnxruntime-lib"),
		Output: c.String("output"), Data: c.String("data"), DataDir: c.String("data-dir"), Split: c.String("split"),
		Limit: c.Int("limit"), BatchSize: c.Int("batch-size"), Threads: c.Int("threads"), Device: c.String("device")}
	if o.Backend == "torch" && c.String("checkpoint") != "" {
		enc, _, err := train.LoadEncoder(c.String("checkpoint"))
		if err != nil {
			return err
		}
		defer nn.Free(enc)
		o.Encoder = enc
	}
	rows, err := eval.EmbedDataset(context.Background(), o)
	if err != nil {
		return err
	}
	if err := eval.WriteRows(c.String("out"), rows); err != nil {
		return err
	}
	log := logger(c)
	log.Info().Int("images", len(rows)).Str("file", c.String("out")).Msg("embedded")
	return nil
}
