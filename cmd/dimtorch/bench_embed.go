package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"time"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/urfave/cli/v2"
)

func benchEmbedCommand() *cli.Command {
	return &cli.Command{
		Name:  "embed",
		Usage: "time inference through the embed package (onnxruntime): batch-1 latency and batch-B throughput",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "encoder", Value: "dcgan32", Usage: "export this encoder, randomly initialised, and time it"},
			&cli.IntFlag{Name: "channels", Value: 3},
			&cli.StringFlag{Name: "model", Usage: "time this ONNX file instead (e.g. PyTorch's export of the same architecture)"},
			&cli.BoolFlag{Name: "int8", Usage: "quantise the exported encoder to int8 (QDQ, as dimtorch export --int8) before timing it"},
			&cli.IntFlag{Name: "batch-size", Value: 256},
			&cli.IntFlag{Name: "threads", Value: 2},
			&cli.IntFlag{Name: "b1-runs", Value: 300},
			&cli.IntFlag{Name: "batch-runs", Value: 20},
			&cli.StringFlag{Name: "onnxruntime-lib"},
			&cli.BoolFlag{Name: "json"},
		},
		Action: benchEmbed,
	}
}

type benchEmbedResult struct {
	Model        string  `json:"model"`
	Threads      int     `json:"threads"`
	BatchSize    int     `json:"batch_size"`
	B1P50MS      float64 `json:"b1_p50_ms"`
	B1P90MS      float64 `json:"b1_p90_ms"`
	ImagesPerSec float64 `json:"images_per_sec"`
}

func benchEmbed(c *cli.Context) error {
	path := c.String("model")
	name := path
	if path == "" {
		p, cleanup, err := randomModel(c.String("encoder"), c.Int("channels"), c.Bool("int8"), c.String("onnxruntime-lib"))
		if err != nil {
			return err
		}
		defer cleanup()
		path = p
		name = "dimtorch export of " + c.String("encoder")
		if c.Bool("int8") {
			name += " (int8)"
		}
	}
	m, err := embed.Open(path, embed.Options{Library: c.String("onnxruntime-lib"), Threads: c.Int("threads")})
	if err != nil {
		return err
	}
	defer m.Close()
	ch, h, w := m.InputShape()
	per := ch * h * w
	rng := rand.New(rand.NewPCG(1, 2))
	batch := c.Int("batch-size")
	data := make([]float32, batch*per)
	for i := range data {
		data[i] = rng.Float32()
	}
	// Batch-1 latency.
	for i := 0; i < 20; i++ {
		if _, err := m.EmbedBatch(data[:per], 1); err != nil {
			return err
		}
	}
	lat := make([]float64, c.Int("b1-runs"))
	for i := range lat {
		t0 := time.Now()
		if _, err := m.EmbedBatch(data[:per], 1); err != nil {
			return err
		}
		lat[i] = float64(time.Since(t0).Microseconds()) / 1000
	}
	sort.Float64s(lat)
	// Throughput at batch B.
	if _, err := m.EmbedBatch(data, batch); err != nil {
		return err
	}
	t0 := time.Now()
	runs := c.Int("batch-runs")
	for i := 0; i < runs; i++ {
		if _, err := m.EmbedBatch(data, batch); err != nil {
			return err
		}
	}
	r := benchEmbedResult{Model: name, Threads: c.Int("threads"), BatchSize: batch,
		B1P50MS: lat[len(lat)/2], B1P90MS: lat[len(lat)*9/10],
		ImagesPerSec: float64(runs*batch) / time.Since(t0).Seconds()}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	fmt.Printf("%s: batch 1 median %.3f ms (p90 %.3f), batch %d: %.0f images/s, %d threads\n", r.Model, r.B1P50MS, r.B1P90MS, batch, r.ImagesPerSec, r.Threads)
	return nil
}
