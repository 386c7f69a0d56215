package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"github.com/dimtorch/dimtorch/torch/optim"
	"github.com/urfave/cli/v2"
)

// allreduceRow is what data-parallel training all-reduces per step for one
// encoder: the float32 gradients of the encoder and DIM(L)'s MI heads, of
// the prior's discriminator and of the online probe.
type allreduceRow struct {
	Encoder     string  `json:"encoder"`
	MIUnits     int     `json:"mi_units"`
	Params      int64   `json:"params"`
	Bytes       int64   `json:"bytes_per_step"`
	Ethernet10G float64 `json:"ms_10gbe"`  // ring all-reduce at 1.25 GB/s per link
	NVLink      float64 `json:"ms_nvlink"` // ring all-reduce at 300 GB/s per link
}

func benchAllreduceCommand() *cli.Command {
	return &cli.Command{
		Name: "allreduce",
		Usage: "bytes of gradients each data-parallel step all-reduces, per encoder, and the time a ring all-reduce of them " +
			"takes on 10 Gb/s Ethernet and on NVLink (from the sizes; not a measurement of the network)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mi-units", Value: "256,2048", Usage: "comma-separated MI widths"},
			&cli.IntFlag{Name: "world", Value: 8, Usage: "processes in the ring"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per row"},
		},
		Action: func(c *cli.Context) error {
			w := float64(c.Int("world"))
			if w < 2 {
				return fmt.Errorf("--world %v: at least 2", w)
			}
			units, err := positiveList(c, "mi-units", "a positive width")
			if err != nil {
				return err
			}
			if !c.Bool("json") {
				fmt.Printf("ring all-reduce over %v processes: each sends and receives 2(W-1)/W of the bytes\n", w)
				fmt.Printf("%-18s %8s %12s %14s %12s %12s\n", "encoder", "mi-units", "parameters", "bytes/step", "10GbE ms", "NVLink ms")
			}
			for _, name := range models.Names() {
				for _, u := range units {
					row, err := allreduceSize(name, u)
					if err != nil {
						return err
					}
					moved := 2 * (w - 1) / w * float64(row.Bytes)
					row.Ethernet10G = moved / 1.25e9 * 1e3
					row.NVLink = moved / 300e9 * 1e3
					if c.Bool("json") {
						if err := json.NewEncoder(os.Stdout).Encode(row); err != nil {
							return err
						}
						continue
					}
					fmt.Printf("%-18s %8d %12d %14d %12.2f %12.3f\n", row.Encoder, row.MIUnits, row.Params, row.Bytes, row.Ethernet10G, row.NVLink)
				}
			}
			return nil
		},
	}
}

func allreduceSize(name string, units int) (allreduceRow, error) {
	in := 3
	if name == "basic28" {
		in = 1
	}
	enc, err := models.New(models.Config{Name: name, InChannels: in, YDim: 64})
	if err != nil {
		return allreduceRow{}, err
	}
	defer nn.Free(enc)
	a, b, g := objectives.DefaultWeights("local")
	d, err := objectives.NewDIM(objectives.DIMConfig{Mode: "local", Estimator: "jsd", Scorer: "dot", Alpha: a, Beta: b, Gamma: g,
		MIUnits: units, GPWeight: 1, Views: 1}, enc.Spec())
	if err != nil {
		return allreduceRow{}, err
	}
	defer nn.Free(d)
	p, err := objectives.NewPrior(int64(enc.Spec().Y), optim.AdamDefaults(1e-4), 1, torch.CPU)
	if err != nil {
		return allreduceRow{}, err
	}
	defer p.Free()
	y := int64(enc.Spec().Y)
	n := nn.NumParameters(enc) + nn.NumParameters(d) + nn.NumParameters(p.D) + y*10 + 10 // + a 10-class probe
	return allreduceRow{Encoder: name, MIUnits: units, Params: n, Bytes: 4 * n}, nil
}
