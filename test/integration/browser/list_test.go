package browser

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/dashboard"
)

// fakeList answers GET …/instances as the HTTP API's contract says:
// runtimeStatus and instanceIdPrefix filter, top pages, and the
// x-ms-continuation-token header carries the next page.
type fakeList struct {
	mu       sync.Mutex
	requests []url.Values
	tokens   []string
	items    []api.StatusBody
}

func (f *fakeList) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	token := r.Header.Get("x-ms-continuation-token")
	f.mu.Lock()
	f.requests = append(f.requests, q)
	f.tokens = append(f.tokens, token)
	f.mu.Unlock()
	var match []api.StatusBody
	statuses := strings.Split(q.Get("runtimeStatus"), ",")
	for _, it := range f.items {
		if q.Get("runtimeStatus") != "" && !slices.Contains(statuses, it.RuntimeStatus) {
			continue
		}
		if !strings.HasPrefix(it.InstanceID, q.Get("instanceIdPrefix")) {
			continue
		}
		match = append(match, it)
	}
	top := len(match)
	if n, err := fmt.Sscan(q.Get("top"), &top); n != 1 || err != nil {
		top = len(match)
	}
	// This server never answers more than two per page.
	top = min(top, 2)
	from := 0
	if token != "" {
		fmt.Sscan(token, &from)
	}
	end := min(from+top, len(match))
	if end < len(match) {
		w.Header().Set("x-ms-continuation-token", fmt.Sprint(end))
	}
	page := match[from:end]
	if page == nil {
		page = []api.StatusBody{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(page)
}

func (f *fakeList) last(t *testing.T, pred func(url.Values) bool) url.Values {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.requests) - 1; i >= 0; i-- {
		if pred(f.requests[i]) {
			return f.requests[i]
		}
	}
	return nil
}

func item(id, name, status, custom string, created time.Time) api.StatusBody {
	return api.StatusBody{
		Name: name, InstanceID: id, RuntimeStatus: status,
		Input: json.RawMessage("null"), Output: json.RawMessage("null"), CustomStatus: json.RawMessage(custom),
		CreatedTime: created.UTC().Format(time.RFC3339), LastUpdatedTime: created.Add(2 * time.Second).UTC().Format(time.RFC3339),
	}
}

// TestListViewFollowsTheListContract checks the list view against a fake
// of the list route: the filters become its query, pages follow the
// continuation token, the counts add up, and the name filter works on the
// page.
func TestListViewFollowsTheListContract(t *testing.T) {
	path := chromiumPath(t)
	now := time.Now().Add(-time.Hour)
	f := &fakeList{items: []api.StatusBody{
		item("order-1", "E1_HelloSequence", "Completed", `"London"`, now),
		item("order-2", "E1_HelloSequence", "Running", `"Tokyo"`, now.Add(time.Minute)),
		item("order-3", "CityRecommender", "Completed", `{"selectedCity":"London"}`, now.Add(2*time.Minute)),
		item("ticket-1", "ReserveTicket", "Failed", `null`, now.Add(3*time.Minute)),
		item("ticket-2", "ReserveTicket", "Suspended", `{"discount":12}`, now.Add(4*time.Minute)),
	}}
	mux := http.NewServeMux()
	ui := dashboard.Handler()
	mux.Handle("GET /{$}", ui)
	mux.Handle("GET "+dashboard.AssetPrefix, ui)
	mux.Handle("GET "+api.Prefix+"instances", f)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := newBrowser(t, path)

	b.run("open the list", 20*time.Second, chromedp.Navigate(srv.URL+"/#/"), chromedp.WaitVisible("#view-list", chromedp.ByQuery))
	b.waitUntil("the first page", `document.querySelectorAll('#instance-rows tr').length === 2`, 10*time.Second)
	b.waitUntil("the counts", `document.querySelector('[data-testid="count-All"] .count-n').textContent === '5'`, 10*time.Second)
	for status, n := range map[string]string{"Completed": "2", "Running": "1", "Failed": "1", "Suspended": "1", "Pending": "0"} {
		if got := b.text(fmt.Sprintf(`[data-testid="count-%s"] .count-n`, status)); got != n {
			t.Errorf("count of %s: %q, want %s", status, got, n)
		}
	}
	var hidden bool
	b.eval(`document.getElementById('list-unavailable').hidden`, &hidden)
	if !hidden {
		t.Error("the page says listing is unavailable")
	}

	// Paging with the continuation token.
	b.run("load more", 5*time.Second, chromedp.Click("#list-more", chromedp.ByQuery))
	b.waitUntil("the second page", `document.querySelectorAll('#instance-rows tr').length === 4`, 10*time.Second)
	b.run("load the rest", 5*time.Second, chromedp.Click("#list-more", chromedp.ByQuery))
	b.waitUntil("all five", `document.querySelectorAll('#instance-rows tr').length === 5 && document.getElementById('list-more').hidden`, 10*time.Second)
	f.mu.Lock()
	tokens := slices.Clone(f.tokens)
	f.mu.Unlock()
	if !slices.Contains(tokens, "2") || !slices.Contains(tokens, "4") {
		t.Errorf("continuation tokens sent: %q", tokens)
	}

	// The name filter works on the page, as one types.
	b.run("filter by name", 5*time.Second, chromedp.SendKeys("#filter-name", "reserve", chromedp.ByQuery))
	b.waitUntil("two ReserveTickets", `document.querySelectorAll('#instance-rows tr').length === 2`, 5*time.Second)
	b.run("clear the name", 5*time.Second, fill("#filter-name", ""))

	// Server-side filters become the query.
	b.run("filter", 10*time.Second,
		chromedp.Click(`#filter-status input[value="Running"]`, chromedp.ByQuery),
		chromedp.Click(`#filter-status input[value="Completed"]`, chromedp.ByQuery),
		fill("#filter-prefix", "order-"),
		fill("#filter-from", "2024-01-02T03:04:05"),
		fill("#filter-custom", ` { "selectedCity" : "London" } `),
		chromedp.Click("#filter-apply", chromedp.ByQuery),
	)
	b.waitUntil("the filtered list", `document.querySelectorAll('#instance-rows tr').length === 2`, 10*time.Second)
	q := f.last(t, func(q url.Values) bool { return q.Get("instanceIdPrefix") != "" })
	if q == nil {
		t.Fatal("no filtered request")
	}
	if got := q.Get("runtimeStatus"); got != "Running,Completed" && got != "Completed,Running" {
		t.Errorf("runtimeStatus=%q", got)
	}
	if got := q.Get("customStatus"); got != `{"selectedCity":"London"}` {
		t.Errorf("customStatus=%q", got)
	}
	if got := q.Get("instanceIdPrefix"); got != "order-" {
		t.Errorf("instanceIdPrefix=%q", got)
	}
	if ts, err := time.Parse(time.RFC3339, q.Get("createdTimeFrom")); err != nil || ts.Year() != 2024 {
		t.Errorf("createdTimeFrom=%q: %v", q.Get("createdTimeFrom"), err)
	}
	if q.Get("top") == "" {
		t.Error("no top")
	}

	// Bad JSON in the custom status filter is reported, not sent.
	b.run("bad filter", 5*time.Second, fill("#filter-custom", `{nope`), chromedp.Click("#filter-apply", chromedp.ByQuery))
	b.waitUntil("the JSON error", `document.getElementById('filter-error').textContent.includes('JSON')`, 5*time.Second)

	// A count chip filters by its status.
	b.run("clear", 5*time.Second, chromedp.Click("#filter-clear", chromedp.ByQuery))
	b.waitUntil("the unfiltered list", `document.querySelectorAll('#instance-rows tr').length === 2 && document.getElementById('filter-error').textContent === ''`, 10*time.Second)
	b.run("click the Failed count", 5*time.Second, chromedp.Click(`[data-testid="count-Failed"]`, chromedp.ByQuery))
	b.waitUntil("only the failed one", `document.querySelectorAll('#instance-rows tr').length === 1 && document.querySelector('#instance-rows tr').dataset.instanceId === 'ticket-1'`, 10*time.Second)
	b.run("clear again", 5*time.Second, chromedp.Click("#filter-clear", chromedp.ByQuery))
	b.waitUntil("the unfiltered list again", `document.querySelectorAll('#instance-rows tr').length === 2`, 10*time.Second)

	var png []byte
	b.run("screenshot", 20*time.Second, chromedp.FullScreenshot(&png, 100))
	saveArtifact(t, "dashboard-list.png", png)
}
