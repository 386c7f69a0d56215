package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/objectives"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Record is one line of metrics.jsonl: a step record (Kind "step") every few
// steps, or an epoch summary (Kind "epoch"). The loss parts a step computed
// (objectives.TermList) sit beside the fixed fields, under their keys.
type Record struct {
	Kind          string             `json:"kind"`
	Epoch         int                `json:"epoch"`
	Step          int64              `json:"step"`
	Loss          float64            `json:"loss"`
	Terms         map[string]float64 `json:"-"`
	ImagesPerSec  float64            `json:"images_per_sec,omitempty"`
	ProbeTrainAcc *float64           `json:"probe_train_acc,omitempty"`
	ProbeTestAcc  *float64           `json:"probe_test_acc,omitempty"`
	Seconds       float64            `json:"seconds,omitempty"`
	// An epoch's wall time (this session's part of it) and how much of it
	// the step waited for the loader's next batch.
	EpochSeconds    float64 `json:"epoch_seconds,omitempty"`
	DataWaitSeconds float64 `json:"data_wait_seconds,omitempty"`
}

// Term is the record's value of a loss part (nil when the step had none).
func (r Record) Term(key string) *float64 {
	if v, ok := r.Terms[key]; ok {
		return &v
	}
	return nil
}

// plainRecord is Record without its JSON methods.
type plainRecord Record

// MarshalJSON writes the fixed fields, then the loss parts in
// objectives.TermList's order.
func (r Record) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(plainRecord(r))
	if err != nil || len(r.Terms) == 0 {
		return b, err
	}
	var buf bytes.Buffer
	buf.Write(b[:len(b)-1])
	for _, t := range objectives.TermList() {
		if v, ok := r.Terms[t.Key]; ok {
			x, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("metrics: %s: %w", t.Key, err)
			}
			fmt.Fprintf(&buf, ",%q:%s", t.Key, x)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// UnmarshalJSON reads a record; keys of declared loss parts fill Terms.
func (r *Record) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*plainRecord)(r)); err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, t := range objectives.TermList() {
		if raw, ok := m[t.Key]; ok {
			var v float64
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("metrics: %s: %w", t.Key, err)
			}
			if r.Terms == nil {
				r.Terms = map[string]float64{}
			}
			r.Terms[t.Key] = v
		}
	}
	return nil
}

type metrics struct {
	path string
	f    *os.File
	recs []Record
}

// openMetrics opens RUN/metrics.jsonl for appending, keeping only the records
// up to step (those a resumed run has not redone).
func openMetrics(run string, upTo int64) (*metrics, error) {
	m := &metrics{path: filepath.Join(run, "metrics.jsonl")}
	if b, err := os.ReadFile(m.path); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r Record
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.Step <= upTo {
				m.recs = append(m.recs, r)
			}
		}
	}
	var buf bytes.Buffer
	for _, r := range m.recs {
		line, _ := json.Marshal(r)
		buf.Write(append(line, '\n'))
	}
	if err := atomicfile.WriteBytes(m.path, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(m.path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	m.f = f
	return m, nil
}

// The methods do nothing on a nil *metrics (ranks other than 0 keep none).
func (m *metrics) write(r Record) error {
	if m == nil {
		return nil
	}
	m.recs = append(m.recs, r)
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = m.f.Write(append(line, '\n'))
	return err
}

func (m *metrics) close() error {
	if m == nil {
		return nil
	}
	return m.f.Close()
}

// plot draws the loss curves (and the probe's accuracy) into RUN/loss.png.
func (m *metrics) plot(run string) error {
	if m == nil {
		return nil
	}
	return DrawCurves(m.recs, filepath.Join(run, "loss.png"))
}

// ReadMetrics reads RUN/metrics.jsonl (lines that do not parse, such as a
// line cut short by a crash, are skipped).
func ReadMetrics(run string) ([]Record, error) {
	b, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			recs = append(recs, r)
		}
	}
	return recs, nil
}

// DrawCurves draws a run's loss terms by step and, when the run has one,
// its online probe's test accuracy by epoch, into a PNG file.
func DrawCurves(recs []Record, path string) error {
	p := plot.New()
	p.Title.Text = "training"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	series := []struct {
		name string
		get  func(Record) *float64
		c    color.RGBA
	}{{"total", func(r Record) *float64 { v := r.Loss; return &v }, color.RGBA{20, 20, 20, 255}}}
	palette := []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
		{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {23, 190, 207, 255}}
	for _, t := range objectives.TermList() {
		if t.Label == "" {
			continue
		}
		key := t.Key
		series = append(series, struct {
			name string
			get  func(Record) *float64
			c    color.RGBA
		}{t.Label, func(r Record) *float64 { return r.Term(key) }, palette[(len(series)-1)%len(palette)]})
	}
	for _, s := range series {
		var pts plotter.XYs
		for _, r := range recs {
			if r.Kind != "step" {
				continue
			}
			if v := s.get(r); v != nil {
				pts = append(pts, plotter.XY{X: float64(r.Step), Y: *v})
			}
		}
		if len(pts) < 2 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = s.c
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Top = true
	var acc plotter.XYs
	for _, r := range recs {
		if r.Kind == "epoch" && r.ProbeTestAcc != nil {
			acc = append(acc, plotter.XY{X: float64(r.Epoch + 1), Y: *r.ProbeTestAcc})
		}
	}
	img := vgimg.New(9*vg.Inch, 4*vg.Inch)
	dc := draw.New(img)
	if len(acc) > 0 {
		left, right := splitCanvas(dc)
		p.Draw(left)
		q := plot.New()
		q.Title.Text = "online probe (test accuracy)"
		q.X.Label.Text = "epoch"
		q.Y.Min, q.Y.Max = 0, 1
		line, points, err := plotter.NewLinePoints(acc)
		if err == nil {
			q.Add(line, points)
		}
		q.Draw(right)
	} else {
		p.Draw(dc)
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
		return err
	})
}

func splitCanvas(c draw.Canvas) (draw.Canvas, draw.Canvas) {
	mid := c.Min.X + (c.Max.X-c.Min.X)*0.62
	l, r := c, c
	l.Max.X = mid
	r.Min.X = mid
	return l, r
}
