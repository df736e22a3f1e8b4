package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/messages"
)

// continuationHeader carries the paging token of instance lists, both ways.
const continuationHeader = "x-ms-continuation-token"

// listFilter reads the filter query parameters of the instance list and
// purge routes.
func listFilter(r *http.Request) (client.ListFilter, error) {
	var f client.ListFilter
	for _, p := range []struct {
		key string
		t   *time.Time
	}{{"createdTimeFrom", &f.CreatedFrom}, {"createdTimeTo", &f.CreatedTo}} {
		v := queryValue(r, p.key)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, fmt.Errorf("%s %q is not an RFC 3339 time", p.key, v)
		}
		*p.t = t
	}
	if v := queryValue(r, "runtimeStatus"); v != "" {
		for _, name := range strings.Split(v, ",") {
			rs, err := messages.ParseRuntimeStatus(strings.TrimSpace(name))
			if err != nil {
				return f, fmt.Errorf("runtimeStatus: %v", err)
			}
			f.Statuses = append(f.Statuses, rs)
		}
	}
	f.IDPrefix = queryValue(r, "instanceIdPrefix")
	if v := queryValue(r, "customStatus"); v != "" {
		if !json.Valid([]byte(v)) {
			return f, errors.New("customStatus must be URL-encoded JSON")
		}
		f.CustomStatus = []byte(v)
	}
	return f, nil
}

// list answers GET instances: a page of status bodies, newest pages
// reached through x-ms-continuation-token.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	top := 100
	if v := queryValue(r, "top"); v != "" {
		if top, err = strconv.Atoi(v); err != nil || top <= 0 || top > 1000 {
			writeError(w, http.StatusBadRequest, "top must be a whole number from 1 to 1000")
			return
		}
	}
	page, next, err := s.c.List(r.Context(), f, top, r.Header.Get(continuationHeader))
	if errors.Is(err, client.ErrBadToken) {
		writeError(w, http.StatusBadRequest, "invalid "+continuationHeader)
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	showInput := boolParam(r, "showInput", true)
	out := make([]StatusBody, 0, len(page))
	for _, st := range page {
		out = append(out, NewStatusBody(st, showInput))
	}
	if next != "" {
		w.Header().Set(continuationHeader, next)
	}
	writeJSON(w, http.StatusOK, out)
}

// purgeMany answers DELETE instances: it purges the finished instances
// created from createdTimeFrom (required) that the other filters select.
func (s *Server) purgeMany(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(r)
	if err == nil && f.CreatedFrom.IsZero() {
		err = errors.New("createdTimeFrom is required")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n, err := s.c.PurgeInstances(r.Context(), f)
	if err != nil {
		s.fail(w, err)
		return
	}
	if n == 0 {
		writeError(w, http.StatusNotFound, "no finished instance matches")
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"instancesDeleted": n})
}
