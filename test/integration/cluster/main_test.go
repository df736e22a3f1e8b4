// Package cluster runs jetflow in containers on a 3-node NATS cluster and
// checks that nothing is lost or done twice when a process or a NATS node
// fails. Every image is built on this machine FROM scratch out of static
// binaries (no registry is needed), with testcontainers-go and Docker's
// classic builder.
//
// The topology (a Docker network; NATS nodes n1, n2 and n3 with JetStream;
// every stream and bucket at R3; 3 workers, 2 dispatchers and the api) is
// started once and shared by the fault tests, each of which checks it is
// healthy first and leaves it healthy. TestCompose brings up
// deploy/compose/docker-compose.yml on its own.
//
// Without Docker the tests skip, unless JETFLOW_REQUIRE_DOCKER=1, when they
// fail.
//
// Environment:
//   - JETFLOW_REQUIRE_DOCKER=1: fail instead of skipping without Docker.
//   - JETFLOW_KEEP_CLUSTER=1: leave the topology running at the end, for a
//     post-mortem; the test prints how to remove it. Its containers carry
//     the label jetflow.test.run, unique to the run.
//   - JETFLOW_CLUSTER_SRC=dir: build the jetflow binaries from another
//     checkout of the module.
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// repoRoot is the module's root, relative to this package.
var repoRoot = filepath.Join("..", "..", "..")

var dockerErr error // why Docker cannot be used, if it cannot

func TestMain(m *testing.M) {
	// No registry: testcontainers must not pull its Ryuk image. Containers
	// and the network are removed by the tests themselves.
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	// The engine is local (the NATS nodes' ports are bound on 127.0.0.1),
	// but testcontainers may guess another address for it, such as the
	// default gateway when it thinks it runs inside a container: mapped
	// ports are then unreachable.
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		if h := os.Getenv("DOCKER_HOST"); h == "" || strings.HasPrefix(h, "unix://") {
			os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
		}
	}
	dockerErr = probeDocker()
	code := m.Run()
	if os.Getenv("JETFLOW_KEEP_CLUSTER") == "1" && topo != nil {
		fmt.Fprintf(os.Stderr, "cluster: JETFLOW_KEEP_CLUSTER=1, leaving the topology running: NATS on 127.0.0.1 ports %d, %d, %d; remove it with\n"+
			"  docker rm -f -v $(docker ps -aq --filter label=jetflow.test.run=%s); docker network rm %s\n",
			topo.nats[0].port, topo.nats[1].port, topo.nats[2].port, runID, topo.net.Name)
	} else {
		shutdownTopology()
	}
	if dir := binDir; dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

func probeDocker() error {
	if _, err := exec.LookPath("docker"); err != nil {
		// The API is what matters, but without the CLI there is almost
		// certainly no engine either.
		if _, serr := os.Stat("/var/run/docker.sock"); serr != nil && os.Getenv("DOCKER_HOST") == "" {
			return fmt.Errorf("no docker CLI and no /var/run/docker.sock")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("docker ping: %w", err)
	}
	return nil
}

// needDocker skips t when Docker is unavailable, or fails it when
// JETFLOW_REQUIRE_DOCKER=1.
func needDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs containers")
	}
	if dockerErr == nil {
		return
	}
	if os.Getenv("JETFLOW_REQUIRE_DOCKER") == "1" {
		t.Fatalf("Docker is required (JETFLOW_REQUIRE_DOCKER=1) but unavailable: %v", dockerErr)
	}
	t.Skipf("Docker unavailable: %v", dockerErr)
}

// Image tags the cluster tests build and keep for reuse between runs.
const (
	natsImage       = "jetflow/nats:clustertest"
	dispatcherImage = "jetflow/dispatcher:clustertest"
	workerImage     = "jetflow/worker:clustertest"
	apiImage        = "jetflow/api:clustertest"
)

var (
	imagesOnce sync.Once
	imagesErr  error
	binDir     string
)

// images builds the static binaries and the four images once per run.
func images(t *testing.T) {
	t.Helper()
	imagesOnce.Do(func() {
		start := time.Now()
		imagesErr = buildImages()
		if imagesErr == nil {
			fmt.Fprintf(os.Stderr, "cluster: images built in %s\n", time.Since(start).Round(time.Second))
		}
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
}

func buildImages() error {
	var err error
	binDir, err = os.MkdirTemp("", "jetflow-cluster-images-")
	if err != nil {
		return err
	}
	// One build context per image, holding only what it copies.
	type img struct {
		repo, bin, pkg, dockerfile string
		extra                      []string
	}
	imgs := []img{
		{"jetflow/nats", "nats-server", "github.com/nats-io/nats-server/v2", "Dockerfile.nats-prebuilt", []string{"nats.conf"}},
		{"jetflow/dispatcher", "dispatcher", "./cmd/dispatcher", "Dockerfile.prebuilt", nil},
		{"jetflow/worker", "worker", "./cmd/worker", "Dockerfile.prebuilt", nil},
		{"jetflow/api", "api", "./cmd/api", "Dockerfile.prebuilt", nil},
	}
	for _, im := range imgs {
		dir := filepath.Join(binDir, im.bin)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, im.bin), im.pkg)
		cmd.Dir = repoRoot
		if src := os.Getenv("JETFLOW_CLUSTER_SRC"); src != "" {
			// Binaries from another checkout, e.g. to try an engine fix.
			cmd.Dir = src
		}
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", im.pkg, err, out)
		}
		for _, f := range append([]string{im.dockerfile}, im.extra...) {
			b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "docker", f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				return err
			}
		}
	}
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, im := range imgs {
		bin := im.bin
		req := &testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
			Context:    filepath.Join(binDir, im.bin),
			Dockerfile: im.dockerfile,
			Repo:       im.repo,
			Tag:        "clustertest",
			BuildArgs:  map[string]*string{"BIN": &bin},
			KeepImage:  true,
			BuildOptionsModifier: func(o *client.ImageBuildOptions) {
				// The classic builder needs no frontend image from a registry.
				o.Version = build.BuilderV1
			},
		}}
		if _, err := provider.BuildImage(ctx, req); err != nil {
			return fmt.Errorf("build %s: %w", im.repo, err)
		}
	}
	return nil
}
