package dashboard_test

import (
	"context"
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/dashboard"
)

// chromium is Debian's browser (CI installs it with apt-get).
const chromium = "/usr/bin/chromium"

// screenshotDir is where the pages' screenshots are saved: the test's
// temporary directory, or BATCHFLEET_SCREENSHOTS (`make screenshots`
// sets it to docs/screenshots, the README's pictures).
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("BATCHFLEET_SCREENSHOTS"); d != "" {
		return d
	}
	return t.TempDir()
}

// testBrowser opens each page in headless Chromium, checks what an
// operator reads on it and saves a full-page screenshot.
func testBrowser(t *testing.T, f *fixture) {
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (apt-get install -y chromium): %v", chromium, err)
		}
		t.Skipf("%s is missing (apt-get install -y chromium)", chromium)
	}
	base := serve(t, dashboard.Options{JS: f.JS, Store: f.Store, AllowActions: true, User: user, Password: password,
		WebhookSecret: webhookSecret})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1360, 900),
		func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
				Headers: network.Headers{"Authorization": auth}})
			return chromedp.Void{}, err
		},
	))

	shots := screenshotDir(t)
	for _, p := range []struct {
		name, path string
		want       []string
	}{
		{"overview", "/", []string{"Overview", "Unfinished jobs", "Active batches", "Finished, last 24 h",
			"jobs/s", "Cost today", "Dead letters", "Workers seen", "submitter", "poller", "notifier",
			"Newest unfinished jobs", keyRunning, keyCancelled, "in_progress"}},
		{"jobs", "/jobs?status=final&since=1h", []string{"Jobs 1–4", keyOK, keyPartial, keyFailed, keyInvalid,
			"succeeded", "partial", "failed", "3/3", "gpt-4o-mini"}},
		{"job", "/jobs/" + url.PathEscape(keyOK), []string{keyOK, "succeeded", "3 total · 3 completed · 0 failed",
			"Timeline", "created", "submitted", "state", "ended", "final", "completed",
			"Attempts", "Results (JSONL, 3 lines)", hostile}},
		{"dlq", "/dlq", []string{"Dead letters", "batch.dlq.requests", "batch.dlq.webhooks", "webhook_undeliverable",
			"Batch-Webhook-Url", "Replay webhooks", keyInvalid, keyOK}},
	} {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+p.path)), p.name)
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		require.NoError(t, err, p.name)
		// Headings are upper-cased by the stylesheet: compare ignoring case.
		for _, w := range p.want {
			require.Contains(t, strings.ToLower(text), strings.ToLower(w), "page %s", p.name)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err, p.name)
		require.NoError(t, os.MkdirAll(shots, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(shots, p.name+".png"), png, 0o644))
		t.Logf("screenshot %s", filepath.Join(shots, p.name+".png"))
	}
}
