package telemetry

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

// ConsumerRef names a durable consumer on a stream.
type ConsumerRef struct {
	Stream, Consumer string
}

// Consumers are the work consumers whose backlog jetflow reports.
var Consumers = []ConsumerRef{
	{messages.OrchestratorStream, jetstore.OrchestratorConsumer},
	{messages.ActivityStream, jetstore.ActivityConsumer},
	{messages.DelayStream, jetstore.DelayConsumer},
	{messages.AdvisoryStream, jetstore.DeadLetterConsumer},
}

// Streams are the streams whose message count jetflow reports; the
// dead-letter stream's is the number of messages dead-lettered and kept.
var Streams = []string{messages.OrchestratorStream, messages.ActivityStream, messages.DelayStream, messages.DeadLetterStream}

// PendingTimeout bounds the JetStream requests one scrape makes.
const PendingTimeout = 2 * time.Second

// pendingCollector reports the backlog of jetflow's consumers and streams,
// asking JetStream at each scrape.
type pendingCollector struct {
	js                                     jetstream.JetStream
	consumers                              []ConsumerRef
	streams                                []string
	pending, ackPending, redelivered, msgs *prometheus.Desc
}

// NewPendingCollector returns a collector that, at each scrape, asks
// JetStream (within PendingTimeout) for the backlog of consumers and the
// size of streams: jetflow_consumer_pending_messages (not yet delivered),
// jetflow_consumer_ack_pending_messages (delivered, not acknowledged) and
// jetflow_consumer_redelivered_messages by stream and consumer, and
// jetflow_stream_messages by stream. A consumer or stream that cannot be
// read is left out of that scrape.
func NewPendingCollector(js jetstream.JetStream, consumers []ConsumerRef, streams []string) prometheus.Collector {
	sc := []string{"stream", "consumer"}
	return &pendingCollector{
		js: js, consumers: consumers, streams: streams,
		pending:     prometheus.NewDesc(MetricConsumerPending, "Messages on a stream that a consumer has not delivered yet.", sc, nil),
		ackPending:  prometheus.NewDesc(MetricConsumerAckPending, "Messages a consumer delivered that are not acknowledged yet.", sc, nil),
		redelivered: prometheus.NewDesc(MetricConsumerRedelivered, "Messages a consumer delivered more than once that are not acknowledged yet.", sc, nil),
		msgs:        prometheus.NewDesc(MetricStreamMessages, "Messages stored in a stream.", []string{"stream"}, nil),
	}
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redelivered
	ch <- c.msgs
}

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), PendingTimeout)
	defer cancel()
	for _, r := range c.consumers {
		cons, err := c.js.Consumer(ctx, r.Stream, r.Consumer)
		if err != nil {
			continue
		}
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), r.Stream, r.Consumer)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), r.Stream, r.Consumer)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(info.NumRedelivered), r.Stream, r.Consumer)
	}
	for _, name := range c.streams {
		s, err := c.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.GaugeValue, float64(s.CachedInfo().State.Msgs), name)
	}
}

// CollectPending registers, once per Metrics, a collector of the backlog
// of jetflow's work consumers and streams (see NewPendingCollector with
// Consumers and Streams). A nil Metrics does nothing.
func (m *Metrics) CollectPending(js jetstream.JetStream) {
	if m == nil {
		return
	}
	m.pendingOnce.Do(func() {
		m.reg.MustRegister(NewPendingCollector(js, Consumers, Streams))
	})
}
