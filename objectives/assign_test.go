package objectives

import (
	"encoding/json"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
)

func totalCost(cost []float64, m int, rows []int) float64 {
	s := 0.0
	for i, j := range rows {
		s += cost[i*m+j]
	}
	return s
}

// bruteForce tries every injective map of rows to columns.
func bruteForce(cost []float64, n, m int) float64 {
	best := math.Inf(1)
	used := make([]bool, m)
	var rec func(i int, s float64)
	rec = func(i int, s float64) {
		if i == n {
			best = min(best, s)
			return
		}
		for j := 0; j < m; j++ {
			if !used[j] {
				used[j] = true
				rec(i+1, s+cost[i*m+j])
				used[j] = false
			}
		}
	}
	rec(0, 0)
	return best
}

func checkAssignment(t *testing.T, rows []int, n, m int) {
	t.Helper()
	seen := map[int]bool{}
	for _, j := range rows {
		if j < 0 || j >= m || seen[j] {
			t.Fatalf("not an assignment of %d rows to %d columns: %v", n, m, rows)
		}
		seen[j] = true
	}
}

// The least total cost, against trying every assignment, on square and
// rectangular matrices with ties (small integers) and without.
func TestAssignMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 300; trial++ {
		n := 1 + rng.IntN(6)
		m := n + rng.IntN(3)
		cost := make([]float64, n*m)
		for k := range cost {
			if trial%2 == 0 {
				cost[k] = float64(rng.IntN(5))
			} else {
				cost[k] = rng.NormFloat64() * 10
			}
		}
		rows, err := Assign(cost, n, m)
		if err != nil {
			t.Fatal(err)
		}
		checkAssignment(t, rows, n, m)
		if got, want := totalCost(cost, m, rows), bruteForce(cost, n, m); math.Abs(got-want) > 1e-9 {
			t.Fatalf("trial %d (%dx%d): total %v, the least is %v", trial, n, m, got, want)
		}
	}
	if _, err := Assign([]float64{1, math.NaN(), 2, 3}, 2, 2); err == nil {
		t.Fatal("a NaN cost was accepted")
	}
	if _, err := Assign([]float64{1, 2, 3}, 2, 1); err == nil {
		t.Fatal("more rows than columns was accepted")
	}
}

// On large matrices, against SciPy's linear_sum_assignment (an independent
// implementation: the Jonker-Volgenant algorithm), as NAT uses it: the
// squared distances between a batch's features and targets.
func TestAssignMatchesSciPy(t *testing.T) {
	testref.NeedSciPy(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, sz := range [][2]int{{64, 64}, {100, 130}, {256, 256}} {
		n, m := sz[0], sz[1]
		cost := make([]float64, n*m)
		for k := range cost {
			cost[k] = rng.Float64()
		}
		rows, err := Assign(cost, n, m)
		if err != nil {
			t.Fatal(err)
		}
		checkAssignment(t, rows, n, m)
		in, _ := json.Marshal(map[string]any{"n": n, "m": m, "cost": cost})
		cmd := exec.Command("/usr/bin/python3", "-c", `
import json, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
d = json.load(sys.stdin)
c = np.array(d["cost"]).reshape(d["n"], d["m"])
r, k = linear_sum_assignment(c)
print(repr(float(c[r, k].sum())))
`)
		cmd.Stdin = strings.NewReader(string(in))
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var want float64
		if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &want); err != nil {
			t.Fatalf("python printed %q", out)
		}
		if got := totalCost(cost, m, rows); math.Abs(got-want) > 1e-9*math.Max(1, want) {
			t.Fatalf("%dx%d: total %v, SciPy's %v", n, m, got, want)
		}
	}
}
