package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/dimtorch/dimtorch/eval"
	"github.com/dimtorch/dimtorch/internal/testref"
)

// TestReportInBrowser opens the HTML report in Debian's headless Chromium and
// checks what a reader would see: no console errors or uncaught exceptions,
// every image loaded, and a table row per run. Negative controls (a report
// with a curve deleted, one with a table row deleted, one with a script error
// injected) prove that each check can fail.
func TestReportInBrowser(t *testing.T) {
	chromium := testref.NeedChromium(t)

	root := t.TempDir()
	a, b, pix := filepath.Join(root, "a", "q"), filepath.Join(root, "b", "q"), filepath.Join(root, "pixels")
	fakeRun(t, a)
	fakeRun(t, b)
	writeJSON(t, filepath.Join(pix, "eval", "linear-pixels-n60000.json"), eval.Report{Source: "raw pixels", Probe: "linear", TrainImages: 60000,
		Protocol: "softmax regression", Features: map[string]eval.Result{"pixels": {Accuracy: 0.8366}}})
	runs, err := Load([]string{a, b, pix})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "report")
	if _, err := Write(out, runs); err != nil {
		t.Fatal(err)
	}
	// Each fake run has one evaluation, so the table has one row per run, in
	// the runs' order; the two training runs have curves, pixels has none.
	var names, curves []string
	for _, r := range runs {
		names = append(names, r.Name)
		if len(r.Records) > 0 {
			curves = append(curves, "curves/"+r.Name+".png")
		}
	}
	if len(curves) != 2 {
		t.Fatalf("the fake runs should give 2 curves, got %v", curves)
	}

	browser := startChromium(t, chromium)

	t.Run("report", func(t *testing.T) {
		p := openPage(t, browser, serve(t, out))
		for _, problem := range p.problems(names, curves) {
			t.Error(problem)
		}
	})

	// Negative control: a curve missing from the report must fail the image
	// check (and Chromium logs the failed load as a console error).
	t.Run("broken image is caught", func(t *testing.T) {
		dir := copyDir(t, out)
		if err := os.Remove(filepath.Join(dir, "curves", "q-2.png")); err != nil {
			t.Fatal(err)
		}
		p := openPage(t, browser, serve(t, dir))
		problems := p.problems(names, curves)
		t.Logf("caught: %q", problems)
		if !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, `image "curves/q-2.png" did not load`) }) {
			t.Errorf("the missing curves/q-2.png went unnoticed; problems: %q", problems)
		}
		if slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, `"curves/q.png"`) }) {
			t.Errorf("the intact curves/q.png was reported: %q", problems)
		}
	})

	// Negative control: a run missing from the table must fail the row check.
	t.Run("missing row is caught", func(t *testing.T) {
		dir := copyDir(t, out)
		index := filepath.Join(dir, "index.html")
		page, err := os.ReadFile(index)
		if err != nil {
			t.Fatal(err)
		}
		row := regexp.MustCompile(`<tr><td><a href="#pixels">.*</tr>\n`)
		if !row.Match(page) {
			t.Fatal("index.html has no table row for pixels")
		}
		if err := os.WriteFile(index, row.ReplaceAll(page, nil), 0o644); err != nil {
			t.Fatal(err)
		}
		p := openPage(t, browser, serve(t, dir))
		problems := p.problems(names, curves)
		t.Logf("caught: %q", problems)
		if !slices.ContainsFunc(problems, func(s string) bool { return strings.HasPrefix(s, "table rows ") }) {
			t.Errorf("the missing row went unnoticed; problems: %q", problems)
		}
	})

	// Negative control: a console.error call and an uncaught exception must
	// both be reported.
	t.Run("script error is caught", func(t *testing.T) {
		dir := copyDir(t, out)
		index := filepath.Join(dir, "index.html")
		page, err := os.ReadFile(index)
		if err != nil {
			t.Fatal(err)
		}
		inject := `<script>console.error("injected console error"); notAFunction();</script></body>`
		page = bytes.Replace(page, []byte("</body>"), []byte(inject), 1)
		if err := os.WriteFile(index, page, 0o644); err != nil {
			t.Fatal(err)
		}
		p := openPage(t, browser, serve(t, dir))
		problems := p.problems(names, curves)
		t.Logf("caught: %q", problems)
		for _, want := range []string{"console error: injected console error", "uncaught exception: Uncaught ReferenceError: notAFunction is not defined"} {
			if !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, want) }) {
				t.Errorf("no problem says %q; problems: %q", want, problems)
			}
		}
		if slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, "image") || strings.Contains(s, "row") }) {
			t.Errorf("the injected script should break nothing else: %q", problems)
		}
	})
}

// startChromium starts one headless Chromium for the test's pages (each
// opens its own tab) and stops it when the test ends.
func startChromium(t *testing.T, path string) context.Context {
	t.Helper()
	// A bound on the whole browser: a hung Chromium fails the test instead
	// of running into go test's timeout.
	ctx, cancelTimeout := context.WithTimeout(context.Background(), time.Minute)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in containers
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		// The machine may be offline: Chromium must not try to reach Google.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
	)
	var output syncBuffer
	opts = append(opts, chromedp.CombinedOutput(&output))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	// Registered after UserDataDir's t.TempDir, so it runs (and waits for
	// Chromium to exit) before that directory is removed.
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
	})
	start := time.Now()
	if err := chromedp.Do(browserCtx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v\n%s", path, err, output.String())
	}
	t.Logf("Chromium started in %v", time.Since(start).Round(time.Millisecond))
	return browserCtx
}

// serve serves dir on loopback for the test's duration and returns the
// report's URL. The browser asks the server for /favicon.ico, which the
// report does not have (opened from a file it would not be asked for): it
// gets an empty answer, not a 404 that Chromium logs as a console error.
func serve(t *testing.T, dir string) string {
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/favicon.ico" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/" // the file server answers with index.html
}

// copyDir copies a report directory (flat files and one level of
// subdirectories is all Write makes, but any depth works).
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// shownPage is what the browser made of the report.
type shownPage struct {
	Console []string // console errors, uncaught exceptions, error-level log entries
	Images  []shownImage
	Rows    []shownRow
}

type shownImage struct {
	Src      string `json:"src"`
	Complete bool   `json:"complete"`
	Width    int    `json:"width"` // naturalWidth
}

type shownRow struct {
	Run    string `json:"run"`    // the first cell's text
	Target bool   `json:"target"` // the row's link leads to the run's section
}

// openPage loads url in a new tab and reads the page once it has loaded
// (the load event waits for the images, loaded or failed).
func openPage(t *testing.T, browser context.Context, url string) *shownPage {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	var (
		mu      sync.Mutex
		console []string
	)
	record := func(s string) { mu.Lock(); console = append(console, s); mu.Unlock() }
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				record(fmt.Sprintf("console %s: %s", ev.Type, argsText(ev.Args)))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil { // the error; its description goes on with the stack
				desc, _, _ := strings.Cut(d.Exception.Description, "\n")
				text += " " + desc
			}
			record(fmt.Sprintf("uncaught exception: %s (%s:%d:%d)", text, d.URL, d.LineNumber+1, d.ColumnNumber+1))
		case *log.EventEntryAdded:
			if e := ev.Entry; e.Level == log.EntryLevelError {
				record(fmt.Sprintf("console error (%s): %s %s", e.Source, e.Text, e.URL))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("loading %s: HTTP %d %s", url, resp.Status, resp.StatusText)
	}
	p := &shownPage{}
	if p.Images, err = chromedp.Run(ctx, chromedp.Evaluate[[]shownImage](`Array.from(document.images, i => ({src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth}))`)); err != nil {
		t.Fatal(err)
	}
	if p.Rows, err = chromedp.Run(ctx, chromedp.Evaluate[[]shownRow](`Array.from(document.querySelectorAll("table tr")).filter(r => r.querySelector("td")).map(r => {
		const a = r.cells[0].querySelector("a[href^='#']");
		return {run: r.cells[0].textContent.trim(), target: !!a && document.getElementById(a.getAttribute("href").slice(1)) !== null};
	})`)); err != nil {
		t.Fatal(err)
	}
	// Every event the browser sent before the last reply has been seen
	// (Listen runs on the reading goroutine); this round trip flushes any
	// console message that raced the evaluations.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`0`)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	p.Console = slices.Clone(console)
	mu.Unlock()
	t.Logf("%s: loaded and read in %v: %d images, %d table rows, %d console errors", url, time.Since(start).Round(time.Millisecond), len(p.Images), len(p.Rows), len(p.Console))
	return p
}

// problems lists what is wrong with the page, given the runs' names in
// order and the curve images the report should show.
func (p *shownPage) problems(names, curves []string) []string {
	out := slices.Clone(p.Console)
	var srcs []string
	for _, img := range p.Images {
		srcs = append(srcs, img.Src)
		if !img.Complete || img.Width <= 0 {
			out = append(out, fmt.Sprintf("image %q did not load (complete=%v, naturalWidth=%d)", img.Src, img.Complete, img.Width))
		}
	}
	if !slices.Equal(srcs, curves) {
		out = append(out, fmt.Sprintf("images %q, want %q", srcs, curves))
	}
	var rows []string
	for _, r := range p.Rows {
		rows = append(rows, r.Run)
		if !r.Target {
			out = append(out, fmt.Sprintf("table row %q does not link to its run's section", r.Run))
		}
	}
	if !slices.Equal(rows, names) {
		out = append(out, fmt.Sprintf("table rows %q, want one per run: %q", rows, names))
	}
	return out
}

func argsText(args []*runtime.RemoteObject) string {
	var parts []string
	for _, a := range args {
		switch {
		case a.Type == runtime.RemoteObjectTypeString:
			var s string
			if err := json.Unmarshal(a.Value, &s); err == nil {
				parts = append(parts, s)
				continue
			}
			parts = append(parts, string(a.Value))
		case a.Description != "":
			parts = append(parts, a.Description)
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}

// syncBuffer collects Chromium's output, written from another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
