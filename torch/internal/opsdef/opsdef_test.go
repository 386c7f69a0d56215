package opsdef

import (
	"bytes"
	"os"
	"testing"
)

// TestGeneratedFilesAreCurrent fails when ops.def was edited without
// `go generate ./torch`, or a generated file was edited by hand.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	def, err := os.ReadFile("../../ops.def")
	if err != nil {
		t.Fatal(err)
	}
	goSrc, header, err := Generate(def)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"../../ops_gen.go": goSrc, "../../shim_ops.h": header} {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is out of date with ops.def: run `go generate ./torch`", name)
		}
	}
}

func TestParseRejectsBadTables(t *testing.T) {
	for _, def := range []string{
		"unary opA a\n",                         // no expression
		"ternary opA a f(a)\n",                  // unknown kind
		"unary opA a f(a)\nbinary opA b g(a)\n", // constant twice
	} {
		if _, err := Parse([]byte(def)); err == nil {
			t.Errorf("accepted %q", def)
		}
	}
	ops, err := Parse([]byte("# c\nunary opA a f(a)\nunary opB b g(a)\ninplace ipX x_ self.x_(other)\n"))
	if err != nil || len(ops) != 3 || ops[1].Code != 1 || ops[2].Code != 0 || !ops[2].TakesTensor() {
		t.Fatalf("%+v %v", ops, err)
	}
}
