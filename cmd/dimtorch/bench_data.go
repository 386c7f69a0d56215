package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/urfave/cli/v2"
)

func benchDataCommand() *cli.Command {
	return &cli.Command{
		Name: "data",
		Usage: "the shard loader's throughput: images/s of batches as training takes them (read, decode, random resized crop, " +
			"flip, float32 tensors) for each target size and number of workers, over shards from dimtorch data shard",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "shards", Required: true, Usage: "a shard directory (dimtorch data shard --out DIR)"},
			&cli.StringFlag{Name: "size", Value: "32,96,224", Usage: "comma-separated target sides (random resized crops, scale 0.08-1, to SIZE x SIZE)"},
			&cli.StringFlag{Name: "workers", Value: "1,2", Usage: "comma-separated numbers of decoding goroutines"},
			&cli.IntFlag{Name: "batches", Value: 40, Usage: "batches timed per measurement (after one untimed)"},
			&cli.IntFlag{Name: "batch-size", Value: 64},
			&cli.BoolFlag{Name: "full-decode", Usage: "decode JPEGs at full size (default: libjpeg-turbo's smallest scale keeping twice the target side)"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per measurement"},
		},
		Action: func(c *cli.Context) error {
			sizes, err := positiveList(c, "size", "a positive side")
			if err != nil {
				return err
			}
			workers, err := positiveList(c, "workers", "a positive number of workers")
			if err != nil {
				return err
			}
			if c.Int("batches") < 1 || c.Int("batch-size") < 1 {
				return fmt.Errorf("--batches and --batch-size must be at least 1")
			}
			set, err := datasets.OpenShards(c.String("shards"))
			if err != nil {
				return err
			}
			if !c.Bool("json") {
				fmt.Printf("shards %s (%d samples), batches of %d, %d timed; %s\n", set.Dir, set.Len(), c.Int("batch-size"), c.Int("batches"), sysinfo.Describe())
				fmt.Printf("| size | workers | decode | images/s | images per CPU-second | cores for 10,000 images/s |\n| ---: | ---: | --- | ---: | ---: | ---: |\n")
			}
			for _, size := range sizes {
				for _, w := range workers {
					side, decode := 2*size, fmt.Sprintf("JPEG at >= %d px", 2*size)
					if c.Bool("full-decode") {
						side, decode = -1, "full size"
					}
					l, err := datasets.NewShardLoader(set, datasets.ShardLoaderOptions{LoaderOptions: datasets.LoaderOptions{
						BatchSize: c.Int("batch-size"), Shuffle: true, Seed: 1, Workers: w, DropLast: true,
						Transform: datasets.Compose(datasets.RandomResizedCrop(size, size, 0.08, 1), datasets.HorizontalFlip(0.5)),
					}, DecodeSide: side})
					if err != nil {
						return err
					}
					rate, perCPU, err := loaderRate(c.Context, l, c.Int("batches"))
					if err != nil {
						return err
					}
					if c.Bool("json") {
						_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"size": size, "workers": w, "decode": decode, "images_per_sec": rate, "images_per_cpu_second": perCPU})
						continue
					}
					fmt.Printf("| %d | %d | %s | %.0f | %.0f | %.1f |\n", size, w, decode, rate, perCPU, 10000/perCPU)
				}
			}
			return nil
		},
	}
}

// loaderRate times n batches after the first (the loader's start and its
// first shard's opening are not counted): images per second of wall time
// and per second of the process's CPU time (every goroutine: reading,
// decoding, augmenting, stacking).
func loaderRate(ctx context.Context, l *datasets.ShardLoader, n int) (rate, perCPU float64, err error) {
	it := l.Epoch(ctx, 0)
	defer it.Close()
	var start time.Time
	var cpu0 float64
	images := 0
	for i := 0; i <= n; i++ {
		b, err := it.Next()
		if err == io.EOF {
			return 0, 0, fmt.Errorf("the shards hold %d batches, fewer than the %d asked for: use --batches", i, n+1)
		}
		if err != nil {
			return 0, 0, err
		}
		if i == 0 {
			start, cpu0 = time.Now(), sysinfo.CPUSeconds()
		} else {
			images += len(b.Indices)
		}
		b.Free()
	}
	return float64(images) / time.Since(start).Seconds(), float64(images) / (sysinfo.CPUSeconds() - cpu0), nil
}
