// Package api serves the Durable Functions HTTP API over jetflow: requests
// become commands sent on NATS, and status is read straight from the status
// bucket.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/messages"
)

// Prefix is the root of every Durable Functions route.
const Prefix = "/runtime/webhooks/durabletask/"

// Options configure a Server.
type Options struct {
	// BaseURL, if set, is used for the URLs in check-status bodies instead
	// of the request's scheme and host.
	BaseURL string
	// TaskHub is the taskHub value put in URLs when a request has none; "" means "jetflow".
	TaskHub string
	// MaxBodyBytes limits request bodies; 0 means 1 MiB.
	MaxBodyBytes int64
	// Logger receives internal errors, which clients never see; nil discards.
	Logger *zap.Logger
}

// Server is the HTTP handler.
type Server struct {
	c    *client.Client
	opts Options
	log  *zap.Logger
	mux  *http.ServeMux
}

// New returns a Server that uses c.
func New(c *client.Client, opts Options) *Server {
	if opts.TaskHub == "" {
		opts.TaskHub = "jetflow"
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Server{c: c, opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST "+Prefix+"orchestrators/{name}", s.start)
	s.mux.HandleFunc("POST "+Prefix+"orchestrators/{name}/{id}", s.start)
	s.mux.HandleFunc("GET "+Prefix+"instances/{id}", s.status)
	s.mux.HandleFunc("DELETE "+Prefix+"instances/{id}", s.purge)
	s.mux.HandleFunc("POST "+Prefix+"instances/{id}/raiseEvent/{event}", s.raise)
	s.mux.HandleFunc("POST "+Prefix+"instances/{id}/terminate", s.control(s.c.Terminate))
	s.mux.HandleFunc("POST "+Prefix+"instances/{id}/suspend", s.control(s.c.Suspend))
	s.mux.HandleFunc("POST "+Prefix+"instances/{id}/resume", s.control(s.c.Resume))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type errorBody struct {
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Message: msg})
}

// fail maps a client error to a status code; internal details are logged, never sent.
func (s *Server) fail(w http.ResponseWriter, err error) {
	var ce *client.Error
	switch {
	case errors.Is(err, client.ErrBadRequest) && errors.As(err, &ce):
		writeError(w, http.StatusBadRequest, ce.Message)
	case errors.Is(err, client.ErrNotFound):
		writeError(w, http.StatusNotFound, "instance not found")
	case errors.Is(err, client.ErrConflict) && errors.As(err, &ce):
		writeError(w, http.StatusConflict, ce.Message)
	case errors.Is(err, client.ErrTooLarge) && errors.As(err, &ce):
		writeError(w, http.StatusRequestEntityTooLarge, ce.Message)
	case errors.Is(err, client.ErrGone):
		writeError(w, http.StatusGone, "instance has already finished")
	case errors.Is(err, client.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, "no dispatcher is available; try again")
	default:
		s.log.Error("request failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// body reads a JSON request body; an empty body is JSON null.
func (s *Server) body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "cannot read request body")
		return nil, false
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return []byte("null"), true
	}
	if !json.Valid(b) {
		writeError(w, http.StatusBadRequest, "request body is not valid JSON")
		return nil, false
	}
	return b, true
}

func (s *Server) instanceID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := messages.ValidateInstanceID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return id, true
}

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
	input, ok := s.body(w, r)
	if !ok {
		return
	}
	id, err := s.c.Start(r.Context(), name, id, input)
	if err != nil {
		s.fail(w, err)
		return
	}
	urls := s.checkStatus(r, id)
	w.Header().Set("Location", urls.StatusQueryGetURI)
	w.Header().Set("Retry-After", "10")
	writeJSON(w, http.StatusAccepted, urls)
}

// CheckStatus is the body a start answers with.
type CheckStatus struct {
	ID                    string `json:"id"`
	StatusQueryGetURI     string `json:"statusQueryGetUri"`
	SendEventPostURI      string `json:"sendEventPostUri"`
	TerminatePostURI      string `json:"terminatePostUri"`
	PurgeHistoryDeleteURI string `json:"purgeHistoryDeleteUri"`
	RestartPostURI        string `json:"restartPostUri"`
	SuspendPostURI        string `json:"suspendPostUri"`
	ResumePostURI         string `json:"resumePostUri"`
}

func (s *Server) checkStatus(r *http.Request, id string) CheckStatus {
	base := strings.TrimRight(s.opts.BaseURL, "/")
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
			scheme = p
		}
		base = scheme + "://" + r.Host
	}
	inst := base + Prefix + "instances/" + url.PathEscape(id)
	q := url.Values{}
	hub := r.URL.Query().Get("taskHub")
	if hub == "" {
		hub = s.opts.TaskHub
	}
	q.Set("taskHub", hub)
	conn := r.URL.Query().Get("connection")
	if conn == "" {
		conn = "Storage"
	}
	q.Set("connection", conn)
	if code := r.URL.Query().Get("code"); code != "" {
		q.Set("code", code)
	}
	qs := q.Encode()
	return CheckStatus{
		ID:                    id,
		StatusQueryGetURI:     inst + "?" + qs,
		SendEventPostURI:      inst + "/raiseEvent/{eventName}?" + qs,
		TerminatePostURI:      inst + "/terminate?reason={text}&" + qs,
		PurgeHistoryDeleteURI: inst + "?" + qs,
		RestartPostURI:        inst + "/restart?" + qs,
		SuspendPostURI:        inst + "/suspend?reason={text}&" + qs,
		ResumePostURI:         inst + "/resume?reason={text}&" + qs,
	}
}

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
}

func rawOrNull(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}

// NewStatusBody renders a status record as Durable Functions does.
func NewStatusBody(st *messages.Status, showInput bool) StatusBody {
	b := StatusBody{
		Name:            st.Name,
		InstanceID:      st.InstanceID,
		RuntimeStatus:   st.RuntimeStatus.String(),
		Input:           rawOrNull(st.Input),
		CustomStatus:    rawOrNull(st.CustomStatus),
		Output:          rawOrNull(st.Output),
		CreatedTime:     st.CreatedAt.UTC().Format(time.RFC3339),
		LastUpdatedTime: st.LastUpdatedAt.UTC().Format(time.RFC3339),
	}
	if !showInput {
		b.Input = json.RawMessage("null")
	}
	return b
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	id, ok := s.instanceID(w, r)
	if !ok {
		return
	}
	st, err := s.c.Status(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	showInput := r.URL.Query().Get("showInput") != "false"
	code := http.StatusOK
	if !st.RuntimeStatus.Terminal() {
		code = http.StatusAccepted
		w.Header().Set("Location", s.checkStatus(r, id).StatusQueryGetURI)
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, code, NewStatusBody(st, showInput))
}

func (s *Server) raise(w http.ResponseWriter, r *http.Request) {
	id, ok := s.instanceID(w, r)
	if !ok {
		return
	}
	event := r.PathValue("event")
	if err := messages.ValidateName(event); err != nil {
		writeError(w, http.StatusBadRequest, "event "+err.Error())
		return
	}
	data, ok := s.body(w, r)
	if !ok {
		return
	}
	if err := s.c.RaiseEvent(r.Context(), id, event, data); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) control(op func(ctx context.Context, id, reason string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.instanceID(w, r)
		if !ok {
			return
		}
		if err := op(r.Context(), id, r.URL.Query().Get("reason")); err != nil {
			s.fail(w, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

func (s *Server) purge(w http.ResponseWriter, r *http.Request) {
	id, ok := s.instanceID(w, r)
	if !ok {
		return
	}
	if err := s.c.Purge(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"instancesDeleted": 1})
}
