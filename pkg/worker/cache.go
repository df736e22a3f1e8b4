package worker

import (
	"container/list"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/pkg/replay"
)

// entry is the replay state of one instance that a worker keeps hot.
type entry struct {
	id        string
	inst      *replay.Instance
	statusRev uint64
	// trace is the span context of the last episode of the run, which
	// work from outside the run's trace continues; invalid if untraced.
	trace trace.SpanContext
	// idleSince is when the entry was last put back.
	idleSince time.Time
}

// cache is a bounded LRU of idle entries. take removes an entry, so an entry
// in use is never evicted; put returns it.
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *cache) take(id string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[id]
	if !ok {
		return nil
	}
	delete(c.items, id)
	c.ll.Remove(el)
	return el.Value.(*entry)
}

// traceOf returns the trace context of the instance's entry if it is held
// and is of run exec ("" matches any run).
func (c *cache) traceOf(id, exec string) trace.SpanContext {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		if e := el.Value.(*entry); exec == "" || e.inst.ExecutionID() == exec {
			return e.trace
		}
	}
	return trace.SpanContext{}
}

func (c *cache) put(e *entry) {
	if c.max <= 0 {
		e.inst.Close()
		return
	}
	e.idleSince = time.Now()
	c.mu.Lock()
	if old, ok := c.items[e.id]; ok {
		c.ll.Remove(old)
		old.Value.(*entry).inst.Close()
	}
	c.items[e.id] = c.ll.PushFront(e)
	var evicted []*entry
	for c.ll.Len() > c.max {
		el := c.ll.Back()
		c.ll.Remove(el)
		ev := el.Value.(*entry)
		delete(c.items, ev.id)
		evicted = append(evicted, ev)
	}
	c.mu.Unlock()
	for _, ev := range evicted {
		ev.inst.Close()
	}
}

// closeIdle closes and drops the entries put back before cutoff: their
// next work replays them from history. It returns how many it dropped.
func (c *cache) closeIdle(cutoff time.Time) int {
	var idle []*entry
	c.mu.Lock()
	// The list is in the order entries were put back, the oldest last.
	for el := c.ll.Back(); el != nil; {
		e := el.Value.(*entry)
		if !e.idleSince.Before(cutoff) {
			break
		}
		prev := el.Prev()
		c.ll.Remove(el)
		delete(c.items, e.id)
		idle = append(idle, e)
		el = prev
	}
	c.mu.Unlock()
	for _, e := range idle {
		e.inst.Close()
	}
	return len(idle)
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func (c *cache) closeAll() {
	c.mu.Lock()
	items := c.items
	c.items = map[string]*list.Element{}
	c.ll.Init()
	c.mu.Unlock()
	for _, el := range items {
		el.Value.(*entry).inst.Close()
	}
}

// keyedMutex serialises work per instance.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
