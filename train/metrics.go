package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"image/color"
	"io"
	"os"
	"path/filepath"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Record is one line of metrics.jsonl: a step record (Kind "step") every few
// steps, or an epoch summary (Kind "epoch").
type Record struct {
	Kind          string   `json:"kind"`
	Epoch         int      `json:"epoch"`
	Step          int64    `json:"step"`
	Loss          float64  `json:"loss"`
	Local         *float64 `json:"local,omitempty"`
	Global        *float64 `json:"global,omitempty"`
	Prior         *float64 `json:"prior,omitempty"`
	Coord         *float64 `json:"coord,omitempty"`
	DLoss         *float64 `json:"d_loss,omitempty"`
	GradPenalty   *float64 `json:"grad_penalty,omitempty"`
	CrossView     *float64 `json:"cross_view,omitempty"`
	Recon         *float64 `json:"recon,omitempty"`
	KL            *float64 `json:"kl,omitempty"`
	Adversarial   *float64 `json:"adversarial,omitempty"`
	NAT           *float64 `json:"nat,omitempty"`
	CPC           *float64 `json:"cpc,omitempty"`
	ImagesPerSec  float64  `json:"images_per_sec,omitempty"`
	ProbeTrainAcc *float64 `json:"probe_train_acc,omitempty"`
	ProbeTestAcc  *float64 `json:"probe_test_acc,omitempty"`
	Seconds       float64  `json:"seconds,omitempty"`
}

// terms returns the record's loss parts in the order of the term constants.
func (r *Record) terms() [nTerms]**float64 {
	return [nTerms]**float64{termLocal: &r.Local, termGlobal: &r.Global, termPrior: &r.Prior, termCoord: &r.Coord,
		termDLoss: &r.DLoss, termGP: &r.GradPenalty, termCrossView: &r.CrossView, termRecon: &r.Recon, termKL: &r.KL,
		termAdversarial: &r.Adversarial, termNAT: &r.NAT, termCPC: &r.CPC}
}

// termJSON are the terms' names in metrics.jsonl.
var termJSON = [nTerms]string{termLocal: "local", termGlobal: "global", termPrior: "prior", termCoord: "coord", termDLoss: "d_loss",
	termGP: "grad_penalty", termCrossView: "cross_view", termRecon: "recon", termKL: "kl", termAdversarial: "adversarial",
	termNAT: "nat", termCPC: "cpc"}

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
	}{
		{"total", func(r Record) *float64 { v := r.Loss; return &v }, color.RGBA{20, 20, 20, 255}},
		{"local MI", func(r Record) *float64 { return r.Local }, color.RGBA{31, 119, 180, 255}},
		{"global MI", func(r Record) *float64 { return r.Global }, color.RGBA{255, 127, 14, 255}},
		{"prior (generator)", func(r Record) *float64 { return r.Prior }, color.RGBA{44, 160, 44, 255}},
		{"discriminator", func(r Record) *float64 { return r.DLoss }, color.RGBA{214, 39, 40, 255}},
		{"coordinates", func(r Record) *float64 { return r.Coord }, color.RGBA{148, 103, 189, 255}},
		{"cross-view Y", func(r Record) *float64 { return r.CrossView }, color.RGBA{140, 86, 75, 255}},
		{"reconstruction", func(r Record) *float64 { return r.Recon }, color.RGBA{31, 119, 180, 255}},
		{"KL", func(r Record) *float64 { return r.KL }, color.RGBA{255, 127, 14, 255}},
		{"encoder + generator", func(r Record) *float64 { return r.Adversarial }, color.RGBA{44, 160, 44, 255}},
		{"noise as targets", func(r Record) *float64 { return r.NAT }, color.RGBA{31, 119, 180, 255}},
		{"CPC infoNCE", func(r Record) *float64 { return r.CPC }, color.RGBA{31, 119, 180, 255}},
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
