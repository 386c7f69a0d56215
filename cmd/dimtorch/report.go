package main

import (
	"fmt"

	"github.com/dimtorch/dimtorch/eval"
	"github.com/urfave/cli/v2"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "gather the evaluations of runs into one comparison table (markdown)",
		ArgsUsage: "RUN...",
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("report needs at least one run directory")
			}
			runs := c.Args().Slice()
			all := make([][]*eval.Report, len(runs))
			for i, r := range runs {
				reps, err := eval.LoadReports(r)
				if err != nil {
					return err
				}
				all[i] = reps
			}
			fmt.Print(eval.Table(runs, all))
			return nil
		},
	}
}
