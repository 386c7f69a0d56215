package main

import (
	"encoding/json"
	"github.com/dimtorch/dimtorch/internal/testref"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets/datasetstest"
)

// Every baseline trains from the command line, and its checkpoint is one
// that eval (linear probe on conv, fc and Y) and export (ONNX, accepted by
// the checker) take as they take DIM's; DIM's own settings given with a
// baseline are refused by name.
func TestBaselineCommands(t *testing.T) {
	data := t.TempDir()
	if err := datasetstest.WriteMNISTLike(data, 256, 100, 4); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"vae", "aae", "bigan", "nat", "cpc"} {
		t.Run(m, func(t *testing.T) {
			dir := t.TempDir()
			runDir := filepath.Join(dir, "run")
			if _, stderr, code := run(t, "train", "--method", m, "--data", "mnist", "--data-dir", data, "--epochs", "1",
				"--batch-size", "32", "--threads", "1", "--out", runDir); code != 0 {
				t.Fatalf("train: %s", stderr)
			}
			// The run's config.yaml names the method and only the settings it uses.
			if y := string(readFile(t, filepath.Join(runDir, "config.yaml"))); !strings.Contains(y, "method: "+m) ||
				strings.Contains(y, "estimator:") || (m == "cpc") != strings.Contains(y, "cpc-rows:") {
				t.Fatalf("config.yaml:\n%s", y)
			}
			out, stderr, code := run(t, "eval", "--checkpoint", runDir, "--data", "mnist", "--data-dir", data, "--probe", "linear",
				"--features", "conv,fc,y", "--limit-train", "200", "--json")
			if code != 0 {
				t.Fatalf("eval: %s", stderr)
			}
			var accs map[string]any
			if err := json.Unmarshal([]byte(lastLine(out)), &accs); err != nil {
				t.Fatalf("eval printed %q", out)
			}
			for _, f := range []string{"conv", "fc", "y"} {
				if v, ok := accs[f].(float64); !ok || v <= 0 || v > 1 {
					t.Fatalf("%s: %v", f, accs[f])
				}
			}
			model := filepath.Join(dir, "enc.onnx")
			if _, stderr, code := run(t, "export", "--onnx", "--checkpoint", runDir, "--out", model); code != 0 {
				t.Fatalf("export: %s", stderr)
			}
			testref.CheckONNX(t, model)
		})
	}
	_, stderr, code := run(t, "train", "--method", "vae", "--estimator", "nce", "--mi-units", "64", "--data", "mnist", "--data-dir", data,
		"--out", filepath.Join(t.TempDir(), "run"))
	if code == 0 || !strings.Contains(stderr, "method vae does not use --estimator (a setting of --method dim), --mi-units") {
		t.Fatalf("DIM's settings with --method vae: exit %d, %s", code, stderr)
	}
}
