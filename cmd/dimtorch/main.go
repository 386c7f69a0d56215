// Command dimtorch trains Deep InfoMax encoders on libtorch, evaluates them,
// exports them to ONNX and embeds images with them.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
	"github.com/urfave/cli/v2"
)

// version is set at link time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	app := newApp()
	if err := app.Run(hoistFlags(app, os.Args)); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "dimtorch:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "dimtorch",
		Usage:   "Deep InfoMax in Go on libtorch: train, evaluate, export to ONNX, embed",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"DIMTORCH_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Value: "console", Usage: "console or json", EnvVars: []string{"DIMTORCH_LOG_FORMAT"}},
		},
		Before: func(c *cli.Context) error {
			lvl, err := zerolog.ParseLevel(c.String("log-level"))
			if err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			zerolog.SetGlobalLevel(lvl)
			if err := checkChoice(c, "log-format", "console", "json"); err != nil {
				return err
			}
			log.Logger = logger(c) // the libraries' few one-time warnings, in the command's format
			return nil
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main reports errors and exit codes
		Commands: []*cli.Command{
			versionCommand(),
			envCommand(),
			trainCommand(),
			evalCommand(),
			reportCommand(),
			exportCommand(),
			embedCommand(),
			serveCommand(),
			indexCommand(),
			dataCommand(),
			benchCommand(),
		},
	}
}

// logger returns the process logger configured by the global flags.
func logger(c *cli.Context) zerolog.Logger {
	if c.String("log-format") == "json" {
		return zerolog.New(os.Stderr).With().Timestamp().Logger()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly,
		NoColor: !isatty.IsTerminal(os.Stderr.Fd())}).With().Timestamp().Logger()
}
