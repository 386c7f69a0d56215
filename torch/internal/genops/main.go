// Command genops writes torch/ops_gen.go, torch/shim_ops.h,
// torch/dist/ops_gen.go and torch/dist/dist_ops.h from torch/ops.def (run by
// `go generate ./torch`, from the torch directory).
package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/dimtorch/dimtorch/torch/internal/opsdef"
)

func main() {
	def, err := os.ReadFile("ops.def")
	if err == nil {
		var files map[string][]byte
		if files, err = opsdef.Generate(def); err == nil {
			names := make([]string, 0, len(files))
			for name := range files {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				if err = os.WriteFile(name, files[name], 0o644); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genops:", err)
		os.Exit(1)
	}
}
