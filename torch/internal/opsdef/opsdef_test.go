package opsdef

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedFilesAreCurrent fails when ops.def was edited without
// `go generate ./torch`, or a generated file was edited by hand.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	def, err := os.ReadFile("../../ops.def")
	if err != nil {
		t.Fatal(err)
	}
	files, err := Generate(def)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{GoFile, HeaderFile, DistGoFile, DistHeadFile} {
		want, ok := files[name]
		if !ok {
			t.Fatalf("Generate wrote no %s", name)
		}
		got, err := os.ReadFile(filepath.Join("../..", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("torch/%s is out of date with ops.def: run `go generate ./torch`", name)
		}
	}
	if len(files) != 4 {
		t.Errorf("Generate wrote %d files, want 4", len(files))
	}
}

func TestParseRejectsBadTables(t *testing.T) {
	for _, def := range []string{
		"unary opA a\n",                                     // no expression
		"ternary opA a f(a)\n",                              // unknown kind
		"unary opA a f(a)\nbinary opA b g(a)\n",             // constant twice
		"dtype A a at::kFloat\n",                            // valued kind without a value
		"dtype A a six at::kFloat\n",                        // value not an integer
		"dtype A a 6 at::kFloat\ndtype B b 6 at::kDouble\n", // value twice
	} {
		if _, err := Parse([]byte(def)); err == nil {
			t.Errorf("accepted %q", def)
		}
	}
	ops, err := Parse([]byte("# c\nunary opA a f(a)\nunary opB b g(a)\ninplace ipX x_ self.x_(other)\ndtype F f 6 at::kFloat\n"))
	if err != nil || len(ops) != 4 || ops[1].Code != 1 || ops[2].Code != 0 || !ops[2].TakesTensor() ||
		ops[3].Code != 6 || ops[3].Expr != "at::kFloat" {
		t.Fatalf("%+v %v", ops, err)
	}
}

// TestGeneratedCode checks what the generator writes for each sort of kind:
// typed constants, names, switch cases, and the compile-time checks that
// libtorch's values are the table's.
func TestGeneratedCode(t *testing.T) {
	files, err := Generate([]byte(`
interp    Near   near   up(x, size)
interp    Lin    lin    lin(x, size, align)
loss      RMean  mean   at::Reduction::Mean
init      initA  a_     t.a_(a)
dtype     F32    f32    6   at::kFloat
dtype     B      b      11  at::kBool
allreduce S      s      0   c10d::ReduceOp::SUM
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, wants := range map[string][]string{
		GoFile: {"Near InterpMode = 0", "Lin  InterpMode = 1", "RMean Reduction = 0", "initA = 0",
			`initNames = [...]string{"a_"}`, "F32 DType = 6", "B   DType = 11", `dtypeNames = [...]string{F32: "f32", B: "b"}`},
		HeaderFile: {"case 1: r = lin(x, size, align); break;", "case 0: return at::Reduction::Mean;",
			"case 0: t.a_(a); break;", `static_assert(static_cast<int>(at::kBool) == 11, "ops.def: dtype B is not at::kBool");`},
		DistGoFile:   {"package dist", "S Op = 0"},
		DistHeadFile: {`static_assert(static_cast<int>(c10d::ReduceOp::SUM) == 0,`},
	} {
		for _, w := range wants {
			if !strings.Contains(string(files[name]), w) {
				t.Errorf("%s lacks %q:\n%s", name, w, files[name])
			}
		}
	}
	for _, bad := range []string{"S Op", "c10d"} {
		if strings.Contains(string(files[GoFile])+string(files[HeaderFile]), bad) {
			t.Errorf("package torch's files hold dist's %q", bad)
		}
	}
	if strings.Contains(string(files[GoFile]), "interpNames") {
		t.Error("names written for a kind that has none")
	}
}
