package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	jfclient "github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/telemetry"
)

// expect is what a finished instance of one orchestration looks like.
type expect struct {
	name   string
	input  []byte
	output string // JSON
	custom string // JSON: the final custom status
	// counts are the exact numbers of each history event type, apart
	// from the OrchestratorStarted and OrchestratorCompleted episode
	// markers, which must pair up. A type not listed must not occur.
	counts map[messages.EventType]int
}

var helloSequence = expect{
	name:   "E1_HelloSequence",
	output: `["Hello Tokyo!","Hello Seattle!","Hello London!"]`,
	custom: `"London"`,
	counts: map[messages.EventType]int{
		messages.EventExecutionStarted:   1,
		messages.EventTaskScheduled:      3,
		messages.EventTaskCompleted:      3,
		messages.EventExecutionCompleted: 1,
	},
}

// reserveTicket times out: nobody confirms the booking.
func reserveTicket(timeoutSeconds int) expect {
	return expect{
		name:   "ReserveTicket",
		input:  []byte(fmt.Sprintf(`{"userId":"u","discountTimeout":%d}`, timeoutSeconds)),
		output: `false`,
		custom: `{"message":"The booking was not confirmed on time. Please try again."}`,
		counts: map[messages.EventType]int{
			messages.EventExecutionStarted:   1,
			messages.EventTaskScheduled:      1,
			messages.EventTaskCompleted:      1,
			messages.EventTimerCreated:       1,
			messages.EventTimerFired:         1,
			messages.EventExecutionCompleted: 1,
		},
	}
}

// startOnce sends one start. It never retries: a start that failed may
// still happen (its reply was lost, or the request sits in the socket of a
// paused node and arrives later), and a second start that arrives once the
// instance has finished begins a new run under the same ID. ensureStarted
// settles the doubtful ones once the fault is over.
func (tp *topology) startOnce(ctx context.Context, e expect, id string) error {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := tp.client.Start(c, e.name, id, e.input)
	if errors.Is(err, jfclient.ErrConflict) {
		return nil // it exists already
	}
	return err
}

// ensureStarted makes sure every instance whose start failed exists, once
// the topology is healthy again: a record past Pending means the start
// happened; a missing one means it did not, and it is sent again, as is
// the start of an instance still Pending after a while (the dispatcher
// re-publishes a Pending start under its original message ID). It returns
// how many starts it sent, and fails t if an instance cannot be started.
func (tp *topology) ensureStarted(t *testing.T, e expect, ids []string) int {
	t.Helper()
	// Longer than the streams' 2-minute duplicate window, so that a start
	// the window swallows is told apart from one that never works.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		mu   sync.Mutex
		sent int
		bad  []string
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 16)
	)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			began := time.Now()
			var pendingSince time.Time
			resent := 0
			errs := map[string]int{}
			for {
				c, cancelReq := context.WithTimeout(ctx, 5*time.Second)
				// Any replica's record past Pending settles it; only
				// "none" or "Pending" needs the leader's word.
				st, _, err := tp.store.GetStatus(c, id)
				if err != nil || st.RuntimeStatus == messages.StatusPending {
					st, err = tp.leaderStatus(c, id)
				}
				cancelReq()
				if err != nil && !errors.Is(err, jfclient.ErrNotFound) {
					errs[err.Error()]++
				}
				if ctx.Err() != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: not started after %s and %d starts sent (read errors %v)", id, time.Since(began).Round(time.Second), resent, errs))
					mu.Unlock()
					return
				}
				resend := false
				switch {
				case err == nil && st.RuntimeStatus != messages.StatusPending:
					if d := time.Since(began); d > 20*time.Second {
						t.Logf("%s: started only after %s and %d starts sent again", id, d.Round(time.Second), resent)
					}
					return
				case err == nil:
					if pendingSince.IsZero() {
						pendingSince = time.Now()
					}
					resend = time.Since(pendingSince) > 5*time.Second
				case errors.Is(err, jfclient.ErrNotFound):
					resend = true
				}
				if resend {
					resent++
					pendingSince = time.Time{}
					if err := tp.startOnce(ctx, e, id); err != nil {
						errs["start: "+err.Error()]++
					}
					mu.Lock()
					sent++
					mu.Unlock()
				}
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		sort.Strings(bad)
		for _, id := range firstN(bad, 3) {
			tp.describe(t, strings.SplitN(id, ":", 2)[0])
		}
		t.Fatalf("%d instances could not be started:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	return sent
}

// leaderStatus reads an instance's status record from the status bucket's
// stream leader, never from a replica that may lag.
func (tp *topology) leaderStatus(ctx context.Context, id string) (*messages.Status, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + messages.StatusBucket + "." + messages.Token(id)})
	m, err := tp.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+messages.StatusBucket, req)
	if err != nil {
		return nil, err
	}
	var res struct {
		Message *struct {
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code    int    `json:"code"`
			ErrCode int    `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &res); err != nil {
		return nil, err
	}
	switch {
	case res.Error != nil && res.Error.Code == 404:
		return nil, jfclient.ErrNotFound
	case res.Error != nil:
		return nil, fmt.Errorf("status of %s: %s (%d)", id, res.Error.Desc, res.Error.ErrCode)
	case res.Message == nil || len(res.Message.Data) == 0:
		return nil, jfclient.ErrNotFound // a delete marker
	}
	return messages.DecodeStatus(res.Message.Data)
}

var errorf = fmt.Errorf

// startMany starts n instances named prefix-0000... with a few starts at a
// time, and returns their IDs and those whose start failed.
func (tp *topology) startMany(ctx context.Context, e expect, prefix string, n int) (ids, failed []string) {
	ids = make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := tp.startOnce(ctx, e, id); err != nil {
				mu.Lock()
				failed = append(failed, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ids, failed
}

// load starts instances of e at a steady rate until stopped.
type load struct {
	e      expect
	mu     sync.Mutex
	ids    []string
	failed []string
	errs   map[string]int
	stop   chan struct{}
	done   chan struct{}
	issued atomic.Int64
}

func (tp *topology) startLoad(ctx context.Context, e expect, prefix string, perSecond int) *load {
	l := &load{e: e, errs: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		var wg sync.WaitGroup
		defer wg.Wait()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%04d", prefix, i)
			l.issued.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := tp.startOnce(ctx, e, id)
				l.mu.Lock()
				defer l.mu.Unlock()
				l.ids = append(l.ids, id)
				if err != nil {
					l.failed = append(l.failed, id)
					msg := err.Error()
					if len(msg) > 60 {
						msg = msg[:60]
					}
					l.errs[msg]++
				}
			}()
		}
	}()
	return l
}

// finish stops the load, settles the starts that failed and returns every
// instance's ID. Call it once the topology is healthy again.
func (l *load) finish(t *testing.T, tp *topology) []string {
	t.Helper()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Strings(l.ids)
	if len(l.failed) > 0 {
		sent := tp.ensureStarted(t, l.e, l.failed)
		t.Logf("%d starts issued; %d failed during the fault (%v); %d starts sent again for those not yet started",
			len(l.ids), len(l.failed), l.errs, sent)
	} else {
		t.Logf("%d starts issued, none failed", len(l.ids))
	}
	return l.ids
}

// waitDone waits until every instance is terminal and returns their
// statuses, or fails t listing the instances that are not.
func (tp *topology) waitDone(t *testing.T, ids []string, d time.Duration) map[string]*messages.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(map[string]*messages.Status, len(ids))
	start := time.Now()
	var last map[string]string
	for {
		last = map[string]string{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		var todo []string
		for _, id := range ids {
			if done[id] == nil {
				todo = append(todo, id)
			}
		}
		for _, id := range todo {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				c, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				st, _, err := tp.store.GetStatus(c, id)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					last[id] = err.Error()
				case st.RuntimeStatus.Terminal():
					done[id] = st
				default:
					last[id] = st.RuntimeStatus.String()
				}
			}()
		}
		wg.Wait()
		if len(done) == len(ids) {
			t.Logf("%d instances finished %s after the wait began", len(ids), time.Since(start).Round(100*time.Millisecond))
			return done
		}
		select {
		case <-ctx.Done():
			var stuck []string
			for id, why := range last {
				stuck = append(stuck, id+": "+why)
			}
			sort.Strings(stuck)
			if len(stuck) > 20 {
				stuck = append(stuck[:20], fmt.Sprintf("... and %d more", len(stuck)-20))
			}
			for _, id := range firstN(sortedKeys(last), 3) {
				tp.describe(t, id)
			}
			tp.dumpLogs(t, 40)
			t.Fatalf("%d of %d instances not finished after %s:\n%s", len(ids)-len(done), len(ids), d, strings.Join(stuck, "\n"))
		case <-time.After(time.Second):
		}
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// describe logs an instance's status and history, and what the work
// streams hold for it, for a failure report.
func (tp *topology) describe(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, _, err := tp.store.GetStatus(ctx, id)
	if err != nil {
		t.Logf("%s: status: %v", id, err)
		return
	}
	t.Logf("%s: %s exec %s episode %d output %s custom %s failure %+v, created %s, updated %s", id, st.RuntimeStatus, st.ExecutionID, st.Episode,
		st.Output, st.CustomStatus, st.Failure, st.CreatedAt.Format("15:04:05.000"), st.LastUpdatedAt.Format("15:04:05.000"))
	h, _, err := tp.store.LoadHistory(ctx, id, st.ExecutionID)
	if err != nil {
		t.Logf("%s: history: %v", id, err)
		return
	}
	var b strings.Builder
	for _, e := range h {
		fmt.Fprintf(&b, " %s", e.Type)
		switch {
		case e.Type == messages.EventOrchestratorStarted:
			fmt.Fprintf(&b, "@%s", e.Timestamp.Format("15:04:05.000"))
		case e.Type.IsScheduling() || e.Type == messages.EventTaskCompleted || e.Type == messages.EventTaskFailed || e.Type == messages.EventTimerFired:
			fmt.Fprintf(&b, "#%d", e.TaskID)
		}
	}
	t.Logf("%s: history:%s", id, b.String())
	for _, sub := range []struct{ stream, subject string }{
		{messages.ActivityStream, messages.ActivitySubject(id)},
		{messages.OrchestratorStream, messages.OrchestratorSubject(id)},
		{messages.DelayStream, messages.DelaySubject(id)},
	} {
		s, err := tp.js.Stream(ctx, sub.stream)
		if err != nil {
			continue
		}
		if m, err := s.GetLastMsgForSubject(ctx, sub.subject); err == nil {
			t.Logf("%s: %s still holds seq %d on %s, stored %s, id %s", id, sub.stream, m.Sequence, m.Subject, m.Time.Format("15:04:05.000"), m.Header.Get("Nats-Msg-Id"))
		} else {
			t.Logf("%s: %s holds nothing on %s (%v)", id, sub.stream, sub.subject, err)
		}
	}
	for _, name := range []string{messages.DeadLetterStream, messages.AdvisoryStream} {
		if s, err := tp.js.Stream(ctx, name); err == nil {
			if info, err := s.Info(ctx); err == nil {
				t.Logf("%s: %d messages", name, info.State.Msgs)
			}
		}
	}
	for cons, stream := range jetflowConsumers {
		if c, err := tp.js.Consumer(ctx, stream, cons); err == nil {
			if ci, err := c.Info(ctx); err == nil {
				t.Logf("consumer %s: delivered %d (stream seq %d), ack floor %d, pending %d, unacked %d, redelivered %d, waiting pulls %d",
					cons, ci.Delivered.Consumer, ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
			}
		}
	}
	for _, n := range append(append([]*node{}, tp.workers...), tp.dispatchers...) {
		b, err := tp.logs(ctx, n)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, id) {
				if len(line) > 400 {
					line = line[:400]
				}
				t.Logf("%s log: %s", n.name, line)
			}
		}
	}
}

// verify checks every instance finished as e says: Completed, with e's
// output and final custom status, and a history with exactly e's events:
// no event missing or twice, every task completed once. It returns the
// number of activity tasks the histories scheduled.
func (tp *topology) verify(t *testing.T, e expect, statuses map[string]*messages.Status) (tasks int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids := make([]string, 0, len(statuses))
	for id := range statuses {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	bad := 0
	report := func(id, format string, args ...any) {
		bad++
		if bad <= 10 {
			t.Errorf("%s: "+format, append([]any{id}, args...)...)
			if bad <= 3 {
				tp.describe(t, id)
			}
		}
	}
	for _, id := range ids {
		st := statuses[id]
		if st.RuntimeStatus != messages.StatusCompleted {
			report(id, "%s, want Completed (failure %+v)", st.RuntimeStatus, st.Failure)
			continue
		}
		if !jsonEqual(st.Output, e.output) {
			report(id, "output %s, want %s", st.Output, e.output)
		}
		if !jsonEqual(st.CustomStatus, e.custom) {
			report(id, "custom status %s, want %s", st.CustomStatus, e.custom)
		}
		var h []messages.Event
		err := retry(ctx, 500*time.Millisecond, func(ctx context.Context) error {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var err error
			h, _, err = tp.store.LoadHistory(c, id, st.ExecutionID)
			return err
		})
		if err != nil {
			t.Fatalf("%s: history: %v", id, err)
		}
		counts := map[messages.EventType]int{}
		scheduled := map[int32]int{}
		completed := map[int32]int{}
		for _, ev := range h {
			counts[ev.Type]++
			switch ev.Type {
			case messages.EventTaskScheduled:
				scheduled[ev.TaskID]++
			case messages.EventTaskCompleted:
				completed[ev.TaskID]++
			}
		}
		tasks += counts[messages.EventTaskScheduled]
		for typ, n := range counts {
			if typ == messages.EventOrchestratorStarted || typ == messages.EventOrchestratorCompleted {
				continue
			}
			if n != e.counts[typ] {
				report(id, "%d %s events, want %d (counts %s)", n, typ, e.counts[typ], countsString(counts))
			}
		}
		for typ, want := range e.counts {
			if counts[typ] == 0 && want > 0 {
				report(id, "no %s event, want %d (counts %s)", typ, want, countsString(counts))
			}
		}
		if counts[messages.EventOrchestratorStarted] != counts[messages.EventOrchestratorCompleted] || counts[messages.EventOrchestratorStarted] == 0 {
			report(id, "%d OrchestratorStarted and %d OrchestratorCompleted events", counts[messages.EventOrchestratorStarted], counts[messages.EventOrchestratorCompleted])
		}
		for task, n := range scheduled {
			if n != 1 || completed[task] != 1 {
				report(id, "task %d scheduled %d times, completed %d times", task, n, completed[task])
			}
		}
		for task := range completed {
			if scheduled[task] == 0 {
				report(id, "task %d completed but never scheduled", task)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d problems in %d instances", bad, len(ids))
	} else {
		t.Logf("%d %s instances: Completed, output %s, custom status %s, histories exact", len(ids), e.name, e.output, e.custom)
	}
	return tasks
}

func countsString(c map[messages.EventType]int) string {
	var parts []string
	for typ, n := range c {
		parts = append(parts, fmt.Sprintf("%s:%d", typ, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func jsonEqual(got []byte, want string) bool {
	var a, b any
	if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return bytes.Equal(got, []byte(want))
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// workStats are counters of a work consumer and its stream.
type workStats struct {
	delivered uint64 // deliveries, redeliveries included (the consumer sequence)
	published uint64 // messages the stream ever stored (its last sequence)
	pending   int    // delivered, not yet acknowledged
}

func (tp *topology) workStats(ctx context.Context, stream, consumer string) (workStats, error) {
	var ws workStats
	err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := tp.js.Stream(c, stream)
		if err != nil {
			return err
		}
		si, err := s.Info(c)
		if err != nil {
			return err
		}
		cons, err := s.Consumer(c, consumer)
		if err != nil {
			return err
		}
		ci, err := cons.Info(c)
		if err != nil {
			return err
		}
		ws = workStats{delivered: ci.Delivered.Consumer, published: si.State.LastSeq, pending: ci.NumAckPending}
		return nil
	})
	return ws, err
}

// inFlight samples how many activity tasks are delivered and not yet
// acknowledged, to bound the re-runs a fault may cause.
type inFlight struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at      time.Time
	pending int
}

func (tp *topology) sampleInFlight(stream, consumer string) *inFlight {
	f := &inFlight{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			cons, err := tp.js.Consumer(ctx, stream, consumer)
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = cons.Info(ctx)
			}
			cancel()
			if err == nil {
				f.mu.Lock()
				f.samples = append(f.samples, sample{time.Now(), info.NumAckPending})
				f.mu.Unlock()
			}
			select {
			case <-f.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return f
}

// max returns the largest sample taken between from and to, and the
// number of samples there.
func (f *inFlight) max(from, to time.Time) (max, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.samples {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		n++
		if s.pending > max {
			max = s.pending
		}
	}
	return max, n
}

func (f *inFlight) finish() {
	close(f.stop)
	<-f.done
}

// counters snapshot the activity and orchestrator work counters, and the
// activities the workers ran by their own count.
type counters struct {
	act, orch workStats
	runs      int // sum of jetflow_activity_duration_seconds_count over the workers
}

func (tp *topology) counters(t *testing.T) counters {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var c counters
	var err error
	if c.act, err = tp.workStats(ctx, messages.ActivityStream, jetstore.ActivityConsumer); err != nil {
		t.Fatalf("activity consumer: %v", err)
	}
	if c.orch, err = tp.workStats(ctx, messages.OrchestratorStream, jetstore.OrchestratorConsumer); err != nil {
		t.Fatalf("orchestrator consumer: %v", err)
	}
	if c.runs, err = tp.activityRuns(ctx); err != nil {
		t.Fatalf("worker metrics: %v", err)
	}
	return c
}

// activityRuns sums the activity executions the workers' /metrics count.
// A worker that restarts starts again from zero.
func (tp *topology) activityRuns(ctx context.Context) (int, error) {
	total := 0
	for _, n := range tp.workers {
		if st, err := n.c.State(ctx); err != nil || !st.Running {
			continue // killed: its count is lost
		}
		p, err := n.c.MappedPort(ctx, "8081/tcp")
		if err != nil {
			return 0, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%s/metrics", p.Port()), nil)
		res, err := httpClient.Do(req)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", n.name, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s /metrics: %d %v", n.name, res.StatusCode, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, telemetry.MetricActivityDuration+"_count") {
				continue
			}
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q: %w", n.name, line, err)
			}
			total += int(v)
		}
	}
	return total, nil
}

// requireIdle waits until no work is pending or unacknowledged, so that
// the counters are final.
func (tp *topology) requireIdle(t *testing.T, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := tp.waitIdle(ctx); err != nil {
		t.Fatalf("work still in flight: %v", err)
	}
}

func (tp *topology) waitIdle(ctx context.Context) error {
	return retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		for cons, stream := range map[string]string{jetstore.ActivityConsumer: messages.ActivityStream, jetstore.OrchestratorConsumer: messages.OrchestratorStream} {
			c, err := tp.js.Consumer(ctx, stream, cons)
			if err != nil {
				return err
			}
			info, err := c.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumAckPending != 0 || info.NumPending != 0 {
				return fmt.Errorf("%s: %d unacknowledged, %d pending", cons, info.NumAckPending, info.NumPending)
			}
		}
		return nil
	})
}

// reruns counts the activity re-runs between two snapshots, logs them
// with the orchestrator's redeliveries, and fails t if they exceed bound.
// With exact set, no worker restarted in between and the re-runs are the
// executions the workers counted beyond one per task; otherwise they are
// the deliveries beyond one per task (each a re-run, or a task handed back
// unrun), which bound the re-runs from above.
func reruns(t *testing.T, before, after counters, tasks, bound int, what string, exact bool) {
	t.Helper()
	actDelivered := int(after.act.delivered - before.act.delivered)
	actPublished := int(after.act.published - before.act.published)
	orchDelivered := int(after.orch.delivered - before.orch.delivered)
	orchPublished := int(after.orch.published - before.orch.published)
	runs := after.runs - before.runs
	extra, how := actDelivered-tasks, "deliveries"
	if exact {
		extra, how = runs-tasks, "executions counted by the workers"
	}
	t.Logf("activities: %d tasks in the histories, %d messages published, %d deliveries, %d executions counted by the workers: %d re-runs from the %s (bound %d: %s)",
		tasks, actPublished, actDelivered, runs, extra, how, bound, what)
	t.Logf("orchestrator work: %d messages published, %d deliveries: %d redeliveries", orchPublished, orchDelivered, orchDelivered-orchPublished)
	if actPublished != tasks {
		t.Logf("note: %d activity messages stored for %d tasks: a task was published again and not deduplicated (or the stream skipped sequences)", actPublished, tasks)
	}
	if extra < 0 {
		t.Errorf("%d %s for %d tasks: some task never ran", extra+tasks, how, tasks)
	}
	if extra > bound {
		t.Errorf("%d activity re-runs, more than the %d allowed (%s)", extra, bound, what)
	}
}
