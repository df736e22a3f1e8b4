package jetstore

import (
	"container/list"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/pkg/messages"
)

// The listing index.
//
// Bucket jetflow-index holds one key per instance and runtime status,
// "<RuntimeStatus>.<instance token>", whose value is an indexEntry. Its
// stream, filtered by "<RuntimeStatus>.*", lists the instances in a status
// without reading any other record.
//
// The status writers (CreateStatus, PutStatus) maintain it when the
// runtime status changes, in this order:
//
//  1. put the key of the new status (sequence q in the index stream);
//  2. write the status record;
//  3. remove the key of the previous status, purging from the index stream
//     only the messages of that key older than q.
//
// So the key of a record's status exists from before the record is
// written: an instance is never missing from the index of its status. A
// crash, or a write refused as stale, may leave a key that no longer
// matches its record; List checks every hit against the status record and
// skips those. Step 3's bound keeps a key that a later writer put for a
// later record: that writer put it after reading a record written after
// step 1 of this one, hence after q.
//
// Removals are stream purges, not KV deletes, so the index stream holds no
// delete markers: a scan of one status reads only that status's keys.

// IndexBucket is the KV bucket of the listing index.
const IndexBucket = "jetflow-index"

const indexSubjectPrefix = "$KV." + IndexBucket + "."

// indexEntry is the value of an index key: what the filters of List need
// before reading the status record.
type indexEntry struct {
	CreatedAt time.Time `msgpack:"ct"`
	Name      string    `msgpack:"n"`
}

func indexKey(rs messages.RuntimeStatus, tok string) string { return rs.String() + "." + tok }

// putIndex puts the key of st's status, unless the previous record prev
// already had that status. It returns the key's sequence (0 if not put).
func (s *Store) putIndex(ctx context.Context, st *messages.Status, prev messages.RuntimeStatus) (uint64, error) {
	if prev == st.RuntimeStatus || !st.RuntimeStatus.Valid() {
		return 0, nil
	}
	b, err := msgpack.Marshal(&indexEntry{CreatedAt: st.CreatedAt, Name: st.Name})
	if err != nil {
		return 0, err
	}
	q, err := s.index.Put(ctx, indexKey(st.RuntimeStatus, messages.Token(st.InstanceID)), b)
	if err != nil {
		return 0, fmt.Errorf("index status of %s: %w", st.InstanceID, err)
	}
	return q, nil
}

// dropIndex removes the key of the previous status prev after a record
// with status now was written, keeping any version of it put at or after
// sequence q. A failure leaves a stale key, which List skips.
func (s *Store) dropIndex(ctx context.Context, tok string, prev, now messages.RuntimeStatus, q uint64) {
	if !prev.Valid() || prev == now || q == 0 {
		return
	}
	_ = s.istream.Purge(ctx, jetstream.WithPurgeSubject(indexSubjectPrefix+indexKey(prev, tok)), jetstream.WithPurgeSequence(q))
}

// Reindex puts the index key of every status record. Provision runs it
// when it creates the index bucket next to existing records; running it
// again is harmless.
func (s *Store) Reindex(ctx context.Context) error {
	w, err := s.status.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("reindex: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("reindex: watcher closed")
			}
			if e == nil {
				return nil
			}
			st, err := messages.DecodeStatus(e.Value())
			if err != nil {
				continue
			}
			if _, err := s.putIndex(ctx, st, messages.StatusInvalid); err != nil {
				return err
			}
		}
	}
}

// ListFilter selects instances for List. Zero fields select everything.
type ListFilter struct {
	// Statuses keeps instances in any of these runtime statuses.
	Statuses []messages.RuntimeStatus
	// CreatedFrom and CreatedTo bound CreatedAt, both inclusive.
	CreatedFrom, CreatedTo time.Time
	// IDPrefix keeps instances whose ID starts with it.
	IDPrefix string
	// CustomStatus is JSON: it keeps instances whose custom status contains
	// it, as ContainsJSON decides.
	CustomStatus []byte
}

// ErrBadToken is returned by List for a continuation token it did not make.
var ErrBadToken = errors.New("invalid continuation token")

func (f *ListFilter) subjects() ([]string, error) {
	if len(f.Statuses) == 0 {
		return []string{indexSubjectPrefix + ">"}, nil
	}
	seen := map[messages.RuntimeStatus]bool{}
	var subs []string
	for _, rs := range f.Statuses {
		if !rs.Valid() {
			return nil, fmt.Errorf("list: invalid runtime status %d", rs)
		}
		if !seen[rs] {
			seen[rs] = true
			subs = append(subs, indexSubjectPrefix+rs.String()+".*")
		}
	}
	return subs, nil
}

func (f *ListFilter) createdIn(t time.Time) bool {
	return (f.CreatedFrom.IsZero() || !t.Before(f.CreatedFrom)) && (f.CreatedTo.IsZero() || !t.After(f.CreatedTo))
}

func encodeListToken(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("i" + strconv.FormatUint(seq, 10)))
}

func decodeListToken(tok string) (uint64, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != 'i' {
		return 0, ErrBadToken
	}
	seq, err := strconv.ParseUint(string(b[1:]), 10, 64)
	if err != nil {
		return 0, ErrBadToken
	}
	return seq, nil
}

// indexHit is an index key that passed the filters List can apply to it.
type indexHit struct {
	seq    uint64
	status messages.RuntimeStatus
	id     string
}

// listConcurrency bounds the status records List reads at once.
const listConcurrency = 32

// List returns up to pageSize status records (100 if pageSize <= 0) that
// match f, and the token of the next page ("" when there is none). Pass ""
// for the first page. The token is opaque and stays valid while the
// instances change: an instance that changes status between two pages may
// be listed on both, or on the later one only, and an instance created
// after the first page is listed on a later one.
//
// With Statuses set, List reads only the index keys of those statuses, in
// the order they were written, and stops as soon as the page is full;
// without, it reads all the index keys. Every hit is checked against the
// status record, which is read (several at once) for the page.
func (s *Store) List(ctx context.Context, f ListFilter, pageSize int, token string) ([]*messages.Status, string, error) {
	if pageSize <= 0 {
		pageSize = 100
	}
	after, err := decodeListToken(token)
	if err != nil {
		return nil, "", err
	}
	subjects, err := f.subjects()
	if err != nil {
		return nil, "", err
	}
	prefix := ""
	if f.IDPrefix != "" {
		prefix = messages.Token(f.IDPrefix)
	}
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       after + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if len(subjects) == 1 {
		cfg.FilterSubject = subjects[0]
	} else {
		cfg.FilterSubjects = subjects
	}
	cons, err := s.istream.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("list: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.istream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()

	page := make([]*messages.Status, 0, pageSize)
	listed := map[string]bool{}
	batch := min(max(2*pageSize, 64), 1024)
	for {
		mb, err := cons.FetchNoWait(batch)
		if err != nil {
			return nil, "", fmt.Errorf("list: %w", err)
		}
		var (
			hits    []indexHit
			n       int
			lastSeq uint64
			more    = true
		)
		for m := range mb.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, "", fmt.Errorf("list: %w", err)
			}
			lastSeq = md.Sequence.Stream
			more = md.NumPending > 0
			if h, ok := parseHit(m, md.Sequence.Stream, &f, prefix); ok {
				hits = append(hits, h)
			}
		}
		if err := mb.Error(); err != nil {
			return nil, "", fmt.Errorf("list: %w", err)
		}
		if n == 0 {
			return page, "", nil
		}
		for len(hits) > 0 {
			need := pageSize - len(page)
			chunk := hits[:min(len(hits), max(need, 8))]
			hits = hits[len(chunk):]
			recs, err := s.getStatuses(ctx, chunk)
			if err != nil {
				return nil, "", err
			}
			for i, h := range chunk {
				st := recs[i]
				if st == nil || st.RuntimeStatus != h.status || listed[h.id] || !f.createdIn(st.CreatedAt) ||
					len(f.CustomStatus) > 0 && !ContainsJSON(st.CustomStatus, f.CustomStatus) {
					continue
				}
				listed[h.id] = true
				page = append(page, st)
				if len(page) == pageSize {
					if i == len(chunk)-1 && len(hits) == 0 && h.seq == lastSeq && !more {
						return page, "", nil
					}
					return page, encodeListToken(h.seq), nil
				}
			}
		}
		if !more {
			return page, "", nil
		}
	}
}

// parseHit reads an index message and applies the filters its key and
// value can decide.
func parseHit(m jetstream.Msg, seq uint64, f *ListFilter, prefix string) (indexHit, bool) {
	if m.Headers().Get("KV-Operation") != "" || len(m.Data()) == 0 {
		return indexHit{}, false
	}
	key := strings.TrimPrefix(m.Subject(), indexSubjectPrefix)
	name, tok, ok := strings.Cut(key, ".")
	if !ok || !strings.HasPrefix(tok, prefix) {
		return indexHit{}, false
	}
	rs, err := messages.ParseRuntimeStatus(name)
	if err != nil {
		return indexHit{}, false
	}
	var ent indexEntry
	if err := msgpack.Unmarshal(m.Data(), &ent); err != nil || !f.createdIn(ent.CreatedAt) {
		return indexHit{}, false
	}
	id, err := messages.ParseToken(tok)
	if err != nil {
		return indexHit{}, false
	}
	return indexHit{seq: seq, status: rs, id: id}, true
}

// getStatuses reads the status records of hits, several at once; a record
// that is gone is nil.
func (s *Store) getStatuses(ctx context.Context, hits []indexHit) ([]*messages.Status, error) {
	out := make([]*messages.Status, len(hits))
	errs := make([]error, len(hits))
	sem := make(chan struct{}, listConcurrency)
	var wg sync.WaitGroup
	for i := range hits {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, _, err := s.GetStatus(ctx, hits[i].id)
			if err != nil && !errors.Is(err, ErrNotFound) {
				errs[i] = err
				return
			}
			out[i] = st
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
	}
	return out, nil
}

// ErrNotFinished is returned by PurgeInstance for an instance that is not
// Completed, Failed or Terminated.
var ErrNotFinished = errors.New("instance has not finished")

// PurgeInstance deletes a finished instance: the history of every run, the
// status record and its index key. It returns ErrNotFound if there is no
// record, ErrNotFinished if the instance is not Completed, Failed or
// Terminated, and ErrConflict if the record changed while it was purged
// (the instance was started again; its new run is left intact).
func (s *Store) PurgeInstance(ctx context.Context, instanceID string) error {
	// History written after this point belongs to a run started after the
	// status record below was read, and is kept.
	info, err := s.hstream.Info(ctx)
	if err != nil {
		return fmt.Errorf("purge %s: %w", instanceID, err)
	}
	hseq := info.State.LastSeq
	st, rev, err := s.GetStatus(ctx, instanceID)
	if err != nil {
		return err
	}
	if !st.RuntimeStatus.Terminal() {
		return fmt.Errorf("%w: %q is %s", ErrNotFinished, instanceID, st.RuntimeStatus)
	}
	tok := messages.Token(instanceID)
	subj := "$KV." + messages.HistoryBucket + "." + tok + ".>"
	if err := s.hstream.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(hseq+1)); err != nil {
		return fmt.Errorf("purge history of %s: %w", instanceID, err)
	}
	if err := s.status.Purge(ctx, tok, jetstream.LastRevision(rev)); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return ErrConflict
		}
		return fmt.Errorf("purge status of %s: %w", instanceID, err)
	}
	s.known.forget(tok)
	// Nobody puts the key of a finished status but the writer of that
	// status, which has written its record already.
	if err := s.istream.Purge(ctx, jetstream.WithPurgeSubject(indexSubjectPrefix+indexKey(st.RuntimeStatus, tok))); err != nil {
		return fmt.Errorf("purge index of %s: %w", instanceID, err)
	}
	return nil
}

// PurgeInstances purges every finished instance that f selects (of f's
// statuses, only Completed, Failed and Terminated count; none means those
// three) and returns how many it purged. Instances that change meanwhile
// are left alone.
func (s *Store) PurgeInstances(ctx context.Context, f ListFilter) (int, error) {
	var finished []messages.RuntimeStatus
	for _, rs := range f.Statuses {
		if rs.Terminal() {
			finished = append(finished, rs)
		}
	}
	if len(f.Statuses) > 0 && len(finished) == 0 {
		return 0, nil
	}
	if len(finished) == 0 {
		finished = []messages.RuntimeStatus{messages.StatusCompleted, messages.StatusFailed, messages.StatusTerminated}
	}
	f.Statuses = finished
	purged, token := 0, ""
	for {
		page, next, err := s.List(ctx, f, 500, token)
		if err != nil {
			return purged, err
		}
		for _, st := range page {
			err := s.PurgeInstance(ctx, st.InstanceID)
			switch {
			case err == nil:
				purged++
			case errors.Is(err, ErrNotFound), errors.Is(err, ErrNotFinished), errors.Is(err, ErrConflict):
			default:
				return purged, err
			}
		}
		if next == "" {
			return purged, nil
		}
		token = next
	}
}

// knownStatuses remembers the runtime status of recent status record
// revisions this Store wrote or read, so that a status write knows the
// status it replaces without reading it. A revision names one version of
// one record, so an entry is never wrong, only missing.
type knownStatuses struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

type knownStatus struct {
	tok    string
	rev    uint64
	status messages.RuntimeStatus
}

func newKnownStatuses(max int) *knownStatuses {
	return &knownStatuses{max: max, ll: list.New(), items: map[string]*list.Element{}}
}

// get returns the status of revision rev of the record of tok, if known.
func (k *knownStatuses) get(tok string, rev uint64) (messages.RuntimeStatus, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	el, ok := k.items[tok]
	if !ok {
		return messages.StatusInvalid, false
	}
	ks := el.Value.(*knownStatus)
	if ks.rev != rev {
		return messages.StatusInvalid, false
	}
	k.ll.MoveToFront(el)
	return ks.status, true
}

func (k *knownStatuses) set(tok string, rev uint64, status messages.RuntimeStatus) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if el, ok := k.items[tok]; ok {
		ks := el.Value.(*knownStatus)
		if rev >= ks.rev {
			ks.rev, ks.status = rev, status
		}
		k.ll.MoveToFront(el)
		return
	}
	k.items[tok] = k.ll.PushFront(&knownStatus{tok: tok, rev: rev, status: status})
	for k.ll.Len() > k.max {
		el := k.ll.Back()
		k.ll.Remove(el)
		delete(k.items, el.Value.(*knownStatus).tok)
	}
}

func (k *knownStatuses) forget(tok string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if el, ok := k.items[tok]; ok {
		k.ll.Remove(el)
		delete(k.items, tok)
	}
}
