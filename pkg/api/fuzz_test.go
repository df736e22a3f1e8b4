package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/jetstore"
)

// FuzzHandlers sends arbitrary bodies, IDs and event names to the start
// and raise routes of a real API over a real dispatcher. Every answer is
// a known status code, never a 500, and every error has a JSON message.
func FuzzHandlers(f *testing.F) {
	srv := natstest.Start(f)
	nc, js := natstest.Connect(f, srv)
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	d, err := dispatcher.New(ctx, nc, js, dispatcher.Options{})
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = d.Run(ctx) }()
	c, err := client.New(ctx, nc, js)
	if err != nil {
		f.Fatal(err)
	}
	if err := c.Store().Register(ctx, jetstore.KindOrchestrator, "Known"); err != nil {
		f.Fatal(err)
	}
	h := api.New(c, api.Options{MaxBodyBytes: 4096})

	f.Add("Known", "id-1", "E", []byte(`{"a":1}`))
	f.Add("Unknown", "a.b", "", []byte(`{`))
	f.Add("", "", "x y", []byte(""))
	f.Add("Known", "%2E%2E", "E\x00", []byte(`"\ud800"`))
	f.Add("Known", strings.Repeat("z", 300), "E", []byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, name, id, event string, body []byte) {
		paths := []string{
			"orchestrators/" + url.PathEscape(name),
			"orchestrators/" + url.PathEscape(name) + "/" + url.PathEscape(id),
			"instances/" + url.PathEscape(id) + "/raiseEvent/" + url.PathEscape(event),
			"instances/" + url.PathEscape(id),
		}
		for i, p := range paths {
			method := http.MethodPost
			if i == 3 {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, "http://h"+api.Prefix+p, strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			switch w.Code {
			case 200, 202, 400, 404, 409, 410, 413:
			default:
				t.Fatalf("%s %s with body %q: status %d %s", method, p, body, w.Code, w.Body)
			}
			if w.Code >= 400 {
				var e struct{ Message string }
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Message == "" {
					t.Fatalf("%s %s: error body %q is not {\"message\"}", method, p, w.Body)
				}
			}
		}
	})
}
