// Package worker hosts orchestrators and activities: it pulls their work
// from JetStream, replays and runs it, commits history, and only then
// acknowledges the work. Build a worker binary for your own functions with
// a Registry and Run.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// Options configure a Worker.
type Options struct {
	// Concurrency is how many orchestrator episodes run at once; 0 means
	// DefaultConcurrency.
	Concurrency int
	// ActivityConcurrency is how many activities run at once; 0 means
	// DefaultActivityConcurrency.
	ActivityConcurrency int
	// CacheSize is how many instances are kept replayed in memory; 0 means
	// 10,000, negative disables the cache.
	CacheSize int
	// IdleTimeout is how long an instance is kept replayed in memory
	// after its last episode: an instance idle for longer (waiting for an
	// event, a timer or a slow activity) is closed, and its next work
	// replays it from history. 0 means 10 s; negative keeps instances
	// until the cache is full.
	IdleTimeout time.Duration
	// MaxCustomStatusBytes is passed to replay.Options.
	MaxCustomStatusBytes int
	// DrainTimeout bounds how long Run waits for in-flight work on shutdown
	// when its ctx has ended; 0 means 10 s.
	DrainTimeout time.Duration
	// Logger receives the problems a message causes (the worker's caller
	// has no other way to see them) and backs orchestrators' loggers. Nil discards.
	Logger *zap.Logger
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Metrics records episodes, replays, activities, conflicts and
	// redeliveries; nil records nothing.
	Metrics *telemetry.Metrics
	// TracerProvider makes the "episode <name>" and "activity <name>"
	// spans, which continue the trace context carried in the work
	// message's headers; nil means the global provider.
	TracerProvider trace.TracerProvider
}

// Worker runs orchestrator and activity work.
type Worker struct {
	js      jetstream.JetStream
	store   *jetstore.Store
	reg     *Registry
	opts    Options
	log     *zap.Logger
	cache   *cache
	locks   keyedMutex
	metrics *telemetry.Metrics
	tracer  trace.Tracer

	// hook, if set (only by tests), is called at each stage of a commit;
	// an error it returns is handled like a crash at that point: the
	// instance is dropped from memory and the work is not acknowledged.
	hook func(stage hookStage, instanceID, executionID string, episode uint64) error
	// lag, if set (only by tests), edits every history read, as a replica
	// that lags behind the stream's leader would serve it.
	lag func(instanceID string, history []messages.Event) []messages.Event
	// historyLoads counts history reads; conflicts counts episodes another
	// worker committed first.
	historyLoads atomic.Int64
	conflicts    atomic.Int64
}

// hookStage names a point in commit.
type hookStage int

const (
	stageBeforeAppend hookStage = iota // before AppendEpisode
	stageAppended                      // after AppendEpisode, before the actions are published
	stagePublished                     // after publishing; in the run's last episode, before the status record is written
	stageCommitted                     // after the status record, before the ack
)

func (w *Worker) runHook(stage hookStage, e *entry) error {
	if w.hook == nil {
		return nil
	}
	return w.hook(stage, e.id, e.inst.ExecutionID(), e.inst.Episodes())
}

// The default limits of work run at once. Each is also the size of the
// worker's pull requests: more at once lets NATS and the worker batch more
// messages per read and write, which raised a saturated worker's
// throughput by about 15 % over 64 (docs/PERFORMANCE.md).
const (
	DefaultConcurrency         = 256
	DefaultActivityConcurrency = 256
)

// New returns a Worker and records in the registry bucket the names it
// hosts, so that starts of them are accepted. The streams and buckets must
// be provisioned.
func New(ctx context.Context, js jetstream.JetStream, reg *Registry, opts Options) (*Worker, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.ActivityConcurrency <= 0 {
		opts.ActivityConcurrency = DefaultActivityConcurrency
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 10000
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	// Register every name before New returns, so that once a worker
	// exists, starts of what it hosts are accepted: none of them races
	// the registration.
	for name := range reg.orchestrators {
		if err := store.Register(ctx, jetstore.KindOrchestrator, name); err != nil {
			return nil, err
		}
	}
	for name := range reg.activities {
		if err := store.Register(ctx, jetstore.KindActivity, name); err != nil {
			return nil, err
		}
	}
	return &Worker{js: js, store: store, reg: reg, opts: opts, log: opts.Logger, cache: newCache(opts.CacheSize),
		metrics: opts.Metrics, tracer: telemetry.Tracer(opts.TracerProvider)}, nil
}

// Run pulls and runs work until ctx ends. On shutdown it stops pulling and
// waits up to DrainTimeout for work in flight; work it does not finish is
// redelivered elsewhere.
func (w *Worker) Run(ctx context.Context) error {
	// Work in flight keeps its own context, so that a shutdown lets it
	// finish instead of cutting it off between commit and ack.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	if w.opts.IdleTimeout > 0 {
		stopSweep := w.sweepIdle(ctx)
		defer stopSweep()
	}
	loops := 0
	if len(w.reg.orchestrators) > 0 {
		loops++
		go func() {
			errs <- w.consume(ctx, work, messages.OrchestratorStream, jetstore.OrchestratorConsumer, w.opts.Concurrency, &wg, w.handleOrchestrator)
		}()
	}
	if len(w.reg.activities) > 0 {
		loops++
		go func() {
			errs <- w.consume(ctx, work, messages.ActivityStream, jetstore.ActivityConsumer, w.opts.ActivityConcurrency, &wg, w.handleActivity)
		}()
	}
	var first error
	for i := 0; i < loops; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.opts.DrainTimeout):
		cancelWork()
		<-done
	}
	w.cache.closeAll()
	return first
}

// sweepIdle closes the instances idle for longer than IdleTimeout, every
// quarter of it, until ctx ends or the returned stop is called.
func (w *Worker) sweepIdle(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(w.opts.IdleTimeout/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n := w.cache.closeIdle(time.Now().Add(-w.opts.IdleTimeout)); n > 0 {
					w.metrics.InstancesParked(n)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// consume pulls messages until ctx ends and runs handle on each, at most
// limit at once.
func (w *Worker) consume(ctx, work context.Context, stream, consumer string, limit int, wg *sync.WaitGroup, handle func(context.Context, jetstream.Msg)) error {
	cons, err := w.js.Consumer(ctx, stream, consumer)
	if ctx.Err() != nil {
		return nil // shut down while starting
	}
	if err != nil {
		return fmt.Errorf("bind consumer %s: %w", consumer, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(limit))
	if err != nil {
		return fmt.Errorf("consume %s: %w", consumer, err)
	}
	stop := context.AfterFunc(ctx, it.Drain) // handle what was fetched already, then end
	defer stop()
	sem := make(chan struct{}, limit)
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				// The NATS node went away or paused; the iterator pulls
				// again by itself once it is reachable. Not fatal.
				w.log.Warn("missed heartbeats from NATS; still pulling", zap.String("consumer", consumer))
				continue
			}
			return fmt.Errorf("consume %s: %w", consumer, err)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			handle(work, msg)
		}()
	}
}

var (
	errConflict = errors.New("episode conflict")
	errNotYet   = errors.New("history does not show what the work needs yet; try again later")
	// errStaleCache asks for the step to be tried again from history.
	errStaleCache = errors.New("cached instance may be stale")
)

func (w *Worker) handleOrchestrator(ctx context.Context, msg jetstream.Msg) {
	work, err := messages.DecodeOrchestratorWork(msg.Data())
	if err != nil {
		w.reject(ctx, msg, "orchestrator", err)
		return
	}
	w.countRedelivery(msg, messages.OrchestratorStream)
	info := episodeInfo{delivered: 1}
	if md, err := msg.Metadata(); err == nil {
		info.delivered = md.NumDelivered
	}
	err = w.processEpisode(telemetry.Extract(ctx, msg.Headers()), work, &info)
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			w.log.Warn("ack orchestrator work", info.fields(work.InstanceID, zap.Error(err))...)
		}
	case errors.Is(err, errNotYet):
		_ = msg.NakWithDelay(500 * time.Millisecond)
	default:
		w.log.Error("orchestrator step", info.fields(work.InstanceID, zap.Error(err))...)
		_ = msg.NakWithDelay(time.Second)
	}
}

// countRedelivery counts a work message delivered more than once.
func (w *Worker) countRedelivery(msg jetstream.Msg, stream string) {
	if w.metrics == nil {
		return
	}
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		w.metrics.Redelivered(stream)
	}
}

// episodeInfo is what processing one work item learnt about its episode,
// for logs and metrics.
type episodeInfo struct {
	delivered uint64 // how many times the work message was delivered (1 the first time)
	name      string // the orchestrator's name, once known
	episode   uint64 // the episode's number, once known
}

// fields returns the log fields of the instance and episode.
func (i *episodeInfo) fields(id string, more ...zap.Field) []zap.Field {
	f := make([]zap.Field, 0, 3+len(more))
	f = append(f, zap.String("instanceId", id))
	if i.name != "" {
		f = append(f, zap.String("orchestrator", i.name))
	}
	if i.episode > 0 {
		f = append(f, zap.Uint64("episode", i.episode))
	}
	return append(f, more...)
}

// process applies a work item, retrying when another worker committed first.
func (w *Worker) process(ctx context.Context, work *messages.OrchestratorWork) error {
	var info episodeInfo
	return w.processEpisode(ctx, work, &info)
}

// processEpisode is process, telling info what it learns. ctx may carry the
// remote span context of the work message.
func (w *Worker) processEpisode(ctx context.Context, work *messages.OrchestratorWork, info *episodeInfo) (err error) {
	unlock := w.locks.lock(work.InstanceID)
	defer unlock()
	began := time.Now()
	for i := range work.Events {
		if work.Events[i].Type == messages.EventExecutionStarted {
			info.name = work.Events[i].Name
		}
	}
	ctx, span := w.startEpisodeSpan(ctx, work, info.name)
	defer func() {
		if err != nil && !errors.Is(err, errNotYet) {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	if f := poisonFailure(work.Events); f != nil {
		return w.failPoisoned(ctx, work, *f)
	}
	if rw := rewindEvent(work.Events); rw != nil {
		if work, err = w.prepareRewind(ctx, work, rw); err != nil || work == nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		var committed bool
		committed, err = w.step(ctx, work, attempt, info)
		if committed {
			w.metrics.EpisodeCommitted(info.name, nil, time.Since(began))
		}
		if !errors.Is(err, errConflict) && !errors.Is(err, errStaleCache) || attempt >= 8 {
			return err
		}
	}
}

// startEpisodeSpan starts the span of one work item. Its parent is the
// span context the work message carried (the activity, the episode or the
// command that sent it), except that work from outside the run's trace (a
// client's command) continues the trace of the run this worker holds, with
// a link to the sender.
func (w *Worker) startEpisodeSpan(ctx context.Context, work *messages.OrchestratorWork, name string) (context.Context, trace.Span) {
	sent := trace.SpanContextFromContext(ctx)
	var opts []trace.SpanStartOption
	// A start (name set) begins its run and keeps the trace it came with.
	if run := w.cache.traceOf(work.InstanceID, work.ExecutionID); name == "" && run.IsValid() && run.TraceID() != sent.TraceID() {
		if sent.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sent}))
		}
		ctx = trace.ContextWithRemoteSpanContext(ctx, run)
	}
	opts = append(opts, trace.WithSpanKind(trace.SpanKindConsumer))
	ctx, span := w.tracer.Start(ctx, "episode", opts...)
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrInstanceID.String(work.InstanceID))
		if work.ExecutionID != "" {
			span.SetAttributes(telemetry.AttrExecutionID.String(work.ExecutionID))
		}
		if name != "" {
			span.SetName("episode " + name)
			span.SetAttributes(telemetry.AttrOrchestrator.String(name))
		}
	}
	return ctx, span
}

// step applies one work item to its instance as one episode. committed
// reports that an episode was appended to history.
func (w *Worker) step(ctx context.Context, work *messages.OrchestratorWork, attempt int, info *episodeInfo) (committed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			committed, err = false, fmt.Errorf("step panicked: %v\n%s", r, debug.Stack())
		}
	}()
	e := w.cache.take(work.InstanceID)
	if e != nil && work.ExecutionID != "" && e.inst.ExecutionID() != work.ExecutionID {
		e.inst.Close()
		e = nil
	}
	hot := e != nil
	incoming := work.Events
	var history []messages.Event
	if e == nil {
		e, incoming, history, err = w.load(ctx, work, attempt)
		if err != nil || e == nil {
			return false, err
		}
	}
	info.episode = e.inst.Episodes() + 1
	ep, err := e.inst.Step(w.opts.Now().UTC(), incoming)
	if n := e.inst.Name(); n != "" {
		info.name = n // known once the start is applied
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() && info.name != "" {
		span.SetName("episode " + info.name)
		span.SetAttributes(telemetry.AttrOrchestrator.String(info.name), telemetry.AttrExecutionID.String(e.inst.ExecutionID()),
			telemetry.AttrEpisode.Int64(int64(info.episode)))
	}
	if err != nil {
		e.inst.Close()
		return false, err
	}
	if len(ep.Events) == 0 && hot {
		// A hot instance found nothing new in the work item. It may be
		// behind history (another worker committed episodes since), and the
		// work may answer an action of those: decide against history.
		e.inst.Close()
		return false, errStaleCache
	}
	if len(ep.Events) == 0 {
		// Everything in the work item is already in history: a redelivery.
		// Unless the history read is behind: then the work answers an
		// action history does not show yet, and must wait for it.
		if err := w.checkBehind(ctx, e, history, incoming, info); err != nil {
			e.inst.Close()
			return false, err
		}
		// Make sure the episode that applied it sent what it still owes,
		// and repair the status.
		info.episode = e.inst.Episodes()
		if err := w.publish(ctx, e.inst, owedActions(history, incoming)); err != nil {
			e.inst.Close()
			return false, err
		}
		if err := w.writeStatus(ctx, e); err != nil {
			e.inst.Close()
			return false, err
		}
		w.keep(ctx, e)
		return false, nil
	}
	w.limitFinal(e, ep)
	actions := ep.Actions
	if hasType(ep.Events, messages.EventExecutionRewound) {
		// The first episode of a rewound run also sends what the history
		// it was given leaves open (see rewind.go).
		actions = e.inst.Outstanding()
	}
	if err := w.commit(ctx, e, ep.Events, actions); err != nil {
		return false, err
	}
	return true, nil
}

// unexplainedRetries is how many deliveries work that answers an action
// unknown to history gets before it is dropped as garbage, when the
// history stream's leader confirms there is nothing more to read.
const unexplainedRetries = 3

// checkBehind is called when a work item changes nothing in the run that
// history shows. That is a redelivery, unless the item answers an action
// (a completion whose task history has not scheduled) of a run that has
// not finished: then the history read, which a lagging replica may serve
// after a NATS fault, may be behind. It returns errNotYet, to try again
// later, while the history stream's leader holds a later episode, and for
// the first unexplainedRetries deliveries; after that the item is garbage
// and is dropped with a warning.
func (w *Worker) checkBehind(ctx context.Context, e *entry, history, incoming []messages.Event, info *episodeInfo) error {
	if e.inst.Final() != nil {
		return nil
	}
	scheduled := map[int32]bool{}
	for i := range history {
		if history[i].Type.IsScheduling() {
			scheduled[history[i].TaskID] = true
		}
	}
	var unknown *messages.Event
	for i := range incoming {
		if incoming[i].Type.IsCompletion() && !scheduled[incoming[i].TaskID] {
			unknown = &incoming[i]
			break
		}
	}
	if unknown == nil {
		return nil
	}
	next := e.inst.Episodes() + 1
	behind, err := w.store.EpisodeCommitted(ctx, e.id, e.inst.ExecutionID(), next)
	if err != nil {
		return err
	}
	if behind || info.delivered < unexplainedRetries {
		return errNotYet
	}
	w.log.Warn("work answers an action its run never scheduled; dropped", info.fields(e.id,
		zap.String("event", unknown.Type.String()), zap.Int32("taskId", unknown.TaskID), zap.Uint64("deliveries", info.delivered))...)
	return nil
}

// keep puts an entry back in the cache with the trace context of the
// episode that last touched it, which later work from outside the run's
// trace continues.
//
// A run that has finished is closed instead: no step can change it any
// more (late work for it is checked against history), and kept it would
// only hold memory that every garbage collection scans.
func (w *Worker) keep(ctx context.Context, e *entry) {
	if e.inst.Final() != nil {
		e.inst.Close()
		return
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		e.trace = sc
	}
	w.cache.put(e)
}

// commit appends an episode, publishes its actions, writes the status
// record, and keeps the instance hot.
func (w *Worker) commit(ctx context.Context, e *entry, events, actions []messages.Event) error {
	id, exec := e.id, e.inst.ExecutionID()
	if err := w.runHook(stageBeforeAppend, e); err != nil {
		e.inst.Close()
		return err
	}
	if err := w.store.AppendEpisode(ctx, id, exec, e.inst.Episodes(), events); err != nil {
		e.inst.Close()
		if errors.Is(err, jetstore.ErrConflict) {
			w.conflicts.Add(1)
			w.metrics.HistoryConflict()
			return errConflict
		}
		return err
	}
	w.metrics.EpisodeCommitted(e.inst.Name(), events, -1)
	if err := w.runHook(stageAppended, e); err != nil {
		e.inst.Close()
		return err
	}
	if e.inst.Final() == nil {
		// Not the run's last episode: its actions and its status record
		// go out at once, both after history. (The last episode publishes
		// first, so that a run seen finished has told its parent.)
		msgs, err := actionMessages(e.inst, actions)
		if err != nil {
			e.inst.Close()
			return err
		}
		st := w.statusRecord(e)
		published := make(chan error, 1)
		go func() { published <- publishAll(ctx, w.js, msgs) }()
		serr := w.putStatus(ctx, e, st)
		if err := cmp.Or(<-published, serr); err != nil {
			e.inst.Close()
			return err
		}
		if err := w.runHook(stagePublished, e); err != nil {
			e.inst.Close()
			return err
		}
	} else {
		if err := w.publish(ctx, e.inst, actions); err != nil {
			e.inst.Close()
			return err
		}
		if err := w.runHook(stagePublished, e); err != nil {
			e.inst.Close()
			return err
		}
		if err := w.writeStatus(ctx, e); err != nil {
			e.inst.Close()
			return err
		}
	}
	if err := w.runHook(stageCommitted, e); err != nil {
		e.inst.Close()
		return err
	}
	if f := e.inst.Final(); f != nil && f.Type == messages.EventContinuedAsNew {
		e.inst.Close()
		return nil
	}
	w.keep(ctx, e)
	return nil
}

// load rebuilds an instance from its history. It returns the events of the
// work item that still apply (those for a run that continued as new move
// to the new run) and the history it replayed.
func (w *Worker) load(ctx context.Context, work *messages.OrchestratorWork, attempt int) (*entry, []messages.Event, []messages.Event, error) {
	id, exec := work.InstanceID, work.ExecutionID
	incoming := work.Events
	if exec == "" {
		st, _, err := w.store.GetStatus(ctx, id)
		if errors.Is(err, jetstore.ErrNotFound) {
			return nil, nil, nil, errNotYet
		}
		if err != nil {
			return nil, nil, nil, err
		}
		exec = st.ExecutionID
	}
	first := incoming[0]
	isStart := first.Type == messages.EventExecutionStarted && first.ExecutionID == exec
	for hop := 0; ; hop++ {
		var history []messages.Event
		if !(isStart && attempt == 0 && hop == 0) {
			var err error
			w.historyLoads.Add(1)
			if history, _, err = w.store.LoadHistory(ctx, id, exec); err != nil {
				return nil, nil, nil, err
			}
			if w.lag != nil {
				history = w.lag(id, history)
			}
		}
		if len(history) == 0 && !isStart {
			if hop > 0 {
				return nil, nil, nil, errNotYet // the new run's start is on its way
			}
			return nil, nil, nil, w.staleOrEarly(ctx, id, exec)
		}
		// The orchestrator's name is on ExecutionStarted, which follows the
		// OrchestratorStarted that opens the first episode.
		name := first.Name
		for i := range history {
			if history[i].Type == messages.EventExecutionStarted {
				name = history[i].Name
				break
			}
		}
		fn, ok := w.reg.orchestrators[name]
		if !ok {
			return nil, nil, nil, fmt.Errorf("orchestrator %q is not registered on this worker", name)
		}
		inst := replay.New(fn, replay.Options{MaxCustomStatusBytes: w.opts.MaxCustomStatusBytes, Logger: w.log.WithLazy(zap.String("instanceId", id), zap.String("orchestrator", name))})
		e := &entry{id: id, inst: inst}
		if isStart && len(history) == 0 && work.StatusRev != 0 {
			// The dispatcher's Pending record: the first status write
			// replaces it without reading it.
			e.statusRev = work.StatusRev
			w.store.SawStatus(id, jetstore.StatusHint{Rev: work.StatusRev, Status: messages.StatusPending, IndexRev: work.IndexRev})
		}
		if err := w.replay(ctx, inst, name, history); err != nil {
			inst.Close()
			var nd *replay.NonDeterminismError
			if !errors.As(err, &nd) {
				return nil, nil, nil, err
			}
			return nil, nil, nil, w.failRun(ctx, id, exec, history, incoming, messages.Failure{Type: "NonDeterminism", Message: err.Error()})
		}
		f := inst.Final()
		if f == nil || f.Type != messages.EventContinuedAsNew || hop >= 3 {
			return e, incoming, history, nil
		}
		// The run continued as new: events from clients follow it; results
		// of the old run's tasks do not.
		exec, isStart = f.ExecutionID, false
		var carried []messages.Event
		for _, ev := range incoming {
			switch ev.Type {
			case messages.EventRaised, messages.EventExecutionTerminated, messages.EventExecutionSuspended, messages.EventExecutionResumed:
				carried = append(carried, ev)
			}
		}
		if len(carried) == 0 {
			return e, incoming, history, nil
		}
		incoming = carried
	}
}

// replay replays an instance's history, timing it and tracing it as a
// child span of the episode.
func (w *Worker) replay(ctx context.Context, inst *replay.Instance, name string, history []messages.Event) error {
	if len(history) == 0 {
		return inst.Replay(history)
	}
	_, span := w.tracer.Start(ctx, "replay")
	if span.IsRecording() {
		span.SetName("replay " + name)
		span.SetAttributes(telemetry.AttrOrchestrator.String(name), attribute.Int("jetflow.history_events", len(history)))
	}
	began := time.Now()
	err := inst.Replay(history)
	w.metrics.Replayed(name, time.Since(began))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return err
}

// staleOrEarly decides about work for a run with no history: if the status
// record names that run, its start is still on its way (errNotYet);
// otherwise the run was purged or replaced and the work is dropped.
func (w *Worker) staleOrEarly(ctx context.Context, id, exec string) error {
	st, _, err := w.store.GetStatus(ctx, id)
	if err != nil && !errors.Is(err, jetstore.ErrNotFound) {
		return err
	}
	if err == nil && st.ExecutionID == exec && !st.RuntimeStatus.Terminal() {
		return errNotYet
	}
	// Before dropping the work, make sure the history read was not
	// served by a replica that lags behind the run's first episode.
	started, err := w.store.EpisodeCommitted(ctx, id, exec, 1)
	if err != nil {
		return err
	}
	if started {
		return errNotYet
	}
	return nil
}

// failRun ends a run whose code no longer replays its history.
func (w *Worker) failRun(ctx context.Context, id, exec string, history, incoming []messages.Event, f messages.Failure) error {
	// Rebuild a code-less view of the run to number the episode and find its start.
	failed := replay.FailEpisode(w.opts.Now().UTC(), incoming, f)
	all := append(append([]messages.Event(nil), history...), failed...)
	view := replay.New(nil, replay.Options{})
	if err := view.Replay(all); err != nil {
		return err
	}
	e := &entry{id: id, inst: view}
	w.log.Error("orchestration failed without running its code", zap.String("instanceId", id),
		zap.String("orchestrator", view.Name()), zap.Uint64("episode", view.Episodes()),
		zap.String("failure", f.Type), zap.String("reason", f.Message))
	if err := w.store.AppendEpisode(ctx, id, exec, view.Episodes(), failed); err != nil {
		if errors.Is(err, jetstore.ErrConflict) {
			w.metrics.HistoryConflict()
			return errConflict
		}
		return err
	}
	w.metrics.EpisodeCommitted(view.Name(), failed, -1)
	if err := w.publish(ctx, view, []messages.Event{*view.Final()}); err != nil {
		return err
	}
	return w.writeStatus(ctx, e)
}

// writeStatus writes the instance's status record after its history.
func (w *Worker) writeStatus(ctx context.Context, e *entry) error {
	return w.putStatus(ctx, e, w.statusRecord(e))
}

// putStatus writes st, the status record of e.
func (w *Worker) putStatus(ctx context.Context, e *entry, st *messages.Status) error {
	rev, err := w.store.PutStatus(ctx, st, e.statusRev)
	if errors.Is(err, jetstore.ErrStale) {
		// A newer record is stored: this entry is behind. Its revision is
		// not one this entry may later update without comparing.
		e.statusRev = 0
		return nil
	}
	if err != nil {
		return err
	}
	e.statusRev = rev
	return nil
}

// statusRecord is the status record of the instance as history shows it.
func (w *Worker) statusRecord(e *entry) *messages.Status {
	in := e.inst
	st := &messages.Status{
		InstanceID:    e.id,
		Name:          in.Name(),
		ExecutionID:   in.ExecutionID(),
		RuntimeStatus: in.RuntimeStatus(),
		Input:         in.Input(),
		CustomStatus:  in.CustomStatus(),
		CreatedAt:     in.CreatedAt(),
		LastUpdatedAt: w.opts.Now().UTC(),
		Episode:       in.Episodes(),
	}
	if f := in.Final(); f != nil {
		st.Output = f.Result
		if f.Failure != nil {
			st.Failure = f.Failure
			st.Output, _ = jsonString(f.Failure.Message)
		}
	}
	return st
}
