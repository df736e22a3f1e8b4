package messages

import (
	"math"
	"testing"
	"time"
)

func TestRetryPolicyDelay(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name string
		p    RetryPolicy
		next int
		want time.Duration
	}{
		{"first retry", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 2, s},
		{"second retry doubles", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 3, 2 * s},
		{"third retry", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 4, 4 * s},
		{"fifth retry", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 6, 16 * s},
		{"attempt 1 or below", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 1, s},
		{"attempt 0", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 0, s},
		{"fractional coefficient", RetryPolicy{FirstInterval: 100 * time.Millisecond, BackoffCoefficient: 1.5}, 4, 225 * time.Millisecond},
		{"zero coefficient is 1", RetryPolicy{FirstInterval: 3 * s}, 7, 3 * s},
		{"negative coefficient is 1", RetryPolicy{FirstInterval: 3 * s, BackoffCoefficient: -2}, 7, 3 * s},
		{"coefficient below 1 shrinks", RetryPolicy{FirstInterval: 8 * s, BackoffCoefficient: 0.5}, 4, 2 * s},
		{"max caps", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2, MaxInterval: 5 * s}, 5, 5 * s},
		{"below max", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2, MaxInterval: 5 * s}, 4, 4 * s},
		{"exactly max", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2, MaxInterval: 4 * s}, 4, 4 * s},
		{"max caps first interval", RetryPolicy{FirstInterval: time.Minute, MaxInterval: 10 * s}, 2, 10 * s},
		{"max with many attempts", RetryPolicy{FirstInterval: s, BackoffCoefficient: 10, MaxInterval: time.Hour}, 1000, time.Hour},
		{"zero first interval", RetryPolicy{BackoffCoefficient: 2}, 5, 0},
		// Without a MaxInterval the exponential grows past what a
		// time.Duration holds; the delay must saturate, not wrap negative.
		{"overflow saturates", RetryPolicy{FirstInterval: s, BackoffCoefficient: 2}, 100, math.MaxInt64},
		{"huge coefficient saturates", RetryPolicy{FirstInterval: s, BackoffCoefficient: math.MaxFloat64}, 4, math.MaxInt64},
		{"NaN coefficient is 1", RetryPolicy{FirstInterval: s, BackoffCoefficient: math.NaN()}, 5, s},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Delay(tc.next); got != tc.want {
				t.Errorf("Delay(%d) = %v, want %v", tc.next, got, tc.want)
			}
		})
	}
}

func TestRetryPolicyDelayMonotonic(t *testing.T) {
	for _, p := range []RetryPolicy{
		{FirstInterval: time.Second, BackoffCoefficient: 2},
		{FirstInterval: time.Millisecond, BackoffCoefficient: 1.1},
		{FirstInterval: time.Second, BackoffCoefficient: 3, MaxInterval: time.Hour},
		{FirstInterval: time.Second, BackoffCoefficient: 1e6},
	} {
		prev := time.Duration(0)
		for next := 2; next < 200; next++ {
			d := p.Delay(next)
			if d < prev {
				t.Fatalf("%+v: Delay(%d) = %v is less than Delay(%d) = %v", p, next, d, next-1, prev)
			}
			if p.MaxInterval > 0 && d > p.MaxInterval {
				t.Fatalf("%+v: Delay(%d) = %v over the maximum", p, next, d)
			}
			prev = d
		}
	}
}

func TestEnums(t *testing.T) {
	if EventInvalid.Valid() || eventTypeEnd.Valid() || !EventOrchestratorCompleted.Valid() || !EventExecutionStarted.Valid() {
		t.Error("EventType.Valid bounds wrong")
	}
	for ty := EventType(1); ty < eventTypeEnd; ty++ {
		if s := ty.String(); s == "" || s == "Invalid" {
			t.Errorf("EventType(%d) has no name", ty)
		}
	}
	if got := EventType(200).String(); got != "EventType(200)" {
		t.Errorf("unknown EventType String = %q", got)
	}
	if EventSubOrchestrationCreated.String() != "SubOrchestrationInstanceCreated" {
		t.Errorf("name %q", EventSubOrchestrationCreated)
	}
	sched := map[EventType]bool{EventTaskScheduled: true, EventTimerCreated: true, EventSubOrchestrationCreated: true, EventSent: true}
	for ty := EventType(0); ty <= eventTypeEnd; ty++ {
		if ty.IsScheduling() != sched[ty] {
			t.Errorf("%s.IsScheduling() = %v", ty, ty.IsScheduling())
		}
	}

	if StatusInvalid.Valid() || statusEnd.Valid() || !StatusSuspended.Valid() {
		t.Error("RuntimeStatus.Valid bounds wrong")
	}
	for s := RuntimeStatus(1); s < statusEnd; s++ {
		got, err := ParseRuntimeStatus(s.String())
		if err != nil || got != s {
			t.Errorf("ParseRuntimeStatus(%q) = %v, %v", s.String(), got, err)
		}
		want := s == StatusCompleted || s == StatusFailed || s == StatusTerminated
		if s.Terminal() != want {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
	}
	for _, bad := range []string{"", "Invalid", "running", "Done"} {
		if _, err := ParseRuntimeStatus(bad); err == nil {
			t.Errorf("ParseRuntimeStatus(%q) succeeded", bad)
		}
	}
	if got := RuntimeStatus(99).String(); got != "RuntimeStatus(99)" {
		t.Errorf("unknown status String = %q", got)
	}

	if CmdInvalid.Valid() || cmdEnd.Valid() || !CmdStart.Valid() || !CmdPurge.Valid() {
		t.Error("CommandKind.Valid bounds wrong")
	}
	if CmdTerminate.String() != "terminate" || CommandKind(200).String() != "unknown" {
		t.Error("CommandKind names wrong")
	}
}

func TestFailureError(t *testing.T) {
	if got := (&Failure{Type: "IOError", Message: "disk"}).Error(); got != "IOError: disk" {
		t.Errorf("got %q", got)
	}
	if got := (&Failure{Message: "disk"}).Error(); got != "disk" {
		t.Errorf("got %q", got)
	}
}

func TestRetryPolicyDelayHugeAttempt(t *testing.T) {
	// A huge attempt number saturates quickly rather than looping per attempt.
	p := RetryPolicy{FirstInterval: time.Second, BackoffCoefficient: 2}
	if got := p.Delay(math.MaxInt); got != math.MaxInt64 {
		t.Fatalf("Delay(MaxInt) = %v", got)
	}
}
