// Package opsdef turns torch/ops.def, the binding's table of every code that
// crosses the C interface, into the Go constants and names (ops_gen.go,
// dist/ops_gen.go) and the C++ side of the shims (shim_ops.h, dist/dist_ops.h),
// so that the two sides can never disagree.
//
// A kind is one of two sorts. The codes of a switched kind are dimtorch's
// own, numbered in the table's order: the shim switches on them and each row
// gives the C++ that its case runs. The codes of a valued kind are libtorch's
// own values (an element type is a c10::ScalarType), which the shim casts to
// libtorch's enum as they are: each row gives the value and the libtorch
// constant it must equal, and the C++ side checks that at compile time.
package opsdef

import (
	"bufio"
	"bytes"
	"fmt"
	"go/format"
	"strconv"
	"strings"
)

// Kind is one kind of code: a switched kind when Case is set, else a valued one.
type Kind struct {
	Name   string // the table's first column
	Case   string // switched kinds: the C++ body of one case, with %s for the row's expression
	Macro  string // switched kinds: the macro of cases (shim_ops.h) that the shim's switch expands
	What   string // the C functions that take (or return) these codes, for the Go comment
	Doc    string // what the Go constants are, for exported ones
	GoType string // the constants' Go type; "" for untyped constants
	Names  bool   // write <kind>Names, the rows' names by code
	Dist   bool   // generated into package dist (dist/ops_gen.go, dist/dist_ops.h) instead of torch
}

// Switched reports whether the shim switches on the kind's codes.
func (k Kind) Switched() bool { return k.Case != "" }

// Kinds lists the kinds in the order they are written out.
var Kinds = []Kind{
	{Name: "unary", Case: "r = %s; break;", Macro: "DT_UNARY_CASES", What: "dt_unary", Names: true},
	{Name: "binary", Case: "r = %s; break;", Macro: "DT_BINARY_CASES", What: "dt_binary", Names: true},
	{Name: "scalar", Case: "r = %s; break;", Macro: "DT_SCALAR_CASES", What: "dt_scalar_op", Names: true},
	{Name: "reduce", Case: "r = %s; break;", Macro: "DT_REDUCE_CASES", What: "dt_reduce", Names: true},
	{Name: "dim", Case: "r = %s; break;", Macro: "DT_DIM_CASES", What: "dt_dim_op", Names: true},
	{Name: "shape", Case: "r = %s; break;", Macro: "DT_SHAPE_CASES", What: "dt_shape_op", Names: true},
	{Name: "inplace", Case: "%s; break;", Macro: "DT_INPLACE_CASES", What: "dt_inplace", Names: true},
	{Name: "addc", Case: "%s; break;", Macro: "DT_ADDC_CASES", What: "dt_addcop_", Names: true},
	{Name: "init", Case: "%s; break;", Macro: "DT_INIT_CASES", What: "dt_init_", Names: true},
	{Name: "minmax", Case: "r = %s; break;", Macro: "DT_MINMAX_CASES", What: "dt_minmax_dim", Names: true},
	{Name: "argminmax", Case: "r = %s; break;", Macro: "DT_ARGMINMAX_CASES", What: "dt_argminmax", Names: true},
	{Name: "adaptive", Case: "r = %s; break;", Macro: "DT_ADAPTIVE_CASES", What: "dt_adaptive_pool2d", Names: true},
	{Name: "interp", Case: "r = %s; break;", Macro: "DT_INTERP_CASES", What: "dt_interpolate", GoType: "InterpMode", Doc: "Interpolation modes"},
	{Name: "pad", Case: "r = %s; break;", Macro: "DT_PAD_CASES", What: "dt_pad", GoType: "PadMode", Doc: "Padding modes"},
	{Name: "loss", Case: "return %s;", Macro: "DT_LOSS_CASES", What: "dt_cross_entropy, dt_mse_loss and dt_bce_with_logits", GoType: "Reduction", Doc: "Loss reductions"},
	{Name: "dtype", What: "dtype arguments and results", GoType: "DType", Names: true, Doc: "Element types"},
	{Name: "device", What: "device-type arguments and results", GoType: "DeviceType", Doc: "Device types"},
	{Name: "allreduce", What: "dt_pg_allreduce", GoType: "Op", Dist: true, Doc: "Reductions"},
}

func kindOf(name string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// Op is one row of the table.
type Op struct {
	Kind, Const, Name, Expr string
	Code                    int
}

// Parse reads the table: lines "kind constant name expression" (switched
// kinds) or "kind constant name value expression" (valued kinds), '#'
// comments and blank lines.
func Parse(def []byte) ([]Op, error) {
	var ops []Op
	next := map[string]int{}
	seen := map[string]bool{}
	values := map[string]map[int]string{}
	sc := bufio.NewScanner(bytes.NewReader(def))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		k, known := kindOf(f[0])
		if !known {
			return nil, fmt.Errorf("ops.def:%d: unknown kind %q", line, f[0])
		}
		op := Op{Kind: k.Name}
		if k.Switched() {
			if len(f) < 4 {
				return nil, fmt.Errorf("ops.def:%d: want kind, constant, name and expression", line)
			}
			op.Code = next[k.Name]
			next[k.Name]++
			op.Expr = strings.Join(f[3:], " ")
		} else {
			if len(f) < 5 {
				return nil, fmt.Errorf("ops.def:%d: want kind, constant, name, value and libtorch's constant", line)
			}
			v, err := strconv.Atoi(f[3])
			if err != nil {
				return nil, fmt.Errorf("ops.def:%d: value %q is not an integer", line, f[3])
			}
			if values[k.Name] == nil {
				values[k.Name] = map[int]string{}
			}
			if other, dup := values[k.Name][v]; dup {
				return nil, fmt.Errorf("ops.def:%d: %s has the value %d of %s", line, f[1], v, other)
			}
			values[k.Name][v] = f[1]
			op.Code = v
			op.Expr = strings.Join(f[4:], " ")
		}
		if seen[f[1]] {
			return nil, fmt.Errorf("ops.def:%d: constant %s defined twice", line, f[1])
		}
		seen[f[1]] = true
		op.Const, op.Name = f[1], f[2]
		ops = append(ops, op)
	}
	return ops, sc.Err()
}

// TakesTensor reports whether an in-place operator reads a tensor operand.
func (o Op) TakesTensor() bool { return strings.Contains(o.Expr, "other") }

// The generated files, by path relative to the torch directory.
const (
	GoFile       = "ops_gen.go"
	HeaderFile   = "shim_ops.h"
	DistGoFile   = "dist/ops_gen.go"
	DistHeadFile = "dist/dist_ops.h"
)

const generated = "// Code generated by go run ./internal/genops from ops.def; DO NOT EDIT.\n"

// Generate returns the generated files for the table, by path relative to the
// torch directory (GoFile, HeaderFile, DistGoFile, DistHeadFile).
func Generate(def []byte) (map[string][]byte, error) {
	ops, err := Parse(def)
	if err != nil {
		return nil, err
	}
	var g, h, dg, dh bytes.Buffer
	g.WriteString(generated + "\npackage torch\n\n")
	dg.WriteString(generated + "\npackage dist\n\n")
	h.WriteString(generated)
	h.WriteString("// The shim's switch cases, and compile-time checks that the codes it passes\n")
	h.WriteString("// on to libtorch unchanged are libtorch's values (included by shim.cc after\n")
	h.WriteString("// ATen's headers).\n\n#pragma once\n")
	dh.WriteString(generated)
	dh.WriteString("// Compile-time checks that the codes dist.cc passes on to c10d unchanged are\n")
	dh.WriteString("// c10d's values (included by dist.cc after c10d's headers).\n\n#pragma once\n")
	for _, k := range Kinds {
		var rows []Op
		for _, o := range ops {
			if o.Kind == k.Name {
				rows = append(rows, o)
			}
		}
		goOut, cOut := &g, &h
		if k.Dist {
			goOut, cOut = &dg, &dh
		}
		writeGo(goOut, k, rows)
		writeC(cOut, k, rows)
	}
	out := map[string][]byte{HeaderFile: h.Bytes(), DistHeadFile: dh.Bytes()}
	for name, src := range map[string][]byte{GoFile: g.Bytes(), DistGoFile: dg.Bytes()} {
		if out[name], err = format.Source(src); err != nil {
			return nil, fmt.Errorf("formatting %s: %w", name, err)
		}
	}
	return out, nil
}

func writeGo(g *bytes.Buffer, k Kind, rows []Op) {
	impl := "shim.cc"
	if k.Dist {
		impl = "dist.cc"
	}
	what := "Codes of " + k.What
	if k.Doc != "" {
		what = k.Doc + ": the codes of " + k.What
	}
	if k.Switched() {
		fmt.Fprintf(g, "// %s (%s).\n", what, impl)
	} else {
		fmt.Fprintf(g, "// %s.\n// They are libtorch's values, which %s passes on as they are.\n", what, impl)
	}
	g.WriteString("const (\n")
	for _, o := range rows {
		fmt.Fprintf(g, "\t%s %s = %d\n", o.Const, k.GoType, o.Code)
	}
	g.WriteString(")\n\n")
	if k.Names {
		if k.Switched() {
			fmt.Fprintf(g, "// %sNames are the operators' names in error messages, by code.\n", k.Name)
		} else {
			fmt.Fprintf(g, "// %sNames are the names of the %s, by code.\n", k.Name, strings.ToLower(k.Doc))
		}
		fmt.Fprintf(g, "var %sNames = [...]string{", k.Name)
		for i, o := range rows {
			if i > 0 {
				g.WriteString(", ")
			}
			if k.Switched() {
				fmt.Fprintf(g, "%q", o.Name)
			} else {
				fmt.Fprintf(g, "%s: %q", o.Const, o.Name)
			}
		}
		g.WriteString("}\n\n")
	}
	if k.Name == "inplace" {
		g.WriteString("// inplaceTakesTensor tells, by code, which in-place operators read a tensor operand.\nvar inplaceTakesTensor = [...]bool{")
		for i, o := range rows {
			if i > 0 {
				g.WriteString(", ")
			}
			fmt.Fprintf(g, "%v", o.TakesTensor())
		}
		g.WriteString("}\n\n")
	}
}

func writeC(h *bytes.Buffer, k Kind, rows []Op) {
	if k.Switched() {
		fmt.Fprintf(h, "\n#define %s \\\n", k.Macro)
		for _, o := range rows {
			fmt.Fprintf(h, "  case %d: "+k.Case+" \\\n", o.Code, o.Expr)
		}
		h.WriteString("  /* end */\n")
		return
	}
	fmt.Fprintf(h, "\n/* %s */\n", k.Name)
	for _, o := range rows {
		fmt.Fprintf(h, "static_assert(static_cast<int>(%s) == %d, \"ops.def: %s %s is not %s\");\n",
			o.Expr, o.Code, k.Name, o.Const, o.Expr)
	}
}
