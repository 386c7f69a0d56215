package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets/datasetstest"
)

// The eval command lines on a small trained run and on the
// baselines: one JSON object with a key per feature; then report and pictures.
func TestEvalAndReportCommands(t *testing.T) {
	data := t.TempDir()
	if err := datasetstest.WriteMNISTLike(data, 1024, 300, 5); err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(t.TempDir(), "run")
	if _, stderr, code := run(t, "train", "--data", "mnist", "--data-dir", data, "--epochs", "1", "--mi-units", "32",
		"--batch-size", "32", "--lr", "1e-3", "--threads", "1", "--out", runDir); code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	accs := func(args ...string) map[string]any {
		t.Helper()
		out, stderr, code := run(t, append([]string{"eval"}, args...)...)
		if code != 0 {
			t.Fatalf("eval %v: %s", args, stderr)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(lastLine(out)), &m); err != nil {
			t.Fatalf("eval %v printed %q", args, out)
		}
		return m
	}
	trained := accs("--checkpoint", runDir, "--data", "mnist", "--data-dir", data, "--probe", "linear", "--features", "conv,fc,y",
		"--limit-train", "800", "--plots", "--ndm", "--measure-steps", "50", "--json")
	for _, f := range []string{"conv", "fc", "y"} {
		v, ok := trained[f].(float64)
		if !ok || v < 0 || v > 1 {
			t.Fatalf("%s: %v", f, trained[f])
		}
	}
	if trained["y"].(float64) < 0.9 {
		t.Fatalf("the synthetic classes are easy: y accuracy %v", trained["y"])
	}
	untrained := accs("--random-init", "--encoder", "basic28", "--seed", "1", "--data", "mnist", "--data-dir", data,
		"--probe", "knn", "--features", "y", "--limit-train", "800", "--json")
	if _, ok := untrained["y"].(float64); !ok || len(untrained) < 2 {
		t.Fatalf("random-init: %v", untrained)
	}
	pix := accs("--pixels", "--data", "mnist", "--data-dir", data, "--probe", "linear", "--limit-train", "800", "--json")
	if v, ok := pix["pixels"].(float64); !ok || v < 0.9 {
		t.Fatalf("pixels: %v", pix)
	}
	for _, f := range []string{"eval/linear-conv-fc-y-n800.json", "eval/linear-conv-fc-y-n800.md", "eval/y-pca.png", "eval/neighbours.png"} {
		if st, err := os.Stat(filepath.Join(runDir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	table, stderr, code := run(t, "report", runDir)
	if code != 0 || !strings.Contains(table, "| conv | fc | Y |") || !strings.Contains(table, "| 800 |") || !strings.Contains(table, "linear") {
		t.Fatalf("report: %s %s", table, stderr)
	}
	if _, stderr, code := run(t, "eval", "--checkpoint", t.TempDir(), "--json"); code == 0 || !strings.Contains(stderr, "no checkpoint") {
		t.Fatalf("eval of a directory without a checkpoint: %s", stderr)
	}
	if _, stderr, code := run(t, "eval", "--pixels", "--random-init"); code == 0 || !strings.Contains(stderr, "exactly one") {
		t.Fatalf("conflicting sources: %s", stderr)
	}
}
