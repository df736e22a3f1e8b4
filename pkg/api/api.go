// Package api serves the Durable Functions HTTP API over jetflow: requests
// become commands sent on NATS, and status is read straight from the status
// bucket.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/dashboard"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/telemetry"
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
	// APIKeys, when not empty, are the keys a request must carry, as the
	// code query parameter or the x-functions-key header.
	APIKeys []string
	// CORSOrigins are the origins allowed to call the API from a browser;
	// "*" allows any.
	CORSOrigins []string
	// Logger receives internal errors, which clients never see; nil discards.
	Logger *zap.Logger
	// TracerProvider makes a server span for each request, named by its
	// route ("POST /runtime/webhooks/durabletask/orchestrators/{name}"),
	// which continues a W3C traceparent the request carries. The commands
	// the request sends continue its trace. Nil means the global provider.
	TracerProvider trace.TracerProvider
}

// Server is the HTTP handler.
type Server struct {
	c      *client.Client
	opts   Options
	log    *zap.Logger
	mux    *http.ServeMux
	routes []Route
	tracer trace.Tracer
}

// Route is one registered method and path pattern.
type Route struct {
	Method  string
	Pattern string // below Prefix, in net/http pattern syntax
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
	s := &Server{c: c, opts: opts, log: opts.Logger, mux: http.NewServeMux(), tracer: telemetry.Tracer(opts.TracerProvider)}
	s.handle("POST", "orchestrators/{name}", s.start)
	s.handle("POST", "orchestrators/{name}/{id}", s.start)
	s.handle("GET", "instances", s.list)
	s.handle("GET", "instances/{$}", s.list)
	s.handle("DELETE", "instances", s.purgeMany)
	s.handle("DELETE", "instances/{$}", s.purgeMany)
	s.handle("GET", "instances/{id}", s.status)
	s.handle("GET", "instances/{id}/watch", s.watch)
	s.handle("DELETE", "instances/{id}", s.purge)
	s.handle("POST", "instances/{id}/raiseEvent/{event}", s.raise)
	s.handle("POST", "instances/{id}/terminate", s.control(s.c.Terminate))
	s.handle("POST", "instances/{id}/suspend", s.control(s.c.Suspend))
	s.handle("POST", "instances/{id}/resume", s.control(s.c.Resume))
	s.handle("POST", "instances/{id}/rewind", s.control(s.c.Rewind))
	s.handle("POST", "instances/{id}/restart", s.restart)
	s.mux.HandleFunc("GET /openapi.json", s.openAPI)
	ui := dashboard.Handler()
	s.mux.Handle("GET /{$}", ui)
	s.mux.Handle("GET "+dashboard.AssetPrefix, ui)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
	return s
}

func (s *Server) handle(method, pattern string, h http.HandlerFunc) {
	s.routes = append(s.routes, Route{Method: method, Pattern: pattern})
	s.mux.HandleFunc(method+" "+Prefix+pattern, h)
}

// Routes returns the Durable Functions routes the server registered.
func (s *Server) Routes() []Route { return slices.Clone(s.routes) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, span := startServerSpan(r.Context(), s.tracer, r)
	if !span.SpanContext().IsValid() {
		span.End()
		s.serve(w, r) // not traced
		return
	}
	defer span.End()
	r = r.WithContext(ctx)
	if !span.IsRecording() {
		s.serve(w, r) // traced upstream only: pass the context on
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	s.serve(rec, r)
	endServerSpan(span, r, rec.code())
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r) {
		return
	}
	if p := r.URL.Path; !isClean(p) {
		// net/http would redirect; an API client gets an answer instead.
		writeError(w, http.StatusNotFound, "no route for "+r.Method+" "+p)
		return
	}
	if strings.HasPrefix(r.URL.Path, Prefix) && !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "a valid API key is required, as ?code= or the x-functions-key header")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// isClean reports whether p has no empty, "." or ".." segments; a
// trailing slash is allowed.
func isClean(p string) bool {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// authorized reports whether r carries one of the API keys, if any are set.
func (s *Server) authorized(r *http.Request) bool {
	if len(s.opts.APIKeys) == 0 {
		return true
	}
	got := r.Header.Get("x-functions-key")
	if got == "" {
		got = queryValue(r, "code")
	}
	ok := 0
	for _, k := range s.opts.APIKeys {
		ok |= subtle.ConstantTimeCompare([]byte(got), []byte(k))
	}
	return ok == 1 && got != ""
}

// cors sets the CORS headers for an allowed origin and answers a
// preflight request; it reports whether the request was answered.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.opts.CORSOrigins) == 0 {
		return false
	}
	if !slices.Contains(s.opts.CORSOrigins, "*") && !slices.Contains(s.opts.CORSOrigins, origin) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "Location, Retry-After, ETag, x-ms-continuation-token")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Content-Type, x-functions-key, x-ms-continuation-token, If-None-Match, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// queryValue reads a query parameter, also from query strings that are
// not validly escaped (official clients send reasons unescaped).
func queryValue(r *http.Request, key string) string {
	if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
		return q.Get(key)
	}
	for _, pair := range strings.Split(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if k != key {
			continue
		}
		return lenientUnescape(v)
	}
	return ""
}

// lenientUnescape decodes %XX escapes that are valid and '+' as a space,
// and keeps every other byte, a stray '%' included, as it is.
func lenientUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

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
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
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
	hub := queryValue(r, "taskHub")
	if hub == "" {
		hub = s.opts.TaskHub
	}
	q.Set("taskHub", hub)
	conn := queryValue(r, "connection")
	if conn == "" {
		conn = "Storage"
	}
	q.Set("connection", conn)
	if code := queryValue(r, "code"); code != "" {
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

func (s *Server) accepted(w http.ResponseWriter, r *http.Request, id string) {
	urls := s.checkStatus(r, id)
	w.Header().Set("Location", urls.StatusQueryGetURI)
	w.Header().Set("Retry-After", "10")
	writeJSON(w, http.StatusAccepted, urls)
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
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/json") {
		writeError(w, http.StatusBadRequest, "an event's data must be sent as Content-Type: application/json")
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
		if err := op(r.Context(), id, queryValue(r, "reason")); err != nil {
			s.fail(w, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	id, ok := s.instanceID(w, r)
	if !ok {
		return
	}
	newID := true
	if v := queryValue(r, "restartWithNewInstanceId"); v != "" {
		newID = !strings.EqualFold(v, "false")
	}
	nid, err := s.c.Restart(r.Context(), id, newID)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.accepted(w, r, nid)
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
