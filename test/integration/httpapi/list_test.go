package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/api"
)

func (d *dev) list(t *testing.T, query, token string) ([]statusBody, string) {
	t.Helper()
	var h []string
	if token != "" {
		h = []string{"x-ms-continuation-token", token}
	}
	r := d.do(t, "GET", "instances"+query, "", "", h...)
	expect(t, "list "+query, r, http.StatusOK)
	var page []statusBody
	r.json(t, &page)
	return page, r.header.Get("x-ms-continuation-token")
}

// listAll follows the continuation token to the end, and counts the pages.
func (d *dev) listAll(t *testing.T, query string) ([]statusBody, int) {
	t.Helper()
	var all []statusBody
	token, pages := "", 0
	for {
		page, next := d.list(t, query, token)
		pages++
		all = append(all, page...)
		if next == "" {
			return all, pages
		}
		if pages > 50 {
			t.Fatal("paging does not end")
		}
		token = next
	}
}

func ids(sts []statusBody) []string {
	var out []string
	for _, st := range sts {
		out = append(out, st.InstanceID)
	}
	sort.Strings(out)
	return out
}

func TestListAndPurgeByFilter(t *testing.T) {
	d := startDev(t, api.Options{})
	before := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
	// 250 instances wait for an event (Running); 30 more complete.
	const waiting, done = 250, 30
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range waiting + done {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if i < waiting {
				d.start(t, "CityRecommender", fmt.Sprintf("page-%03d", i), fmt.Sprint(1+i%3))
			} else {
				d.start(t, "E1_HelloSequence", fmt.Sprintf("done-%03d", i), "")
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every instance to settle", func() bool {
		running, _ := d.listAll(t, "?runtimeStatus=Running&instanceIdPrefix=page-&top=1000")
		completed, _ := d.listAll(t, "?runtimeStatus=Completed&instanceIdPrefix=done-&top=1000")
		return len(running) == waiting && len(completed) == done
	})

	// Three pages of 100, 100 and 50, each instance once.
	all, pages := d.listAll(t, "?instanceIdPrefix=page-&top=100")
	if pages != 3 || len(all) != waiting {
		t.Fatalf("%d instances over %d pages, want %d over 3", len(all), pages, waiting)
	}
	seen := map[string]bool{}
	for _, id := range ids(all) {
		if seen[id] {
			t.Fatalf("%s listed twice", id)
		}
		seen[id] = true
	}
	first, _ := d.list(t, "?instanceIdPrefix=page-&top=100", "")
	if len(first) != 100 {
		t.Fatalf("first page has %d", len(first))
	}
	// The trailing slash that official clients send lists just the same.
	slash, _ := d.listAll(t, "/?instanceIdPrefix=page-&top=100")
	if len(slash) != waiting {
		t.Errorf("instances/ listed %d", len(slash))
	}
	if first[0].Input == nil || string(first[0].Input) == "null" {
		t.Errorf("input not shown by default: %s", first[0].Input)
	}
	noInput, _ := d.list(t, "?instanceIdPrefix=page-&top=1&showInput=false", "")
	if string(noInput[0].Input) != "null" {
		t.Errorf("showInput=false: input %s", noInput[0].Input)
	}

	// Filters: status, several statuses, custom status, created time.
	running, _ := d.listAll(t, "?runtimeStatus=Running&top=1000")
	completed, _ := d.listAll(t, "?runtimeStatus=Completed&top=1000")
	both, _ := d.listAll(t, "?runtimeStatus=Running,Completed&top=1000")
	// The probe instance of startDev also completes.
	if len(running) != waiting || len(completed) < done || len(both) != len(running)+len(completed) {
		t.Errorf("Running %d, Completed %d, both %d", len(running), len(completed), len(both))
	}
	needle := url.QueryEscape(`{"recommendedCities":["London"]}`)
	london, _ := d.listAll(t, "?customStatus="+needle+"&top=1000")
	// Choices 2 and 3 recommend London: i%3 == 1 or 2.
	if want := waiting - (waiting+2)/3; len(london) != want {
		t.Errorf("customStatus containing London: %d, want %d", len(london), want)
	}
	for _, st := range london {
		var cs map[string][]string
		_ = json.Unmarshal(st.CustomStatus, &cs)
		if !contains(cs["recommendedCities"], "London") {
			t.Fatalf("%s listed for London with custom status %s", st.InstanceID, st.CustomStatus)
		}
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if none, _ := d.listAll(t, "?createdTimeFrom="+future); len(none) != 0 {
		t.Errorf("createdTimeFrom in the future listed %d", len(none))
	}
	if some, _ := d.listAll(t, "?createdTimeFrom="+url.QueryEscape(before)+"&createdTimeTo="+future+"&instanceIdPrefix=done-"); len(some) != done {
		t.Errorf("created-time window listed %d, want %d", len(some), done)
	}

	expect(t, "malformed time", d.do(t, "GET", "instances?createdTimeFrom=yesterday", "", ""), 400)
	expect(t, "malformed status", d.do(t, "GET", "instances?runtimeStatus=Sleeping", "", ""), 400)
	expect(t, "malformed custom status", d.do(t, "GET", "instances?customStatus=%7B", "", ""), 400)
	expect(t, "malformed token", d.do(t, "GET", "instances", "", "", "x-ms-continuation-token", "garbage!"), 400)

	// Purge by filter.
	expect(t, "purge without createdTimeFrom", d.do(t, "DELETE", "instances?runtimeStatus=Completed", "", ""), 400)
	r := d.do(t, "DELETE", "instances?createdTimeFrom="+url.QueryEscape(before)+"&runtimeStatus=Completed", "", "")
	expect(t, "purge completed", r, 200)
	var purged map[string]int
	r.json(t, &purged)
	if purged["instancesDeleted"] < done {
		t.Errorf("purged %d, want at least %d", purged["instancesDeleted"], done)
	}
	if left, _ := d.listAll(t, "?runtimeStatus=Completed"); len(left) != 0 {
		t.Errorf("%d Completed instances left after the purge", len(left))
	}
	expect(t, "GET purged", d.do(t, "GET", "instances/done-260", "", ""), 404)
	if still, _ := d.listAll(t, "?runtimeStatus=Running&top=1000"); len(still) != waiting {
		t.Errorf("the purge touched running instances: %d left", len(still))
	}
	expect(t, "purge nothing", d.do(t, "DELETE", "instances?createdTimeFrom="+url.QueryEscape(before)+"&runtimeStatus=Completed", "", ""), 404)
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
