package report

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/internal/sysinfo"
	"github.com/dimtorch/dimtorch/train"
)

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRun lays out a training run as dimtorch train and eval leave it.
func fakeRun(t *testing.T, dir string) {
	cfg := train.Defaults()
	cfg.Objective.Views, cfg.Objective.CrossView, cfg.Epochs = 2, 1, 3
	m := sysinfo.Machine{CPU: "Test CPU", CPUs: 2, OS: "linux/amd64", Go: "go1.x"}
	writeJSON(t, filepath.Join(dir, "checkpoint", "checkpoint.json"), train.Meta{Format: 1, Dimtorch: "v9", Libtorch: "1.13.0", Config: cfg,
		State: train.State{Epoch: 3, Step: 2811, Completed: true, Seconds: 600, CPUSeconds: 1170}, Machine: &m})
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("lr: 0.001\nviews: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := 1; i <= 5; i++ {
		b, _ := json.Marshal(train.Record{Kind: "step", Step: int64(20 * i), Loss: 7 - float64(i)/10})
		lines = append(lines, string(b))
	}
	acc := 0.8
	b, _ := json.Marshal(train.Record{Kind: "epoch", Epoch: 0, Step: 100, Loss: 6.5, ProbeTestAcc: &acc})
	lines = append(lines, string(b), `{"kind":"step","st`) // a line cut short by a crash
	if err := os.WriteFile(filepath.Join(dir, "metrics.jsonl"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, filepath.Join(dir, "eval", "linear-conv-fc-y-n60000.json"), eval.Report{Source: "DIM", Probe: "linear", TrainImages: 60000,
		Protocol: "softmax regression", Features: map[string]eval.Result{"conv": {Accuracy: 0.9123}, "fc": {Accuracy: 0.9}, "y": {Accuracy: 0.8801}}})
}

func TestReportWritesMarkdownAndHTML(t *testing.T) {
	root := t.TempDir()
	a := filepath.Join(root, "a", "q")
	b := filepath.Join(root, "b", "q") // the same base name: told apart
	pix := filepath.Join(root, "pixels")
	fakeRun(t, a)
	fakeRun(t, b)
	writeJSON(t, filepath.Join(pix, "eval", "linear-pixels-n60000.json"), eval.Report{Source: "raw pixels", Probe: "linear", TrainImages: 60000,
		Protocol: "softmax regression", Features: map[string]eval.Result{"pixels": {Accuracy: 0.8366}}})
	runs, err := Load([]string{a, b, pix})
	if err != nil {
		t.Fatal(err)
	}
	if runs[0].Name != "q" || runs[1].Name != "q-2" {
		t.Fatalf("names %q %q", runs[0].Name, runs[1].Name)
	}
	out := filepath.Join(root, "report")
	files, err := Write(out, runs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Fatalf("files %v", files)
	}
	for _, name := range []string{"q", "q-2"} {
		f, err := os.Open(filepath.Join(out, "curves", name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Fatalf("curves of %s: %v", name, err)
		}
	}
	mdb, _ := os.ReadFile(filepath.Join(out, "report.md"))
	htmlb, _ := os.ReadFile(filepath.Join(out, "index.html"))
	md, page := string(mdb), string(htmlb)
	for _, want := range []string{"| q | DIM(L) jsd, basic28, 256 MI units, 2 views, cross-view 1, prior | linear | 60000 | 91.23 | 90.00 | 88.01 | 3 epochs, 2811 steps, 10.0 min (19.5 CPU-min) |",
		"| pixels | raw pixels | linear | 60000 |  |  | 83.66 | – |", "Test CPU, 2 CPUs", "dimtorch v9, libtorch 1.13.0", "![q: loss and online probe](curves/q.png)",
		"```yaml\nlr: 0.001\nviews: 2\n```", "- linear: softmax regression"} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	for _, want := range []string{`<td class="n">91.23</td>`, `<img src="curves/q-2.png"`, `<a href="#pixels">`, "Test CPU", "<pre>lr: 0.001\nviews: 2</pre>"} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
	if _, err := Load([]string{t.TempDir()}); err == nil || !strings.Contains(err.Error(), "neither a checkpoint nor evaluations") {
		t.Fatalf("an empty directory: %v", err)
	}
}
