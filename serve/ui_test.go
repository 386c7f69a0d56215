package serve

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/dimtorch/dimtorch/internal/testref"
	"github.com/rs/zerolog"
)

// The page to try the service, in Debian's headless Chromium: it loads
// without console errors, a picked image (with the API key typed into the
// page) returns k neighbours whose gallery images load as thumbnails, and a
// screenshot shows them (written to $DIMTORCH_UI_SCREENSHOT when set).
func TestUIInBrowser(t *testing.T) {
	chromium := testref.NeedChromium(t)
	dir := t.TempDir()
	gallery := filepath.Join(dir, "gallery")
	os.MkdirAll(filepath.Join(gallery, "shirts"), 0o755)
	for i, name := range []string{"shirts/light.png", "shirts/mid.png", "dark.png"} {
		os.WriteFile(filepath.Join(gallery, name), grayPNG(t, uint8(220-90*i)), 0o644)
	}
	query := filepath.Join(dir, "query.png")
	os.WriteFile(query, grayPNG(t, 200), 0o644)
	keyFile := filepath.Join(dir, "keys")
	os.WriteFile(keyFile, []byte(keyA+"\n"), 0o600)
	keys, err := LoadAPIKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeModel{}
	g, err := GalleryFromDir(context.Background(), m, gallery, 1<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deployment{Model: m, Gallery: g, Version: "v7"}, Config{ModelName: "mymodel", APIKeys: keys, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady(true)
	ts := httptest.NewServer(s.Handler())
	defer func() { ts.Close(); s.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true), chromedp.WindowSize(900, 700))...)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browserCtx); err != nil { // starts Chromium
		t.Fatalf("starting %s: %v", chromium, err)
	}
	browser, cancelTab := chromedp.NewContext(browserCtx)
	defer cancelTab()
	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(browser, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console error: %v", ev.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "uncaught exception: "+ev.ExceptionDetails.Text)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(browser, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	// Without the key the page says what it needs; with it, the search.
	void := func(a chromedp.Action[bool]) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := a(ctx, tg)
			return chromedp.Void{}, err
		}
	}
	steps := []chromedp.Action[chromedp.Void]{
		void(chromedp.Poll[bool](`document.getElementById("meta").textContent.includes("needs a key")`, chromedp.WithPollingTimeout(10*time.Second))),
		chromedp.SetValue("#key", keyA),
		chromedp.SetValue("#k", "3"),
		chromedp.SetUploadFiles("#file", []string{query}),
		void(chromedp.Poll[bool](`[...document.querySelectorAll("#hits img")].filter(i => i.complete && i.naturalWidth > 0).length === 3`,
			chromedp.WithPollingTimeout(20*time.Second))),
	}
	if err := chromedp.Do(browser, steps...); err != nil {
		mu.Lock()
		t.Fatalf("%v (problems: %q)", err, problems)
	}
	shown, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("#hits figure").length`))
	if err != nil {
		t.Fatal(err)
	}
	names, err := chromedp.Run(browser, chromedp.Evaluate[string](`[...document.querySelectorAll("#hits figcaption > div:first-child")].map(d => d.textContent).join(",")`))
	if err != nil {
		t.Fatal(err)
	}
	statusText, err := chromedp.Run(browser, chromedp.Text("#status"))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if shown != 3 || !strings.Contains(statusText, "3 nearest") || !strings.Contains(statusText, "model v7") {
		t.Errorf("%d results, status %q", shown, statusText)
	}
	// fakeModel's vectors rank the gallery by brightness from the query's.
	if names != "shirts/light.png,shirts/mid.png,dark.png" {
		t.Errorf("neighbours in the page: %s", names)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 800 {
		t.Fatalf("screenshot: %v", err)
	}
	if p := os.Getenv("DIMTORCH_UI_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page logged problems: %q", problems)
	}
}
