// Package telemetry holds jetflow's observability plumbing: the Prometheus
// instruments every process records (Metrics), the OpenTelemetry tracer
// setup from the standard OTEL_* environment variables (SetupTracing), and
// the helpers that carry a W3C trace context in NATS message headers.
//
// Libraries never touch the global Prometheus registry: a process creates a
// registry, wraps it with NewMetrics, and hands the *Metrics to each
// component through its Options. A nil *Metrics records nothing, and every
// method may be called on it.
package telemetry

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Namespace prefixes every metric name.
const Namespace = "jetflow"

// Metric names, as exposed (Namespace included).
const (
	MetricOrchestrationsStarted        = "jetflow_orchestrations_started_total"
	MetricOrchestrationsCompleted      = "jetflow_orchestrations_completed_total"
	MetricOrchestrationsFailed         = "jetflow_orchestrations_failed_total"
	MetricOrchestrationsTerminated     = "jetflow_orchestrations_terminated_total"
	MetricOrchestrationsContinuedAsNew = "jetflow_orchestrations_continued_as_new_total"
	MetricEpisodeDuration              = "jetflow_episode_duration_seconds"
	MetricReplayDuration               = "jetflow_replay_duration_seconds"
	MetricActivityDuration             = "jetflow_activity_duration_seconds"
	MetricHistoryConflicts             = "jetflow_history_append_conflicts_total"
	MetricInstancesParked              = "jetflow_instances_parked_total"
	MetricRedeliveries                 = "jetflow_redeliveries_total"
	MetricDeadLettered                 = "jetflow_dead_lettered_messages_total"
	MetricStatusReads                  = "jetflow_status_reads_total"
	MetricWatchSubscribers             = "jetflow_watch_subscribers"
	MetricConsumerPending              = "jetflow_consumer_pending_messages"
	MetricConsumerAckPending           = "jetflow_consumer_ack_pending_messages"
	MetricConsumerRedelivered          = "jetflow_consumer_redelivered_messages"
	MetricStreamMessages               = "jetflow_stream_messages"
)

// Status read kinds, the values of the op label of jetflow_status_reads_total.
const (
	ReadGet     = "get"
	ReadList    = "list"
	ReadHistory = "history"
)

// Metrics records jetflow's instruments in one registry. Create one per
// registry with NewMetrics and share it between the components of a
// process. The zero of *Metrics (nil) records nothing.
type Metrics struct {
	reg prometheus.Registerer

	started, completed, failed, terminated, continued *prometheus.CounterVec
	episode, replayed, activity                       *prometheus.HistogramVec
	conflicts                                         prometheus.Counter
	parked                                            prometheus.Counter
	redeliveries, deadLettered, statusReads           *prometheus.CounterVec
	watchers                                          prometheus.Gauge

	mu    sync.RWMutex
	orchs map[string]*orchSet
	acts  map[string]prometheus.Observer
	redel map[string]prometheus.Counter
	reads map[string]prometheus.Counter

	pendingOnce sync.Once
}

// orchSet is the instruments of one orchestrator name, looked up once.
type orchSet struct {
	started, completed, failed, terminated, continued prometheus.Counter
	episode, replayed                                 prometheus.Observer
}

// Buckets of the latency histograms, in seconds.
var (
	// EpisodeBuckets span 0.5 ms to about 16 s.
	EpisodeBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)
	// ActivityBuckets span 1 ms to about 17 min.
	ActivityBuckets = prometheus.ExponentialBuckets(0.001, 4, 11)
)

// NewMetrics creates jetflow's instruments and registers them with reg. A
// nil reg returns nil, which records nothing. It panics if reg already
// holds jetflow's instruments: create one Metrics per registry.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		return nil
	}
	orch := []string{"orchestrator"}
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		reg:        reg,
		started:    counter(MetricOrchestrationsStarted, "Orchestration runs started (their first episode committed), by orchestrator name.", orch),
		completed:  counter(MetricOrchestrationsCompleted, "Orchestration runs that completed, by orchestrator name.", orch),
		failed:     counter(MetricOrchestrationsFailed, "Orchestration runs that failed, by orchestrator name.", orch),
		terminated: counter(MetricOrchestrationsTerminated, "Orchestration runs that were terminated, by orchestrator name.", orch),
		continued:  counter(MetricOrchestrationsContinuedAsNew, "Orchestration runs that continued as new, by orchestrator name.", orch),
		episode: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricEpisodeDuration,
			Help:    "Time to run one committed orchestrator episode: load or replay, step, history append, publishing and the status record.",
			Buckets: EpisodeBuckets}, orch),
		replayed: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricReplayDuration,
			Help:    "Time to replay an instance's history when it is not held in memory.",
			Buckets: EpisodeBuckets}, orch),
		activity: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricActivityDuration,
			Help:    "Time one activity attempt ran, by activity name.",
			Buckets: ActivityBuckets}, []string{"activity"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricHistoryConflicts,
			Help: "Episodes another worker appended to history first."}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricInstancesParked,
			Help: "Instances a worker stopped keeping in memory after they were idle for its idle timeout."}),
		redeliveries: counter(MetricRedeliveries, "Work messages delivered more than once, by stream.", []string{"stream"}),
		deadLettered: counter(MetricDeadLettered, "Messages moved to the dead-letter stream, by the stream they came from.", []string{"stream"}),
		statusReads:  counter(MetricStatusReads, "Status records read by clients, by kind of read (get, list, history).", []string{"op"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricWatchSubscribers,
			Help: "Status watches open now."}),
		orchs: map[string]*orchSet{},
		acts:  map[string]prometheus.Observer{},
		redel: map[string]prometheus.Counter{},
		reads: map[string]prometheus.Counter{},
	}
	reg.MustRegister(m.started, m.completed, m.failed, m.terminated, m.continued, m.episode, m.replayed, m.activity,
		m.conflicts, m.parked, m.redeliveries, m.deadLettered, m.statusReads, m.watchers)
	return m
}

// Registerer returns the registry the instruments are in, or nil.
func (m *Metrics) Registerer() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.reg
}

func (m *Metrics) orch(name string) *orchSet {
	m.mu.RLock()
	s := m.orchs[name]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.orchs[name]; s == nil {
		s = &orchSet{
			started:    m.started.WithLabelValues(name),
			completed:  m.completed.WithLabelValues(name),
			failed:     m.failed.WithLabelValues(name),
			terminated: m.terminated.WithLabelValues(name),
			continued:  m.continued.WithLabelValues(name),
			episode:    m.episode.WithLabelValues(name),
			replayed:   m.replayed.WithLabelValues(name),
		}
		m.orchs[name] = s
	}
	return s
}

// cached returns the child of vec for label, made once.
func cached[T any](m *Metrics, cache map[string]T, label string, make func(string) T) T {
	m.mu.RLock()
	v, ok := cache[label]
	m.mu.RUnlock()
	if ok {
		return v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok = cache[label]; !ok {
		v = make(label)
		cache[label] = v
	}
	return v
}

// EpisodeCommitted counts what a committed episode of orchestrator name
// did to its run (started it, ended it, continued it as new) and observes
// how long the episode took. Call it once per episode appended to history.
func (m *Metrics) EpisodeCommitted(name string, events []messages.Event, took time.Duration) {
	if m == nil {
		return
	}
	s := m.orch(name)
	for i := range events {
		switch e := &events[i]; e.Type {
		case messages.EventExecutionStarted:
			s.started.Inc()
		case messages.EventContinuedAsNew:
			s.continued.Inc()
		case messages.EventExecutionCompleted:
			switch e.Status {
			case messages.StatusCompleted:
				s.completed.Inc()
			case messages.StatusFailed:
				s.failed.Inc()
			case messages.StatusTerminated:
				s.terminated.Inc()
			}
		}
	}
	if took >= 0 {
		s.episode.Observe(took.Seconds())
	}
}

// Replayed observes how long replaying an instance of orchestrator name took.
func (m *Metrics) Replayed(name string, took time.Duration) {
	if m == nil {
		return
	}
	m.orch(name).replayed.Observe(took.Seconds())
}

// ActivityRan observes how long one attempt of activity name ran.
func (m *Metrics) ActivityRan(name string, took time.Duration) {
	if m == nil {
		return
	}
	cached(m, m.acts, name, func(n string) prometheus.Observer { return m.activity.WithLabelValues(n) }).Observe(took.Seconds())
}

// HistoryConflict counts an episode another worker appended first.
func (m *Metrics) HistoryConflict() {
	if m == nil {
		return
	}
	m.conflicts.Inc()
}

// InstancesParked counts n instances closed after their idle timeout.
func (m *Metrics) InstancesParked(n int) {
	if m == nil {
		return
	}
	m.parked.Add(float64(n))
}

// Redelivered counts a work message from stream delivered more than once.
func (m *Metrics) Redelivered(stream string) {
	if m == nil {
		return
	}
	cached(m, m.redel, stream, func(s string) prometheus.Counter { return m.redeliveries.WithLabelValues(s) }).Inc()
}

// DeadLettered counts a message from stream (JETFLOW_ORCH, JETFLOW_ACT,
// ...) copied to the dead-letter stream.
func (m *Metrics) DeadLettered(stream string) {
	if m == nil {
		return
	}
	m.deadLettered.WithLabelValues(stream).Inc()
}

// StatusRead counts a read of status records; op is ReadGet, ReadList or
// ReadHistory.
func (m *Metrics) StatusRead(op string) {
	if m == nil {
		return
	}
	cached(m, m.reads, op, func(o string) prometheus.Counter { return m.statusReads.WithLabelValues(o) }).Inc()
}

// WatchOpened counts a status watch as open until the function it returns
// is called.
func (m *Metrics) WatchOpened() (closed func()) {
	if m == nil {
		return func() {}
	}
	m.watchers.Inc()
	var once sync.Once
	return func() { once.Do(m.watchers.Dec) }
}
