package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/jetflow/jetflow/pkg/api"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
)

const helloName = "E1_HelloSequence"

// op is one closed-loop operation: it returns its latency and when it ended.
type op func(ctx context.Context, i int) (time.Duration, time.Time, error)

type errCount struct {
	n     int
	first error
}

// closedLoop runs op from conc goroutines, each starting its next
// operation when its last one ends: count operations in all if count > 0,
// else until dur has passed. It returns the latencies, the errors, and the
// time from the first start to the last end.
func (e *env) closedLoop(ctx context.Context, conc, count int, dur time.Duration, f op) ([]time.Duration, errCount, time.Duration) {
	var (
		next atomic.Int64
		rec  recorder
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if count > 0 && i >= count || count <= 0 && time.Now().After(deadline) {
					return
				}
				d, end, err := f(ctx, i)
				if err != nil {
					rec.fail(err)
					continue
				}
				rec.ok(d, end)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if rec.hasEnd {
		elapsed = rec.last.Sub(start)
	}
	return rec.lat, errCount{rec.errs, rec.first}, elapsed
}

func (r *Result) noteErrors(ec errCount) {
	r.Errors += ec.n
	if ec.first != nil {
		r.note("first error: %v", ec.first)
	}
}

// counters are what a measured stretch costs: the process's CPU time and
// the embedded server's message counts.
type counters struct {
	cpu     time.Duration
	in, out int64
}

func (e *env) counters() counters {
	c := counters{cpu: cpuTime()}
	if e.ns != nil {
		if v, err := e.ns.Varz(nil); err == nil {
			c.in, c.out = v.InMsgs, v.OutMsgs
		}
	}
	return c
}

// costMetrics records what the stretch since c0 cost per item measured:
// the process's CPU time (with the embedded server, the whole system:
// server, engine and bench), the cores that kept busy, and the messages the
// embedded server received and sent.
func (e *env) costMetrics(r *Result, c0 counters) {
	c1 := e.counters()
	e.cpuMetric(r, c1.cpu-c0.cpu)
	if e.ns != nil && r.Count > 0 {
		r.metric("nats_msgs_in_per_item", float64(c1.in-c0.in)/float64(r.Count))
		r.metric("nats_msgs_out_per_item", float64(c1.out-c0.out)/float64(r.Count))
	}
}

func (e *env) cpuMetric(r *Result, cpu time.Duration) {
	if cpu > 0 && r.Count > 0 {
		r.metric("cpu_ms_per_item", ms(cpu)/float64(r.Count))
	}
	if cpu > 0 && r.DurationS > 0 {
		r.metric("cpu_cores", cpu.Seconds()/r.DurationS)
	}
}

func (e *env) helloOp(tag string) op {
	return func(ctx context.Context, i int) (time.Duration, time.Time, error) {
		id := e.id("hello", tag, i)
		t0 := time.Now()
		s, err := e.runToCompletion(ctx, helloName, id, nil)
		if err != nil {
			return 0, time.Time{}, err
		}
		if !bytes.Contains(s.st.Output, []byte("Hello London!")) {
			return 0, time.Time{}, fmt.Errorf("%s: unexpected output %s", id, s.st.Output)
		}
		return s.at.Sub(t0), s.at, nil
	}
}

// hello: E1_HelloSequence in a closed loop at each concurrency.
func (e *env) hello(ctx context.Context) []Result {
	var out []Result
	for _, c := range e.cfg.HelloConcurrency {
		c0 := e.counters()
		lat, ec, elapsed := e.closedLoop(ctx, c, e.cfg.HelloCount, e.cfg.HelloDuration, e.helloOp(fmt.Sprintf("c%d", c)))
		r := Result{Case: fmt.Sprintf("c=%d", c), Concurrency: c, Count: len(lat),
			LatencyOf: "start to completion (client.Start until the status watch sees Completed)"}
		r.setLatencies(lat)
		r.setRate(elapsed, "orch/s")
		r.noteErrors(ec)
		e.costMetrics(&r, c0)
		out = append(out, r)
	}
	return out
}

// openLoop starts E1_HelloSequence at fixed rates, each higher than the
// last, until p99 passes the threshold. Latency runs from each start's
// scheduled time, so that a slow start counts against the engine
// (no coordinated omission).
func (e *env) openLoop(ctx context.Context) []Result {
	var out []Result
	threshold := e.cfg.OpenLoopThreshold
	within, knee := 0, 0
	for _, rate := range e.cfg.OpenLoopRates {
		if rate <= 0 || ctx.Err() != nil {
			continue
		}
		n := max(1, int(float64(rate)*e.cfg.OpenLoopStep.Seconds()))
		var (
			rec recorder
			wg  sync.WaitGroup
		)
		interval := float64(time.Second) / float64(rate)
		timer := time.NewTimer(time.Hour)
		c0 := e.counters()
		start := time.Now()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			due := start.Add(time.Duration(float64(i) * interval))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := e.runToCompletion(ctx, helloName, e.id("open", rate, i), nil)
				if err != nil {
					rec.fail(err)
					return
				}
				rec.ok(s.at.Sub(due), s.at)
			}()
		}
		launched := time.Since(start)
		timer.Stop()
		wg.Wait()
		r := Result{Case: fmt.Sprintf("%d/s offered", rate), Count: len(rec.lat),
			LatencyOf: "scheduled start to completion"}
		r.setLatencies(rec.lat)
		r.setRate(rec.last.Sub(start), "orch/s")
		r.noteErrors(errCount{rec.errs, rec.first})
		r.metric("offered_per_s", float64(rate))
		r.metric("starts_issued_per_s", float64(n)/launched.Seconds())
		e.costMetrics(&r, c0)
		out = append(out, r)
		p99 := time.Duration(r.P99Ms * float64(time.Millisecond))
		if p99 > threshold || rec.errs > n/100 {
			knee = rate
			break
		}
		within = rate
	}
	sum := Result{Case: fmt.Sprintf("rate where p99 > %s", threshold)}
	sum.metric("threshold_ms", ms(threshold))
	sum.metric("last_rate_within_per_s", float64(within))
	if knee > 0 {
		sum.metric("rate_p99_over_per_s", float64(knee))
		sum.note("p99 passed %s at %d/s offered; %d/s was the last rate within", threshold, knee, within)
	} else {
		sum.note("p99 stayed within %s up to %d/s offered: raise -openloop-rates", threshold, within)
	}
	return append(out, sum)
}

// fanOut: one orchestration calls FanOut activities at once and awaits all.
func (e *env) fanOut(ctx context.Context) []Result {
	n := e.cfg.FanOut
	r := Result{Case: fmt.Sprintf("%d activities", n), Concurrency: n, LatencyOf: "wall time of one fan-out orchestration, start to completion"}
	if !e.hosts(ctx) {
		r.note("skipped: the external workers do not run %s", FanOutName)
		return []Result{r}
	}
	input, _ := json.Marshal(n)
	var walls []time.Duration
	var total time.Duration
	for run := 0; run < e.cfg.FanOutRuns && ctx.Err() == nil; run++ {
		t0 := time.Now()
		s, err := e.runToCompletion(ctx, FanOutName, e.id("fanout", run), input)
		if err == nil {
			if got := strings.TrimSpace(string(s.st.Output)); got != fmt.Sprint(n) {
				err = fmt.Errorf("fan-out output %s, want %d", got, n)
			}
		}
		if err != nil {
			r.noteErrors(errCount{1, err})
			break
		}
		w := s.at.Sub(t0)
		walls = append(walls, w)
		total += w
	}
	r.Count = n * len(walls)
	r.setLatencies(walls)
	r.setRate(total, "activities/s")
	if len(walls) > 0 {
		r.metric("wall_ms_first", ms(walls[0]))
		r.metric("runs", float64(len(walls)))
	}
	return []Result{r}
}

// long: a long sequence's per-step latency early against late, and cold
// replay of a long history.
func (e *env) long(ctx context.Context) []Result {
	if !e.hosts(ctx) {
		r := Result{Case: "sequence"}
		r.note("skipped: the external workers do not run %s", SequenceName)
		return []Result{r}
	}
	return []Result{e.longSequence(ctx), e.coldReplay(ctx)}
}

func (e *env) longSequence(ctx context.Context) Result {
	steps := e.cfg.LongSteps
	r := Result{Case: fmt.Sprintf("%d-step sequence", steps), Concurrency: 1,
		LatencyOf: "one step: ctx.CurrentTime of an episode to that of the next (activity round trip and one episode)"}
	input, _ := json.Marshal(SequenceInput{Steps: steps, Record: true})
	t0 := time.Now()
	s, err := e.runToCompletion(ctx, SequenceName, e.id("long"), input)
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	var times []int64
	if err := json.Unmarshal(s.st.Output, &times); err != nil || len(times) != steps+1 {
		r.noteErrors(errCount{1, fmt.Errorf("output has %d times, want %d (%v)", len(times), steps+1, err)})
		return r
	}
	lat := make([]time.Duration, steps) // lat[i-1] is step i
	for i := 1; i <= steps; i++ {
		lat[i-1] = time.Duration(times[i] - times[i-1])
	}
	r.Count = steps
	r.setLatencies(lat)
	r.setRate(s.at.Sub(t0), "steps/s")
	window := func(from, to int) (p50, mean time.Duration) { // steps from..to, 1-based
		sm := summarize(lat[from-1 : to])
		return sm.p50, sm.mean
	}
	w := min(10, steps)
	ep50, emean := window(1, w)
	lp50, lmean := window(steps-w+1, steps)
	r.metric(fmt.Sprintf("steps_1_%d_p50_ms", w), ms(ep50))
	r.metric(fmt.Sprintf("steps_%d_%d_p50_ms", steps-w+1, steps), ms(lp50))
	r.metric(fmt.Sprintf("steps_1_%d_mean_ms", w), ms(emean))
	r.metric(fmt.Sprintf("steps_%d_%d_mean_ms", steps-w+1, steps), ms(lmean))
	if ep50 > 0 {
		r.metric("late_over_early_p50", float64(lp50)/float64(ep50))
	}
	if emean > 0 {
		r.metric("late_over_early_mean", float64(lmean)/float64(emean))
	}
	if steps >= 200 {
		_, m0 := window(1, 100)
		_, m1 := window(steps-99, steps)
		r.metric("first100_mean_ms", ms(m0))
		r.metric("last100_mean_ms", ms(m1))
	}
	return r
}

func (e *env) coldReplay(ctx context.Context) Result {
	steps := max(1, (e.cfg.ColdEvents+3)/4) // four events per step
	r := Result{Case: fmt.Sprintf("cold replay of a %d-step history", steps), Concurrency: 1,
		LatencyOf: "jetstore.LoadHistory + replay.Instance.Replay on a fresh connection and instance"}
	input, _ := json.Marshal(SequenceInput{Steps: steps, Wait: true})
	waiting := func(st *messages.Status) bool {
		return st.RuntimeStatus.Terminal() || st.RuntimeStatus == messages.StatusRunning && st.Episode >= uint64(steps+1)
	}
	// Two instances: one stays hot in its worker (the baseline), the
	// other is read by workers that never saw it.
	ids := []string{e.id("cold", "warm"), e.id("cold", "cold")}
	built := make([]seen, 2)
	errs := make([]error, 2)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			built[i], errs[i] = e.startAndWait(ctx, SequenceName, id, input, waiting)
			if errs[i] == nil && built[i].st.RuntimeStatus != messages.StatusRunning {
				errs[i] = fmt.Errorf("%s ended %s while building its history", id, built[i].st.RuntimeStatus)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			r.noteErrors(errCount{1, err})
			return r
		}
	}
	r.metric("build_s", time.Since(t0).Seconds())

	// Direct: load and replay on a connection and an instance of their own.
	nc, js, err := e.connect("jetflow-bench-cold")
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	defer nc.Close()
	store, err := jetstore.Open(ctx, js)
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	cold, exec := ids[1], built[1].st.ExecutionID
	var loads, replays, totals []time.Duration
	var events int
	var episodes uint64
	for k := 0; k < 5; k++ {
		t := time.Now()
		h, eps, err := store.LoadHistory(ctx, cold, exec)
		load := time.Since(t)
		if err != nil {
			r.noteErrors(errCount{1, err})
			return r
		}
		t = time.Now()
		in := replay.New(Sequence, replay.Options{})
		err = in.Replay(h)
		rep := time.Since(t)
		in.Close()
		if err != nil {
			r.noteErrors(errCount{1, fmt.Errorf("replay: %w", err)})
			return r
		}
		events, episodes = len(h), eps
		loads, replays, totals = append(loads, load), append(replays, rep), append(totals, load+rep)
	}
	r.Count = len(totals)
	r.setLatencies(totals)
	var sum time.Duration
	for _, d := range totals {
		sum += d
	}
	r.setRate(sum, "replays/s")
	ls, rs := summarize(loads), summarize(replays)
	r.metric("events", float64(events))
	r.metric("episodes", float64(episodes))
	r.metric("load_ms_first", ms(loads[0]))
	r.metric("load_ms_p50", ms(ls.p50))
	r.metric("replay_ms_first", ms(replays[0]))
	r.metric("replay_ms_p50", ms(rs.p50))
	r.metric("replay_us_per_event_p50", float64(rs.p50)/float64(time.Microsecond)/float64(max(1, events)))
	r.Case = fmt.Sprintf("cold replay, %d events", events)

	// End to end: raise the event on the hot instance, restart the workers
	// (empty caches), raise it on the other.
	if e.cfg.External {
		r.note("end-to-end cold step not measured: the workers are external")
		return r
	}
	raise := func(id string) (time.Duration, error) {
		wt := e.hub.expect(id, terminal)
		t := time.Now()
		if err := e.client.RaiseEvent(ctx, id, GoEvent, []byte("null")); err != nil {
			e.hub.cancel(wt)
			return 0, err
		}
		s, err := e.await(ctx, wt)
		if err == nil && s.st.RuntimeStatus != messages.StatusCompleted {
			err = fmt.Errorf("%s ended %s", id, s.st.RuntimeStatus)
		}
		return s.at.Sub(t), err
	}
	warm, err := raise(ids[0])
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	e.stopWorkers()
	if err := e.startWorkers(ctx, e.cfg.Workers); err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	// One orchestration through the new workers, so that they are pulling.
	if _, _, err := e.helloOp("coldprobe")(ctx, 0); err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	coldE2E, err := raise(ids[1])
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	r.metric("e2e_warm_ms", ms(warm))
	r.metric("e2e_cold_ms", ms(coldE2E))
	r.metric("e2e_cold_minus_warm_ms", ms(coldE2E-warm))
	if e.cfg.Workers > 1 {
		r.note("with %d workers the warm raise lands on the worker holding the instance about 1 in %d times", e.cfg.Workers, e.cfg.Workers)
	}
	return r
}

// statusReads: GET instances/{id} over HTTP from many clients.
func (e *env) statusReads(ctx context.Context) []Result {
	n := e.cfg.StatusClients
	r := Result{Case: fmt.Sprintf("%d clients", n), Concurrency: n, LatencyOf: "GET instances/{id}, request to body read"}
	k := max(1, e.cfg.StatusInstances)
	ids := make([]string, k)
	for i := range ids {
		ids[i] = e.id("status", i)
	}
	_, ec, _ := e.closedLoop(ctx, min(10, k), k, 0, func(ctx context.Context, i int) (time.Duration, time.Time, error) {
		s, err := e.runToCompletion(ctx, helloName, ids[i], nil)
		return 0, s.at, err
	})
	if ec.n > 0 {
		r.noteErrors(ec)
		return []Result{r}
	}
	base, err := url.Parse(strings.TrimRight(e.apiURL, "/") + api.Prefix + "instances/")
	if err != nil {
		r.noteErrors(errCount{1, err})
		return []Result{r}
	}
	// The load comes from fasthttp's client, which costs a fraction of
	// net/http's: client and server share the two cores, and a heavier
	// client would measure itself.
	hc := &fasthttp.HostClient{Addr: base.Host, IsTLS: base.Scheme == "https", MaxConns: n,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	out := []Result{e.readStatuses(ctx, hc, base.String(), ids, 0, r)}
	for _, rate := range e.cfg.StatusRates {
		if rate > 0 && ctx.Err() == nil {
			ro := r
			ro.Case = fmt.Sprintf("%d clients, %d/s offered", n, rate)
			out = append(out, e.readStatuses(ctx, hc, base.String(), ids, rate, ro))
		}
	}
	return out
}

// readStatuses has StatusClients clients GET random statuses for
// StatusDuration: as fast as each can if rate is 0 (closed loop), else
// rate requests per second in all, each client on its own schedule, with
// latency counted from the time a request was due (open loop: a late
// request counts against the server).
func (e *env) readStatuses(ctx context.Context, hc *fasthttp.HostClient, base string, ids []string, rate int, r Result) Result {
	n := e.cfg.StatusClients
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(n) / float64(rate))
		r.LatencyOf += ", from the time it was due"
		r.metric("offered_per_s", float64(rate))
	}
	var rec recorder
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(e.cfg.StatusDuration)
	for c := 0; c < n; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			due := start.Add(time.Duration(c) * interval / time.Duration(n)) // spread the clients out
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t := time.Now()
				if rate > 0 {
					if wait := due.Sub(t); wait > 0 {
						time.Sleep(wait)
					}
					t = due
					due = due.Add(interval)
				}
				req.SetRequestURI(base + ids[rand.IntN(len(ids))])
				if err := getStatus(hc, req, resp); err != nil {
					rec.fail(err)
					continue
				}
				end := time.Now()
				rec.ok(end.Sub(t), end)
			}
		}()
	}
	wg.Wait()
	r.Count = len(rec.lat)
	r.setLatencies(rec.lat)
	r.setRate(time.Since(start), "req/s")
	r.noteErrors(errCount{rec.errs, rec.first})
	r.note("client (fasthttp) and server share the machine")
	if e.cfg.APIURL == "" {
		r.metric("api_status_cache", float64(e.cfg.StatusCache))
	}
	return r
}

// getStatus sends req and checks that the answer is a Completed status.
func getStatus(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) error {
	if err := hc.Do(req, resp); err != nil {
		return fmt.Errorf("GET %s: %w", req.URI(), err)
	}
	if resp.StatusCode() != http.StatusOK {
		return fmt.Errorf("GET %s: %d", req.URI(), resp.StatusCode())
	}
	if !bytes.Contains(resp.Body(), []byte(`"Completed"`)) {
		return fmt.Errorf("GET %s: body %.100s", req.URI(), resp.Body())
	}
	return nil
}

// watch: the time from an episode's commit (its history entry's stored
// time) to the status watch seeing the custom status that episode set.
func (e *env) watch(ctx context.Context) []Result {
	var out []Result
	if !e.hosts(ctx) {
		r := Result{}
		r.note("skipped: the external workers do not run %s", StatusName)
		return []Result{r}
	}
	hkv, err := e.js.KeyValue(ctx, messages.HistoryBucket)
	if err != nil {
		r := Result{}
		r.noteErrors(errCount{1, err})
		return []Result{r}
	}
	updates := max(1, e.cfg.WatchUpdates)
	input, _ := json.Marshal(updates)
	for _, c := range e.cfg.WatchConcurrency {
		r := Result{Case: fmt.Sprintf("c=%d", c), Concurrency: c,
			LatencyOf: "episode committed (history entry stored) to the status watch seeing its custom status"}
		prefix := messages.Token(e.id("watch", fmt.Sprintf("c%d", c))) + "-"
		type sample struct {
			key, exec string
			episode   uint64
			at        time.Time
		}
		var (
			mu      sync.Mutex
			samples []sample
			last    = map[string][]byte{}
		)
		e.hub.setObserver(func(key string, st *messages.Status, at time.Time) {
			if !strings.HasPrefix(key, prefix) || st.Episode == 0 || st.RuntimeStatus.Terminal() {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, ok := last[key]; ok && bytes.Equal(prev, st.CustomStatus) {
				return
			}
			last[key] = bytes.Clone(st.CustomStatus)
			samples = append(samples, sample{key: key, exec: messages.Token(st.ExecutionID), episode: st.Episode, at: at})
		})
		_, ec, elapsed := e.closedLoop(ctx, c, c, 0, func(ctx context.Context, i int) (time.Duration, time.Time, error) {
			s, err := e.runToCompletion(ctx, StatusName, fmt.Sprintf("%s%d", prefix, i), input)
			return 0, s.at, err
		})
		e.hub.setObserver(nil)
		r.noteErrors(ec)
		mu.Lock()
		got := samples
		mu.Unlock()
		var lat []time.Duration
		negative := 0
		for _, s := range got {
			ent, err := hkv.Get(ctx, fmt.Sprintf("%s.%s.%d", s.key, s.exec, s.episode))
			if err != nil {
				r.noteErrors(errCount{1, fmt.Errorf("history entry of %s episode %d: %w", s.key, s.episode, err)})
				continue
			}
			d := s.at.Sub(ent.Created())
			if d < 0 {
				negative++
				d = 0
			}
			lat = append(lat, d)
		}
		if negative > 0 {
			r.note("%d samples seen before their commit time: clocks differ between server and bench", negative)
		}
		r.Count = len(lat)
		r.setLatencies(lat)
		r.setRate(elapsed, "updates/s")
		r.metric("expected_samples", float64(c*updates))
		out = append(out, r)
	}
	return out
}

// memory: a worker's memory with many orchestrations waiting for an
// event. The worker runs in a child process (this binary again), so that
// its memory is its own and not the embedded server's or the bench's.
func (e *env) memory(ctx context.Context) []Result {
	n := e.cfg.MemoryInstances
	const conc = 100
	r := Result{Case: fmt.Sprintf("%d CityRecommender waiting for CitySelected", n), Concurrency: conc, Workers: 1,
		LatencyOf: "start until the status shows it waiting (Running, first episode committed)"}
	if e.cfg.External {
		r.note("skipped: the workers are external, so their memory cannot be read")
		return []Result{r}
	}
	// The child is the only worker meanwhile; Run starts in-process
	// workers again if another workload follows.
	e.stopWorkers()
	cache := 0
	if n > 9000 {
		cache = n + 1000
	}
	ch, err := startChild(ctx, e.url, childOptions{CacheSize: cache, Concurrency: e.cfg.WorkerConcurrency, ActivityConcurrency: e.cfg.ActivityConcurrency, IdleTimeout: e.cfg.IdleTimeout})
	if err != nil {
		r.noteErrors(errCount{1, fmt.Errorf("child worker: %w", err)})
		return []Result{r}
	}
	defer ch.stop()
	// One orchestration first, so that the worker has connected, bound its
	// consumers and replayed something: the baseline is a worker at work.
	if _, _, err := e.helloOp("memprobe")(ctx, 0); err != nil {
		r.noteErrors(errCount{1, err})
		return []Result{r}
	}
	before, err := ch.stats()
	if err != nil {
		r.noteErrors(errCount{1, err})
		return []Result{r}
	}
	waiting := func(st *messages.Status) bool {
		return st.RuntimeStatus.Terminal() || st.RuntimeStatus == messages.StatusRunning && st.Episode >= 1
	}
	id := func(i int) string { return e.id("mem", i) }
	lat, ec, elapsed := e.closedLoop(ctx, conc, n, 0, func(ctx context.Context, i int) (time.Duration, time.Time, error) {
		t := time.Now()
		s, err := e.startAndWait(ctx, "CityRecommender", id(i), []byte("2"), waiting)
		if err == nil && s.st.RuntimeStatus != messages.StatusRunning {
			err = fmt.Errorf("%s ended %s", id(i), s.st.RuntimeStatus)
		}
		return s.at.Sub(t), s.at, err
	})
	r.noteErrors(ec)
	after, err := ch.stats()
	if err != nil {
		r.noteErrors(errCount{1, err})
		return []Result{r}
	}
	r.Count = len(lat)
	r.setLatencies(lat)
	r.setRate(elapsed, "starts/s")
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(max(1, r.Count)) }
	r.metric("rss_before_mb", float64(before.RSS)/(1<<20))
	r.metric("rss_after_mb", float64(after.RSS)/(1<<20))
	r.metric("rss_bytes_per_orch", per(after.RSS, before.RSS))
	r.metric("heap_inuse_bytes_per_orch", per(after.HeapInuse, before.HeapInuse))
	r.metric("stack_inuse_bytes_per_orch", per(after.StackInuse, before.StackInuse))
	r.metric("goroutines_per_orch", per(uint64(after.Goroutines), uint64(before.Goroutines)))
	if cache > 0 {
		r.metric("worker_cache_size", float64(cache))
	}
	r.note("worker in a child process; RSS is its VmRSS from /proc after runtime.GC and debug.FreeOSMemory, heap and stack from runtime.MemStats")
	// Once the instances have been idle for the worker's idle timeout it
	// closes them: measure again.
	idle := e.cfg.IdleTimeout
	if idle == 0 {
		idle = 10 * time.Second
	}
	if idle > 0 {
		r.metric("idle_timeout_s", idle.Seconds())
		select {
		case <-ctx.Done():
		case <-time.After(idle + idle/4 + time.Second):
		}
		if parked, err := ch.stats(); err != nil {
			r.noteErrors(errCount{1, err})
		} else {
			r.metric("parked_rss_bytes_per_orch", per(parked.RSS, before.RSS))
			r.metric("parked_heap_inuse_bytes_per_orch", per(parked.HeapInuse, before.HeapInuse))
			r.metric("parked_goroutines_per_orch", per(uint64(parked.Goroutines), uint64(before.Goroutines)))
			r.note("parked_*: measured again once the instances had been idle for the idle timeout and the worker had closed them")
		}
	}

	if e.cfg.MemoryCleanup {
		_, ec, _ := e.closedLoop(ctx, conc, r.Count, 0, func(ctx context.Context, i int) (time.Duration, time.Time, error) {
			wt := e.hub.expect(id(i), terminal)
			if err := e.client.RaiseEvent(ctx, id(i), "CitySelected", []byte(`"London"`)); err != nil {
				e.hub.cancel(wt)
				return 0, time.Time{}, err
			}
			s, err := e.await(ctx, wt)
			return 0, s.at, err
		})
		if ec.n > 0 {
			r.note("cleanup: %d of %d did not complete, first: %v", ec.n, r.Count, ec.first)
		}
	}
	return []Result{r}
}
