package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// composeCommand returns the Compose command: docker-compose (v1), or the
// docker CLI's compose plugin (v2).
func composeCommand() ([]string, error) {
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}, nil
	}
	return nil, fmt.Errorf("neither docker-compose nor docker compose is installed")
}

// TestCompose builds the images with deploy/build-images.sh, brings up
// deploy/compose/docker-compose.yml, runs E1_HelloSequence through the
// api's published port and brings everything down again.
func TestCompose(t *testing.T) {
	needDocker(t)
	compose, err := composeCommand()
	if err != nil {
		if os.Getenv("JETFLOW_REQUIRE_DOCKER") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	start := time.Now()
	build := exec.Command("bash", filepath.Join(repoRoot, "deploy", "build-images.sh"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build-images.sh: %v\n%s", err, out)
	}
	t.Logf("deploy/build-images.sh took %s", time.Since(start).Round(time.Second))

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// A project of its own, so that concurrent runs do not collide.
	project := fmt.Sprintf("jetflowtest%d", os.Getpid())
	file := filepath.Join(repoRoot, "deploy", "compose", "docker-compose.yml")
	run := func(timeout time.Duration, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		all := append(append(append([]string{}, compose[1:]...), "-p", project, "-f", file), args...)
		cmd := exec.CommandContext(ctx, compose[0], all...)
		cmd.Env = append(os.Environ(), "JETFLOW_TAG=dev", "JETFLOW_API_PORT="+strconv.Itoa(port))
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run(time.Minute, "logs", "--tail=40")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := run(2*time.Minute, "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	upAt := time.Now()
	if out, err := run(3*time.Minute, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}

	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error { return httpOK(ctx, base+"readyz") }); err != nil {
		t.Fatalf("api never ready: %v", err)
	}
	t.Logf("api ready %s after compose up", time.Since(upAt).Round(100*time.Millisecond))

	// The start is refused until a worker has registered the name, and
	// needs a dispatcher: retry until both are up.
	id := fmt.Sprintf("compose-%d", time.Now().UnixNano())
	url := base + "runtime/webhooks/durabletask/orchestrators/E1_HelloSequence/" + id
	if err := retry(ctx, 500*time.Millisecond, func(ctx context.Context) error {
		res, err := http.Post(url, "application/json", nil)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			return fmt.Errorf("start: %d %s", res.StatusCode, body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var st struct {
		RuntimeStatus string          `json:"runtimeStatus"`
		Output        json.RawMessage `json:"output"`
		CustomStatus  json.RawMessage `json:"customStatus"`
	}
	if err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		res, err := http.Get(base + "runtime/webhooks/durabletask/instances/" + id)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
			return err
		}
		if st.RuntimeStatus != "Completed" {
			return fmt.Errorf("instance is %s", st.RuntimeStatus)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(st.Output, helloSequence.output) || !jsonEqual(st.CustomStatus, helloSequence.custom) {
		t.Fatalf("output %s custom status %s, want %s and %s", st.Output, st.CustomStatus, helloSequence.output, helloSequence.custom)
	}
	t.Logf("E1_HelloSequence through the compose api: output %s, custom status %s, %s after compose up", st.Output, st.CustomStatus, time.Since(upAt).Round(100*time.Millisecond))
}
