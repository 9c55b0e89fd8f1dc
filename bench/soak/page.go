package soak

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumNames are the names Chromium goes by on PATH.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// pageSource keeps one tab open on the page for the whole run, as a
// viewer's tab would be, and samples its JS heap and DOM size.
type pageSource struct {
	url     string
	ctx     context.Context // the tab
	cancel  func()
	userDir string
	loaded  bool
}

// openBrowser starts a headless Chromium, as the dashboard's browser tests
// do. The page itself is opened by the first sample, and again by each
// sample until it loads, so that the sampler may start before the demo.
func openBrowser(url string) (*pageSource, error) {
	var path string
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		return nil, fmt.Errorf("soak: no chromium on PATH (looked for %v): install Debian's chromium (apt-get install chromium), or run without the page (--page \"\")", chromiumNames)
	}
	userDir, err := os.MkdirTemp("", "soak-chromium-")
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // often run as root, where Chromium refuses its sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(userDir),
		chromedp.WindowSize(1280, 720),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	ctx, cancelTab := chromedp.NewContext(actx)
	p := &pageSource{url: url, ctx: ctx, userDir: userDir, cancel: func() { cancelTab(); cancelAlloc() }}
	// The browser lives as long as the context of its first action: the
	// tab's, with no timeout (chromedp bounds the start itself).
	if err := chromedp.Do(ctx); err != nil {
		p.close()
		return nil, fmt.Errorf("soak: starting %s: %w", path, err)
	}
	return p, nil
}

func (p *pageSource) names() []string { return []string{"page_heap_mib", "page_dom_nodes"} }

func (p *pageSource) sample(ctx context.Context) ([]float64, error) {
	// Bound each command by the sample's deadline, on the tab's context.
	tctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()

	if !p.loaded {
		if err := chromedp.Do(tctx, chromedp.Navigate(p.url)); err != nil {
			return nan(2), fmt.Errorf("opening %s: %w", p.url, err)
		}
		p.loaded = true
	}
	heap, err := chromedp.Call(tctx, runtime.GetHeapUsage, cdp.Empty{})
	if err != nil {
		return nan(2), fmt.Errorf("reading the JS heap of %s: %w", p.url, err)
	}
	nodes, err := chromedp.Run(tctx, chromedp.Evaluate[float64](`document.getElementsByTagName('*').length`))
	if err != nil {
		return []float64{heap.UsedSize / (1 << 20), math.NaN()}, fmt.Errorf("counting the DOM nodes of %s: %w", p.url, err)
	}
	return []float64{heap.UsedSize / (1 << 20), nodes}, nil
}

func (p *pageSource) close() {
	p.cancel()
	os.RemoveAll(p.userDir)
}
