package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/messages"
)

// maxWait caps the timeout of a start that waits and of a long-poll.
const maxWait = 5 * time.Minute

// StatusBody is the Durable Functions status of an instance.
type StatusBody struct {
	Name            string          `json:"name"`
	InstanceID      string          `json:"instanceId"`
	RuntimeStatus   string          `json:"runtimeStatus"`
	Input           json.RawMessage `json:"input"`
	CustomStatus    json.RawMessage `json:"customStatus"`
	Output          json.RawMessage `json:"output"`
	CreatedTime     string          `json:"createdTime"`
	LastUpdatedTime string          `json:"lastUpdatedTime"`
	HistoryEvents   []HistoryEvent  `json:"historyEvents,omitempty"`
}

func rawOrNull(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// NewStatusBody renders a status record as Durable Functions does.
func NewStatusBody(st *messages.Status, showInput bool) StatusBody {
	b := StatusBody{
		Name:            st.Name,
		InstanceID:      st.InstanceID,
		RuntimeStatus:   st.RuntimeStatus.String(),
		Input:           rawOrNull(st.Input),
		CustomStatus:    rawOrNull(st.CustomStatus),
		Output:          rawOrNull(st.Output),
		CreatedTime:     formatTime(st.CreatedAt),
		LastUpdatedTime: formatTime(st.LastUpdatedAt),
	}
	if !showInput {
		b.Input = json.RawMessage("null")
	}
	return b
}

// seconds parses a query parameter of whole or fractional seconds.
func seconds(r *http.Request, key string) (time.Duration, bool, error) {
	v := queryValue(r, key)
	if v == "" {
		return 0, false, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, true, fmt.Errorf("%s must be a number of seconds, not %q", key, v)
	}
	return min(time.Duration(f*float64(time.Second)), maxWait), true, nil
}

func boolParam(r *http.Request, key string, def bool) bool {
	switch strings.ToLower(queryValue(r, key)) {
	case "true", "1":
		return true
	case "false", "0":
		return false
	}
	return def
}

// start starts an orchestration. With ?timeout=S it waits up to S seconds
// for the instance to finish: 200 with the raw output if it completed, 200
// with the status body if it failed or was terminated, else 202.
// pollingInterval is accepted; jetflow watches instead of polling.
func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := messages.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, "orchestrator "+err.Error())
		return
	}
	id := ""
	if r.PathValue("id") != "" {
		var ok bool
		if id, ok = s.instanceID(w, r); !ok {
			return
		}
	}
	timeout, wait, err := seconds(r, "timeout")
	if err == nil {
		_, _, err = seconds(r, "pollingInterval")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	input, ok := s.body(w, r)
	if !ok {
		return
	}
	id, err = s.c.Start(r.Context(), name, id, input)
	if err != nil {
		s.fail(w, err)
		return
	}
	if wait {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		st, err := s.c.WaitForCompletion(ctx, id)
		cancel()
		switch {
		case err == nil && st.RuntimeStatus == messages.StatusCompleted:
			writeJSON(w, http.StatusOK, rawOrNull(st.Output))
			return
		case err == nil:
			writeJSON(w, http.StatusOK, NewStatusBody(st, true))
			return
		}
	}
	s.accepted(w, r, id)
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

// status answers GET instances/{id}. The record's revision travels in
// ETag; If-None-Match with it answers 304. ?waitForChange=REV&timeout=S
// waits until the revision differs from REV, or S seconds, then answers.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	id, ok := s.instanceID(w, r)
	if !ok {
		return
	}
	var (
		u   client.Update
		err error
	)
	if v := queryValue(r, "waitForChange"); v != "" {
		rev, perr := strconv.ParseUint(strings.Trim(v, `"`), 10, 64)
		timeout, set, terr := seconds(r, "timeout")
		if perr != nil || terr != nil {
			writeError(w, http.StatusBadRequest, "waitForChange takes a revision (an ETag) and timeout a number of seconds")
			return
		}
		if !set {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		u, err = s.c.WaitForChange(ctx, id, rev)
		cancel()
	} else {
		u, err = s.c.StatusRevision(r.Context(), id)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	st := u.Status
	w.Header().Set("ETag", etag(u.Revision))
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag(u.Revision) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := NewStatusBody(st, boolParam(r, "showInput", true))
	if boolParam(r, "showHistory", false) {
		history, err := s.c.History(r.Context(), id, st.ExecutionID)
		if err != nil {
			s.fail(w, err)
			return
		}
		body.HistoryEvents = HistoryEvents(history, boolParam(r, "showHistoryOutput", false))
		if body.HistoryEvents == nil {
			body.HistoryEvents = []HistoryEvent{}
		}
	}
	code := http.StatusOK
	switch {
	case st.RuntimeStatus == messages.StatusFailed && boolParam(r, "returnInternalServerErrorOnFailure", false):
		code = http.StatusInternalServerError
	case !st.RuntimeStatus.Terminal():
		code = http.StatusAccepted
		w.Header().Set("Location", s.checkStatus(r, id).StatusQueryGetURI)
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, code, body)
}

// watch streams an instance's status as server-sent events: one event
// with the status body each time the record changes, the current state
// first, ending after a terminal status. Each event's id is the record's
// revision; Last-Event-ID resumes after it.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	id, ok := s.instanceID(w, r)
	if !ok {
		return
	}
	var after uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Last-Event-ID must be a revision from an earlier event")
			return
		}
		after = n
	}
	cur, err := s.c.StatusRevision(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	flusher, _ := w.(http.Flusher)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	updates, err := s.c.Watch(ctx, id, after)
	if err != nil {
		s.fail(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	showInput := boolParam(r, "showInput", true)
	if cur.Status.RuntimeStatus.Terminal() && cur.Revision <= after {
		return // nothing will change any more
	}
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepAlive.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		case u, ok := <-updates:
			if !ok {
				return
			}
			b, err := json.Marshal(NewStatusBody(u.Status, showInput))
			if err != nil {
				return
			}
			fmt.Fprintf(w, "id: %d\nevent: status\ndata: %s\n\n", u.Revision, b)
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
