package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/urfave/cli/v2"
)

func dataCommand() *cli.Command {
	dataDir := &cli.StringFlag{Name: "data-dir", Usage: "directory holding the dataset (default: " + datasets.DebianDataDir + "/NAME, then $" + datasets.EnvDataDir + "/NAME, then the user cache)"}
	return &cli.Command{
		Name:  "data",
		Usage: "inspect and download datasets",
		Subcommands: []*cli.Command{
			dataShardCommand(dataDir),
			{
				Name:      "info",
				Usage:     "split sizes, image shape and classes of a dataset",
				ArgsUsage: "NAME|folder:PATH",
				Flags:     []cli.Flag{dataDir, &cli.BoolFlag{Name: "json", Usage: "print one JSON object"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("data info needs one dataset name (%s, or folder:PATH)", strings.Join(datasets.Names(), ", "))
					}
					info, err := datasets.Describe(c.Args().First(), c.String("data-dir"))
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return json.NewEncoder(os.Stdout).Encode(info)
					}
					fmt.Printf("dataset  %s\n", info.Name)
					if info.Dir != "" {
						fmt.Printf("files    %s\n", info.Dir)
					}
					fmt.Printf("images   %v (channels x height x width)\n", info.Shape)
					for _, s := range info.Splits {
						fmt.Printf("%-9s%d images\n", s.Split, s.Images)
					}
					if info.NumClasses > 0 {
						fmt.Printf("classes  %d: %s\n", info.NumClasses, strings.Join(info.Classes, ", "))
					} else {
						fmt.Printf("classes  none (unlabeled)\n")
					}
					return nil
				},
			},
			{
				Name:      "download",
				Usage:     "download a dataset's official files, verify their SHA-256 and unpack them (resumable)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", Usage: "where to put it (default: the user cache, where every command looks)"},
					&cli.StringFlag{Name: "mirror", Usage: "base URL serving the same file names, instead of the official hosts"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("data download needs one dataset name")
					}
					name := strings.ToLower(c.Args().First())
					dir := c.String("data-dir")
					if dir == "" {
						cache, err := datasets.CacheDir()
						if err != nil {
							return err
						}
						dir = filepath.Join(cache, name)
					}
					ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
					defer stop()
					log := logger(c)
					last := time.Now()
					err := datasets.Download(ctx, name, dir, datasets.DownloadOptions{
						Mirror: c.String("mirror"),
						Progress: func(file string, done, total int64) {
							if time.Since(last) > 2*time.Second || done == total {
								last = time.Now()
								log.Info().Str("file", file).Int64("bytes", done).Int64("of", total).Msg("downloading")
							}
						},
					})
					if err != nil {
						if ctx.Err() != nil {
							return fmt.Errorf("interrupted: %w (run the command again to resume)", context.Cause(ctx))
						}
						return err
					}
					log.Info().Str("dataset", name).Str("dir", dir).Msg("downloaded and verified")
					return nil
				},
			},
		},
	}
}

func dataShardCommand(dataDir cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "shard",
		Usage: "write a dataset's split as WebDataset-style tar shards (KEY.jpg or KEY.png, KEY.cls) with a manifest of counts and checksums",
		Description: "A folder's images go in as their own files (JPEG stays JPEG), a built-in dataset's as PNG; keys are the images' " +
			"numbers, written in an order drawn from --seed unless --shuffle=false. Shards are named PREFIX-000000.tar, ... and listed in OUT/manifest.json with their samples, bytes and SHA-256; " +
			"each is written to a temporary file and renamed when complete, the manifest last.",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Required: true, Usage: "a built-in dataset (fashion-mnist, cifar10, ...) or a folder of images, one subfolder a class (folder:PATH or a path)"},
			&cli.StringFlag{Name: "split", Value: "train"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "the directory to write the shards to (created; must hold no manifest yet)"},
			&cli.StringFlag{Name: "prefix", Usage: "shard names: PREFIX-000000.tar (default: the split)"},
			&cli.StringFlag{Name: "shard-size", Value: "1GB", Usage: "the most bytes a shard holds (B, KB, MB, GB: powers of 1000; KiB, MiB, GiB: of 1024)"},
			&cli.BoolFlag{Name: "shuffle", Value: true, Usage: "write the samples in an order drawn from --seed (keys stay the images' numbers); --shuffle=false keeps the source's order, " +
				"which for a class-per-folder tree is one class after another: a training shuffle buffer cannot mix that"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "the seed of --shuffle's order"},
			dataDir,
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unexpected arguments %v", c.Args().Slice())
			}
			size, err := parseBytes(c.String("shard-size"))
			if err != nil {
				return fmt.Errorf("--shard-size: %w", err)
			}
			split, err := datasets.ParseSplit(c.String("split"))
			if err != nil {
				return err
			}
			from := c.String("from")
			if st, err := os.Stat(from); err == nil && st.IsDir() && !strings.HasPrefix(from, "folder:") {
				from = "folder:" + from
			}
			ds, err := datasets.Open(from, split, c.String("data-dir"))
			if err != nil {
				return err
			}
			out := c.String("out")
			if _, err := os.Stat(filepath.Join(out, datasets.ShardManifestName)); err == nil {
				return fmt.Errorf("%s already holds shards (%s): give an empty directory", out, datasets.ShardManifestName)
			}
			prefix := c.String("prefix")
			if prefix == "" {
				prefix = string(split)
			}
			log := logger(c)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			start := time.Now()
			m, err := datasets.ShardsFromDataset(ctx, ds, datasets.ShardWriterOptions{Dir: out, Prefix: prefix, MaxBytes: size,
				Shuffle: c.Bool("shuffle"), Seed: c.Uint64("seed"),
				Source:   fmt.Sprintf("%s (%s)", from, split),
				Progress: func(done, total int) { log.Info().Int("samples", done).Int("of", total).Msg("sharding") }})
			if err != nil {
				return err
			}
			var bytes int64
			for _, s := range m.Shards {
				bytes += s.Bytes
			}
			log.Info().Str("out", out).Str("shards", m.Pattern).Int("samples", m.Samples).Int64("bytes", bytes).
				Str("took", time.Since(start).Round(time.Millisecond).String()).Msg("sharded")
			return nil
		},
	}
}

// parseBytes reads sizes such as 1GB, 64MiB or 1000000.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("%q: want a positive size such as 1GB, 256MiB or 1000000", s)
	}
	return int64(f * float64(mult)), nil
}
