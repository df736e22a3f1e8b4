package replay

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
)

// recovering is an orchestrator that turns every panic into an error, a
// common defensive pattern. It must not keep the engine from abandoning it.
func recovering(ctx *Context) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("recovered: %v", r)
		}
	}()
	return nil, ctx.CallActivity("A", nil).Await(nil)
}

// within runs f and fails the test if it does not return in time (the
// engine deadlocking would otherwise hang the whole test binary).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not return: deadlock", what)
	}
}

func TestTerminateOrchestratorThatRecovers(t *testing.T) {
	in := New(recovering, Options{})
	if _, err := in.Step(t0, []ev{started("")}); err != nil {
		t.Fatal(err)
	}
	var ep *Episode
	var err error
	within(t, "Step(ExecutionTerminated)", func() { ep, err = in.Step(t0.Add(time.Second), []ev{terminated("stop")}) })
	if err != nil {
		t.Fatal(err)
	}
	if in.RuntimeStatus() != messages.StatusTerminated || len(ep.Actions) != 1 || ep.Actions[0].Status != messages.StatusTerminated {
		t.Fatalf("status %s actions %+v", in.RuntimeStatus(), ep.Actions)
	}
}

func TestCloseOrchestratorThatRecovers(t *testing.T) {
	for _, fn := range []Orchestrator{
		recovering,
		// Recovers, then tries to go on working.
		func(ctx *Context) (any, error) {
			func() {
				defer func() { _ = recover() }()
				_ = ctx.CallActivity("A", nil).Await(nil)
			}()
			_ = ctx.SetCustomStatus("after")
			return nil, ctx.CreateTimer(time.Hour).Await(nil)
		},
	} {
		in := New(fn, Options{})
		if _, err := in.Step(t0, []ev{started("")}); err != nil {
			t.Fatal(err)
		}
		within(t, "Close", in.Close)
		within(t, "second Close", in.Close)
	}
}
