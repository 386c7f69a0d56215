// Package testref is where dimtorch's tests ask for the references they
// check against: Debian's PyTorch, SciPy and scikit-learn, the ONNX checker,
// the onnxruntime library, Debian's Fashion-MNIST and Chromium.
//
// A missing reference must never turn a cross-check into a pass. Under CI
// (the environment variable CI set to anything but "", "0" or "false") a
// test whose reference is missing fails and says what to install; elsewhere
// it is skipped, saying so, so that `go test` still runs on a machine that
// has only Go and libtorch.
package testref

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/dimtorch/dimtorch/internal/ortlib"
	"github.com/dimtorch/dimtorch/torch"
)

// Python is the interpreter that sees Debian's python3-* packages (the
// python3 first on PATH may be another one without them).
const Python = "/usr/bin/python3"

// InCI reports whether the tests run under CI, where every reference must be
// present.
func InCI() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("CI"))) {
	case "", "0", "false", "no":
		return false
	}
	return true
}

// Missing ends the test for a reference that is not there: a failure under
// CI, a skip elsewhere. what names the reference, install says how to get it.
func Missing(t testing.TB, what, install string, why error) {
	t.Helper()
	msg := fmt.Sprintf("%s is not available (%v): %s", what, why, install)
	if InCI() {
		t.Fatalf("CI=%s: this test's reference is missing, so it cannot prove anything: %s", os.Getenv("CI"), msg)
	}
	t.Skipf("skipped, not passed: %s", msg)
}

// imports caches, per module list, whether Python can import it (importing
// torch takes about a second).
var (
	importMu sync.Mutex
	imports  = map[string]error{}
)

func canImport(modules string) error {
	importMu.Lock()
	defer importMu.Unlock()
	key := modules + "\x00" + os.Getenv("PYTHONPATH")
	if err, ok := imports[key]; ok {
		return err
	}
	out, err := exec.Command(Python, "-c", "import "+modules).CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		err = fmt.Errorf("%s -c 'import %s': %v: %s", Python, modules, err, lines[len(lines)-1])
	}
	imports[key] = err
	return err
}

// NeedPython requires that Debian's Python imports the comma-separated
// modules; packages names the Debian packages that provide them.
func NeedPython(t testing.TB, modules, packages string) {
	t.Helper()
	if err := canImport(modules); err != nil {
		Missing(t, "Python module(s) "+modules, "install Debian's "+packages+" (make setup does)", err)
	}
}

// NeedPyTorch requires Debian's python3-torch (PyTorch on the same libtorch).
func NeedPyTorch(t testing.TB) { t.Helper(); NeedPython(t, "torch", "python3-torch") }

// NeedSciPy requires SciPy (brought by python3-sklearn).
func NeedSciPy(t testing.TB) { t.Helper(); NeedPython(t, "scipy.optimize", "python3-scipy") }

// NeedSklearn requires scikit-learn.
func NeedSklearn(t testing.TB) { t.Helper(); NeedPython(t, "sklearn", "python3-sklearn") }

// CheckONNX runs the ONNX checker (full_check) on the model file: a missing
// checker is Missing, a model it refuses fails the test.
func CheckONNX(t testing.TB, path string) {
	t.Helper()
	NeedPython(t, "onnx", "python3-onnx")
	script := fmt.Sprintf("import onnx; onnx.checker.check_model(onnx.load(%q), full_check=True)", path)
	if out, err := exec.Command(Python, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("the ONNX checker refuses %s: %v\n%s", path, err, out)
	}
}

// NeedORT requires the onnxruntime library (the copy `make setup` fetched
// into the repository's third_party/onnxruntime, unless
// DIMTORCH_ONNXRUNTIME_LIB names another) and returns its path. It points the
// environment variable at it, for the test and the processes it starts.
func NeedORT(t testing.TB) string {
	t.Helper()
	ortlib.UseRepositoryCopy()
	p, err := ortlib.Find("")
	if err != nil {
		Missing(t, "the onnxruntime library", "run make setup (it fetches it from the npm registry)", err)
	}
	return p
}

// FashionMNISTDir is where Debian's dataset-fashion-mnist puts the files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// NeedFashionMNIST requires Debian's copy of Fashion-MNIST and returns its
// directory.
func NeedFashionMNIST(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(FashionMNISTDir + "/train-images-idx3-ubyte.gz"); err != nil {
		Missing(t, "Fashion-MNIST", "install Debian's dataset-fashion-mnist (make setup does)", err)
	}
	return FashionMNISTDir
}

// NeedChromium requires Debian's headless Chromium and returns its path.
func NeedChromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("DIMTORCH_CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		Missing(t, "Chromium", "install Debian's chromium (make setup does)", err)
	}
	return p
}

// NeedBF16 skips a test of bfloat16 autocast on a CPU where libtorch cannot
// run it (no oneDNN bfloat16 kernels: an AVX2-only CPU, or oneDNN capped with
// ONEDNN_MAX_CPU_ISA, as make test-isa does). That is a property of the
// machine, not a missing reference: the skip says so, and
// TestBF16RefusedWithoutKernels checks that dimtorch refuses --bf16 there.
func NeedBF16(t testing.TB) {
	t.Helper()
	if err := torch.BF16Supported(torch.CPU); err != nil {
		t.Skipf("skipped, not passed: this CPU (or oneDNN's cap) has no bfloat16 kernels: %v", err)
	}
}

// PythonCheck runs a Python script that asserts something about the test's
// output with modules imported from Debian's packages: a missing module is
// Missing, a failing script fails the test with its output.
func PythonCheck(t testing.TB, modules, packages, what, script string) {
	t.Helper()
	NeedPython(t, modules, packages)
	if out, err := exec.Command(Python, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
}
