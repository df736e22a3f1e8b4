package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sse reads server-sent events from an open response.
type sse struct {
	sc *bufio.Scanner
}

type event struct {
	id   string
	data string
}

// next returns the next event, or false at the end of the stream.
func (s *sse) next() (event, bool) {
	var e event
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if e.data != "" {
				return e, true
			}
		case strings.HasPrefix(line, "id: "):
			e.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			e.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return e, false
}

func openWatch(t *testing.T, url, lastEventID string) (*sse, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("watch: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return &sse{sc: bufio.NewScanner(res.Body)}, func() { cancel(); res.Body.Close() }
}

// TestWatchSeesEveryCustomStatus: a client watching E1_HelloSequence sees
// every custom status in order, then the completion, and the stream ends;
// nothing polls. Reconnecting with Last-Event-ID resumes after that event.
func TestWatchSeesEveryCustomStatus(t *testing.T) {
	s := startStackWith(t, stackOptions{noWorker: true})
	id := s.start(t, "E1_HelloSequence", "watched", "")
	w, stop := openWatch(t, s.base+"instances/"+id+"/watch", "")
	defer stop()
	first, ok := w.next()
	if !ok {
		t.Fatal("no first event")
	}
	var st statusBody
	if err := json.Unmarshal([]byte(first.data), &st); err != nil || st.RuntimeStatus != "Pending" {
		t.Fatalf("first event %q: want the current state, Pending", first.data)
	}
	startWorker(t, s.srv)

	var customs, statuses []string
	var ids []string
	for {
		e, ok := w.next()
		if !ok {
			break
		}
		if err := json.Unmarshal([]byte(e.data), &st); err != nil {
			t.Fatalf("event data %q: %v", e.data, err)
		}
		ids = append(ids, e.id)
		statuses = append(statuses, st.RuntimeStatus)
		if c := string(st.CustomStatus); c != "null" && (len(customs) == 0 || customs[len(customs)-1] != c) {
			customs = append(customs, c)
		}
	}
	if got := strings.Join(customs, ","); got != `"Tokyo","Seattle","London"` {
		t.Errorf("custom statuses seen: %s", got)
	}
	if len(statuses) == 0 || statuses[len(statuses)-1] != "Completed" {
		t.Fatalf("statuses seen: %v, want the stream to end with Completed", statuses)
	}
	for i := 1; i < len(ids); i++ {
		a, _ := strconv.ParseUint(ids[i-1], 10, 64)
		b, _ := strconv.ParseUint(ids[i], 10, 64)
		if b <= a {
			t.Fatalf("event ids not increasing: %v", ids)
		}
	}

	// Resuming after the last event of a finished instance: nothing more.
	w2, stop2 := openWatch(t, s.base+"instances/"+id+"/watch", ids[len(ids)-1])
	defer stop2()
	if e, ok := w2.next(); ok {
		t.Errorf("resumed after the last event, got %q", e.data)
	}
	// Resuming from before it: the current (terminal) state, then the end.
	w3, stop3 := openWatch(t, s.base+"instances/"+id+"/watch", first.id)
	defer stop3()
	e, ok := w3.next()
	if !ok || !strings.Contains(e.data, `"Completed"`) {
		t.Errorf("resumed from the first event: %q %v", e.data, ok)
	}
	if _, ok := w3.next(); ok {
		t.Error("stream did not end after the terminal status")
	}
	if r := do(t, http.MethodGet, s.base+"instances/nobody/watch", "", nil); r.code != http.StatusNotFound {
		t.Errorf("watch of an unknown instance: %d", r.code)
	}
}

// TestLongPollAndETag: the revision travels in ETag, If-None-Match gives
// 304, and waitForChange returns when the record changes or at the timeout.
func TestLongPollAndETag(t *testing.T) {
	s := startStackWith(t, stackOptions{noWorker: true})
	id := s.start(t, "CityRecommender", "polled", "1")
	r := do(t, http.MethodGet, s.base+"instances/"+id, "", nil)
	tag := r.header.Get("ETag")
	if r.code != http.StatusAccepted || tag == "" {
		t.Fatalf("GET: %d ETag %q", r.code, tag)
	}
	req, _ := http.NewRequest(http.MethodGet, s.base+"instances/"+id, nil)
	req.Header.Set("If-None-Match", tag)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: %d, want 304", res.StatusCode)
	}
	rev := strings.Trim(tag, `"`)

	// Unchanged until the timeout: the same record comes back.
	r = do(t, http.MethodGet, s.base+"instances/"+id+"?waitForChange="+rev+"&timeout=0.3", "", nil)
	if r.header.Get("ETag") != tag {
		t.Fatalf("long-poll with no change: ETag %q, want %q", r.header.Get("ETag"), tag)
	}

	// A change while the poll waits ends it with the new record.
	got := make(chan response, 1)
	go func() {
		got <- do(t, http.MethodGet, s.base+"instances/"+id+"?waitForChange="+rev+"&timeout=20", "", nil)
	}()
	startWorker(t, s.srv)
	select {
	case r = <-got:
	case <-time.After(25 * time.Second):
		t.Fatal("long-poll did not return")
	}
	if r.header.Get("ETag") == tag {
		t.Fatalf("long-poll returned the unchanged revision %s", tag)
	}
	var st statusBody
	r.json(t, &st)
	if st.RuntimeStatus != "Running" {
		t.Fatalf("after the change: %s", r.body)
	}
}
