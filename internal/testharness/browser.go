package testharness

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
)

// Browser starts a headless Chromium for the test, its window width x
// height, and returns a context whose tab it drives. A missing chromium
// skips the test, or fails it in CI.
func Browser(t testing.TB, width, height int) context.Context {
	t.Helper()
	path := RequireBinary(t, "chromium", "install Debian's chromium (apt-get install chromium) to run the browser tests")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests often run as root, where Chromium refuses its sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first action starts the browser, which lives as long as the
	// context of that action: no timeout on it (chromedp bounds the start
	// by its own WSURLReadTimeout).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}
