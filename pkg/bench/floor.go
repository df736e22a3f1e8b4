package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// floorStream is the stream the floor workload makes, and deletes after.
const floorStream = "JETFLOW_BENCH_FLOOR"

// floorWindow is how many asynchronous publishes may await their ack.
const floorWindow = 256

// floor measures what JetStream itself does on this server, with no
// jetflow code in the way, so that jetflow's figures can be read against
// it: messages published (asynchronously, a window of 256 in flight),
// pulled by a durable consumer and acknowledged, with the storage and
// sync setting of the run; and the latency of one synchronous publish.
func (e *env) floor(ctx context.Context) []Result {
	failed := func(err error) []Result {
		return []Result{{Case: "publish, consume, ack", Errors: 1, Notes: []string{err.Error()}}}
	}
	storage := jetstream.FileStorage
	if e.cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	pnc, _, err := e.connect("jetflow-bench-floor-pub")
	if err != nil {
		return failed(err)
	}
	defer pnc.Close()
	pjs, err := jetstream.New(pnc, jetstream.WithPublishAsyncMaxPending(floorWindow))
	if err != nil {
		return failed(err)
	}
	cnc, cjs, err := e.connect("jetflow-bench-floor-sub")
	if err != nil {
		return failed(err)
	}
	defer cnc.Close()
	stream, err := pjs.CreateStream(ctx, jetstream.StreamConfig{Name: floorStream, Subjects: []string{"jetflow-bench-floor.>"}, Storage: storage})
	if err != nil {
		return failed(err)
	}
	defer func() { _ = pjs.DeleteStream(context.WithoutCancel(ctx), floorStream) }()
	payload := make([]byte, e.cfg.FloorPayload)
	return []Result{e.floorThroughput(ctx, pjs, cjs, stream, payload), e.floorSyncPublish(ctx, pjs, payload)}
}

// floorThroughput publishes for FloorDuration and counts the messages
// acknowledged; the rate is over the time until the last one is.
func (e *env) floorThroughput(ctx context.Context, pjs, cjs jetstream.JetStream, stream jetstream.Stream, payload []byte) Result {
	r := Result{Case: "publish, consume, ack", Concurrency: floorWindow,
		LatencyOf: "publish to ack: from the asynchronous publish to the consumer acking the message"}
	if _, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: 20000}); err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	// The consumer reads on its own connection, as a worker would.
	cons, err := cjs.Consumer(ctx, floorStream, "floor")
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	var acked atomic.Int64
	var rec recorder
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var sent int64
		if b := m.Data(); len(b) >= 8 {
			sent = int64(binary.LittleEndian.Uint64(b))
		}
		if err := m.Ack(); err != nil {
			rec.fail(err)
			return
		}
		end := time.Now()
		rec.ok(end.Sub(time.Unix(0, sent)), end)
		acked.Add(1)
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		r.noteErrors(errCount{1, err})
		return r
	}
	defer cc.Stop()
	c0 := e.counters()
	start := time.Now()
	deadline := start.Add(e.cfg.FloorDuration)
	var published int64
	for ctx.Err() == nil && time.Now().Before(deadline) {
		b := make([]byte, max(len(payload), 8))
		binary.LittleEndian.PutUint64(b, uint64(time.Now().UnixNano()))
		_, err := pjs.PublishAsync(fmt.Sprintf("jetflow-bench-floor.%d", published%100), b)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// The window stayed full (slow acks, as with fsync on every
			// write): wait for it to empty, and send this one again.
			select {
			case <-pjs.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
			}
			continue
		}
		if err != nil {
			rec.fail(err)
			break
		}
		published++
	}
	select {
	case <-pjs.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		rec.fail(fmt.Errorf("publish acks still pending 30 s after the last publish"))
	}
	for acked.Load() < published && time.Since(deadline) < 30*time.Second && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	rec.mu.Lock()
	r.Count = len(rec.lat)
	r.setLatencies(rec.lat)
	rec.mu.Unlock()
	r.setRate(elapsed, "msgs/s")
	r.noteErrors(errCount{rec.errs, rec.first})
	e.costMetrics(&r, c0)
	r.metric("payload_bytes", float64(len(payload)))
	r.note("JetStream alone: no jetflow code")
	return r
}

// floorSyncPublish times synchronous publishes, one at a time.
func (e *env) floorSyncPublish(ctx context.Context, js jetstream.JetStream, payload []byte) Result {
	r := Result{Case: "synchronous publish", Concurrency: 1, LatencyOf: "one js.Publish, until its ack"}
	var rec recorder
	start := time.Now()
	for i := 0; i < e.cfg.FloorSyncPublishes && ctx.Err() == nil; i++ {
		t := time.Now()
		if _, err := js.Publish(ctx, "jetflow-bench-floor.sync", payload); err != nil {
			rec.fail(err)
			continue
		}
		end := time.Now()
		rec.ok(end.Sub(t), end)
	}
	r.Count = len(rec.lat)
	r.setLatencies(rec.lat)
	r.setRate(time.Since(start), "publishes/s")
	r.noteErrors(errCount{rec.errs, rec.first})
	return r
}
