// Command genops writes torch/ops_gen.go and torch/shim_ops.h from
// torch/ops.def (run by `go generate ./torch`, from the torch directory).
package main

import (
	"fmt"
	"os"

	"github.com/dimtorch/dimtorch/torch/internal/opsdef"
)

func main() {
	def, err := os.ReadFile("ops.def")
	if err == nil {
		var goSrc, header []byte
		if goSrc, header, err = opsdef.Generate(def); err == nil {
			if err = os.WriteFile("ops_gen.go", goSrc, 0o644); err == nil {
				err = os.WriteFile("shim_ops.h", header, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genops:", err)
		os.Exit(1)
	}
}
