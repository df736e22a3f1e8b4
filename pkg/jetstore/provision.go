// Package jetstore owns everything jetflow keeps in NATS JetStream: the work
// streams and their consumers, the history, status and registry buckets.
//
// # Layout
//
//   - Stream JETFLOW_ORCH (jetflow.orch.<instance>): orchestrator work items.
//   - Stream JETFLOW_ACT (jetflow.act.<instance>): activity tasks.
//   - Stream JETFLOW_DELAY (jetflow.delay.<instance>): timers and retries,
//     held by the dispatcher until due.
//   - Bucket jetflow-history: one key per episode, <instance>.<execution>.<episode>,
//     each written once with Create.
//   - Bucket jetflow-status: one status record per instance.
//   - Bucket jetflow-registry: the orchestrator and activity names workers host.
//   - Buckets jetflow-index-<status>: one key per instance in that runtime
//     status, for listing (see index.go).
package jetstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/pkg/messages"
)

// Consumer names.
const (
	OrchestratorConsumer = "jetflow-orchestrators"
	ActivityConsumer     = "jetflow-activities"
	DelayConsumer        = "jetflow-delays"
	DeadLetterConsumer   = "jetflow-dead-letters"
)

// Config sets how streams and buckets are created.
type Config struct {
	// Replicas of every stream and bucket; 0 means 1.
	Replicas int
	// Memory stores everything in memory instead of files.
	Memory bool
	// DuplicateWindow is the Nats-Msg-Id window of the work streams; 0 means 2 minutes.
	DuplicateWindow time.Duration
	// MaxDeliver bounds deliveries of orchestrator and activity work; 0 means 20.
	MaxDeliver int
	// DeadLetterMaxAge is how long dead letters are kept; 0 means 30 days.
	DeadLetterMaxAge time.Duration
	// OrchestratorAckWait and ActivityAckWait; 0 means 30 s and 60 s.
	OrchestratorAckWait time.Duration
	ActivityAckWait     time.Duration
}

func (c Config) withDefaults() Config {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 20
	}
	if c.DeadLetterMaxAge <= 0 {
		c.DeadLetterMaxAge = 30 * 24 * time.Hour
	}
	if c.OrchestratorAckWait <= 0 {
		c.OrchestratorAckWait = 30 * time.Second
	}
	if c.ActivityAckWait <= 0 {
		c.ActivityAckWait = 60 * time.Second
	}
	return c
}

// Provision creates or updates every stream, consumer and bucket. It is
// idempotent: running it again with the same Config changes nothing.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.withDefaults()
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	streams := []struct {
		name, subjects string
	}{
		{messages.OrchestratorStream, messages.OrchestratorSubjects},
		{messages.ActivityStream, messages.ActivitySubjects},
		{messages.DelayStream, messages.DelaySubjects},
	}
	for _, s := range streams {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       s.name,
			Subjects:   []string{s.subjects},
			Retention:  jetstream.WorkQueuePolicy,
			Storage:    storage,
			Replicas:   cfg.Replicas,
			Duplicates: cfg.DuplicateWindow,
		})
		if err != nil {
			return fmt.Errorf("provision stream %s: %w", s.name, err)
		}
	}
	// Messages given up on are kept here, for people to look at, for
	// DeadLetterMaxAge.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        messages.DeadLetterStream,
		Description: "jetflow dead letters: work given up on, with the reason in headers",
		Subjects:    []string{messages.DeadLetterSubjects},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.DeadLetterMaxAge,
		Storage:     storage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
	}); err != nil {
		return fmt.Errorf("provision stream %s: %w", messages.DeadLetterStream, err)
	}
	// The server's advisories that work was delivered MaxDeliver times,
	// kept so that a dispatcher handles each even if none was running
	// when it was sent.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        messages.AdvisoryStream,
		Description: "jetflow: max-deliveries advisories of the work streams",
		Subjects: []string{
			messages.MaxDeliveriesAdvisory(messages.OrchestratorStream, OrchestratorConsumer),
			messages.MaxDeliveriesAdvisory(messages.ActivityStream, ActivityConsumer),
		},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   storage,
		Replicas:  cfg.Replicas,
	}); err != nil {
		return fmt.Errorf("provision stream %s: %w", messages.AdvisoryStream, err)
	}
	consumers := []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{
		{messages.OrchestratorStream, jetstream.ConsumerConfig{
			Durable: OrchestratorConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: cfg.OrchestratorAckWait, MaxDeliver: cfg.MaxDeliver, MaxAckPending: 20000,
		}},
		{messages.ActivityStream, jetstream.ConsumerConfig{
			Durable: ActivityConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: cfg.ActivityAckWait, MaxDeliver: cfg.MaxDeliver, MaxAckPending: 20000,
		}},
		{messages.AdvisoryStream, jetstream.ConsumerConfig{
			Durable: DeadLetterConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 30 * time.Second, MaxDeliver: -1,
		}},
		// Delayed messages wait, unacknowledged, until they are due: no
		// bound on deliveries or on how many may be pending.
		{messages.DelayStream, jetstream.ConsumerConfig{
			Durable: DelayConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: -1,
		}},
	}
	for _, c := range consumers {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg); err != nil {
			return fmt.Errorf("provision consumer %s: %w", c.cfg.Durable, err)
		}
	}
	// The index of records written before it existed is built once.
	newIndex := false
	for _, rs := range indexedStatuses {
		if _, err := js.KeyValue(ctx, IndexBucket(rs)); errors.Is(err, jetstream.ErrBucketNotFound) {
			newIndex = true
		}
	}
	buckets := []jetstream.KeyValueConfig{
		{Bucket: messages.HistoryBucket, Description: "jetflow history: one key per episode", History: 1},
		{Bucket: messages.StatusBucket, Description: "jetflow status records", History: 1},
		{Bucket: messages.RegistryBucket, Description: "jetflow registered orchestrators and activities", History: 1},
	}
	for _, rs := range indexedStatuses {
		buckets = append(buckets, jetstream.KeyValueConfig{Bucket: IndexBucket(rs), Description: "jetflow listing index: instances " + rs.String(),
			History: 1, LimitMarkerTTL: indexMarkerTTL})
	}
	for _, b := range buckets {
		b.Storage, b.Replicas = storage, cfg.Replicas
		if _, err := js.CreateOrUpdateKeyValue(ctx, b); err != nil {
			return fmt.Errorf("provision bucket %s: %w", b.Bucket, err)
		}
	}
	if newIndex {
		s, err := Open(ctx, js)
		if err != nil {
			return err
		}
		if err := s.Reindex(ctx); err != nil {
			return err
		}
	}
	return nil
}

// WaitProvisioned polls until the streams and buckets exist, or ctx ends.
// Workers and the api call it so that they can start before the dispatcher.
func WaitProvisioned(ctx context.Context, js jetstream.JetStream) error {
	for {
		err := checkProvisioned(ctx, js)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for streams: %w (last: %v)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func checkProvisioned(ctx context.Context, js jetstream.JetStream) error {
	for _, s := range []string{messages.OrchestratorStream, messages.ActivityStream, messages.DelayStream} {
		if _, err := js.Stream(ctx, s); err != nil {
			return fmt.Errorf("stream %s: %w", s, err)
		}
	}
	buckets := []string{messages.HistoryBucket, messages.StatusBucket, messages.RegistryBucket}
	for _, rs := range indexedStatuses {
		buckets = append(buckets, IndexBucket(rs))
	}
	for _, b := range buckets {
		if _, err := js.KeyValue(ctx, b); err != nil {
			return fmt.Errorf("bucket %s: %w", b, err)
		}
	}
	return nil
}

// Ready reports whether the streams and buckets are present.
func Ready(ctx context.Context, js jetstream.JetStream) error { return checkProvisioned(ctx, js) }

// ErrNotFound is returned when an instance has no status record.
var ErrNotFound = errors.New("instance not found")

// ErrConflict is returned by AppendEpisode when the episode was already committed.
var ErrConflict = errors.New("episode already committed")
