// Package telemetry checks jetflow's metrics and traces end to end on a
// real NATS server: a dispatcher, a worker, a client and the HTTP API,
// each on its own connection, sharing one Prometheus registry and one
// tracer provider that records into memory.
package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zaptest"

	"github.com/jetflow/jetflow/internal/natstest"
	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/devserver"
	"github.com/jetflow/jetflow/pkg/dispatcher"
	"github.com/jetflow/jetflow/pkg/host"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/samples"
	"github.com/jetflow/jetflow/pkg/telemetry"
	"github.com/jetflow/jetflow/pkg/worker"
)

type stack struct {
	t      *testing.T
	srv    *natstest.Server
	reg    *prometheus.Registry
	spans  *tracetest.InMemoryExporter
	client *client.Client
	base   string // the API's URL, up to and including api.Prefix
	admin  string // the admin server's URL
	stop   func() // stops the worker and the dispatcher and waits for them
}

// startStack runs a dispatcher, a worker hosting the samples, a client and
// the API, all recording into one registry and one in-memory exporter.
func startStack(t *testing.T, wopts worker.Options) *stack {
	t.Helper()
	srv := natstest.Start(t)
	reg := host.NewRegistry()
	metrics := telemetry.NewMetrics(reg)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	log := zaptest.NewLogger(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := func(what string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}()
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)

	dnc, djs := natstest.Connect(t, srv)
	d, err := dispatcher.New(ctx, dnc, djs, dispatcher.Options{Store: jetstore.Config{Memory: true},
		Logger: log.Named("dispatcher"), Metrics: metrics, TracerProvider: tp})
	if err != nil {
		t.Fatalf("dispatcher: %v", err)
	}
	run("dispatcher", d.Run)

	_, wjs := natstest.Connect(t, srv)
	wreg := worker.NewRegistry()
	if err := samples.Register(wreg); err != nil {
		t.Fatal(err)
	}
	wopts.Logger, wopts.Metrics, wopts.TracerProvider = log.Named("worker"), metrics, tp
	w, err := worker.New(ctx, wjs, wreg, wopts)
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	run("worker", w.Run)

	anc, ajs := natstest.Connect(t, srv)
	c, err := client.New(ctx, anc, ajs, client.WithMetrics(metrics), client.WithTracerProvider(tp))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	hs := httptest.NewServer(api.New(c, api.Options{Logger: log.Named("api"), TracerProvider: tp}))
	t.Cleanup(hs.Close)
	adm := httptest.NewServer(host.AdminHandler(host.Health(anc, ajs), reg, false))
	t.Cleanup(adm.Close)

	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, err := c.Store().Registered(ctx, jetstore.KindOrchestrator, "E1_HelloSequence")
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not register the samples")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &stack{t: t, srv: srv, reg: reg, spans: spans, client: c, base: hs.URL + api.Prefix, admin: adm.URL, stop: stop}
}

// post sends a JSON body to a route below api.Prefix and returns the
// status code and the body.
func (s *stack) post(route, body string) (int, []byte) {
	s.t.Helper()
	resp, err := http.Post(s.base+route, "application/json", strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("POST %s: %v", route, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// start starts an orchestration through the HTTP API and returns its ID.
func (s *stack) start(name, input string) string {
	s.t.Helper()
	code, b := s.post("orchestrators/"+name, input)
	if code != http.StatusAccepted {
		s.t.Fatalf("start %s: %d %s", name, code, b)
	}
	var cs api.CheckStatus
	if err := json.Unmarshal(b, &cs); err != nil {
		s.t.Fatal(err)
	}
	return cs.ID
}

func (s *stack) waitCompleted(id string) *messages.Status {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := s.client.WaitForCompletion(ctx, id)
	if err != nil {
		s.t.Fatalf("wait for %s: %v", id, err)
	}
	if st.RuntimeStatus != messages.StatusCompleted {
		s.t.Fatalf("%s is %s: %s", id, st.RuntimeStatus, st.Output)
	}
	return st
}

// metric returns the sample of family name whose labels include labels,
// or nil.
func (s *stack) metric(name string, labels map[string]string) *dto.Metric {
	s.t.Helper()
	fams, err := s.reg.Gather()
	if err != nil {
		s.t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func TestHelloSequenceMetrics(t *testing.T) {
	s := startStack(t, worker.Options{})
	id := s.start("E1_HelloSequence", "null")
	s.waitCompleted(id)
	if _, err := s.client.Status(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	s.stop() // every episode and activity is recorded once the worker has stopped

	orch := map[string]string{"orchestrator": "E1_HelloSequence"}
	counter := func(name string, labels map[string]string) float64 {
		t.Helper()
		m := s.metric(name, labels)
		if m == nil {
			t.Fatalf("no %s%v", name, labels)
		}
		return m.GetCounter().GetValue()
	}
	histogram := func(name string, labels map[string]string) uint64 {
		t.Helper()
		m := s.metric(name, labels)
		if m == nil {
			t.Fatalf("no %s%v", name, labels)
		}
		return m.GetHistogram().GetSampleCount()
	}
	if got := counter(telemetry.MetricOrchestrationsStarted, orch); got != 1 {
		t.Errorf("started = %v, want 1", got)
	}
	if got := counter(telemetry.MetricOrchestrationsCompleted, orch); got != 1 {
		t.Errorf("completed = %v, want 1", got)
	}
	for _, name := range []string{telemetry.MetricOrchestrationsFailed, telemetry.MetricOrchestrationsTerminated} {
		if got := counter(name, orch); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
	if got := histogram(telemetry.MetricActivityDuration, map[string]string{"activity": "E1_SayHello"}); got != 3 {
		t.Errorf("activity observations = %d, want 3", got)
	}
	// A start and one episode for each of the three results.
	if got := histogram(telemetry.MetricEpisodeDuration, orch); got < 4 {
		t.Errorf("episode observations = %d, want at least 4", got)
	}
	if got := counter(telemetry.MetricStatusReads, map[string]string{"op": telemetry.ReadGet}); got < 1 {
		t.Errorf("status reads = %v, want at least 1", got)
	}
	if m := s.metric(telemetry.MetricWatchSubscribers, nil); m == nil || m.GetGauge().GetValue() != 0 {
		t.Errorf("watch subscribers after the wait = %v, want 0", m)
	}
	// The backlog, asked of JetStream at the scrape: nothing is left.
	for _, r := range telemetry.Consumers {
		m := s.metric(telemetry.MetricConsumerPending, map[string]string{"stream": r.Stream, "consumer": r.Consumer})
		if m == nil {
			t.Errorf("no pending gauge for %s/%s", r.Stream, r.Consumer)
		} else if v := m.GetGauge().GetValue(); v != 0 {
			t.Errorf("pending on %s/%s = %v, want 0", r.Stream, r.Consumer, v)
		}
	}

	// The admin server answers /metrics in the text format.
	resp, err := http.Get(s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	for _, want := range []string{
		`jetflow_orchestrations_completed_total{orchestrator="E1_HelloSequence"} 1`,
		`jetflow_orchestrations_started_total{orchestrator="E1_HelloSequence"} 1`,
		`jetflow_activity_duration_seconds_count{activity="E1_SayHello"} 3`,
		`jetflow_episode_duration_seconds_bucket{orchestrator="E1_HelloSequence",le="+Inf"}`,
		`jetflow_consumer_pending_messages{consumer="jetflow-orchestrators",stream="JETFLOW_ORCH"} 0`,
		`jetflow_stream_messages{stream="JETFLOW_ACT"} 0`,
		`jetflow_history_append_conflicts_total 0`,
		`jetflow_watch_subscribers 0`,
		"go_goroutines ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// spanSet indexes the recorded spans.
type spanSet struct {
	all  tracetest.SpanStubs
	byID map[trace.SpanID]tracetest.SpanStub
}

func (s *stack) recorded() spanSet {
	all := s.spans.GetSpans()
	set := spanSet{all: all, byID: map[trace.SpanID]tracetest.SpanStub{}}
	for _, sp := range all {
		set.byID[sp.SpanContext.SpanID()] = sp
	}
	return set
}

// named returns the spans called name in trace tid.
func (set spanSet) named(name string, tid trace.TraceID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, sp := range set.all {
		if sp.Name == name && sp.SpanContext.TraceID() == tid {
			out = append(out, sp)
		}
	}
	return out
}

// apiSpans returns the server spans of POST requests to route (a pattern
// below api.Prefix).
func (set spanSet) apiSpans(route string) []tracetest.SpanStub {
	return set.apiSpansMethod("POST", route)
}

// descends reports whether sp has anc among its recorded ancestors.
func (set spanSet) descends(sp tracetest.SpanStub, anc trace.SpanID) bool {
	for i := 0; i < 100; i++ {
		p := sp.Parent.SpanID()
		if !sp.Parent.IsValid() {
			return false
		}
		if p == anc {
			return true
		}
		var ok bool
		if sp, ok = set.byID[p]; !ok {
			return false
		}
	}
	return false
}

func attr(sp tracetest.SpanStub, key string) string {
	for _, a := range sp.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

func TestHelloSequenceTrace(t *testing.T) {
	s := startStack(t, worker.Options{})
	id := s.start("E1_HelloSequence", "null")
	s.waitCompleted(id)
	s.stop() // every span has ended once the worker has stopped

	set := s.recorded()
	apis := set.apiSpans("orchestrators/{name}")
	if len(apis) != 1 {
		t.Fatalf("%d API spans for the start, want 1; spans: %v", len(apis), names(set.all))
	}
	root := apis[0]
	tid := root.SpanContext.TraceID()
	if got := attr(root, "http.response.status_code"); got != "202" {
		t.Errorf("API span status code = %q", got)
	}

	episodes := set.named("episode E1_HelloSequence", tid)
	activities := set.named("activity E1_SayHello", tid)
	if len(episodes) < 4 {
		t.Errorf("%d episode spans in the start's trace, want at least 4; spans: %v", len(episodes), names(set.all))
	}
	if len(activities) != 3 {
		t.Errorf("%d activity spans in the start's trace, want 3; spans: %v", len(activities), names(set.all))
	}
	// Nothing of the instance escaped into another trace.
	for _, sp := range set.all {
		if (strings.HasPrefix(sp.Name, "episode ") || strings.HasPrefix(sp.Name, "activity ")) && sp.SpanContext.TraceID() != tid {
			t.Errorf("span %q is in trace %s, not the start's %s", sp.Name, sp.SpanContext.TraceID(), tid)
		}
	}
	// The start: API request → client command → dispatcher command → first episode.
	client := set.named("command start", tid)
	if len(client) != 2 {
		t.Fatalf("%d command spans, want the client's and the dispatcher's: %v", len(client), names(set.all))
	}
	episodeIDs := map[trace.SpanID]bool{}
	for _, ep := range episodes {
		episodeIDs[ep.SpanContext.SpanID()] = true
		if !set.descends(ep, root.SpanContext.SpanID()) {
			t.Errorf("episode span %s (episode %s) does not descend from the API span", ep.SpanContext.SpanID(), attr(ep, string(telemetry.AttrEpisode)))
		}
		if got := attr(ep, string(telemetry.AttrInstanceID)); got != id {
			t.Errorf("episode span instance = %q, want %q", got, id)
		}
	}
	seen := map[string]bool{}
	for _, a := range activities {
		if !episodeIDs[a.Parent.SpanID()] {
			t.Errorf("activity span %s has parent %s, which is not an episode span", a.SpanContext.SpanID(), a.Parent.SpanID())
		}
		if got := attr(a, string(telemetry.AttrOrchestrator)); got != "E1_HelloSequence" {
			t.Errorf("activity span orchestrator = %q", got)
		}
		seen[attr(a, string(telemetry.AttrTaskID))] = true
	}
	if len(seen) != 3 {
		t.Errorf("activity spans cover tasks %v, want three", seen)
	}
	// Each episode after the first continues the activity whose result it applies.
	activityIDs := map[trace.SpanID]bool{}
	for _, a := range activities {
		activityIDs[a.SpanContext.SpanID()] = true
	}
	fromActivity := 0
	for _, ep := range episodes {
		if activityIDs[ep.Parent.SpanID()] {
			fromActivity++
		}
	}
	if fromActivity < 3 {
		t.Errorf("%d episode spans are children of activity spans, want 3", fromActivity)
	}
}

// TestTraceAcrossTimerAndEvent follows a durable timer (through the delay
// stream and the dispatcher) on a worker that keeps nothing in memory, and
// an event raised by another request, which joins the run's trace.
func TestTraceAcrossTimerAndEvent(t *testing.T) {
	s := startStack(t, worker.Options{CacheSize: -1})
	timed := s.start("SetStatusTest", "0.05")
	s.waitCompleted(timed)
	s.stop()

	set := s.recorded()
	root := set.apiSpans("orchestrators/{name}")
	if len(root) != 1 {
		t.Fatalf("%d API spans, want 1: %v", len(root), names(set.all))
	}
	tid := root[0].SpanContext.TraceID()
	episodes := set.named("episode SetStatusTest", tid)
	if len(episodes) < 3 {
		t.Fatalf("%d episode spans in the start's trace, want at least 3 (start, timer, result): %v", len(episodes), names(set.all))
	}
	for _, ep := range episodes {
		if !set.descends(ep, root[0].SpanContext.SpanID()) {
			t.Errorf("episode %s does not descend from the API span", attr(ep, string(telemetry.AttrEpisode)))
		}
	}
	// The timer's episode is the child of the episode that created the timer:
	// the trace context rode the delay stream and the dispatcher.
	byEpisode := map[string]tracetest.SpanStub{}
	for _, ep := range episodes {
		byEpisode[attr(ep, string(telemetry.AttrEpisode))] = ep
	}
	first, second := byEpisode["1"], byEpisode["2"]
	if !first.SpanContext.IsValid() || !second.SpanContext.IsValid() {
		t.Fatalf("episodes 1 and 2 not both traced: %v", byEpisode)
	}
	if second.Parent.SpanID() != first.SpanContext.SpanID() {
		t.Errorf("episode 2 (the timer) has parent %s, want episode 1's span %s", second.Parent.SpanID(), first.SpanContext.SpanID())
	}
	if len(set.named("replay SetStatusTest", tid)) == 0 {
		t.Errorf("no replay spans on a worker without a cache: %v", names(set.all))
	}
	if m := s.metric(telemetry.MetricReplayDuration, map[string]string{"orchestrator": "SetStatusTest"}); m == nil || m.GetHistogram().GetSampleCount() == 0 {
		t.Errorf("no replay observations on a worker without a cache")
	}
}

func TestRaisedEventJoinsRunTrace(t *testing.T) {
	s := startStack(t, worker.Options{})
	id := s.start("CityRecommender", "1")
	// Wait until the first episode is committed: the worker holds the run.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.client.Status(context.Background(), id)
		if err == nil && len(st.CustomStatus) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first episode did not commit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, b := s.post("instances/"+id+"/raiseEvent/CitySelected", `"Tokyo"`); code != http.StatusAccepted {
		t.Fatalf("raise: %d %s", code, b)
	}
	s.waitCompleted(id)
	s.stop()

	set := s.recorded()
	starts := set.apiSpans("orchestrators/{name}")
	raises := set.apiSpans("instances/{id}/raiseEvent/{event}")
	if len(starts) != 1 || len(raises) != 1 {
		t.Fatalf("%d start and %d raise API spans, want 1 each: %v", len(starts), len(raises), names(set.all))
	}
	run, raise := starts[0].SpanContext.TraceID(), raises[0].SpanContext.TraceID()
	if run == raise {
		t.Fatal("the two requests share a trace")
	}
	episodes := set.named("episode CityRecommender", run)
	if len(episodes) != 2 {
		t.Fatalf("%d episode spans in the run's trace, want 2: %v", len(episodes), names(set.all))
	}
	if n := len(set.named("episode CityRecommender", raise)); n != 0 {
		t.Errorf("%d episode spans in the raise's trace, want 0", n)
	}
	// The episode that applied the event links to the raise's trace.
	linked := 0
	for _, ep := range episodes {
		for _, l := range ep.Links {
			if l.SpanContext.TraceID() == raise {
				linked++
			}
		}
	}
	if linked != 1 {
		t.Errorf("%d links from the run's episodes to the raise's trace, want 1", linked)
	}
	// The raise's own trace holds its command spans.
	if n := len(set.named("command raise", raise)); n != 2 {
		t.Errorf("%d raise command spans in the raise's trace, want 2 (client and dispatcher): %v", n, names(set.all))
	}
}

// TestDevserverServesMetrics checks /metrics on the devserver's HTTP port.
func TestDevserverServesMetrics(t *testing.T) {
	reg := worker.NewRegistry()
	if err := samples.Register(reg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // removed after the devserver has stopped
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- devserver.Run(ctx, devserver.Config{
			NATS:     devserver.NATSConfig{Dir: dir, Addr: "127.0.0.1:0"},
			HTTPAddr: "127.0.0.1:0",
			Registry: reg,
			Logger:   zaptest.NewLogger(t),
			Ready:    func(natsURL, httpURL string) { ready <- httpURL },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devserver: %v", err)
		}
	})
	var base string
	select {
	case base = <-ready:
	case err := <-done:
		t.Fatalf("devserver: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("devserver not ready")
	}
	get := func() string {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	// Start one instance, once the worker has registered the samples.
	var id string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		resp, err := http.Post(base+api.Prefix+"orchestrators/E1_HelloSequence", "application/json", strings.NewReader("null"))
		if err != nil {
			t.Fatal(err)
		}
		var cs api.CheckStatus
		if resp.StatusCode == http.StatusAccepted {
			_ = json.NewDecoder(resp.Body).Decode(&cs)
			id = cs.ID
		}
		resp.Body.Close()
		if id == "" {
			if time.Now().After(deadline) {
				t.Fatal("the devserver did not accept a start")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	want := `jetflow_orchestrations_completed_total{orchestrator="E1_HelloSequence"} 1`
	deadline = time.Now().Add(60 * time.Second)
	for body := get(); !strings.Contains(body, want); body = get() {
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed %q:\n%s", want, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := get()
	for _, name := range []string{telemetry.MetricConsumerPending, telemetry.MetricActivityDuration, telemetry.MetricEpisodeDuration, "process_cpu_seconds_total"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, 0, len(spans))
	for _, sp := range spans {
		out = append(out, fmt.Sprintf("%s[%s<-%s]", sp.Name, sp.SpanContext.SpanID(), sp.Parent.SpanID()))
	}
	return out
}

// TestWatchStreamsWhenTraced reads the watch route's event stream, which
// must still be flushed event by event through the traced response.
func TestWatchStreamsWhenTraced(t *testing.T) {
	s := startStack(t, worker.Options{})
	id := s.start("SetStatusTest", "0.2")
	resp, err := http.Get(s.base + "instances/" + id + "/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("watch: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(resp.Body) // the stream ends after the terminal status
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"runtimeStatus":"Completed"`) {
		t.Fatalf("the stream did not show completion:\n%s", b)
	}
	s.stop()
	set := s.recorded()
	if n := len(set.apiSpansMethod("GET", "instances/{id}/watch")); n != 1 {
		t.Errorf("%d watch spans, want 1", n)
	}
}

func (set spanSet) apiSpansMethod(method, route string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, sp := range set.all {
		if sp.SpanKind == trace.SpanKindServer && sp.Name == method+" "+api.Prefix+route {
			out = append(out, sp)
		}
	}
	return out
}
