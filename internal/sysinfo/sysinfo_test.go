package sysinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	m := Describe()
	if m.CPUs != runtime.NumCPU() || m.Go != runtime.Version() || m.OS == "" {
		t.Fatalf("%+v", m)
	}
	if runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" && m.CPU == "unknown" || m.MemoryGiB <= 0) {
		t.Fatalf("/proc was not read: %+v", m)
	}
	if s := m.String(); !strings.Contains(s, m.CPU) || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("String() = %q", s)
	}
	// Processor time grows with work.
	before := CPUSeconds()
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i % 7
	}
	if after := CPUSeconds(); !(after > before) || x == 0 {
		t.Fatalf("CPU seconds %v then %v", before, after)
	}
}
