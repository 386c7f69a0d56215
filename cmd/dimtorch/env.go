package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"

	"github.com/dimtorch/dimtorch/internal/ortlib"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print dimtorch's version and the libtorch it was built against",
		Action: func(c *cli.Context) error {
			fmt.Printf("dimtorch %s (libtorch %s, %s, %s/%s)\n", version, torch.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

type envReport struct {
	Dimtorch        string `json:"dimtorch"`
	Go              string `json:"go"`
	Libtorch        string `json:"libtorch"`
	ShimABI         int    `json:"shim_abi"`
	Threads         int    `json:"threads"`
	CPUs            int    `json:"cpus"`
	CUDA            bool   `json:"cuda"`
	CUDADevices     int    `json:"cuda_devices"`
	ONNXRuntime     string `json:"onnxruntime_library"`
	ONNXRuntimeNote string `json:"onnxruntime_note,omitempty"`
	AllocatorTuned  bool   `json:"allocator_tuned"`
	Distributed     string `json:"distributed"`
	Kernels         string `json:"cpu_kernels"`
	Parallel        string `json:"parallel_info,omitempty"`
}

// cpuKernels names the kernel choices the shim makes on this CPU.
func cpuKernels() string {
	on := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	return fmt.Sprintf("fused Adam %s, float32 linear on oneDNN %s, bfloat16 1x1 convolution as matmul %s",
		torch.FusedOptimKernel(), on(torch.OneDNNLinear()), on(torch.LowPrecision1x1Matmul()))
}

func envCommand() *cli.Command {
	return &cli.Command{
		Name:  "env",
		Usage: "show libtorch's version, threads, CUDA and where the onnxruntime library was found",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
			&cli.BoolFlag{Name: "verbose", Usage: "include libtorch's parallel configuration"},
			&cli.StringFlag{Name: "onnxruntime-lib", Usage: "path of the onnxruntime shared library (default: $" + ortlib.EnvVar + ", then well-known places)"},
		},
		Action: func(c *cli.Context) error {
			r := envReport{
				Dimtorch: version, Go: runtime.Version(), Libtorch: torch.Version(), ShimABI: torch.ABIVersion(),
				Threads: torch.NumThreads(), CPUs: runtime.NumCPU(),
				CUDA: torch.CUDAAvailable(), CUDADevices: torch.CUDADeviceCount(),
				AllocatorTuned: torch.AllocatorTuned(), Distributed: "c10d with Gloo (CPU)",
				Kernels: cpuKernels(),
			}
			if !dist.Available() {
				r.Distributed = "none (" + dist.ErrUnavailable.Error() + ")"
			}
			if p, err := ortlib.Find(c.String("onnxruntime-lib")); err == nil {
				r.ONNXRuntime = p
			} else {
				r.ONNXRuntime = "not found"
				r.ONNXRuntimeNote = err.Error()
			}
			if c.Bool("verbose") {
				r.Parallel = torch.ParallelInfo()
			}
			if r.ShimABI != torch.ShimABIVersion {
				log := logger(c)
				log.Warn().Int("linked", r.ShimABI).Int("expected", torch.ShimABIVersion).Msg("libdimtorch_shim.so is from another dimtorch version: rebuild it")
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			fmt.Printf("dimtorch     %s (%s)\n", r.Dimtorch, r.Go)
			fmt.Printf("libtorch     %s (shim ABI %d)\n", r.Libtorch, r.ShimABI)
			fmt.Printf("threads      %d intra-op, %d CPUs\n", r.Threads, r.CPUs)
			fmt.Printf("allocator    tuned for tensors: %v (DIMTORCH_MALLOC_TUNE=0 turns it off)\n", r.AllocatorTuned)
			if r.CUDA {
				fmt.Printf("cuda         yes, %d device(s)\n", r.CUDADevices)
			} else {
				fmt.Printf("cuda         no\n")
			}
			fmt.Printf("distributed  %s\n", r.Distributed)
			fmt.Printf("cpu kernels  %s\n", r.Kernels)
			fmt.Printf("onnxruntime  %s\n", r.ONNXRuntime)
			if r.ONNXRuntimeNote != "" {
				fmt.Printf("             %s\n", r.ONNXRuntimeNote)
			}
			if r.Parallel != "" {
				fmt.Printf("\n%s", r.Parallel)
			}
			return nil
		},
	}
}
