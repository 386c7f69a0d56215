package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/train"
	"github.com/urfave/cli/v2"
)

// errApplied marks a run of the fuzzed command that got past
// applyConfigFile.
var errApplied = errors.New("applied")

// FuzzConfigFile: any bytes as the --config file of train or eval, through
// applyConfigFile as the commands run it, then (for train) into a
// train.Config as trainRun reads it. It never panics; a file it refuses
// gives a non-empty error.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("lr: 0.0002\nbatch-size: 32\nestimator: nce\naugment: true\nseed: 7\n"), false)
	f.Add([]byte("# a run's config.yaml\nmethod: dim\ny-dim: 16\nlr-schedule: cosine\ncrop-scale: 0.6\n"), false)
	f.Add([]byte("probe: knn\nthreads: 2\n"), true)
	f.Add([]byte(""), false)
	f.Add([]byte("lr: 0.0002\nbatch-size: 3"), false)          // truncated
	f.Add([]byte("lr: 0.0002\nbatch-size: [32, 64]\n"), false) // not a single value
	f.Add([]byte("lr: 1\nlr: 2\n"), false)                     // given twice
	f.Add([]byte("lr: nope\n"), false)                         // invalid value
	f.Add([]byte("learning-rate: 0.1\n"), false)               // not a flag
	f.Add([]byte("config: other.yaml\n"), false)               // not allowed
	f.Add([]byte("- lr\n- 0.1\n"), false)                      // not a mapping
	f.Add([]byte("\tlr: : 0.1\n{"), false)                     // corrupt
	f.Add([]byte("a: &x [*x]\nlr: *x\n"), false)               // an alias cycle
	f.Add([]byte("? [lr]\n: 1\nepochs: ~\nseed: !!binary aGk=\n"), false)
	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, b []byte, eval bool) {
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var cmd *cli.Command
		if eval {
			cmd = evalCommand()
		} else {
			cmd = &cli.Command{Name: "train", Flags: trainFlags()}
		}
		cmd.Action = func(c *cli.Context) error {
			if err := applyConfigFile(c); err != nil {
				return err
			}
			if !eval {
				_, _ = train.NewConfig(settingValues(c)) // an invalid configuration is an error, never a panic
			}
			return errApplied
		}
		app := &cli.App{Name: "dimtorch", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard,
			ExitErrHandler: func(*cli.Context, error) {}}
		args := []string{"dimtorch", cmd.Name, "--config", p}
		if !eval {
			args = append(args, "--out", filepath.Join(filepath.Dir(p), "run")) // required; nothing is written
		}
		err := app.Run(args)
		if err == nil {
			t.Fatal("the action did not run")
		}
		if !errors.Is(err, errApplied) && err.Error() == "" {
			t.Fatal("an empty error")
		}
	})
}
