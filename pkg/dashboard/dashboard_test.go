package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	htmlRef   = regexp.MustCompile(`(?:src|href)="([^"#:]+)"`)
	jsImport  = regexp.MustCompile(`(?m)^\s*import\s[^'"]*['"]\./([^'"]+)['"]`)
	wantTypes = map[string]string{".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
)

func checkAsset(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	r := get(t, h, "GET", path)
	b := body(t, r)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, r.StatusCode)
	}
	if len(b) == 0 {
		t.Fatalf("GET %s: empty body", path)
	}
	for ext, ct := range wantTypes {
		if strings.HasSuffix(path, ext) && !strings.HasPrefix(r.Header.Get("Content-Type"), ct) {
			t.Errorf("GET %s: Content-Type %q, want %s", path, r.Header.Get("Content-Type"), ct)
		}
	}
	if cc := r.Header.Get("Cache-Control"); cc != CacheControl {
		t.Errorf("GET %s: Cache-Control %q", path, cc)
	}
	if r.Header.Get("ETag") == "" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET %s: headers %v", path, r.Header)
	}
	return b
}

// TestServesIndexAndEveryReferencedAsset follows index.html's src and href
// attributes and the scripts' imports, and fetches each.
func TestServesIndexAndEveryReferencedAsset(t *testing.T) {
	h := Handler()
	index := checkAsset(t, h, "/")
	if !strings.Contains(index, `id="start-form"`) || !strings.Contains(index, `id="detail-custom-status"`) {
		t.Fatal("/ is not the dashboard page")
	}
	r := get(t, h, "GET", "/")
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("index CSP %q", csp)
	}
	if index2 := checkAsset(t, h, "/index.html"); index2 != index {
		t.Error("/index.html differs from /")
	}

	seen := map[string]bool{}
	queue := []string{}
	for _, m := range htmlRef.FindAllStringSubmatch(index, -1) {
		if strings.HasPrefix(m[1], "/") {
			continue // /openapi.json belongs to the API
		}
		queue = append(queue, "/"+m[1])
	}
	if len(queue) < 3 {
		t.Fatalf("index.html references only %v", queue)
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		b := checkAsset(t, h, p)
		if strings.HasSuffix(p, ".js") {
			dir := p[:strings.LastIndex(p, "/")+1]
			for _, m := range jsImport.FindAllStringSubmatch(b, -1) {
				queue = append(queue, dir+m[1])
			}
		}
	}
	for _, want := range []string{"/ui/app.js", "/ui/api.js", "/ui/gantt.js", "/ui/json.js", "/ui/sequences.js", "/ui/app.css", "/ui/favicon.svg"} {
		if !seen[want] {
			t.Errorf("%s is not reachable from index.html", want)
		}
	}
	// Every embedded file is referenced (no dead assets).
	for p := range Handler().(*handler).files {
		if p != "/index.html" && !seen[p] {
			t.Errorf("embedded %s is referenced by nothing", p)
		}
	}
}

func TestHandlerEdges(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/ui/", "/ui/nope.js", "/nope", "/ui/../index.html.bak", "/runtime/webhooks/durabletask/instances"} {
		if r := get(t, h, "GET", p); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.StatusCode)
		}
	}
	if r := get(t, h, "POST", "/"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", r.StatusCode)
	}
	r := get(t, h, "HEAD", "/ui/app.js")
	if r.StatusCode != http.StatusOK || body(t, r) != "" {
		t.Errorf("HEAD: %d", r.StatusCode)
	}
	etag := get(t, h, "GET", "/ui/app.css").Header.Get("ETag")
	if r := get(t, h, "GET", "/ui/app.css", "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", r.StatusCode)
	}
}

// TestMountedNextToAPI mounts the handler as the API process does.
func TestMountedNextToAPI(t *testing.T) {
	mux := http.NewServeMux()
	ui := Handler()
	mux.Handle("GET /{$}", ui)
	mux.Handle("GET "+AssetPrefix, ui)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for path, code := range map[string]int{"/": 200, "/ui/app.js": 200, "/runtime/webhooks/durabletask/instances": 418, "/openapi.json": 418} {
		if r := get(t, mux, "GET", path); r.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode, code)
		}
	}
}
