package report

import (
	"bytes"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/train"
)

// Table renders the comparison as a markdown table. The NDM, MINE and
// MS-SSIM columns appear only when some run has them.
func Table(rows []Row) string {
	measures := false
	for _, r := range rows {
		if r.NDM != "" || r.MINE != "" || r.MSSSIM != "" {
			measures = true
		}
	}
	var b strings.Builder
	b.WriteString("| run | method | probe | probe's labels | conv | fc | Y | training |")
	sep := "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"
	if measures {
		b.WriteString(" NDM | MINE (nats) | MS-SSIM |")
		sep += " ---: | ---: | ---: |"
	}
	b.WriteString("\n" + sep + "\n")
	for _, r := range rows {
		labels := ""
		if r.Labels > 0 {
			labels = fmt.Sprint(r.Labels)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |", r.Run, md(r.Method), r.Probe, labels, r.Conv, r.FC, r.Y, r.Training)
		if measures {
			fmt.Fprintf(&b, " %s | %s | %s |", r.NDM, r.MINE, r.MSSSIM)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func md(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Markdown renders the whole report; curves maps a run's name to its curve
// image's path relative to the report (absent: no image).
func Markdown(runs []*Run, curves map[string]string) string {
	var b strings.Builder
	b.WriteString("# dimtorch report\n\n")
	b.WriteString(Table(Rows(runs)))
	if ps := Protocols(runs); len(ps) > 0 {
		b.WriteString("\nHow each probe was measured:\n\n")
		for _, p := range ps {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	for _, r := range runs {
		fmt.Fprintf(&b, "\n## %s\n\n", r.Name)
		fmt.Fprintf(&b, "- directory: `%s`\n- method: %s\n- training: %s\n- machine: %s\n", r.Dir, r.Method(), r.Training(), r.Machine())
		if img, ok := curves[r.Name]; ok {
			fmt.Fprintf(&b, "\n![%s: loss and online probe](%s)\n", r.Name, img)
		}
		if r.Config != "" {
			lang := "yaml"
			if strings.HasPrefix(strings.TrimSpace(r.Config), "{") {
				lang = "json"
			}
			fmt.Fprintf(&b, "\nConfiguration:\n\n```%s\n%s\n```\n", lang, strings.TrimRight(r.Config, "\n"))
		}
	}
	return b.String()
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dimtorch report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto}img{max-width:100%}
.meta{color:#555}
</style></head><body>
<h1>dimtorch report</h1>
<p class="meta">{{.Generated}}</p>
<table><tr><th>run</th><th>method</th><th>probe</th><th>probe's labels</th><th>conv</th><th>fc</th><th>Y</th><th>training</th>{{if .Measures}}<th>NDM</th><th>MINE (nats)</th><th>MS-SSIM</th>{{end}}</tr>
{{range .Rows}}<tr><td><a href="#{{.Run}}">{{.Run}}</a></td><td>{{.Method}}</td><td>{{.Probe}}</td><td class="n">{{if .Labels}}{{.Labels}}{{end}}</td><td class="n">{{.Conv}}</td><td class="n">{{.FC}}</td><td class="n">{{.Y}}</td><td>{{.Training}}</td>{{if $.Measures}}<td class="n">{{.NDM}}</td><td class="n">{{.MINE}}</td><td class="n">{{.MSSSIM}}</td>{{end}}</tr>
{{end}}</table>
{{if .Protocols}}<p>How each probe was measured:</p><ul>{{range .Protocols}}<li>{{.}}</li>{{end}}</ul>{{end}}
{{range .Runs}}<h2 id="{{.Name}}">{{.Name}}</h2>
<ul><li>directory: <code>{{.Dir}}</code></li><li>method: {{.Method}}</li><li>training: {{.Training}}</li><li>machine: {{.Machine}}</li></ul>
{{if .Curves}}<img src="{{.Curves}}" alt="{{.Name}}: loss and online probe">{{end}}
{{if .Config}}<p>Configuration:</p><pre>{{.Config}}</pre>{{end}}
{{end}}</body></html>
`))

type pageRun struct {
	Name, Dir, Method, Training, Machine, Config, Curves string
}

// Write renders the report into dir: report.md, index.html and, for each
// training run with metrics, curves/NAME.png. It returns the files written.
func Write(dir string, runs []*Run) ([]string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "curves"), 0o755); err != nil {
		return nil, err
	}
	var files []string
	curves := map[string]string{}
	for _, r := range runs {
		if len(r.Records) == 0 {
			continue
		}
		rel := filepath.Join("curves", r.Name+".png")
		if err := train.DrawCurves(r.Records, filepath.Join(dir, rel)); err != nil {
			return files, fmt.Errorf("%s: curves: %w", r.Dir, err)
		}
		curves[r.Name] = rel
		files = append(files, filepath.Join(dir, rel))
	}
	mdPath := filepath.Join(dir, "report.md")
	if err := atomicfile.WriteBytes(mdPath, []byte(Markdown(runs, curves)), 0o644); err != nil {
		return files, err
	}
	files = append(files, mdPath)
	rows := Rows(runs)
	data := struct {
		Generated string
		Rows      []Row
		Measures  bool
		Protocols []string
		Runs      []pageRun
	}{Generated: "Generated by dimtorch report on " + time.Now().Format("2006-01-02 15:04 MST") + ".", Rows: rows, Protocols: Protocols(runs)}
	for _, r := range rows {
		if r.NDM != "" || r.MINE != "" || r.MSSSIM != "" {
			data.Measures = true
		}
	}
	for _, r := range runs {
		data.Runs = append(data.Runs, pageRun{Name: r.Name, Dir: r.Dir, Method: r.Method(), Training: r.Training(), Machine: r.Machine(),
			Config: strings.TrimRight(r.Config, "\n"), Curves: curves[r.Name]})
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, data); err != nil {
		return files, err
	}
	htmlPath := filepath.Join(dir, "index.html")
	if err := atomicfile.WriteBytes(htmlPath, buf.Bytes(), 0o644); err != nil {
		return files, err
	}
	return append(files, htmlPath), nil
}
