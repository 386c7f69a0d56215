package main

import (
	le "encoding/binary"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets/datasetstest"
)

// readNPY reads a float32 .npy file written by dimtorch.
func readNPY(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:6]) != "\x93NUMPY" || !strings.Contains(string(b[10:70]), "'<f4'") {
		t.Fatalf("%s is not a float32 .npy", path)
	}
	hl := int(le.LittleEndian.Uint16(b[8:10]))
	data := b[10+hl:]
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(le.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

// The commands: train, export (passing the ONNX checker), embed the
// same images through onnxruntime and through libtorch: they agree within 1e-4.
func TestExportAndEmbedCommands(t *testing.T) {
	data := t.TempDir()
	if err := datasetstest.WriteMNISTLike(data, 512, 100, 9); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	if _, stderr, code := run(t, "train", "--data", "mnist", "--data-dir", data, "--epochs", "1", "--mi-units", "32",
		"--batch-size", "32", "--threads", "1", "--out", runDir); code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	model := filepath.Join(dir, "enc.onnx")
	if _, stderr, code := run(t, "export", "--onnx", "--checkpoint", runDir, "--out", model, "--outputs", "y,fc"); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	testref.PythonCheck(t, "onnx", "python3-onnx", "ONNX checker", "import onnx; m = onnx.load('"+model+"'); onnx.checker.check_model(m, full_check=True); "+
		"assert {p.key for p in m.metadata_props} >= {'dimtorch_version', 'encoder', 'input', 'training_config', 'data', 'dimtorch.preprocessing'}; "+
		"import json; md = {p.key: p.value for p in m.metadata_props}; pre = json.loads(md['dimtorch.preprocessing']); "+
		"assert md['data'] == 'mnist' and pre['channels'] == 1 and pre['resize'] == [{'height': 28, 'width': 28}] and pre['range'] == [0, 1], pre")
	a, b := filepath.Join(dir, "a.npy"), filepath.Join(dir, "b.npy")
	if _, stderr, code := run(t, "embed", "--model", model, "--data", "mnist", "--data-dir", data, "--split", "test", "--limit", "64", "--out", a); code != 0 {
		t.Fatalf("embed onnx: %s", stderr)
	}
	if _, stderr, code := run(t, "embed", "--backend", "torch", "--checkpoint", runDir, "--data", "mnist", "--data-dir", data, "--split", "test", "--limit", "64", "--out", b); code != 0 {
		t.Fatalf("embed torch: %s", stderr)
	}
	va, vb := readNPY(t, a), readNPY(t, b)
	if len(va) != 64*64 || len(vb) != len(va) {
		t.Fatalf("%d and %d values, want 64x64", len(va), len(vb))
	}
	for i := range va {
		if math.Abs(float64(va[i]-vb[i])) > 1e-4*(1+math.Abs(float64(vb[i]))) {
			t.Fatalf("value %d: onnxruntime %v, libtorch %v", i, va[i], vb[i])
		}
	}
	// The int8 export of the same run (calibrated on 64 training images)
	// embeds the same images to nearly the same vectors.
	q, c := filepath.Join(dir, "int8.onnx"), filepath.Join(dir, "c.npy")
	if _, stderr, code := run(t, "export", "--onnx", "--int8", "--calibration-images", "64", "--checkpoint", runDir, "--out", q); code != 0 {
		t.Fatalf("export --int8: %s", stderr)
	}
	if _, stderr, code := run(t, "embed", "--model", q, "--data", "mnist", "--data-dir", data, "--split", "test", "--limit", "64", "--out", c); code != 0 {
		t.Fatalf("embed int8: %s", stderr)
	}
	vc := readNPY(t, c)
	// Per image, centred on the float embeddings' mean (as the export
	// package's test): a shared offset would otherwise hide the differences
	// between images, which are what a user's search uses.
	const n, d = 64, 64
	mean := make([]float64, d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			mean[j] += float64(va[i*d+j]) / n
		}
	}
	worst := 1.0
	for i := 0; i < n; i++ {
		var dot, na, nb float64
		for j := 0; j < d; j++ {
			x, y := float64(va[i*d+j])-mean[j], float64(vc[i*d+j])-mean[j]
			dot, na, nb = dot+x*y, na+x*x, nb+y*y
		}
		worst = math.Min(worst, dot/math.Sqrt(na*nb))
	}
	if !(worst > 0.99) {
		t.Fatalf("int8 embeddings: centred cosine similarity to the float model's down to %v", worst)
	}
	t.Logf("int8 against float: worst centred cosine similarity %.4f over %d images", worst, n)
	if _, stderr, code := run(t, "export", "--onnx", "--int8", "--calibration-images", "0", "--checkpoint", runDir, "--out", q); code == 0 || !strings.Contains(stderr, "at least 1") {
		t.Fatalf("--calibration-images 0: %s", stderr)
	}
	testref.PythonCheck(t, "onnx", "python3-onnx", "ONNX checker on the int8 model", "import onnx; m = onnx.load('"+q+"'); onnx.checker.check_model(m, full_check=True); "+
		"assert 'int8' in {p.key: p.value for p in m.metadata_props}['quantization']; "+
		"assert 'dimtorch.preprocessing' in {p.key for p in m.metadata_props}; "+
		"assert any(n.op_type == 'DequantizeLinear' for n in m.graph.node)")
	// CSV and JSON lines too; bad inputs give clear errors.
	if _, stderr, code := run(t, "embed", "--model", model, "--data", "mnist", "--data-dir", data, "--limit", "3", "--out", filepath.Join(dir, "e.csv")); code != 0 {
		t.Fatalf("csv: %s", stderr)
	}
	if csv, _ := os.ReadFile(filepath.Join(dir, "e.csv")); strings.Count(string(csv), "\n") != 3 {
		t.Fatalf("csv rows: %q", csv)
	}
	notONNX := filepath.Join(dir, "x.onnx")
	_ = os.WriteFile(notONNX, []byte("nope"), 0o644)
	if _, stderr, code := run(t, "embed", "--model", notONNX, "--data", "mnist", "--data-dir", data, "--out", filepath.Join(dir, "x.npy")); code == 0 || !strings.Contains(stderr, "not a readable ONNX model") {
		t.Fatalf("not ONNX: %s", stderr)
	}
	if _, stderr, code := run(t, "embed", "--model", model, "--data", "cifar10", "--data-dir", data, "--out", filepath.Join(dir, "x.npy")); code == 0 || strings.Contains(stderr, "panic") {
		t.Fatalf("missing dataset: %s", stderr)
	}
}
