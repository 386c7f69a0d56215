package objectives

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/internal/testref"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// tapLeaves runs an encoder and hands its local map, conv map and Y on as
// independent leaves, so that the gradients with respect to each mean what
// the reference's do.
type tapLeaves struct{ models.Encoder }

func (e tapLeaves) Encode(x *torch.Tensor) models.Taps {
	var t models.Taps
	torch.NoGrad(func() { t = e.Encoder.Encode(x) })
	leaf := func(v *torch.Tensor) *torch.Tensor { return v.Detach().Contiguous().SetRequiresGrad(true) }
	t.Local, t.Conv, t.Y = leaf(t.Local), leaf(t.Conv), leaf(t.Y)
	return t
}

// Multi-scale DIM against an independent PyTorch formulation in AMDIM's
// style (testdata/amdim_ref.py) from the same weights, taps and sampled
// positions: each prediction's loss, the score penalty, the total and its
// gradients with respect to Y, the local map and the conv map, for AMDIM's
// three pairs with and without the score stabilisation, with two and three
// views.
func TestAMDIMAgainstPyTorch(t *testing.T) {
	testref.NeedPyTorch(t)
	cases := []struct {
		name  string
		pairs string
		views int
		clip  float64
	}{
		{"all-pairs", "1-7,1-5,5-5", 2, 10},
		{"all-pairs-raw-scores", "1-7,1-5,5-5", 2, 0},
		{"three-views", "1-5,5-5", 3, 5},
		{"global-to-local", "1-7", 2, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := torch.ManualSeed(11); err != nil {
				t.Fatal(err)
			}
			enc, err := models.New(models.Config{Name: "amdim28", InChannels: 1, YDim: 16, Width: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer nn.Free(enc)
			const n, units = 5, 24
			m, err := NewAMDIM(c.pairs, DIMConfig{Views: c.views, MIUnits: units, ScoreClip: c.clip}, enc.Spec())
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			s := torch.NewScope()
			defer s.Close()
			dir := t.TempDir()
			var positions *torch.Tensor
			m.Positions = func(rows, l int64, like *torch.Tensor) *torch.Tensor {
				positions = torch.RandInt(0, l, []int64{rows}, like.Scope())
				return positions
			}
			for k, v := range nn.StateDict(m, "") {
				writeTensor(t, filepath.Join(dir, "p."+k+".npy"), v)
			}
			x := torch.Rand([]int64{int64(c.views * n), 1, 28, 28}, s).MulScalar(2).AddScalar(-1)
			terms, taps := m.Loss(tapLeaves{enc}, Input{X: x})
			leaves := []*torch.Tensor{taps.Y, taps.Local, taps.Conv}
			grads, err := torch.Grad([]*torch.Tensor{terms.Total}, leaves, torch.GradOptions{AllowUnused: true})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for k, v := range map[string]*torch.Tensor{"total": terms.Total, "amdim_1t7": terms.Pred1to7, "amdim_1t5": terms.Pred1to5,
				"amdim_5t5": terms.Pred5to5, "score_penalty": terms.ScorePenalty} {
				if v != nil {
					if got[k], err = v.Item(); err != nil {
						t.Fatalf("%s: %v", k, err)
					}
				}
			}
			writeTensor(t, filepath.Join(dir, "y.npy"), taps.Y)
			writeTensor(t, filepath.Join(dir, "local.npy"), taps.Local)
			writeTensor(t, filepath.Join(dir, "conv.npy"), taps.Conv)
			if positions == nil {
				positions = torch.Zeros([]int64{int64(c.views * n)}, torch.Int64, s)
			} else if strings.Contains(c.pairs, "5-5") {
				// The draws must be the positions of each row, not one for all.
				v, _ := positions.Int64s()
				if len(v) != c.views*n {
					t.Fatalf("%d positions drawn for %d rows", len(v), c.views*n)
				}
			}
			writeTensor(t, filepath.Join(dir, "positions.npy"), positions)
			cfg, _ := json.Marshal(map[string]any{"pairs": strings.Split(c.pairs, ","), "views": c.views, "units": units, "clip": c.clip})
			if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := exec.Command("/usr/bin/python3", "testdata/amdim_ref.py", dir).Output()
			if err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					t.Fatalf("reference: %v\n%s", err, ee.Stderr)
				}
				t.Fatal(err)
			}
			var want map[string]float64
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatalf("reference output %q: %v", b, err)
			}
			if len(got) != len(want) {
				t.Errorf("dimtorch reports %v, the reference %v", got, want)
			}
			for k, w := range want {
				g, ok := got[k]
				if !ok {
					t.Errorf("dimtorch has no %s", k)
				} else if math.Abs(g-w) > 2e-5*(1+math.Abs(w)) {
					t.Errorf("%s: dimtorch %.7g, PyTorch %.7g", k, g, w)
				}
			}
			for i, name := range []string{"y", "local", "conv"} {
				checkRefGrad(t, dir, name, grads[i], true)
			}
		})
	}
}

// The method refuses what it cannot compute, by name.
func TestNewAMDIMErrors(t *testing.T) {
	specOf := func(name string) models.Spec {
		e, err := models.New(models.Config{Name: name, InChannels: 1, YDim: 8, Width: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer nn.Free(e)
		return e.Spec()
	}
	amdim, basic := specOf("amdim28"), specOf("basic28")
	for _, c := range []struct {
		pairs string
		dim   DIMConfig
		spec  models.Spec
		want  string
	}{
		{"1-7,1-5", DIMConfig{Views: 1, MIUnits: 8}, amdim, "--views 2"},
		{"1-7,2-5", DIMConfig{Views: 2, MIUnits: 8}, amdim, `unknown amdim pair "2-5"`},
		{"1-7,1-7", DIMConfig{Views: 2, MIUnits: 8}, amdim, "given twice"},
		{" , ", DIMConfig{Views: 2, MIUnits: 8}, amdim, "names no prediction"},
		{"1-5", DIMConfig{Views: 2, MIUnits: 8}, basic, "same 128x7x7 map"},
		{"1-7", DIMConfig{Views: 2, MIUnits: 0}, amdim, "mi-units"},
	} {
		m, err := NewAMDIM(c.pairs, c.dim, c.spec)
		if err == nil {
			m.Free()
			t.Errorf("%q on %s: no error", c.pairs, c.spec.Name)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q on %s: %v, want it to say %q", c.pairs, c.spec.Name, err, c.want)
		}
	}
	// One scale is enough for 1-7 alone, on any encoder.
	m, err := NewAMDIM("1-7", DIMConfig{Views: 2, MIUnits: 8}, basic)
	if err != nil {
		t.Fatal(err)
	}
	m.Free()
}
