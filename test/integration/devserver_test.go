package integration

import (
	"net/http"
	"testing"
	"time"
)

// TestDevserver runs the README's path: the devserver binary on its own,
// the samples through its HTTP API, and a worker of the user's own
// (examples/customworker) joining over the devserver's NATS port.
func TestDevserver(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	httpAddr, natsAddr := freeAddr(t), freeAddr(t)
	startProc(t, "devserver", "-http", httpAddr, "-nats", natsAddr, "-data", t.TempDir())
	s := &stack{base: "http://" + httpAddr + "/runtime/webhooks/durabletask/"}
	waitFor(t, 30*time.Second, "the devserver's API", func() bool {
		r, err := http.Get(s.base + "instances/none")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == http.StatusNotFound
	})
	id := s.start(t, "E1_HelloSequence", "", "")
	st := s.await(t, id, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
	if !jsonEq(t, st.Output, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`) || !jsonEq(t, st.CustomStatus, `"London"`) {
		t.Fatalf("E1_HelloSequence: output %s custom status %s", st.Output, st.CustomStatus)
	}

	// Before the custom worker joins, its orchestrator is unknown.
	if r := do(t, http.MethodPost, s.base+"orchestrators/Countdown", "application/json", []byte("3")); r.code != http.StatusBadRequest {
		t.Fatalf("Countdown before its worker joined: %d %s, want 400", r.code, r.body)
	}
	startProc(t, "customworker", "--server", "nats://"+natsAddr)
	var cid string
	waitFor(t, 30*time.Second, "the custom worker to register", func() bool {
		r := do(t, http.MethodPost, s.base+"orchestrators/Countdown/countdown-1", "application/json", []byte("3"))
		if r.code == http.StatusAccepted {
			cid = "countdown-1"
		}
		return cid != ""
	})
	st = s.await(t, cid, "Completed", func(st statusBody) bool { return st.RuntimeStatus == "Completed" })
	if !jsonEq(t, st.Output, `["3...","2...","1..."]`) || !jsonEq(t, st.CustomStatus, `"liftoff"`) {
		t.Fatalf("Countdown: output %s custom status %s", st.Output, st.CustomStatus)
	}
}
