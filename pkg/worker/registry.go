package worker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
)

// Activity is an activity function. It may do I/O; ctx is cancelled when
// the worker shuts down or loses the task.
type Activity func(ctx context.Context, in Input) (any, error)

// Input is an activity's JSON input.
type Input struct{ raw []byte }

// Get decodes the input into v.
func (i Input) Get(v any) error {
	if len(i.raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(i.raw, v); err != nil {
		return fmt.Errorf("decode activity input: %w", err)
	}
	return nil
}

// Raw returns the input's JSON text.
func (i Input) Raw() []byte { return i.raw }

// Registry maps names to the orchestrators and activities a worker hosts.
type Registry struct {
	orchestrators map[string]replay.Orchestrator
	activities    map[string]Activity
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{orchestrators: map[string]replay.Orchestrator{}, activities: map[string]Activity{}}
}

// AddOrchestrator registers fn under name.
func (r *Registry) AddOrchestrator(name string, fn replay.Orchestrator) error {
	if err := messages.ValidateName(name); err != nil {
		return err
	}
	if _, dup := r.orchestrators[name]; dup {
		return fmt.Errorf("orchestrator %q registered twice", name)
	}
	r.orchestrators[name] = fn
	return nil
}

// AddActivity registers fn under name.
func (r *Registry) AddActivity(name string, fn Activity) error {
	if err := messages.ValidateName(name); err != nil {
		return err
	}
	if _, dup := r.activities[name]; dup {
		return fmt.Errorf("activity %q registered twice", name)
	}
	r.activities[name] = fn
	return nil
}
