package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/dimtorch/dimtorch/internal/testref"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/internal/ortlib"
)

var binary string

// TestMain builds the dimtorch binary once; the tests run it as a user would
// and check exit codes, output and that nothing panics.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run()) // a fuzzing worker runs the fuzz target alone: no binary needed
	}
	ortlib.UseRepositoryCopy() // the binary runs from a temporary directory
	dir, err := os.MkdirTemp("", "dimtorch-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "dimtorch")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run executes the binary and returns stdout, stderr and the exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "panic:") || strings.Contains(stderr.String(), "goroutine ") {
		t.Fatalf("dimtorch %v panicked:\n%s", args, stderr.String())
	}
	return stdout.String(), stderr.String(), code
}

func TestEnvJSON(t *testing.T) {
	out, _, code := run(t, "env", "--json")
	var r envReport
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("env --json: code %d, %q", code, out)
	}
	if r.Libtorch == "" || r.Threads < 1 || r.ONNXRuntime == "" {
		t.Fatalf("incomplete report %+v", r)
	}
}

func TestDataInfoFashionMNIST(t *testing.T) {
	testref.NeedFashionMNIST(t)
	out, stderr, code := run(t, "data", "info", "fashion-mnist", "--json")
	var info struct {
		Train int `json:"train_images"`
		Test  int `json:"test_images"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil {
		t.Fatalf("code %d: %s %s", code, out, stderr)
	}
	if info.Train != 60000 || info.Test != 10000 {
		t.Fatalf("train %d test %d", info.Train, info.Test)
	}
}

func TestDataInfoFolder(t *testing.T) {
	root := t.TempDir()
	for class, n := range map[string]int{"a": 2, "b": 3} {
		_ = os.MkdirAll(filepath.Join(root, class), 0o755)
		for i := 0; i < n; i++ {
			f, _ := os.Create(filepath.Join(root, class, string(rune('0'+i))+".png"))
			_ = png.Encode(f, image.NewRGBA(image.Rect(0, 0, 5, 4)))
			f.Close()
		}
	}
	out, stderr, code := run(t, "data", "info", "folder:"+root, "--json")
	var info struct {
		Train   int      `json:"train_images"`
		Classes []string `json:"classes"`
		Shape   struct {
			C int `json:"channels"`
			H int `json:"height"`
		} `json:"shape"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil {
		t.Fatalf("code %d: %s %s", code, out, stderr)
	}
	if info.Train != 5 || len(info.Classes) != 2 || info.Shape.C != 3 || info.Shape.H != 4 {
		t.Fatalf("%+v", info)
	}
}

// dimtorch data shard writes a folder's images as shards with a manifest,
// refuses to write over shards and reads sizes as documented.
func TestDataShard(t *testing.T) {
	root := t.TempDir()
	for class, n := range map[string]int{"a": 2, "b": 3} {
		_ = os.MkdirAll(filepath.Join(root, class), 0o755)
		for i := 0; i < n; i++ {
			f, _ := os.Create(filepath.Join(root, class, string(rune('0'+i))+".png"))
			_ = png.Encode(f, image.NewRGBA(image.Rect(0, 0, 5, 4)))
			f.Close()
		}
	}
	out := filepath.Join(t.TempDir(), "shards")
	if _, stderr, code := run(t, "data", "shard", "--from", root, "--out", out, "--shard-size", "2KiB"); code != 0 {
		t.Fatalf("data shard: code %d, %s", code, stderr)
	}
	var m struct {
		Pattern string   `json:"pattern"`
		Samples int      `json:"samples"`
		Classes []string `json:"classes"`
		Shards  []struct {
			Name    string `json:"name"`
			Samples int    `json:"samples"`
		} `json:"shards"`
	}
	b, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err := json.Unmarshal(b, &m); err != nil || m.Samples != 5 || len(m.Classes) != 2 || len(m.Shards) < 2 ||
		m.Pattern != fmt.Sprintf("train-{000000..%06d}.tar", len(m.Shards)-1) {
		t.Fatalf("manifest %s (%v)", b, err)
	}
	if st, err := os.Stat(filepath.Join(out, m.Shards[0].Name)); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("shard %v %v", st, err)
	}
	bench, stderr, code := run(t, "bench", "data", "--shards", out, "--size", "8,16", "--workers", "1,2", "--batches", "1", "--batch-size", "2")
	if code != 0 || strings.Count(bench, "\n| 8 | ") != 2 || strings.Count(bench, "\n| 16 | ") != 2 {
		t.Fatalf("bench data: code %d\n%s%s", code, bench, stderr)
	}
	if _, stderr, code := run(t, "bench", "data", "--shards", out, "--batches", "10", "--batch-size", "2"); code == 0 || !strings.Contains(stderr, "fewer than the 11 asked for") {
		t.Fatalf("bench data past the end: code %d, %s", code, stderr)
	}
	for _, bad := range [][]string{
		{"data", "shard", "--from", root, "--out", out},
		{"data", "shard", "--from", root, "--out", t.TempDir(), "--shard-size", "lots"},
		{"data", "shard", "--from", filepath.Join(root, "missing"), "--out", t.TempDir()},
	} {
		if _, stderr, code := run(t, bad...); code == 0 || stderr == "" {
			t.Errorf("%v: code %d", bad, code)
		}
	}
}

func TestDataInfoTruncatedFile(t *testing.T) {
	src := testref.NeedFashionMNIST(t)
	dir := t.TempDir()
	for _, n := range []string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if n == "train-images-idx3-ubyte.gz" {
			b = b[:len(b)/3]
		}
		_ = os.WriteFile(filepath.Join(dir, n), b, 0o644)
	}
	_, stderr, code := run(t, "data", "info", "fashion-mnist", "--data-dir", dir, "--json")
	if code == 0 {
		t.Fatal("a truncated file must give a non-zero exit")
	}
	if !strings.Contains(stderr, "train-images-idx3-ubyte.gz") || !strings.Contains(stderr, "truncated") {
		t.Fatalf("the error should name the file and the problem: %s", stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	if _, stderr, code := run(t, "data", "info"); code == 0 || !strings.Contains(stderr, "needs one dataset name") {
		t.Fatalf("missing argument: %d %s", code, stderr)
	}
	if _, stderr, code := run(t, "data", "info", "imagenet"); code == 0 || !strings.Contains(stderr, "unknown dataset") {
		t.Fatalf("unknown dataset: %d %s", code, stderr)
	}
	if _, _, code := run(t, "no-such-command"); code == 0 {
		t.Fatal("an unknown command must fail")
	}
}

func TestHoistFlags(t *testing.T) {
	app := newApp()
	got := hoistFlags(app, []string{"dimtorch", "--log-level", "debug", "data", "info", "fashion-mnist", "--data-dir", "/x", "--json"})
	want := "dimtorch --log-level debug data info --data-dir /x --json fashion-mnist"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, " "), want)
	}
}

// A dimtorch binary built outside the repository (go build, go install)
// finds the onnxruntime library that make setup fetched: make setup copies
// it to the user's cache directory, which the lookup searches. Without it,
// the message names where it looked and what to do.
func TestONNXRuntimeFoundFromAnywhere(t *testing.T) {
	env := func(extra ...string) []string {
		var e []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, ortlib.EnvVar+"=") && !strings.HasPrefix(kv, "XDG_CACHE_HOME=") {
				e = append(e, kv)
			}
		}
		return append(e, extra...)
	}
	report := func(e []string) envReport {
		cmd := exec.Command(binary, "env", "--json")
		cmd.Env = e
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var r envReport
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// The user's real cache directory, as make setup left it.
	cacheLib := filepath.Join(ortlib.CacheDir(), "libonnxruntime.so.1")
	if _, err := os.Stat(cacheLib); err != nil {
		testref.Missing(t, "the onnxruntime library in the user's cache directory", "run make setup (it copies it there)", err)
	}
	if r := report(env()); r.ONNXRuntime != cacheLib {
		t.Fatalf("a binary in %s found %q (%s), want %s", filepath.Dir(binary), r.ONNXRuntime, r.ONNXRuntimeNote, cacheLib)
	}
	// An empty cache directory: not found, and the note says where it looked.
	empty := t.TempDir()
	r := report(env("XDG_CACHE_HOME=" + empty))
	if r.ONNXRuntime == "not found" {
		for _, want := range []string{"make setup", filepath.Join(empty, "dimtorch", "onnxruntime"), filepath.Dir(binary), ortlib.EnvVar} {
			if !strings.Contains(r.ONNXRuntimeNote, want) {
				t.Errorf("the note does not mention %q: %s", want, r.ONNXRuntimeNote)
			}
		}
	} else if strings.HasPrefix(r.ONNXRuntime, empty) || strings.HasPrefix(r.ONNXRuntime, filepath.Dir(binary)) {
		t.Fatalf("found %s in a directory that holds no library", r.ONNXRuntime)
	} // else: a system-wide library (/usr/lib...), found legitimately
}
