package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/datasets/datasetstest"
	"github.com/dimtorch/dimtorch/torch"
)

func hasPyTorch() bool {
	return exec.Command("/usr/bin/python3", "-c", "import torch").Run() == nil
}

// The whole training step agrees with an independent PyTorch implementation
// (bench/train_dim.py) on the same libtorch: same seed, same initial weights,
// same losses step after step. Covered: DIM(L)-JSD; channels_last layout;
// the default configuration of dimtorch train (prior matching on, with the
// discriminator's own step and gradient penalty); infoNCE with two views and
// score clipping; the global-to-global cross-view term; the concat scorer with
// DV; bfloat16 autocast with the prior.
func TestBenchTrainMatchesPyTorch(t *testing.T) {
	if !hasPyTorch() {
		t.Skip("Debian's python3-torch is not installed (make setup installs it)")
	}
	cases := []struct {
		name  string
		extra []string
		tol   float64 // relative, on the losses
	}{
		{"jsd", nil, 1e-5},
		{"channels-last", []string{"--channels-last"}, 1e-5},
		{"default-config", []string{"--gamma", "0.1", "--channels-last"}, 1e-5},
		{"nce-views-clip", []string{"--estimator", "nce", "--views", "2", "--score-clip", "10"}, 1e-5},
		{"concat-dv", []string{"--scorer", "concat", "--estimator", "dv"}, 1e-5},
		{"cross-view", []string{"--estimator", "nce", "--views", "2", "--cross-view", "0.5", "--cross-view-temperature", "0.3"}, 1e-5},
		{"all-at-once", []string{"--gamma", "0.1", "--scorer", "concat", "--estimator", "nce", "--views", "2", "--score-clip", "10"}, 1e-5},
		// bfloat16 has an 8-bit mantissa: agreement within its rounding (2^-8).
		{"bf16-prior", []string{"--bf16", "--gamma", "0.1", "--channels-last"}, 4e-3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// NCHW unless the case says otherwise (the last --channels-last wins on both sides).
			args := append([]string{"--encoder", "basic28", "--channels", "1", "--batch-size", "16", "--mi-units", "32",
				"--steps", "4", "--warmup", "1", "--threads", "1", "--json", "--channels-last=false"}, c.extra...)
			out, stderr, code := run(t, append([]string{"bench", "train"}, args...)...)
			if code != 0 {
				t.Fatalf("bench train: %s", stderr)
			}
			var d, p benchTrainResult
			if err := json.Unmarshal([]byte(lastLine(out)), &d); err != nil {
				t.Fatal(err)
			}
			pyArgs := args
			if torch.OneDNNLinear() { // dimtorch's float32 linear layers run on oneDNN: the same kernels on both sides
				pyArgs = append(pyArgs, "--onednn-linear")
			}
			py, err := exec.Command("/usr/bin/python3", append([]string{"../../bench/train_dim.py"}, pyArgs...)...).Output()
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(lastLine(string(py))), &p); err != nil {
				t.Fatal(err)
			}
			for _, v := range [][2]float64{{d.FirstLoss, p.FirstLoss}, {d.LastLoss, p.LastLoss}} {
				if !(math.Abs(v[0]-v[1]) <= c.tol*(1+math.Abs(v[1]))) {
					t.Fatalf("dimtorch losses %v, %v; PyTorch %v, %v", d.FirstLoss, d.LastLoss, p.FirstLoss, p.LastLoss)
				}
			}
			if d.FirstLoss == d.LastLoss {
				t.Fatal("the loss did not change over the steps")
			}
			if (d.LastDLoss == nil) != (p.LastDLoss == nil) {
				t.Fatalf("discriminator loss reported by one side only: %v, %v", d.LastDLoss, p.LastDLoss)
			}
			if d.LastDLoss != nil {
				for _, v := range [][2]float64{{*d.FirstDLoss, *p.FirstDLoss}, {*d.LastDLoss, *p.LastDLoss}} {
					if !(math.Abs(v[0]-v[1]) <= 10*c.tol*(1+math.Abs(v[1]))) {
						t.Fatalf("discriminator losses: dimtorch %v, %v; PyTorch %v, %v", *d.FirstDLoss, *d.LastDLoss, *p.FirstDLoss, *p.LastDLoss)
					}
				}
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Peak memory does not grow with the number of steps: 400 steps peak within
// 10% of 50 steps.
func TestTrainingMemoryIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 450 training steps")
	}
	peak := func(steps string) float64 {
		out, stderr, code := run(t, "bench", "train", "--encoder", "basic28", "--channels", "1", "--batch-size", "16",
			"--mi-units", "32", "--steps", steps, "--warmup", "0", "--threads", "2", "--json")
		if code != 0 {
			t.Fatalf("bench train: %s", stderr)
		}
		var r benchTrainResult
		if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
			t.Fatal(err)
		}
		return r.PeakRSSMB
	}
	p50, p400 := peak("50"), peak("400")
	t.Logf("peak RSS: 50 steps %.1f MiB, 400 steps %.1f MiB", p50, p400)
	if p400 > 1.1*p50 {
		t.Fatalf("400 steps peaked at %.1f MiB, 50 steps at %.1f MiB", p400, p50)
	}
}

// The command line: a checkpoint, metrics and the plot in the run
// directory; Ctrl-C saves and exits with 130; --resume finishes the run.
func TestTrainCommandInterruptAndResume(t *testing.T) {
	data := t.TempDir()
	if err := datasetstest.WriteMNISTLike(data, 2048, 128, 3); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(binary, "train", "--data", "mnist", "--data-dir", data, "--encoder", "basic28", "--mode", "local",
		"--estimator", "jsd", "--epochs", "2", "--mi-units", "32", "--batch-size", "32", "--seed", "1", "--threads", "1",
		"--log-every", "1", "--out", out)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for a few steps, then interrupt.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
		if strings.Count(string(b), "\n") >= 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("want exit code 130 after Ctrl-C, got %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "--resume") || strings.Contains(stderr.String(), "panic") {
		t.Fatalf("stderr should say how to resume:\n%s", stderr.String())
	}
	for _, f := range []string{"checkpoint/checkpoint.json", "checkpoint/model.safetensors", "metrics.jsonl", "loss.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("after the interrupt: %v", err)
		}
	}
	stdout, errOut, code := run(t, "train", "--resume", "--out", out, "--json")
	if code != 0 {
		t.Fatalf("resume: %s", errOut)
	}
	var sum struct {
		Steps        int64    `json:"steps"`
		ProbeTestAcc *float64 `json:"probe_test_acc"`
	}
	if err := json.Unmarshal([]byte(lastLine(stdout)), &sum); err != nil || sum.Steps != 2*2048/32 || sum.ProbeTestAcc == nil {
		t.Fatalf("summary after resume: %s (%v)", stdout, err)
	}
	// The online probe learns the synthetic classes.
	if *sum.ProbeTestAcc < 0.5 {
		t.Fatalf("online probe accuracy %v", *sum.ProbeTestAcc)
	}
}

// bench train --lockstep (bench/compare_train.py's turn-by-turn timing):
// a ready line after the warm-up, one timed step per line read, its time
// printed, and a closing result whose step_ms are those times; standard
// input that ends early is an error that names the step.
func TestBenchTrainLockstep(t *testing.T) {
	args := []string{"bench", "train", "--encoder", "basic28", "--channels", "1", "--batch-size", "8", "--mi-units", "16",
		"--steps", "3", "--warmup", "1", "--threads", "1", "--json", "--lockstep"}
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader("\n\n\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 5 || lines[0] != `{"ready":true}` {
		t.Fatalf("want a ready line, 3 step lines and a result, got:\n%s", out)
	}
	var r benchTrainResult
	if err := json.Unmarshal([]byte(lines[4]), &r); err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for i, l := range lines[1:4] {
		var st struct {
			StepMS *float64 `json:"step_ms"`
		}
		if err := json.Unmarshal([]byte(l), &st); err != nil || st.StepMS == nil || *st.StepMS <= 0 || *st.StepMS != r.StepMS[i] {
			t.Fatalf("step line %d %q against the result's %v", i+1, l, r.StepMS)
		}
		sum += *st.StepMS
	}
	if want := float64(3*8) / (sum / 1000); math.Abs(r.ImagesPerSec-want) > 0.01*want {
		t.Fatalf("images/s %v, the steps' own time gives %v", r.ImagesPerSec, want)
	}
	cmd = exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader("\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "waiting for step 2 of 3") {
		t.Fatalf("input ending after one step: %v, %s", err, stderr.String())
	}
}
