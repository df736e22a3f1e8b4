// Package browser drives the dashboard in a headless chromium through the
// Chrome DevTools protocol: it starts orchestrations from the page and
// watches them finish without reloading it.
//
// It needs chromium (Debian: apt-get install -y chromium). Without one it
// skips, unless JETFLOW_REQUIRE_BROWSER=1 or JETFLOW_REQUIRE_DOCKER=1 is
// set (as .ci/run does), when it fails. JETFLOW_CHROMIUM names another
// binary. JETFLOW_UPDATE_SCREENSHOT=1 also copies the screenshot to
// docs/dashboard.png, the README's picture.
package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"go.uber.org/zap/zaptest"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/dashboard"
	"github.com/jetflow/jetflow/pkg/devserver"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/worker"
)

// chromiumPath finds a browser, or skips (or fails, when one is required).
func chromiumPath(t *testing.T) string {
	t.Helper()
	names := []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"}
	if p := os.Getenv("JETFLOW_CHROMIUM"); p != "" {
		names = []string{p}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("no browser found (looked for %s); install one with: apt-get install -y chromium", strings.Join(names, ", "))
	if os.Getenv("JETFLOW_REQUIRE_BROWSER") == "1" || os.Getenv("JETFLOW_REQUIRE_DOCKER") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startServer runs a devserver with the samples and returns the URL the
// browser opens. If the API process already serves the dashboard at "/",
// that is the URL; otherwise a front server serves the dashboard at "/"
// and passes everything else to the API, as the API process will.
func startServer(t *testing.T, o api.Options) string {
	t.Helper()
	reg := worker.NewRegistry()
	if err := samples.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- devserver.Run(ctx, devserver.Config{
			NATS:     devserver.NATSConfig{Dir: t.TempDir(), Addr: "127.0.0.1:0"},
			HTTPAddr: "127.0.0.1:0",
			Registry: reg,
			API:      o,
			Logger:   zaptest.NewLogger(t),
			Ready:    func(_, httpURL string) { ready <- httpURL },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devserver: %v", err)
		}
	})
	var apiURL string
	select {
	case apiURL = <-ready:
	case err := <-done:
		t.Fatalf("devserver: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("devserver not ready")
	}
	key := ""
	if len(o.APIKeys) > 0 {
		key = o.APIKeys[0]
	}
	waitRegistered(t, apiURL, key)

	if servesDashboard(apiURL) {
		t.Log("the API process serves the dashboard itself")
		return apiURL
	}
	target, _ := url.Parse(apiURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // the watch stream is server-sent events
	ui := dashboard.Handler()
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", ui)
	mux.Handle("GET "+dashboard.AssetPrefix, ui)
	mux.Handle("/", proxy)
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)
	t.Log("the dashboard is served by the test, in front of the API at " + apiURL)
	return front.URL
}

func servesDashboard(base string) bool {
	res, err := http.Get(base + "/")
	if err != nil {
		return false
	}
	defer res.Body.Close()
	return res.StatusCode == http.StatusOK && strings.HasPrefix(res.Header.Get("Content-Type"), "text/html")
}

// waitRegistered waits until the worker has registered the samples.
func waitRegistered(t *testing.T, base, key string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest("POST", base+api.Prefix+"orchestrators/SetStatusTest/registered-probe", strings.NewReader("0"))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("x-functions-key", key)
		}
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusAccepted {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("samples not registered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type browser struct {
	t   *testing.T
	ctx context.Context

	mu         sync.Mutex
	exceptions []string
}

// newBrowser starts a headless chromium for the test. Call it after
// startServer, so that the browser closes first at cleanup and the
// servers have no stream left open.
func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless, // --headless
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("force-prefers-reduced-motion", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	b := &browser{t: t, ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, msg)
			b.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			t.Logf("console.%s: %s", ev.Type, strings.Join(parts, " "))
		}
	})
	start := time.Now()
	if err := chromedp.Run(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start %s: %v", path, err)
	}
	t.Logf("%s started in %v", path, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return b
}

// run runs actions with a deadline.
func (b *browser) run(what string, timeout time.Duration, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// text is an element's textContent ("" if there is none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	var s string
	b.run("read "+sel, 10*time.Second, chromedp.Evaluate(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel), &s))
	return s
}

// eval evaluates a JavaScript expression into out.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	b.run("evaluate "+expr, 10*time.Second, chromedp.Evaluate(expr, out))
}

// waitUntil polls a JavaScript condition in the page until it holds.
func (b *browser) waitUntil(what, cond string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		err := chromedp.Run(ctx, chromedp.Evaluate(`Boolean(`+cond+`)`, &ok))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %v waiting for %s (%s); err=%v; runtime status %q, custom status %q, error %q, banner %q",
				timeout, what, cond, err, b.text("#detail-runtime-status"), b.text("#detail-custom-status"), b.text("#detail-error"), b.text("#banner"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startFromForm fills the start form and submits it.
func (b *browser) startFromForm(name, id, input string) {
	b.t.Helper()
	b.run("fill the start form", 15*time.Second,
		chromedp.WaitVisible("#start-form", chromedp.ByQuery),
		fill("#start-name", ""),
		chromedp.SendKeys("#start-name", name, chromedp.ByQuery),
		fill("#start-id", id),
		fill("#start-input", input),
		chromedp.Click("#start-submit", chromedp.ByQuery),
	)
}

// fill sets a form field's value as typing would (with an input event).
func fill(sel, value string) chromedp.Action {
	var ok bool
	return chromedp.Evaluate(fmt.Sprintf(`(() => {
  const el = document.querySelector(%q);
  el.value = %q;
  el.dispatchEvent(new Event('input', { bubbles: true }));
  return true;
})()`, sel, value), &ok)
}

// markPage sets a value that a reload would lose, and records every
// custom status shown.
const markPage = `(() => {
  window.__noReload = 'still-here';
  window.__seen = [];
  const el = document.getElementById('detail-custom-status');
  new MutationObserver(() => {
    const v = el.dataset.json;
    if (v !== undefined && window.__seen[window.__seen.length - 1] !== v) window.__seen.push(v);
  }).observe(el, { childList: true, subtree: true, characterData: true, attributes: true });
  return true;
})()`

func hashIs(id string) string {
	return fmt.Sprintf(`location.hash === '#/instances/' + encodeURIComponent(%q)`, id)
}

const (
	customStatusIs = `document.querySelector('#detail-custom-status').textContent.includes(%q)`
	runtimeIs      = `document.querySelector('#detail-runtime-status').textContent.trim() === %q`
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s", dir)
	}
	return dir
}

// saveArtifact writes a screenshot to test/integration/artifacts.
func saveArtifact(t *testing.T, name string, png []byte) {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "test", "integration", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d KB)", p, len(png)/1024)
}

// saveScreenshot saves the dashboard's screenshot, and with
// JETFLOW_UPDATE_SCREENSHOT=1 also as the README's docs/dashboard.png.
func saveScreenshot(t *testing.T, png []byte) {
	t.Helper()
	saveArtifact(t, "dashboard.png", png)
	if os.Getenv("JETFLOW_UPDATE_SCREENSHOT") == "1" {
		docs := filepath.Join(repoRoot(t), "docs", "dashboard.png")
		if err := os.MkdirAll(filepath.Dir(docs), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(docs, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("copied to %s", docs)
	}
}

// TestStartHelloSequenceAndWatchItLive is the browser test: start
// E1_HelloSequence from the page, then see its custom status reach
// "London" and its status reach Completed, live, without a reload.
func TestStartHelloSequenceAndWatchItLive(t *testing.T) {
	path := chromiumPath(t)
	base := startServer(t, api.Options{})
	b := newBrowser(t, path)
	began := time.Now()

	b.run("open the dashboard", 20*time.Second,
		chromedp.Navigate(base+"/#/"),
		chromedp.WaitVisible("#view-list", chromedp.ByQuery),
	)
	var marked bool
	b.eval(markPage, &marked)

	const id = "browser-hello-1"
	b.startFromForm("E1_HelloSequence", id, "")
	b.waitUntil("the detail view of "+id, hashIs(id)+` && !document.getElementById('view-detail').hidden`, 10*time.Second)
	b.waitUntil(`custom status "London"`, fmt.Sprintf(customStatusIs, "London"), 30*time.Second)
	b.waitUntil("runtime status Completed", fmt.Sprintf(runtimeIs, "Completed"), 30*time.Second)
	t.Logf("started and saw London and Completed in %v", time.Since(began).Round(time.Millisecond))

	// Still the same page: nothing reloaded it.
	var still string
	b.eval(`window.__noReload`, &still)
	if still != "still-here" {
		t.Fatalf("the page was reloaded (marker %q)", still)
	}
	var seen []string
	b.eval(`window.__seen`, &seen)
	t.Logf("custom statuses shown, in order: %v", seen)
	if len(seen) == 0 || seen[len(seen)-1] != `"London"` {
		t.Errorf("last custom status shown %v, want \"London\"", seen)
	}
	order := map[string]int{"null": 0, `"Tokyo"`: 1, `"Seattle"`: 2, `"London"`: 3}
	for i := 1; i < len(seen); i++ {
		if order[seen[i]] < order[seen[i-1]] {
			t.Errorf("custom statuses went backwards: %v", seen)
		}
	}

	// The rest of the detail view.
	b.waitUntil("the progress bar at 3/3", `document.querySelector('#detail-progress').dataset.step === '3' && !document.getElementById('detail-progress-wrap').hidden`, 5*time.Second)
	if got := b.text("#detail-progress-label"); !strings.Contains(got, "3 / 3") || !strings.Contains(got, "London") {
		t.Errorf("progress label %q", got)
	}
	for _, want := range []string{"Hello Tokyo!", "Hello Seattle!", "Hello London!"} {
		if out := b.text("#detail-output"); !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	b.waitUntil("three activity bars in the timeline", `document.querySelectorAll('#detail-timeline svg [data-kind="act"]').length === 3`, 10*time.Second)
	if got := b.text("#detail-live"); got != "finished" {
		t.Errorf("live indicator %q, want finished", got)
	}
	if got := b.text("#detail-name"); got != "E1_HelloSequence" {
		t.Errorf("name %q", got)
	}

	// The screenshot, once everything has settled (the progress bar animates).
	time.Sleep(600 * time.Millisecond)
	var png []byte
	b.run("screenshot", 20*time.Second, chromedp.FullScreenshot(&png, 100))
	saveScreenshot(t, png)

	// Back on the list: the instance is there when the server lists
	// instances; otherwise the page says listing is unavailable.
	b.run("go back to the list", 10*time.Second, chromedp.Click("#detail-back", chromedp.ByQuery), chromedp.WaitVisible("#view-list", chromedp.ByQuery))
	b.waitUntil("the list to load", `!document.getElementById('list-unavailable').hidden || document.querySelector('#instance-rows tr') !== null`, 10*time.Second)
	var unavailable bool
	b.eval(`!document.getElementById('list-unavailable').hidden`, &unavailable)
	if unavailable {
		t.Log("the server does not list instances yet: the page says so")
	} else {
		b.waitUntil("the instance in the list", fmt.Sprintf(`document.querySelector('#instance-rows tr[data-instance-id=%q]') !== null`, id), 10*time.Second)
		b.waitUntil("a Completed count", `Number((document.querySelector('[data-testid="count-Completed"] .count-n') || {}).textContent) >= 1`, 15*time.Second)
	}
	b.eval(`window.__noReload`, &still)
	if still != "still-here" {
		t.Fatal("navigating reloaded the page")
	}
}

// TestAPIKeyLogin runs with an API key: the page asks for it, stores it for
// the session, and then starts and watches an orchestration with it.
func TestAPIKeyLogin(t *testing.T) {
	const key = "browser-secret-key"
	path := chromiumPath(t)
	base := startServer(t, api.Options{APIKeys: []string{key}})
	b := newBrowser(t, path)

	b.run("open the dashboard", 20*time.Second,
		chromedp.Navigate(base+"/#/"),
		chromedp.WaitVisible("#login-key", chromedp.ByQuery),
	)
	if banner := b.text("#banner"); !strings.Contains(banner, "API key") {
		t.Errorf("banner %q does not ask for an API key", banner)
	}
	b.run("sign in", 10*time.Second,
		chromedp.SendKeys("#login-key", key, chromedp.ByQuery),
		chromedp.Click("#login-submit", chromedp.ByQuery),
		chromedp.WaitVisible("#auth-status", chromedp.ByQuery),
	)
	var stored string
	b.eval(`sessionStorage.getItem('jetflow.apiKey')`, &stored)
	if stored != key {
		t.Fatalf("sessionStorage holds %q", stored)
	}

	const id = "browser-key-1"
	b.startFromForm("E1_HelloSequence", id, "")
	b.waitUntil("the detail view", hashIs(id), 10*time.Second)
	b.waitUntil(`custom status "London"`, fmt.Sprintf(customStatusIs, "London"), 30*time.Second)
	b.waitUntil("runtime status Completed", fmt.Sprintf(runtimeIs, "Completed"), 30*time.Second)
	b.waitUntil("the history, read with the key", `document.querySelectorAll('#detail-timeline svg [data-kind="act"]').length === 3`, 10*time.Second)
	if banner := b.text("#banner"); strings.TrimSpace(banner) != "" {
		t.Errorf("banner still shows %q", banner)
	}

	// Signing out forgets the key; the next request asks again.
	b.run("sign out", 10*time.Second, chromedp.Click("#logout", chromedp.ByQuery), chromedp.WaitVisible("#login-key", chromedp.ByQuery))
	b.eval(`sessionStorage.getItem('jetflow.apiKey') || ''`, &stored)
	if stored != "" {
		t.Errorf("key still stored after sign out: %q", stored)
	}
}

// TestOperationsFromTheDetailView suspends, resumes, raises an event to
// and purges a CityRecommender from the page's buttons.
func TestOperationsFromTheDetailView(t *testing.T) {
	path := chromiumPath(t)
	base := startServer(t, api.Options{})
	b := newBrowser(t, path)
	b.run("open the dashboard", 20*time.Second, chromedp.Navigate(base+"/#/"), chromedp.WaitVisible("#view-list", chromedp.ByQuery))
	var ok bool
	// Accept every confirm() and count them.
	b.eval(`window.__confirms = []; window.confirm = (m) => { window.__confirms.push(m); return true; }; true`, &ok)

	const id = "browser-city-1"
	b.startFromForm("CityRecommender", id, "2")
	b.waitUntil("the detail view", hashIs(id), 10*time.Second)
	b.waitUntil("the recommendation", fmt.Sprintf(customStatusIs, "recommendedCities"), 30*time.Second)
	b.waitUntil("Running", fmt.Sprintf(runtimeIs, "Running"), 10*time.Second)

	b.run("suspend", 5*time.Second, chromedp.Click("#action-suspend", chromedp.ByQuery))
	b.waitUntil("Suspended", fmt.Sprintf(runtimeIs, "Suspended"), 15*time.Second)
	b.run("resume", 5*time.Second, chromedp.Click("#action-resume", chromedp.ByQuery))
	b.waitUntil("Running again", fmt.Sprintf(runtimeIs, "Running"), 15*time.Second)

	b.run("raise CitySelected", 10*time.Second,
		fill("#raise-name", "CitySelected"),
		fill("#raise-data", `"London"`),
		chromedp.Click("#raise-submit", chromedp.ByQuery),
	)
	b.waitUntil("Completed", fmt.Sprintf(runtimeIs, "Completed"), 30*time.Second)
	b.waitUntil("the selection", fmt.Sprintf(customStatusIs, "selectedCity"), 10*time.Second)
	b.waitUntil("the event in the timeline", `document.querySelectorAll('#detail-timeline svg [data-kind="event"]').length >= 1`, 10*time.Second)

	b.run("purge", 5*time.Second, chromedp.Click("#action-purge", chromedp.ByQuery))
	b.waitUntil("the list after the purge", `location.hash === '#/' && !document.getElementById('view-list').hidden`, 15*time.Second)
	var confirms []string
	b.eval(`window.__confirms`, &confirms)
	if len(confirms) != 1 || !strings.Contains(confirms[0], "Purge") {
		t.Errorf("confirmations %q, want one for the purge", confirms)
	}
	res, err := http.Get(base + api.Prefix + "instances/" + id)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("after purge: %d, want 404", res.StatusCode)
	}
}
