package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	jfclient "github.com/jetflow/jetflow/pkg/client"
	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

// Settings of the jetflow processes in the topology. Short ack waits make
// redelivery after a kill quick.
const (
	ackWait             = "5s"
	workerConcurrency   = "16"
	activityConcurrency = "8"
)

// natsServers is what the containers dial: every node, by its alias.
const natsServers = "nats://n1:4222,nats://n2:4222,nats://n3:4222"

// node is one container of the topology.
type node struct {
	name   string // alias on the network: n1, dispatcher-1, worker-2, api
	kind   string // nats, dispatcher, worker or api
	c      *testcontainers.DockerContainer
	port   int // NATS nodes: the client port on the host, fixed across restarts
	starts int // how often the container was started
}

// topology is the shared cluster: 3 NATS nodes, 2 dispatchers, 3 workers
// and the api on one Docker network, and the test's own NATS connection.
type topology struct {
	net         *testcontainers.DockerNetwork
	docker      *testcontainers.DockerClient
	nats        []*node
	dispatchers []*node
	workers     []*node
	api         *node

	nc      *nats.Conn
	js      jetstream.JetStream
	client  *jfclient.Client
	store   *jetstore.Store
	apiBase string // http://127.0.0.1:port/runtime/webhooks/durabletask/
}

var (
	topoMu sync.Mutex
	topo   *topology
	// runID labels this run's containers and network (jetflow.test.run),
	// apart from those of a run going on at the same time.
	runID = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().Unix())
)

// cluster returns the shared topology, healthy, starting it on first use.
// If the previous test left it unhealthy, it is replaced.
func cluster(t *testing.T) *topology {
	t.Helper()
	needDocker(t)
	images(t)
	topoMu.Lock()
	defer topoMu.Unlock()
	if topo != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := topo.waitHealthy(ctx)
		if err == nil {
			// Work left over from a failed test would blur this one's counts.
			err = topo.waitIdle(ctx)
		}
		cancel()
		if err == nil {
			return topo
		}
		t.Logf("topology unhealthy (%v); starting a new one", err)
		topo.dumpLogs(t, 30)
		topo.shutdown()
		topo = nil
	}
	start := time.Now()
	tp, err := startTopology(t)
	if err != nil {
		if tp != nil {
			tp.dumpLogs(t, 40)
			tp.shutdown()
		}
		t.Fatalf("start topology: %v", err)
	}
	t.Logf("topology started in %s", time.Since(start).Round(100*time.Millisecond))
	topo = tp
	return tp
}

func shutdownTopology() {
	topoMu.Lock()
	defer topoMu.Unlock()
	if topo != nil {
		topo.shutdown()
		topo = nil
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startTopology(t *testing.T) (*topology, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, err
	}
	tp := &topology{docker: docker}
	tp.net, err = tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{"jetflow.test": "cluster", "jetflow.test.run": runID}))
	if err != nil {
		return tp, fmt.Errorf("network: %w", err)
	}

	// NATS: three nodes, started together since each waits for the others' routes.
	for i := 1; i <= 3; i++ {
		port, err := freePort()
		if err != nil {
			return tp, err
		}
		tp.nats = append(tp.nats, &node{name: fmt.Sprintf("n%d", i), kind: "nats", port: port})
	}
	if err := parallel(tp.nats, func(n *node) error { return tp.create(ctx, n) }); err != nil {
		return tp, err
	}
	urls := make([]string, len(tp.nats))
	for i, n := range tp.nats {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
	}
	tp.nc, err = nats.Connect(strings.Join(urls, ","),
		nats.Name("jetflow-cluster-test"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// A paused node would otherwise hang the test's requests for minutes.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(2),
		nats.Timeout(2*time.Second))
	if err != nil {
		return tp, fmt.Errorf("connect to the cluster: %w", err)
	}
	tp.js, err = jetstream.New(tp.nc, jetstream.WithDefaultTimeout(5*time.Second))
	if err != nil {
		return tp, err
	}
	if err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		_, err := tp.js.AccountInfo(ctx)
		return err
	}); err != nil {
		return tp, fmt.Errorf("JetStream never became available: %w", err)
	}

	// Dispatchers first: they provision the streams and buckets at R3.
	for i := 1; i <= 2; i++ {
		tp.dispatchers = append(tp.dispatchers, &node{name: fmt.Sprintf("dispatcher-%d", i), kind: "dispatcher"})
	}
	for i := 1; i <= 3; i++ {
		tp.workers = append(tp.workers, &node{name: fmt.Sprintf("worker-%d", i), kind: "worker"})
	}
	tp.api = &node{name: "api", kind: "api"}
	// One at a time: the first creates everything, the second finds it.
	for _, n := range tp.dispatchers {
		if err := tp.create(ctx, n); err != nil {
			return tp, err
		}
	}
	if err := parallel(append(append([]*node{}, tp.workers...), tp.api), func(n *node) error { return tp.create(ctx, n) }); err != nil {
		return tp, err
	}
	tp.store, err = jetstore.Open(ctx, tp.js)
	if err != nil {
		return tp, err
	}
	tp.client, err = jfclient.New(ctx, tp.nc, tp.js)
	if err != nil {
		return tp, err
	}
	apiPort, err := tp.api.c.MappedPort(ctx, "8080/tcp")
	if err != nil {
		return tp, err
	}
	tp.apiBase = fmt.Sprintf("http://127.0.0.1:%s/runtime/webhooks/durabletask/", apiPort.Port())
	if err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		ok, err := tp.store.Registered(ctx, jetstore.KindOrchestrator, "E1_HelloSequence")
		if err == nil && !ok {
			err = errors.New("E1_HelloSequence not registered yet")
		}
		return err
	}); err != nil {
		return tp, err
	}
	if err := tp.waitHealthy(ctx); err != nil {
		return tp, err
	}
	return tp, tp.waitIdle(ctx)
}

func parallel(nodes []*node, f func(*node) error) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(n) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// create makes and starts n's container.
func (tp *topology) create(ctx context.Context, n *node) error {
	req := testcontainers.ContainerRequest{
		Networks:       []string{tp.net.Name},
		NetworkAliases: map[string][]string{tp.net.Name: {n.name}},
		Labels:         map[string]string{"jetflow.test": "cluster", "jetflow.test.run": runID, "jetflow.node": n.name},
	}
	common := []string{"--server", natsServers, "-ping-interval", "1s", "-log-level", "info"}
	switch n.kind {
	case "nats":
		req.Image = natsImage
		req.Cmd = []string{"-c", "/etc/nats/nats.conf", "-n", n.name,
			"--routes", "nats://n1:6222,nats://n2:6222,nats://n3:6222",
			// Clients are given every URL they may use; the host could
			// not reach the containers' own addresses anyway.
			"--no_advertise"}
		// 4222 for the test's connection, 8222 for the server's /healthz.
		req.ExposedPorts = []string{"4222/tcp", "8222/tcp"}
		port := n.port
		req.HostConfigModifier = func(hc *container.HostConfig) {
			// A fixed host port, so that the test's connection finds
			// the node again after a restart.
			hc.PortBindings = network.PortMap{
				network.MustParsePort("4222/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}},
			}
		}
		req.WaitingFor = wait.ForLog("Server is ready").WithStartupTimeout(60 * time.Second)
	case "dispatcher":
		req.Image = dispatcherImage
		req.Cmd = append(common, "-replicas", "3", "-orchestrator-ack-wait", ackWait, "-activity-ack-wait", ackWait)
	case "worker":
		req.Image = workerImage
		req.Cmd = append(common, "-concurrency", workerConcurrency, "-activity-concurrency", activityConcurrency, "-drain-timeout", "10s")
	case "api":
		req.Image = apiImage
		req.Cmd = append(common, "-http", "0.0.0.0:8080")
		req.ExposedPorts = []string{"8080/tcp"}
	}
	if n.kind != "nats" {
		req.ExposedPorts = append(req.ExposedPorts, "8081/tcp")
		req.WaitingFor = wait.ForHTTP("/readyz").WithPort("8081/tcp").
			WithPollInterval(200 * time.Millisecond).WithStartupTimeout(90 * time.Second)
	}
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if dc, ok := c.(*testcontainers.DockerContainer); ok && dc != nil {
		n.c = dc
	}
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	n.starts = 1
	return nil
}

func (tp *topology) all() []*node {
	out := append([]*node{}, tp.nats...)
	out = append(out, tp.dispatchers...)
	out = append(out, tp.workers...)
	if tp.api != nil {
		out = append(out, tp.api)
	}
	return out
}

func (tp *topology) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if tp.nc != nil {
		tp.nc.Close()
	}
	// Unpause anything paused, or it cannot be removed.
	for _, n := range tp.all() {
		if n.c != nil {
			_, _ = tp.docker.ContainerUnpause(ctx, n.c.GetContainerID(), client.ContainerUnpauseOptions{})
		}
	}
	_ = parallel(tp.all(), func(n *node) error {
		if n.c == nil {
			return nil
		}
		return n.c.Terminate(ctx, testcontainers.StopTimeout(0))
	})
	if tp.net != nil {
		_ = tp.net.Remove(ctx)
	}
	if tp.docker != nil {
		tp.docker.Close()
	}
}

// kill sends SIGKILL to n and waits until it has exited.
func (tp *topology) kill(ctx context.Context, n *node) error {
	if _, err := tp.docker.ContainerKill(ctx, n.c.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kill %s: %w", n.name, err)
	}
	st, err := tp.waitExited(ctx, n)
	if err != nil {
		return err
	}
	if st.ExitCode != 137 {
		return fmt.Errorf("%s exited with %d after SIGKILL, want 137", n.name, st.ExitCode)
	}
	return nil
}

func (tp *topology) waitExited(ctx context.Context, n *node) (*container.State, error) {
	for {
		st, err := n.c.State(ctx)
		if err != nil {
			return nil, err
		}
		if !st.Running {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s still running: %w", n.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// terminate stops n with SIGTERM, waits up to grace for it to exit on its
// own, and returns its exit code.
func (tp *topology) terminate(ctx context.Context, n *node, grace time.Duration) (int, error) {
	if err := n.c.Stop(ctx, &grace); err != nil {
		return 0, fmt.Errorf("stop %s: %w", n.name, err)
	}
	st, err := tp.waitExited(ctx, n)
	if err != nil {
		return 0, err
	}
	return st.ExitCode, nil
}

// start starts a stopped n again and waits until it is ready: the jetflow
// processes' /readyz, or the NATS node's new "Server is ready" line.
func (tp *topology) start(ctx context.Context, n *node) error {
	if err := n.c.Start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.starts++
	if n.kind == "nats" {
		return retry(ctx, 200*time.Millisecond, func(ctx context.Context) error {
			c, err := tp.logCount(ctx, n, "Server is ready")
			if err == nil && c < n.starts {
				err = fmt.Errorf("%s: %d of %d \"Server is ready\" lines", n.name, c, n.starts)
			}
			return err
		})
	}
	return nil
}

func (tp *topology) pause(ctx context.Context, n *node) error {
	_, err := tp.docker.ContainerPause(ctx, n.c.GetContainerID(), client.ContainerPauseOptions{})
	return err
}

func (tp *topology) unpause(ctx context.Context, n *node) error {
	_, err := tp.docker.ContainerUnpause(ctx, n.c.GetContainerID(), client.ContainerUnpauseOptions{})
	return err
}

// disconnect cuts n off the network: from the other nodes, the jetflow
// processes and the host alike.
func (tp *topology) disconnect(ctx context.Context, n *node) error {
	_, err := tp.docker.NetworkDisconnect(ctx, tp.net.ID, client.NetworkDisconnectOptions{Container: n.c.GetContainerID(), Force: true})
	return err
}

// connect attaches n to the network again, under its alias.
func (tp *topology) connect(ctx context.Context, n *node) error {
	_, err := tp.docker.NetworkConnect(ctx, tp.net.ID, client.NetworkConnectOptions{
		Container:      n.c.GetContainerID(),
		EndpointConfig: &network.EndpointSettings{Aliases: []string{n.name}},
	})
	return err
}

func (tp *topology) logs(ctx context.Context, n *node) ([]byte, error) {
	r, err := n.c.Logs(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (tp *topology) logCount(ctx context.Context, n *node, s string) (int, error) {
	b, err := tp.logs(ctx, n)
	if err != nil {
		return 0, err
	}
	return bytes.Count(b, []byte(s)), nil
}

// dumpLogs logs the last lines of every container's output.
func (tp *topology) dumpLogs(t *testing.T, lines int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range tp.all() {
		if n.c == nil {
			continue
		}
		b, err := tp.logs(ctx, n)
		if err != nil {
			t.Logf("%s logs: %v", n.name, err)
			continue
		}
		var all []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			all = append(all, sc.Text())
		}
		if len(all) > lines {
			all = all[len(all)-lines:]
		}
		t.Logf("---- %s (last %d lines)\n%s", n.name, len(all), strings.Join(all, "\n"))
	}
}

// jetflowStreams are every stream jetflow keeps, buckets included.
var jetflowStreams = []string{
	messages.OrchestratorStream, messages.ActivityStream, messages.DelayStream,
	"KV_" + messages.HistoryBucket, "KV_" + messages.StatusBucket, "KV_" + messages.RegistryBucket,
}

var jetflowConsumers = map[string]string{
	jetstore.OrchestratorConsumer: messages.OrchestratorStream,
	jetstore.ActivityConsumer:     messages.ActivityStream,
	jetstore.DelayConsumer:        messages.DelayStream,
}

func clusterOK(c *jetstream.ClusterInfo, what string) error {
	if c == nil || c.Leader == "" {
		return fmt.Errorf("%s has no leader", what)
	}
	if len(c.Replicas) != 2 {
		return fmt.Errorf("%s has %d followers, want 2", what, len(c.Replicas))
	}
	for _, r := range c.Replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("%s: replica %s not current (offline %v, lag %d)", what, r.Name, r.Offline, r.Lag)
		}
	}
	return nil
}

// health reports the first thing wrong with the topology: a container not
// running, a stream, bucket or consumer without a leader or with a
// replica behind, or a jetflow process not ready.
func (tp *topology) health(ctx context.Context) error {
	for _, n := range tp.all() {
		st, err := n.c.State(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		if !st.Running || st.Paused {
			return fmt.Errorf("%s is %s", n.name, st.Status)
		}
	}
	// Each server's own verdict: JetStream current with the meta leader,
	// and every stream and consumer replica it holds caught up. A node
	// that has just restarted may answer clients long before that, and a
	// second fault meanwhile would be two at once.
	for _, n := range tp.nats {
		p, err := n.c.MappedPort(ctx, "8222/tcp")
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		if err := httpOK(ctx, fmt.Sprintf("http://127.0.0.1:%s/healthz", p.Port())); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
	}
	// Every stream of the account: jetflow's work streams and buckets,
	// whatever their number.
	names := tp.js.StreamNames(ctx)
	var streams []string
	for name := range names.Name() {
		streams = append(streams, name)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	for _, name := range jetflowStreams {
		if !slices.Contains(streams, name) {
			return fmt.Errorf("stream %s missing", name)
		}
	}
	for _, name := range streams {
		s, err := tp.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		if info.Config.Replicas != 3 {
			return fmt.Errorf("stream %s has %d replicas, want 3", name, info.Config.Replicas)
		}
		if err := clusterOK(info.Cluster, "stream "+name); err != nil {
			return err
		}
	}
	for cons, stream := range jetflowConsumers {
		c, err := tp.js.Consumer(ctx, stream, cons)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", cons, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer %s: %w", cons, err)
		}
		if err := clusterOK(info.Cluster, "consumer "+cons); err != nil {
			return err
		}
	}
	for _, n := range tp.all() {
		if n.kind == "nats" {
			continue
		}
		p, err := n.c.MappedPort(ctx, "8081/tcp")
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		if err := httpOK(ctx, fmt.Sprintf("http://127.0.0.1:%s/readyz", p.Port())); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
	}
	return nil
}

// waitHealthy waits until the topology is healthy twice in a row, two
// seconds apart: a node just unpaused may still believe itself leader of
// streams it lost, and answer for a moment as if all were well.
func (tp *topology) waitHealthy(ctx context.Context) error {
	var since time.Time
	return retry(ctx, 500*time.Millisecond, func(ctx context.Context) error {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := tp.health(c); err != nil {
			since = time.Time{}
			return err
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) < 2*time.Second {
			return errors.New("healthy, not yet for 2 s")
		}
		return nil
	})
}

// requireHealthy fails t unless the topology becomes healthy within d.
func (tp *topology) requireHealthy(t *testing.T, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	if err := tp.waitHealthy(ctx); err != nil {
		tp.dumpLogs(t, 30)
		t.Fatalf("topology not healthy after %s: %v", d, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Logf("healthy again after %s", took.Round(100*time.Millisecond))
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, res.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// retry calls f every interval until it succeeds or ctx ends, and then
// returns f's last error. Each call gets at most 10 s, so that a request
// lost in a fault does not use up the whole wait.
func retry(ctx context.Context, interval time.Duration, f func(ctx context.Context) error) error {
	for {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(c)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", err, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// streamLeader returns the name of the node leading a stream.
func (tp *topology) streamLeader(ctx context.Context, stream string) (*node, error) {
	var leader string
	err := retry(ctx, 250*time.Millisecond, func(ctx context.Context) error {
		s, err := tp.js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("stream %s has no leader", stream)
		}
		leader = info.Cluster.Leader
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range tp.nats {
		if n.name == leader {
			return n, nil
		}
	}
	return nil, fmt.Errorf("stream %s led by unknown server %q", stream, leader)
}
