// Package dashboard is jetflow's web dashboard: static HTML, CSS and
// JavaScript, embedded in the binary, that list instances, show one
// instance's custom status live through the watch stream, draw its
// history as a timeline and send the management operations. It talks only
// to the Durable Functions HTTP API under /runtime/webhooks/durabletask/,
// so the API process serves it next to the API:
//
//	ui := dashboard.Handler()
//	mux.Handle("GET /{$}", ui)   // the page
//	mux.Handle("GET /ui/", ui)   // its assets
//
// The page itself needs no API key; it asks for one when the API answers
// 401 and keeps it in the browser's sessionStorage.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// AssetPrefix is the path under which the page's assets are served.
const AssetPrefix = "/ui/"

// CacheControl is sent with every asset: browsers may reuse an asset for a
// minute, then revalidate it with its ETag.
const CacheControl = "public, max-age=60"

// ContentSecurityPolicy allows the page only its own scripts, styles and
// connections (the API and the watch stream are same-origin).
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

type handler struct {
	files map[string]asset // by URL path
	mod   time.Time
}

// Handler serves the dashboard: index.html at "/" (and "/index.html"), and
// every other asset at its path under AssetPrefix. Other paths answer 404;
// methods other than GET and HEAD answer 405.
func Handler() http.Handler {
	h := &handler{files: map[string]asset{}}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = http.DetectContentType(b)
		}
		sum := sha256.Sum256(b)
		h.files[strings.TrimPrefix(p, "assets")] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("dashboard: embedded assets: " + err.Error()) // cannot happen: the files are compiled in
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/" || p == "" {
		p = "/index.html"
	}
	a, ok := h.files[p]
	if !ok || (p != "/index.html" && !strings.HasPrefix(p, AssetPrefix)) {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Cache-Control", CacheControl)
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	if strings.HasSuffix(p, ".html") {
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		// The watch stream carries the API key in its URL: never leak it.
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", h.mod, bytes.NewReader(a.body))
}
