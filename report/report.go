// Package report gathers several run directories into one comparison a
// researcher can paste: a table in the shape of the paper's Table 1 (a row
// per run and probe, a column per feature), and for each run its loss and
// online-probe curves, its configuration, and the machine and versions it
// ran on. It renders markdown and a self-contained HTML page.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/train"
)

// Run is one run directory as the report shows it: a training run (with a
// checkpoint) or an evaluation-only directory (raw pixels, an untrained
// encoder).
type Run struct {
	Dir     string
	Name    string      // unique among the report's runs; names its files
	Meta    *train.Meta // nil without a checkpoint
	Config  string      // config.yaml, or the checkpoint's configuration as JSON
	Evals   []*eval.Report
	Records []train.Record // metrics.jsonl
}

// Load reads the run directories. Each must hold a checkpoint or at least
// one evaluation.
func Load(dirs []string) ([]*Run, error) {
	var runs []*Run
	names := map[string]int{}
	for _, dir := range dirs {
		r := &Run{Dir: dir}
		if ck, err := train.FindCheckpoint(dir); err == nil {
			m, err := train.ReadMeta(ck)
			if err != nil {
				return nil, err
			}
			r.Meta = &m
			if b, err := os.ReadFile(filepath.Join(dir, "config.yaml")); err == nil {
				r.Config = string(b)
			} else {
				cj, _ := json.MarshalIndent(m.Config, "", "  ")
				r.Config = string(cj)
			}
		}
		evals, err := eval.LoadReports(dir)
		if err != nil && r.Meta == nil {
			return nil, fmt.Errorf("%s holds neither a checkpoint nor evaluations: is it a dimtorch run directory?", dir)
		}
		r.Evals = evals
		if recs, err := train.ReadMetrics(dir); err == nil {
			r.Records = recs
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		base := safeName(filepath.Base(filepath.Clean(dir)))
		names[base]++
		r.Name = base
		if names[base] > 1 {
			r.Name = fmt.Sprintf("%s-%d", base, names[base])
		}
		runs = append(runs, r)
	}
	return runs, nil
}

var unsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string {
	s = unsafe.ReplaceAllString(s, "_")
	if s == "" || s == "." || s == ".." {
		return "run"
	}
	return s
}

// Row is one line of the comparison table.
type Row struct {
	Run, Method, Probe string
	Labels             int
	Conv, FC, Y        string // accuracies in %, "" where not measured
	NDM, MINE, MSSSIM  string
	Training           string // wall-clock and CPU time of the training
}

// Rows returns the comparison table: a row per run and evaluation (a row
// with empty accuracies for a run not yet evaluated).
func Rows(runs []*Run) []Row {
	var rows []Row
	for _, r := range runs {
		method, training := r.Method(), r.Training()
		if len(r.Evals) == 0 {
			rows = append(rows, Row{Run: r.Name, Method: method, Training: training})
			continue
		}
		for _, e := range r.Evals {
			row := Row{Run: r.Name, Method: method, Probe: e.Probe, Labels: e.TrainImages, Training: training,
				Conv: cell(e, "conv"), FC: cell(e, "fc"), Y: cell(e, "y"), NDM: opt(e.NDM), MINE: opt(e.MINE), MSSSIM: opt(e.MSSSIM)}
			if r.Meta == nil {
				row.Method = e.Source
			}
			rows = append(rows, row)
		}
	}
	return rows
}

func cell(r *eval.Report, f string) string {
	if f == "y" {
		if _, ok := r.Features["y"]; !ok {
			f = "pixels" // raw pixels stand in Y's column
		}
	}
	res, ok := r.Features[f]
	if !ok {
		return ""
	}
	if res.Runs > 1 {
		return fmt.Sprintf("%.2f ± %.2f", 100*res.Accuracy, 100*res.Std)
	}
	return fmt.Sprintf("%.2f", 100*res.Accuracy)
}

func opt(v *float64) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%.3f", *v)
}

// Method describes what trained the run, in the terms of the paper's table.
func (r *Run) Method() string {
	if r.Meta == nil {
		if len(r.Evals) > 0 {
			return r.Evals[0].Source
		}
		return ""
	}
	return r.Meta.Config.Describe()
}

// Training is the run's length and training time.
func (r *Run) Training() string {
	if r.Meta == nil {
		return "–"
	}
	st := r.Meta.State
	s := fmt.Sprintf("%d/%d epochs, %d steps", st.Epoch, r.Meta.Config.Epochs, st.Step)
	if st.Completed {
		s = fmt.Sprintf("%d epochs, %d steps", r.Meta.Config.Epochs, st.Step)
	}
	if st.Seconds > 0 {
		s += fmt.Sprintf(", %.1f min", st.Seconds/60)
	}
	if st.CPUSeconds > 0 {
		s += fmt.Sprintf(" (%.1f CPU-min)", st.CPUSeconds/60)
	}
	return s
}

// Machine describes where the run trained and with which versions.
func (r *Run) Machine() string {
	if r.Meta == nil {
		return "not recorded (an evaluation-only directory)"
	}
	m := "machine not recorded (checkpoint written before dimtorch recorded it)"
	if r.Meta.Machine != nil {
		m = r.Meta.Machine.String()
	}
	s := fmt.Sprintf("%s; dimtorch %s, libtorch %s; device %s", m, r.Meta.Dimtorch, r.Meta.Libtorch, r.Meta.Config.Device)
	if w := max(1, r.Meta.World); w > 1 {
		s += fmt.Sprintf(", %d processes", w)
	}
	return s
}

// Protocols lists the distinct evaluation protocols of the runs, so the
// table's numbers say how they were measured.
func Protocols(runs []*Run) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range runs {
		for _, e := range r.Evals {
			p := fmt.Sprintf("%s: %s", e.Probe, e.Protocol)
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out
}
