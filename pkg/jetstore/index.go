package jetstore

import (
	"container/list"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
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
// For every runtime status there is a KV bucket, jetflow-index-<Status>,
// holding one key per instance in that status: the instance token, whose
// value is an indexEntry. One exception: Running instances are kept in
// the bucket of Pending, jetflow-index-Pending, which thus holds every
// instance that has started and not finished (nor been suspended). A run's
// start, Pending to Running, then changes no index key at all; List keeps
// the hits whose record is in the status listed. The bucket
// jetflow-index-Running is still provisioned and read by List, for keys
// written before this layout, but no longer written.
//
// Listing the instances in a status reads its bucket's stream from the
// start (or from where a continuation token left off) and stops when the
// page is full, without reading any other record and without a subject
// filter. (One bucket keyed <Status>.<instance> would need a wildcard
// filter, which nats-server's memory store serves by scanning every
// message of the other statuses.)
//
// The status writers (CreateStatus, PutStatus) maintain it when the
// record moves to another bucket, in this order:
//
//  1. put the key in the bucket of the new status, and read the revision r
//     of the key in the bucket of the previous status;
//  2. write the status record;
//  3. remove the key from the bucket of the previous status, only if its
//     latest version is still r.
//
// So the key of a record's status exists from before the record is
// written: an instance is never missing from the index of its status. A
// crash, or a write refused as stale, may leave a key that no longer
// matches its record; List checks every hit against the status record and
// skips those. Step 3's bound keeps a key that a later writer put for a
// later record: that writer put it after step 2 of this one.
//
// A removal is a KV purge (a rollup of the key's subject) that expects
// revision r and leaves a marker with a time to live of indexMarkerTTL:
// one publish, where a stream purge is a JetStream API request, a JSON
// reply and an advisory. So an index stream holds, besides its keys, only
// the markers of the last indexMarkerTTL, which a scan skips. A bucket
// provisioned before markers existed (no LimitMarkerTTL) is served by
// stream purges instead, as before.

// indexPrefix starts the name of every index bucket.
const indexPrefix = "jetflow-index-"

// IndexBucket is the KV bucket of the listing index for status rs.
func IndexBucket(rs messages.RuntimeStatus) string { return indexPrefix + rs.String() }

// indexedStatuses are the statuses with an index bucket, in listing order.
var indexedStatuses = []messages.RuntimeStatus{
	messages.StatusPending, messages.StatusRunning, messages.StatusSuspended, messages.StatusContinuedAsNew,
	messages.StatusCompleted, messages.StatusFailed, messages.StatusTerminated,
}

// indexBucket is the bucket of one status and its stream.
type indexBucket struct {
	kv      jetstream.KeyValue
	stream  jetstream.Stream
	subj    string // subject prefix of its keys
	markers bool   // purge markers may carry a time to live
}

// indexMarkerTTL is how long the marker of a removed index key stays in
// its index stream. One second is the least nats-server accepts.
const indexMarkerTTL = time.Second

// writtenIn is the status whose bucket holds the keys of status rs.
func writtenIn(rs messages.RuntimeStatus) messages.RuntimeStatus {
	if rs == messages.StatusRunning {
		return messages.StatusPending
	}
	return rs
}

func (s *Store) openIndex(ctx context.Context) error {
	own := map[messages.RuntimeStatus]*indexBucket{}
	for _, rs := range indexedStatuses {
		b := &indexBucket{subj: "$KV." + IndexBucket(rs) + "."}
		var err error
		if b.kv, err = s.js.KeyValue(ctx, IndexBucket(rs)); err != nil {
			return fmt.Errorf("open index bucket %s: %w", IndexBucket(rs), err)
		}
		if b.stream, err = s.js.Stream(ctx, "KV_"+IndexBucket(rs)); err != nil {
			return fmt.Errorf("open index stream %s: %w", IndexBucket(rs), err)
		}
		cfg := b.stream.CachedInfo().Config
		b.markers = cfg.AllowMsgTTL && cfg.SubjectDeleteMarkerTTL > 0
		own[rs] = b
	}
	// index: where writers put the key of each status; sources: what List
	// reads for each, that bucket first.
	s.index = map[messages.RuntimeStatus]*indexBucket{}
	s.sources = map[messages.RuntimeStatus][]*indexBucket{}
	for _, rs := range indexedStatuses {
		s.index[rs] = own[writtenIn(rs)]
		s.sources[rs] = []*indexBucket{own[writtenIn(rs)]}
		if writtenIn(rs) != rs {
			s.sources[rs] = append(s.sources[rs], own[rs])
		}
	}
	return nil
}

// indexEntry is the value of an index key: what the filters of List need
// before reading the status record.
type indexEntry struct {
	CreatedAt time.Time `msgpack:"ct"`
	Name      string    `msgpack:"n"`
}

// putIndex does step 1 for a record st replacing one in status prev
// (StatusInvalid for none), whose key in the bucket of prev has revision
// prevKey if known (0 if not). It puts the key of st's status, unless
// prev's key is in the same bucket, and returns the revision of that key
// (prevKey if the bucket is the same) and the revision of the key of prev
// to drop at step 3 (0 if none), which it reads unless prevKey gives it.
func (s *Store) putIndex(ctx context.Context, st *messages.Status, prev messages.RuntimeStatus, prevKey uint64) (key, old uint64, err error) {
	to := s.index[st.RuntimeStatus]
	if to == nil {
		return 0, 0, nil
	}
	if s.index[prev] == to {
		return prevKey, 0, nil // the key stays where it is
	}
	tok := messages.Token(st.InstanceID)
	b, err := indexEntryOf(st)
	if err != nil {
		return 0, 0, err
	}
	if key, err = to.kv.Put(ctx, tok, b); err != nil {
		return 0, 0, fmt.Errorf("index status of %s: %w", st.InstanceID, err)
	}
	from := s.index[prev]
	if from == nil || prevKey != 0 {
		// A known revision may be older than the key's latest: step 3
		// then keeps a later version, which List checks like any other.
		return key, prevKey, nil
	}
	e, err := from.kv.Get(ctx, tok)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return key, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("index status of %s: %w", st.InstanceID, err)
	}
	return key, e.Revision(), nil
}

// dropIndex does step 3: it removes the key of the previous status prev,
// if its latest version is still rev, once a record in status now is
// written. A later version, put by a later writer, is kept. A failure
// leaves a stale key, which List skips.
func (s *Store) dropIndex(ctx context.Context, tok string, prev, now messages.RuntimeStatus, rev uint64) {
	from := s.index[prev]
	if from == nil || from == s.index[now] || rev == 0 {
		return
	}
	from.remove(ctx, tok, rev)
}

// remove removes key tok if its latest version is rev: with a purge marker
// that expires where the bucket allows it, else with a stream purge of
// the versions up to rev.
func (b *indexBucket) remove(ctx context.Context, tok string, rev uint64) {
	if b.markers {
		_ = b.kv.Purge(ctx, tok, jetstream.LastRevision(rev), jetstream.PurgeTTL(indexMarkerTTL))
		return
	}
	_ = b.stream.Purge(ctx, jetstream.WithPurgeSubject(b.subj+tok), jetstream.WithPurgeSequence(rev+1))
}

// indexEntryOf encodes the index entry of st.
func indexEntryOf(st *messages.Status) ([]byte, error) {
	return msgpack.Marshal(&indexEntry{CreatedAt: st.CreatedAt, Name: st.Name})
}

// purgeIndex removes every version of the key of instance tok in the bucket of rs.
func (s *Store) purgeIndex(ctx context.Context, tok string, rs messages.RuntimeStatus) error {
	b := s.index[rs]
	if b == nil {
		return nil
	}
	return b.stream.Purge(ctx, jetstream.WithPurgeSubject(b.subj+tok))
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
			if _, _, err := s.putIndex(ctx, st, messages.StatusInvalid, 0); err != nil {
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

// statuses returns the statuses f selects, in listing order.
func (f *ListFilter) statuses() ([]messages.RuntimeStatus, error) {
	if len(f.Statuses) == 0 {
		return indexedStatuses, nil
	}
	for _, rs := range f.Statuses {
		if !rs.Valid() {
			return nil, fmt.Errorf("list: invalid runtime status %d", rs)
		}
	}
	var out []messages.RuntimeStatus
	for _, rs := range indexedStatuses {
		if slices.Contains(f.Statuses, rs) {
			out = append(out, rs)
		}
	}
	return out, nil
}

func (f *ListFilter) createdIn(t time.Time) bool {
	return (f.CreatedFrom.IsZero() || !t.Before(f.CreatedFrom)) && (f.CreatedTo.IsZero() || !t.After(f.CreatedTo))
}

// A continuation token names the status being listed, which of its index
// streams (0 for the first, which it names only when it is not 0), and
// the sequence of the last key listed in that stream.
func encodeListToken(rs messages.RuntimeStatus, src int, seq uint64) string {
	t := fmt.Sprintf("i%d.%d", rs, seq)
	if src > 0 {
		t += fmt.Sprintf(".%d", src)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(t))
}

func decodeListToken(tok string) (messages.RuntimeStatus, int, uint64, error) {
	if tok == "" {
		return messages.StatusInvalid, 0, 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 4 || b[0] != 'i' {
		return 0, 0, 0, ErrBadToken
	}
	parts := strings.Split(string(b[1:]), ".")
	if len(parts) != 2 && len(parts) != 3 {
		return 0, 0, 0, ErrBadToken
	}
	rs, err1 := strconv.ParseUint(parts[0], 10, 8)
	seq, err2 := strconv.ParseUint(parts[1], 10, 64)
	src, err3 := uint64(0), error(nil)
	if len(parts) == 3 {
		src, err3 = strconv.ParseUint(parts[2], 10, 8)
	}
	if err1 != nil || err2 != nil || err3 != nil || !messages.RuntimeStatus(rs).Valid() {
		return 0, 0, 0, ErrBadToken
	}
	return messages.RuntimeStatus(rs), int(src), seq, nil
}

// indexHit is an index key that passed the filters List can apply to it.
type indexHit struct {
	seq uint64
	id  string
}

// listConcurrency bounds the status records List reads at once.
const listConcurrency = 32

// List returns up to pageSize status records (100 if pageSize <= 0) that
// match f, and the token of the next page ("" when there is none). Pass ""
// for the first page. The token is opaque and stays valid while instances
// change. An instance that changes status while a listing pages through
// may be listed twice or, if it moves to a status listed earlier, not at
// all; one created meanwhile is listed on a later page if its status is
// not behind.
//
// List reads only the index buckets of the statuses f selects (all if
// none), one after the other, each in the order its keys were written,
// and stops as soon as the page is full. Every hit is checked against the
// status record, which is read (several at once) for the page.
func (s *Store) List(ctx context.Context, f ListFilter, pageSize int, token string) ([]*messages.Status, string, error) {
	if pageSize <= 0 {
		pageSize = 100
	}
	from, fromSrc, after, err := decodeListToken(token)
	if err != nil {
		return nil, "", err
	}
	statuses, err := f.statuses()
	if err != nil {
		return nil, "", err
	}
	prefix := ""
	if f.IDPrefix != "" {
		prefix = messages.Token(f.IDPrefix)
	}
	// The streams to read, in order: each selected status's sources.
	type source struct {
		rs  messages.RuntimeStatus
		src int
		b   *indexBucket
	}
	var sources []source
	for _, rs := range statuses {
		for i, b := range s.sources[rs] {
			sources = append(sources, source{rs, i, b})
		}
	}
	if from != messages.StatusInvalid {
		i := slices.IndexFunc(sources, func(x source) bool { return x.rs == from && x.src == fromSrc })
		if i < 0 {
			return nil, "", ErrBadToken
		}
		sources = sources[i:]
	}
	page := make([]*messages.Status, 0, pageSize)
	listed := map[string]bool{}
	for i, x := range sources {
		start := uint64(1)
		if x.rs == from && x.src == fromSrc {
			start = after + 1
		}
		last, more, err := s.listStatus(ctx, x.rs, x.b, start, &f, prefix, pageSize, &page, listed)
		if err != nil {
			return nil, "", err
		}
		if len(page) < pageSize {
			continue
		}
		if !more {
			// The page ends with this stream: is anything left after it?
			for _, next := range sources[i+1:] {
				info, err := next.b.stream.Info(ctx)
				if err != nil {
					return nil, "", fmt.Errorf("list: %w", err)
				}
				if info.State.Msgs > 0 {
					more = true
					break
				}
			}
		}
		if !more {
			return page, "", nil
		}
		return page, encodeListToken(x.rs, x.src, last), nil
	}
	return page, "", nil
}

// listStatus adds to page the hits in status rs of index bucket b from
// sequence start until the page is full or the index ends. It returns the
// sequence of the last key it listed and whether the index holds keys
// after it.
func (s *Store) listStatus(ctx context.Context, rs messages.RuntimeStatus, b *indexBucket, start uint64, f *ListFilter, prefix string,
	pageSize int, page *[]*messages.Status, listed map[string]bool) (uint64, bool, error) {
	cons, err := b.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return 0, false, fmt.Errorf("list %s: %w", rs, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = b.stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	batch := min(max(2*pageSize, 64), 1024)
	for {
		mb, err := cons.FetchNoWait(batch)
		if err != nil {
			return 0, false, fmt.Errorf("list %s: %w", rs, err)
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
				return 0, false, fmt.Errorf("list %s: %w", rs, err)
			}
			lastSeq = md.Sequence.Stream
			more = md.NumPending > 0
			if h, ok := parseHit(m, b.subj, md.Sequence.Stream, f, prefix); ok {
				hits = append(hits, h)
			}
		}
		if err := mb.Error(); err != nil {
			return 0, false, fmt.Errorf("list %s: %w", rs, err)
		}
		if n == 0 {
			return 0, false, nil
		}
		for len(hits) > 0 {
			need := pageSize - len(*page)
			chunk := hits[:min(len(hits), max(need, 8))]
			hits = hits[len(chunk):]
			recs, err := s.getStatuses(ctx, chunk)
			if err != nil {
				return 0, false, err
			}
			for i, h := range chunk {
				st := recs[i]
				if st == nil || st.RuntimeStatus != rs || listed[h.id] || !f.createdIn(st.CreatedAt) ||
					len(f.CustomStatus) > 0 && !ContainsJSON(st.CustomStatus, f.CustomStatus) {
					continue
				}
				listed[h.id] = true
				*page = append(*page, st)
				if len(*page) == pageSize {
					atEnd := i == len(chunk)-1 && len(hits) == 0 && h.seq == lastSeq && !more
					return h.seq, !atEnd, nil
				}
			}
		}
		if !more {
			return lastSeq, false, nil
		}
	}
}

// parseHit reads an index message and applies the filters its key and
// value can decide.
func parseHit(m jetstream.Msg, subj string, seq uint64, f *ListFilter, prefix string) (indexHit, bool) {
	if m.Headers().Get("KV-Operation") != "" || len(m.Data()) == 0 {
		return indexHit{}, false
	}
	tok := strings.TrimPrefix(m.Subject(), subj)
	if !strings.HasPrefix(tok, prefix) {
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
	return indexHit{seq: seq, id: id}, true
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
	if err := s.purgeIndex(ctx, tok, st.RuntimeStatus); err != nil {
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
// revisions this Store wrote or read, and the revision of the record's key
// in the index bucket of that status when known, so that a status write
// knows the status it replaces, and the index key to drop, without
// reading them. A revision names one version of one record, so an entry is
// never wrong, only missing.
type knownStatuses struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

// knownStatus is what is known of revision rev of the record of tok.
type knownStatus struct {
	tok string
	StatusHint
}

// StatusHint is what a writer of a status record knows of it, to pass to
// the next writer (SawStatus): its revision, its runtime status, and the
// revision of its key in the listing index (0 if unknown).
type StatusHint struct {
	Rev      uint64
	Status   messages.RuntimeStatus
	IndexRev uint64
}

func newKnownStatuses(max int) *knownStatuses {
	return &knownStatuses{max: max, ll: list.New(), items: map[string]*list.Element{}}
}

// get returns what is known of revision rev of the record of tok.
func (k *knownStatuses) get(tok string, rev uint64) (StatusHint, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	el, ok := k.items[tok]
	if !ok {
		return StatusHint{}, false
	}
	ks := el.Value.(*knownStatus)
	if ks.Rev != rev {
		return StatusHint{}, false
	}
	k.ll.MoveToFront(el)
	return ks.StatusHint, true
}

// set records h of revision h.Rev of the record of tok. An index revision
// already known for the same record revision is kept if h has none.
func (k *knownStatuses) set(tok string, h StatusHint) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if el, ok := k.items[tok]; ok {
		ks := el.Value.(*knownStatus)
		switch {
		case h.Rev > ks.Rev:
			ks.StatusHint = h
		case h.Rev == ks.Rev && h.IndexRev != 0:
			ks.IndexRev = h.IndexRev
		}
		k.ll.MoveToFront(el)
		return
	}
	k.items[tok] = k.ll.PushFront(&knownStatus{tok: tok, StatusHint: h})
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
