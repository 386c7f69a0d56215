// Package sysinfo describes the machine a run used, for the record kept in
// checkpoints and shown by reports.
package sysinfo

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Machine is what a reader needs to compare figures across machines.
type Machine struct {
	CPU       string   `json:"cpu"`
	CPUs      int      `json:"cpus"`
	Features  []string `json:"cpu_features,omitempty"` // those that change dimtorch's speed: AVX-512, bfloat16, AMX
	MemoryGiB float64  `json:"memory_gib,omitempty"`
	OS        string   `json:"os"`
	Go        string   `json:"go"`
}

// Describe reads the machine's description (Linux's /proc where present).
func Describe() Machine {
	m := Machine{CPU: "unknown", CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.CPU == "unknown" {
					m.CPU = strings.TrimSpace(v)
				}
			case "flags":
				if m.Features == nil {
					m.Features = []string{}
					have := map[string]bool{}
					for _, fl := range strings.Fields(v) {
						have[fl] = true
					}
					for _, fl := range []string{"avx2", "avx512f", "avx512_bf16", "amx_bf16"} {
						if have[fl] {
							m.Features = append(m.Features, fl)
						}
					}
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					m.MemoryGiB = float64(int(kb/(1<<20)*10+0.5)) / 10
				}
			}
		}
	}
	return m
}

// String is the description on one line.
func (m Machine) String() string {
	s := fmt.Sprintf("%s, %d CPUs", m.CPU, m.CPUs)
	if len(m.Features) > 0 {
		s += " (" + strings.Join(m.Features, " ") + ")"
	}
	if m.MemoryGiB > 0 {
		s += fmt.Sprintf(", %.1f GiB", m.MemoryGiB)
	}
	return s + ", " + m.OS + ", " + m.Go
}

// CPUSeconds is the processor time (user + system) this process has used.
func CPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
