package main

import (
	"fmt"

	"github.com/dimtorch/dimtorch/report"
	"github.com/urfave/cli/v2"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "compare runs: a Table-1-style table of their probes, with each run's curves, configuration and machine (markdown and HTML)",
		ArgsUsage: "RUN...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "write DIR/report.md, DIR/index.html and DIR/curves/*.png (default: print the markdown)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("report needs at least one run directory")
			}
			runs, err := report.Load(c.Args().Slice())
			if err != nil {
				return err
			}
			dir := c.String("out")
			if dir == "" {
				fmt.Print(report.Markdown(runs, nil))
				return nil
			}
			files, err := report.Write(dir, runs)
			if err != nil {
				return err
			}
			fmt.Print(report.Table(report.Rows(runs)))
			fmt.Printf("\nwrote %d files; open %s/index.html\n", len(files), dir)
			return nil
		},
	}
}
