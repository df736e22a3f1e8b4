package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
)

// hub is one watch on the whole status bucket. It hands each update to the
// waiter registered for its key, so that thousands of orchestrations are
// followed without polling and without a watch each.
type hub struct {
	w    jetstream.KeyWatcher
	done chan struct{}

	mu      sync.Mutex
	waiters map[string]*waiter
	observe func(key string, st *messages.Status, seen time.Time)
}

// waiter waits for a status record of one instance that satisfies pred.
type waiter struct {
	key  string
	pred func(*messages.Status) bool
	ch   chan seen
}

// seen is a status record and when the watch delivered it.
type seen struct {
	st *messages.Status
	at time.Time
}

func newHub(ctx context.Context, kv jetstream.KeyValue) (*hub, error) {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch status bucket: %w", err)
	}
	h := &hub{w: w, done: make(chan struct{}), waiters: map[string]*waiter{}}
	go h.loop()
	return h, nil
}

func (h *hub) loop() {
	defer close(h.done)
	for e := range h.w.Updates() {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		at := time.Now()
		key := e.Key()
		h.mu.Lock()
		wt, obs := h.waiters[key], h.observe
		h.mu.Unlock()
		if wt == nil && obs == nil {
			continue
		}
		st, err := messages.DecodeStatus(e.Value())
		if err != nil {
			continue
		}
		if obs != nil {
			obs(key, st, at)
		}
		if wt != nil && wt.pred(st) {
			h.mu.Lock()
			if h.waiters[key] == wt {
				delete(h.waiters, key)
			}
			h.mu.Unlock()
			wt.ch <- seen{st: st, at: at}
		}
	}
}

// expect registers a waiter for instance id. Register before the command
// that leads to the update, so that the update cannot be missed.
func (h *hub) expect(id string, pred func(*messages.Status) bool) *waiter {
	wt := &waiter{key: messages.Token(id), pred: pred, ch: make(chan seen, 1)}
	h.mu.Lock()
	h.waiters[wt.key] = wt
	h.mu.Unlock()
	return wt
}

// cancel drops a waiter that will not be waited for.
func (h *hub) cancel(wt *waiter) {
	h.mu.Lock()
	if h.waiters[wt.key] == wt {
		delete(h.waiters, wt.key)
	}
	h.mu.Unlock()
}

// wait waits for the waiter's record, or until ctx ends.
func (h *hub) wait(ctx context.Context, wt *waiter) (seen, error) {
	select {
	case s := <-wt.ch:
		return s, nil
	case <-ctx.Done():
		h.cancel(wt)
		return seen{}, ctx.Err()
	case <-h.done:
		return seen{}, fmt.Errorf("status watch ended")
	}
}

// setObserver makes every update be handed to f (nil stops it). f runs on
// the hub's goroutine and must be quick.
func (h *hub) setObserver(f func(key string, st *messages.Status, seen time.Time)) {
	h.mu.Lock()
	h.observe = f
	h.mu.Unlock()
}

func (h *hub) stop() {
	_ = h.w.Stop()
	<-h.done
}

func terminal(st *messages.Status) bool { return st.RuntimeStatus.Terminal() }
