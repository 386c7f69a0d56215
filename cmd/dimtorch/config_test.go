package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets/datasetstest"
	"github.com/dimtorch/dimtorch/train"
	"github.com/urfave/cli/v2"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// settingsOf returns config.yaml without its comment lines.
func settingsOf(t *testing.T, run string) string {
	var keep []string
	for _, l := range strings.Split(string(readFile(t, filepath.Join(run, train.ConfigFile))), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// A run's config.yaml repeats it bit for bit with --config; flags on the
// command line override the file; --resume applies the flags that may
// change and refuses the others, naming each.
func TestConfigFileRepeatsRunAndResumeFlags(t *testing.T) {
	data := t.TempDir()
	if err := datasetstest.WriteMNISTLike(data, 256, 64, 3); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	// Settings away from the defaults, --y-dim among them.
	_, stderr, code := run(t, "train", "--data", "mnist", "--data-dir", data, "--epochs", "1", "--mi-units", "32",
		"--batch-size", "32", "--threads", "1", "--y-dim", "16", "--estimator", "nce", "--lr", "2e-4", "--crop-scale", "0.6",
		"--lr-schedule", "cosine", "--seed", "7", "--out", a)
	if code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	cfgA := settingsOf(t, a)
	for _, want := range []string{"y-dim: 16\n", "estimator: nce\n", "lr: 0.0002\n", "augment: resized-crops\n", "seed: 7\n", "gamma: 0.1\n"} {
		if !strings.Contains(cfgA, want) {
			t.Fatalf("config.yaml lacks %q:\n%s", want, cfgA)
		}
	}
	b := filepath.Join(dir, "b")
	if _, stderr, code := run(t, "train", "--config", filepath.Join(a, train.ConfigFile), "--out", b); code != 0 {
		t.Fatalf("train --config: %s", stderr)
	}
	for _, f := range []string{"checkpoint/model.safetensors", "checkpoint/optim.safetensors"} {
		if !bytes.Equal(readFile(t, filepath.Join(a, f)), readFile(t, filepath.Join(b, f))) {
			t.Fatalf("%s differs between the run and its repetition from config.yaml", f)
		}
	}
	if settingsOf(t, b) != cfgA {
		t.Fatalf("the repetition's config.yaml differs:\n%s\nvs\n%s", settingsOf(t, b), cfgA)
	}

	// The command line wins over the file.
	c := filepath.Join(dir, "c")
	if _, stderr, code := run(t, "train", "--config", filepath.Join(a, train.ConfigFile), "--lr", "3e-4", "--limit", "64", "--out", c); code != 0 {
		t.Fatalf("train --config --lr: %s", stderr)
	}
	if s := settingsOf(t, c); !strings.Contains(s, "lr: 0.0003\n") || !strings.Contains(s, "y-dim: 16\n") {
		t.Fatalf("override: %s", s)
	}

	// --resume with flags that would change what a step computes: refused, each named.
	_, stderr, code = run(t, "train", "--resume", "--out", a, "--lr", "0.5", "--batch-size", "8", "--mi-units", "999", "--estimator", "jsd", "--seed", "7")
	if code == 0 {
		t.Fatal("--resume with changed settings succeeded")
	}
	for _, want := range []string{"--lr 0.5 (the run's: 0.0002)", "--batch-size 8 (the run's: 32)", "--mi-units 999", "--estimator jsd (the run's: nce)", "--config"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("the refusal does not say %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "--seed") {
		t.Fatalf("--seed has the run's value and is not a change:\n%s", stderr)
	}
	// Those that may change are applied, and config.yaml follows.
	if _, stderr, code := run(t, "train", "--resume", "--out", a, "--epochs", "2", "--log-every", "3", "--lr", "2e-4"); code != 0 {
		t.Fatalf("--resume --epochs 2: %s", stderr)
	}
	if s := settingsOf(t, a); !strings.Contains(s, "epochs: 2\n") || !strings.Contains(s, "log-every: 3\n") {
		t.Fatalf("config.yaml after extending the run: %s", s)
	}
	// Resuming a finished run trains nothing and says so.
	if stdout, stderr, code := run(t, "train", "--resume", "--out", a); code != 0 || !strings.Contains(stdout, "nothing to train") || !strings.Contains(stdout, "its 2 epochs") {
		t.Fatalf("--resume of a finished run: %d %q %s", code, stdout, stderr)
	}
}

// A configuration file with a mistake is an error naming the file, the line
// and the mistake.
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ yaml, want string }{
		{"lr: 0.001\nmi_units: 32\n", `:2: "mi_units" is not a flag of train (did you mean mi-units?)`},
		{"batch-size: many\n", `:1: batch-size: invalid value "many"`},
		{"epochs: [1, 2]\n", ":1: epochs wants a single value"},
		{"- lr\n", "want a mapping"},
		{"lr: 1\nlr: 2\n", ":2: lr is given twice"},
		{"lr: [\n", "not YAML"},
	}
	for i, c := range cases {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := run(t, "train", "--config", path, "--out", filepath.Join(dir, "run"))
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("case %d (%q): code %d, stderr %q, want %q", i, c.yaml, code, stderr, c.want)
		}
	}
	if _, stderr, code := run(t, "train", "--config", filepath.Join(dir, "missing.yaml"), "--out", filepath.Join(dir, "run")); code == 0 || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("a missing file: %q", stderr)
	}
	// eval reads the same files.
	path := filepath.Join(dir, "eval.yaml")
	if err := os.WriteFile(path, []byte("probe: forest\npixels: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run(t, "eval", "--config", path); code == 0 || !strings.Contains(stderr, `--probe "forest": want one of knn, linear, mlp, svm`) {
		t.Errorf("eval --config with an unknown probe: %q", stderr)
	}
}

// Values that mean nothing are errors, not silent defaults.
func TestMeaninglessValuesAreRefused(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	cases := [][]string{
		{"train", "--mi-units", "0", "--out", out},
		{"train", "--y-dim", "0", "--out", out},
		{"train", "--workers", "0", "--out", out},
		{"train", "--log-every", "0", "--out", out},
		{"train", "--mode", "both", "--out", out},
		{"train", "--lr-schedule", "step", "--out", out},
		{"eval", "--pixels", "--c", "0"},
		{"eval", "--pixels", "--k", "0"},
		{"eval", "--pixels", "--epochs", "-1"},
		{"eval", "--pixels", "--probe-lr", "-1"},
		{"--log-format", "xml", "version"},
	}
	for _, args := range cases {
		_, stderr, code := run(t, args...)
		if code == 0 || !strings.Contains(stderr, "dimtorch:") {
			t.Errorf("dimtorch %v: code %d, %q", args, code, stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused run created its directory")
	}
}

// Every declared setting of a run is a flag of train: given on the command
// line (or in --config, which sets the same flags) with a value other than
// its default, it reaches the configuration; left out, the configuration
// has the declared default.
func TestEverySettingIsAFlag(t *testing.T) {
	def := train.Defaults()
	for _, s := range def.Settings() {
		var text string
		var want any
		switch v := s.Value().(type) {
		case string:
			text, want = v+"-x", v+"-x"
		case int:
			text, want = fmt.Sprint(v+3), v+3
		case float64:
			text, want = fmt.Sprint(v+0.5), v+0.5
		case bool:
			text, want = fmt.Sprint(!v), !v
		case uint64:
			text, want = fmt.Sprint(v+9), v+9
		default:
			t.Fatalf("%s: type %T", s.Name, v)
		}
		var got map[string]any
		cmd := &cli.Command{Name: "train", Flags: trainFlags(), Action: func(c *cli.Context) error {
			got = settingValues(c)
			return nil
		}}
		app := &cli.App{Name: "dimtorch", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard}
		if err := app.Run([]string{"dimtorch", "train", "--" + s.Name + "=" + text, "--out", "x"}); err != nil {
			t.Fatalf("--%s=%s: %v", s.Name, text, err)
		}
		if len(got) != 1 || got[s.Name] != want {
			t.Fatalf("--%s=%s gave %v", s.Name, text, got)
		}
		c := def
		cs := c.Settings()
		for _, x := range cs {
			if x.Name == s.Name {
				if err := x.Set(got[s.Name]); err != nil || x.Value() != want {
					t.Fatalf("--%s: set %v: %v", s.Name, x.Value(), err)
				}
			}
		}
	}
	// Left out: the declared defaults (the flags' own defaults agree).
	cmd := &cli.Command{Name: "train", Flags: trainFlags(), Action: func(c *cli.Context) error {
		for _, s := range def.Settings() {
			var v any
			switch s.Value().(type) {
			case string:
				v = c.String(s.Name)
			case int:
				v = c.Int(s.Name)
			case float64:
				v = c.Float64(s.Name)
			case bool:
				v = c.Bool(s.Name)
			case uint64:
				v = c.Uint64(s.Name)
			}
			if v != s.Value() && s.DefaultText == "" {
				return fmt.Errorf("--%s defaults to %v, the configuration to %v", s.Name, v, s.Value())
			}
		}
		return nil
	}}
	app := &cli.App{Name: "dimtorch", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard}
	if err := app.Run([]string{"dimtorch", "train", "--out", "x"}); err != nil {
		t.Fatal(err)
	}
}
