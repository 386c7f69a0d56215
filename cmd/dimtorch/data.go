package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
