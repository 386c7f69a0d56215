package eval

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
)

// Report is one evaluation: a probe over some features of one source.
type Report struct {
	Source       string            `json:"source"`
	Data         string            `json:"data"`
	Probe        string            `json:"probe"`
	Protocol     string            `json:"protocol"`
	Features     map[string]Result `json:"features"`
	TrainImages  int               `json:"train_images"`
	PerClass     int               `json:"labels_per_class,omitempty"` // the probe's training images are the first PerClass of each class
	TestImages   int               `json:"test_images"`
	Seed         uint64            `json:"seed"`
	NDM          *float64          `json:"ndm,omitempty"`
	MINE         *float64          `json:"mine_nats,omitempty"`
	MSSSIM       *float64          `json:"msssim,omitempty"` // of reconstructions from Y by a decoder
	MSSSIMScales int               `json:"msssim_scales,omitempty"`
	Seconds      float64           `json:"seconds"`
}

// FlatJSON is the object `dimtorch eval --json` prints: one key per
// requested feature with its test accuracy in [0, 1], and the rest of the
// report under the other keys.
func (r *Report) FlatJSON() ([]byte, error) {
	m := map[string]any{}
	for f, res := range r.Features {
		m[f] = res.Accuracy
	}
	m["report"] = r
	m["probe"] = r.Probe
	return json.Marshal(m)
}

// order lists the paper's feature order first.
func order(feats map[string]Result) []string {
	rank := map[string]int{"conv": 0, "fc": 1, "y": 2, "pixels": 3}
	var k []string
	for f := range feats {
		k = append(k, f)
	}
	sort.Slice(k, func(i, j int) bool { return rank[k[i]] < rank[k[j]] })
	return k
}

// Markdown renders the report as a table.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s probe: %s on %s\n\n%s\n\n", r.Probe, r.Source, r.Data, r.Protocol)
	b.WriteString("| feature | test accuracy (%) |\n| --- | ---: |\n")
	for _, f := range order(r.Features) {
		res := r.Features[f]
		if res.Runs > 1 {
			fmt.Fprintf(&b, "| %s | %.2f ± %.2f (%d runs) |\n", f, 100*res.Accuracy, 100*res.Std, res.Runs)
		} else {
			fmt.Fprintf(&b, "| %s | %.2f |\n", f, 100*res.Accuracy)
		}
	}
	for _, f := range order(r.Features) {
		if res := r.Features[f]; res.Converged != nil {
			state := "converged"
			if !*res.Converged {
				state = "NOT converged"
			}
			fmt.Fprintf(&b, "\n%s: L-BFGS %s after %d iterations (%s; largest gradient component %.2g)", f, state, res.Iterations, res.Stop, res.GradMax)
		}
	}
	if strings.Contains(b.String(), "L-BFGS") {
		b.WriteString("\n")
	}
	if r.NDM != nil {
		fmt.Fprintf(&b, "\nNDM (Y): %.4f\n", *r.NDM)
	}
	if r.MINE != nil {
		fmt.Fprintf(&b, "\nMINE I(X; Y): %.4f nats\n", *r.MINE)
	}
	if r.MSSSIM != nil {
		fmt.Fprintf(&b, "\nMS-SSIM of reconstructions from Y (%d scales): %.4f\n", r.MSSSIMScales, *r.MSSSIM)
	}
	return b.String()
}

// Save writes RUN/eval/NAME.json and NAME.md.
func (r *Report) Save(run, name string) error {
	dir := filepath.Join(run, "eval")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, name+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, name+".md"), []byte(r.Markdown()), 0o644)
}

// LoadReports reads every RUN/eval/*.json.
func LoadReports(run string) ([]*Report, error) {
	files, err := filepath.Glob(filepath.Join(run, "eval", "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s has no evaluations (run `dimtorch eval --checkpoint %s` first)", run, run)
	}
	sort.Strings(files)
	var out []*Report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		out = append(out, &r)
	}
	return out, nil
}
