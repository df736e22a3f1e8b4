package jetstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Store reads and writes history, status records and the registry.
type Store struct {
	js       jetstream.JetStream
	history  jetstream.KeyValue
	status   jetstream.KeyValue
	registry jetstream.KeyValue
	hstream  jetstream.Stream
	index    map[messages.RuntimeStatus]*indexBucket   // where each status's keys are written
	sources  map[messages.RuntimeStatus][]*indexBucket // what List reads for each status
	known    *knownStatuses
}

// Open binds to the provisioned buckets.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	s := &Store{js: js, known: newKnownStatuses(1 << 16)}
	var err error
	if s.history, err = js.KeyValue(ctx, messages.HistoryBucket); err != nil {
		return nil, fmt.Errorf("open history bucket: %w", err)
	}
	if s.status, err = js.KeyValue(ctx, messages.StatusBucket); err != nil {
		return nil, fmt.Errorf("open status bucket: %w", err)
	}
	if s.registry, err = js.KeyValue(ctx, messages.RegistryBucket); err != nil {
		return nil, fmt.Errorf("open registry bucket: %w", err)
	}
	if s.hstream, err = js.Stream(ctx, "KV_"+messages.HistoryBucket); err != nil {
		return nil, fmt.Errorf("open history stream: %w", err)
	}
	if err := s.openIndex(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// StatusKV returns the status bucket, for watchers.
func (s *Store) StatusKV() jetstream.KeyValue { return s.status }

func episodeKey(instanceID, executionID string, episode uint64) string {
	return fmt.Sprintf("%s.%s.%d", messages.Token(instanceID), messages.Token(executionID), episode)
}

// AppendEpisode commits episode number episode (1-based) of a run. The
// write is a Create: if that episode is already committed, by this caller
// earlier or by another worker, it returns ErrConflict and changes nothing.
func (s *Store) AppendEpisode(ctx context.Context, instanceID, executionID string, episode uint64, events []messages.Event) error {
	b, err := messages.Encode(&messages.Episode{V: messages.SchemaVersion, Events: events})
	if err != nil {
		return err
	}
	if _, err := s.history.Create(ctx, episodeKey(instanceID, executionID, episode), b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrConflict
		}
		return fmt.Errorf("append episode %d of %s: %w", episode, instanceID, err)
	}
	return nil
}

// LoadHistory returns every event of a run, in commit order, and the number
// of episodes read. A run with no history returns no events and no error.
func (s *Store) LoadHistory(ctx context.Context, instanceID, executionID string) ([]messages.Event, uint64, error) {
	prefix := messages.Token(instanceID) + "." + messages.Token(executionID) + "."
	w, err := s.history.Watch(ctx, prefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, 0, fmt.Errorf("load history of %s: %w", instanceID, err)
	}
	defer w.Stop()
	var (
		events   []messages.Event
		episodes uint64
	)
	for {
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("load history of %s: %w", instanceID, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, 0, fmt.Errorf("load history of %s: watcher closed", instanceID)
			}
			if e == nil {
				return events, episodes, nil
			}
			ep, err := messages.DecodeEpisode(e.Value())
			if err != nil {
				return nil, 0, fmt.Errorf("load history of %s, key %s: %w", instanceID, e.Key(), err)
			}
			var n uint64
			if _, err := fmt.Sscanf(e.Key()[strings.LastIndexByte(e.Key(), '.')+1:], "%d", &n); err != nil || n != episodes+1 {
				return nil, 0, fmt.Errorf("load history of %s: key %s out of order after episode %d", instanceID, e.Key(), episodes)
			}
			episodes = n
			events = append(events, ep.Events...)
		}
	}
}

// EpisodeCommitted reports whether episode n of a run is committed. It asks
// the history stream's leader, so it sees every committed episode, where
// LoadHistory and key gets may be answered by a replica that lags behind.
func (s *Store) EpisodeCommitted(ctx context.Context, instanceID, executionID string, n uint64) (bool, error) {
	subj := "$KV." + messages.HistoryBucket + "." + episodeKey(instanceID, executionID, n)
	info, err := s.hstream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return false, fmt.Errorf("episode %d of %s: %w", n, instanceID, err)
	}
	return info.State.Subjects[subj] > 0, nil
}

// PurgeHistory deletes every episode of every run of an instance.
func (s *Store) PurgeHistory(ctx context.Context, instanceID string) error {
	subj := "$KV." + messages.HistoryBucket + "." + messages.Token(instanceID) + ".>"
	if err := s.hstream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return fmt.Errorf("purge history of %s: %w", instanceID, err)
	}
	return nil
}

// PurgeRun deletes the episodes of one run, after the instance has moved on.
func (s *Store) PurgeRun(ctx context.Context, instanceID, executionID string) error {
	subj := "$KV." + messages.HistoryBucket + "." + messages.Token(instanceID) + "." + messages.Token(executionID) + ".>"
	if err := s.hstream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return fmt.Errorf("purge run %s of %s: %w", executionID, instanceID, err)
	}
	return nil
}

// GetStatus returns the status record of an instance and its revision. If
// the instance has none, ErrNotFound is returned.
func (s *Store) GetStatus(ctx context.Context, instanceID string) (*messages.Status, uint64, error) {
	e, err := s.status.Get(ctx, messages.Token(instanceID))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, ErrNotFound
		}
		return nil, 0, fmt.Errorf("get status of %s: %w", instanceID, err)
	}
	st, err := messages.DecodeStatus(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("status of %s: %w", instanceID, err)
	}
	s.known.set(e.Key(), StatusHint{Rev: e.Revision(), Status: st.RuntimeStatus})
	return st, e.Revision(), nil
}

// SawStatus tells the store what a message from the writer of a status
// record said of it (Hint), so that PutStatus at that revision need not
// read it. A wrong hint costs a read: the write is a compare-and-set on
// the revision.
func (s *Store) SawStatus(instanceID string, h StatusHint) {
	if h.Rev != 0 && h.Status.Valid() {
		s.known.set(messages.Token(instanceID), h)
	}
}

// Hint returns what this Store knows of revision rev of instanceID's
// status record, for the next writer (SawStatus).
func (s *Store) Hint(instanceID string, rev uint64) StatusHint {
	h, _ := s.known.get(messages.Token(instanceID), rev)
	return h
}

// ErrStale is returned by PutStatus when a newer record is already stored.
var ErrStale = errors.New("a newer status record is stored")

// PutStatus writes st if it is not older than the stored record: a record
// is newer if its run started later, or, for the same run, if it reflects
// more episodes. rev is the revision the caller last saw (0 if unknown).
// It returns the new revision; if the stored record is newer it returns
// that record's revision and ErrStale. When the runtime status changes, it
// maintains the listing index (see index.go).
func (s *Store) PutStatus(ctx context.Context, st *messages.Status, rev uint64) (uint64, error) {
	st.V = messages.SchemaVersion
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	key := messages.Token(st.InstanceID)
	if rev == 0 && st.Episode > 1 {
		// A writer that does not know the record of a run past its first
		// episode (a worker that rebuilt the instance from history): the
		// record exists, so read it rather than fail a Create.
		cur, crev, err := s.GetStatus(ctx, st.InstanceID)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return 0, err
		case newer(cur, st):
			return crev, ErrStale
		default:
			rev = crev
		}
	}
	for attempt := 0; attempt < 10; attempt++ {
		// The status of the record this write replaces (none for a Create).
		var prev StatusHint // of the record this write replaces (none for a Create)
		if rev != 0 {
			h, ok := s.known.get(key, rev)
			if !ok {
				cur, crev, err := s.GetStatus(ctx, st.InstanceID)
				switch {
				case errors.Is(err, ErrNotFound):
					rev = 0
					continue
				case err != nil:
					return 0, err
				}
				if crev != rev && newer(cur, st) {
					return crev, ErrStale
				}
				rev, h = crev, StatusHint{Rev: crev, Status: cur.RuntimeStatus}
			}
			prev = h
		}
		nrev, err := s.writeRecord(ctx, key, b, st, rev, prev)
		if err == nil {
			return nrev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("put status of %s: %w", st.InstanceID, err)
		}
		cur, crev, gerr := s.GetStatus(ctx, st.InstanceID)
		switch {
		case errors.Is(gerr, ErrNotFound):
			rev = 0
			continue
		case gerr != nil:
			return 0, gerr
		}
		if newer(cur, st) {
			return crev, ErrStale
		}
		rev = crev
	}
	return 0, fmt.Errorf("put status of %s: too many concurrent writers", st.InstanceID)
}

// newer reports whether a is strictly newer than b. Of two runs, the later
// rewind of the same run is newer (a rewind keeps CreatedAt); otherwise the
// run started later.
func newer(a, b *messages.Status) bool {
	if a.ExecutionID != b.ExecutionID {
		ab, an := splitRewind(a.ExecutionID)
		if bb, bn := splitRewind(b.ExecutionID); ab == bb {
			return an > bn
		}
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.Episode > b.Episode
}

// CreateNewStatus creates the record of an instance that has neither a
// record nor an index key, without reading anything first: it creates
// the index key (where CreateStatus puts it), then the record. If either
// exists it returns ErrConflict and writes nothing else, having removed
// the index key it created; the caller then reads the record and decides,
// as for any ID in use, and writes with CreateStatus.
func (s *Store) CreateNewStatus(ctx context.Context, st *messages.Status) (uint64, error) {
	st.V = messages.SchemaVersion
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	key := messages.Token(st.InstanceID)
	to := s.index[st.RuntimeStatus]
	var indexRev uint64
	if to != nil {
		ent, err := indexEntryOf(st)
		if err != nil {
			return 0, err
		}
		indexRev, err = to.kv.Create(ctx, key, ent)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrConflict
		}
		if err != nil {
			return 0, fmt.Errorf("index status of %s: %w", st.InstanceID, err)
		}
	}
	nrev, err := s.status.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		if to != nil {
			to.remove(ctx, key, indexRev)
		}
		return 0, ErrConflict
	}
	if err != nil {
		// The index key may stay; List checks it against the record.
		return 0, fmt.Errorf("create status of %s: %w", st.InstanceID, err)
	}
	s.known.set(key, StatusHint{Rev: nrev, Status: st.RuntimeStatus, IndexRev: indexRev})
	return nrev, nil
}

// CreateStatus writes a new record only if the instance has none, or if
// the one stored has revision rev (pass the revision of a finished run to
// reuse its ID). It returns ErrConflict when another writer was first.
func (s *Store) CreateStatus(ctx context.Context, st *messages.Status, rev uint64) (uint64, error) {
	st.V = messages.SchemaVersion
	b, err := messages.Encode(st)
	if err != nil {
		return 0, err
	}
	key := messages.Token(st.InstanceID)
	var prev StatusHint
	if rev != 0 {
		h, ok := s.known.get(key, rev)
		if !ok {
			cur, crev, err := s.GetStatus(ctx, st.InstanceID)
			if errors.Is(err, ErrNotFound) {
				return 0, ErrConflict
			}
			if err != nil {
				return 0, err
			}
			if crev != rev {
				return 0, ErrConflict
			}
			h = StatusHint{Rev: crev, Status: cur.RuntimeStatus}
		}
		prev = h
	}
	nrev, err := s.writeRecord(ctx, key, b, st, rev, prev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("create status of %s: %w", st.InstanceID, err)
	}
	return nrev, nil
}

// writeRecord writes the encoded record b of st at revision rev (a Create
// when 0), replacing the record prev tells of (zero for none): it puts
// st's index key first, so that the instance is never missing from the
// index, and drops the key of prev's status once the record is written.
func (s *Store) writeRecord(ctx context.Context, key string, b []byte, st *messages.Status, rev uint64, prev StatusHint) (uint64, error) {
	indexRev, old, err := s.putIndex(ctx, st, prev.Status, prev.IndexRev)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = s.status.Create(ctx, key, b)
	} else {
		nrev, err = s.status.Update(ctx, key, b, rev)
	}
	if err != nil {
		return 0, err
	}
	s.known.set(key, StatusHint{Rev: nrev, Status: st.RuntimeStatus, IndexRev: indexRev})
	s.dropIndex(ctx, key, prev.Status, st.RuntimeStatus, old)
	return nrev, nil
}

// DeleteStatus removes an instance's status record and its index key.
// PurgeInstance is the safe way to delete a finished instance.
func (s *Store) DeleteStatus(ctx context.Context, instanceID string) error {
	tok := messages.Token(instanceID)
	st, _, err := s.GetStatus(ctx, instanceID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.status.Purge(ctx, tok); err != nil {
		return fmt.Errorf("delete status of %s: %w", instanceID, err)
	}
	s.known.forget(tok)
	if err := s.purgeIndex(ctx, tok, st.RuntimeStatus); err != nil {
		return fmt.Errorf("delete index of %s: %w", instanceID, err)
	}
	return nil
}

// Kinds of registered names.
const (
	KindOrchestrator = "orchestrator"
	KindActivity     = "activity"
)

// Register records that a worker hosts name of kind.
func (s *Store) Register(ctx context.Context, kind, name string) error {
	if _, err := s.registry.PutString(ctx, kind+"."+messages.Token(name), name); err != nil {
		return fmt.Errorf("register %s %s: %w", kind, name, err)
	}
	return nil
}

// Registered reports whether some worker has registered name of kind.
func (s *Store) Registered(ctx context.Context, kind, name string) (bool, error) {
	_, err := s.registry.Get(ctx, kind+"."+messages.Token(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("registry: %w", err)
	}
	return true, nil
}
