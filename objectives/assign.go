package objectives

import (
	"fmt"
	"math"
)

// Assign solves the linear assignment problem: given an n x m cost matrix
// (row-major, n <= m), it returns for each row a distinct column such that
// the sum of the chosen costs is the least possible. It is the Hungarian
// method with dual potentials (Kuhn and Munkres; the shortest-augmenting-
// path form), O(n^2 m). Noise As Targets re-assigns a batch's targets with
// it (Bojanowski and Joulin, 2017).
func Assign(cost []float64, n, m int) ([]int, error) {
	if n < 0 || m < n || len(cost) != n*m {
		return nil, fmt.Errorf("assign: want an n x m cost matrix with n <= m, got %d values for %d x %d", len(cost), n, m)
	}
	for _, c := range cost {
		if math.IsNaN(c) || math.IsInf(c, 0) {
			return nil, fmt.Errorf("assign: the cost matrix holds %v", c)
		}
	}
	// 1-based as in the classical statement: row 0 and column 0 are the
	// virtual start of each augmenting path.
	u := make([]float64, n+1) // row potentials
	v := make([]float64, m+1) // column potentials
	p := make([]int, m+1)     // p[j]: the row assigned to column j (0: none)
	way := make([]int, m+1)   // the previous column on the path to j
	minv := make([]float64, m+1)
	used := make([]bool, m+1)
	for i := 1; i <= n; i++ {
		p[0] = i
		j0 := 0
		for j := range minv {
			minv[j] = math.Inf(1)
			used[j] = false
		}
		for {
			used[j0] = true
			i0, delta, j1 := p[j0], math.Inf(1), 0
			for j := 1; j <= m; j++ {
				if used[j] {
					continue
				}
				cur := cost[(i0-1)*m+j-1] - u[i0] - v[j]
				if cur < minv[j] {
					minv[j], way[j] = cur, j0
				}
				if minv[j] < delta {
					delta, j1 = minv[j], j
				}
			}
			for j := 0; j <= m; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if p[j0] == 0 {
				break
			}
		}
		for j0 != 0 { // flip the augmenting path
			j1 := way[j0]
			p[j0] = p[j1]
			j0 = j1
		}
	}
	rows := make([]int, n)
	for j := 1; j <= m; j++ {
		if p[j] != 0 {
			rows[p[j]-1] = j - 1
		}
	}
	return rows, nil
}
