package replay_test

import (
	"fmt"
	"time"

	"github.com/jetflow/jetflow/pkg/messages"
	"github.com/jetflow/jetflow/pkg/replay"
)

// An orchestrator calls an activity and sets its custom status. Step runs
// it as far as the events allow and returns what to append and what to do.
func Example() {
	greet := func(ctx *replay.Context) (any, error) {
		var greeting string
		if err := ctx.CallActivity("SayHello", "Tokyo").Await(&greeting); err != nil {
			return nil, err
		}
		if err := ctx.SetCustomStatus("Tokyo"); err != nil {
			return nil, err
		}
		return greeting, nil
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := replay.New(greet, replay.Options{})
	defer in.Close()

	start := messages.Event{Type: messages.EventExecutionStarted, Name: "Greet", InstanceID: "i1", ExecutionID: "run1"}
	ep, _ := in.Step(now, []messages.Event{start})
	for _, a := range ep.Actions {
		fmt.Println("action:", a.Type, a.Name, string(a.Input))
	}

	done := messages.Event{Type: messages.EventTaskCompleted, TaskID: 0, Result: []byte(`"Hello Tokyo!"`)}
	if _, err := in.Step(now.Add(time.Second), []messages.Event{done}); err != nil {
		fmt.Println(err)
	}
	fmt.Println("status:", in.RuntimeStatus(), "custom status:", string(in.CustomStatus()), "output:", string(in.Final().Result))
	// Output:
	// action: TaskScheduled SayHello "Tokyo"
	// status: Completed custom status: "Tokyo" output: "Hello Tokyo!"
}
