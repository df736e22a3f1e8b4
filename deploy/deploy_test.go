// Package deploy checks the deployment files in this directory: the
// Kubernetes manifests, the NATS Helm values, the compose file and the
// Dockerfiles. It parses them and checks what a typo would break; the
// images and the compose file run for real in test/integration/cluster.
package deploy

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/jetflow/jetflow/pkg/host"
	"github.com/jetflow/jetflow/pkg/worker"
)

// object is the part of a Kubernetes object the checks read.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
	file string
}

type deploymentSpec struct {
	Replicas *int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			Containers []container `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Port       int `yaml:"port"`
		TargetPort any `yaml:"targetPort"`
	} `yaml:"ports"`
}

type hpaSpec struct {
	ScaleTargetRef struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Name       string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	MinReplicas int `yaml:"minReplicas"`
	MaxReplicas int `yaml:"maxReplicas"`
	Metrics     []struct {
		Type     string `yaml:"type"`
		Resource struct {
			Name   string `yaml:"name"`
			Target struct {
				Type               string `yaml:"type"`
				AverageUtilization int    `yaml:"averageUtilization"`
			} `yaml:"target"`
		} `yaml:"resource"`
	} `yaml:"metrics"`
}

// manifests decodes every object of every manifest in deploy/kubernetes
// (the Helm values and the kustomization excepted).
func manifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	for _, f := range files {
		if base := filepath.Base(f); base == "nats-values.yaml" || base == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" {
				continue // an empty document
			}
			o.file = filepath.Base(f)
			objs = append(objs, o)
		}
	}
	return objs
}

func decodeSpec(t *testing.T, o object, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s %s/%s: spec: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
}

// natsService is the client Service the NATS Helm chart creates for the
// release name "nats", which nats-values.yaml documents.
const natsService = "nats://nats:4222"

func TestKubernetesManifests(t *testing.T) {
	objs := manifests(t)
	want := map[string]string{ // kind/name -> apiVersion
		"Deployment/jetflow-dispatcher":          "apps/v1",
		"Deployment/jetflow-worker":              "apps/v1",
		"Deployment/jetflow-api":                 "apps/v1",
		"Service/jetflow-api":                    "v1",
		"HorizontalPodAutoscaler/jetflow-worker": "autoscaling/v2",
	}
	got := map[string]object{}
	for _, o := range objs {
		key := o.Kind + "/" + o.Metadata.Name
		if _, dup := got[key]; dup {
			t.Errorf("%s defined twice", key)
		}
		got[key] = o
		if api, ok := want[key]; !ok {
			t.Errorf("%s: unexpected object %s", o.file, key)
		} else if o.APIVersion != api {
			t.Errorf("%s: %s has apiVersion %q, want %q", o.file, key, o.APIVersion, api)
		}
	}
	for key := range want {
		if _, ok := got[key]; !ok {
			t.Errorf("no %s in deploy/kubernetes", key)
		}
	}

	deployments := map[string]deploymentSpec{}
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		var d deploymentSpec
		decodeSpec(t, o, &d)
		deployments[o.Metadata.Name] = d
		name := o.Metadata.Name
		if len(d.Selector.MatchLabels) == 0 {
			t.Errorf("%s: no selector", name)
		}
		for k, v := range d.Selector.MatchLabels {
			if d.Template.Metadata.Labels[k] != v {
				t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", name, k, v, d.Template.Metadata.Labels)
			}
		}
		if len(d.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", name, len(d.Template.Spec.Containers))
		}
		c := d.Template.Spec.Containers[0]
		binary := strings.TrimPrefix(name, "jetflow-")
		if !strings.HasPrefix(c.Image, "jetflow/"+binary+":") {
			t.Errorf("%s: image %q, want jetflow/%s:<tag>", name, c.Image, binary)
		}
		args := parseArgs(c.Args)
		if args["server"] != natsService {
			t.Errorf("%s: --server=%q, want the NATS Helm release's Service %s", name, args["server"], natsService)
		}
		if u, err := url.Parse(args["server"]); err != nil || u.Hostname() != "nats" || u.Port() != "4222" {
			t.Errorf("%s: --server=%q does not name the nats Service on port 4222", name, args["server"])
		}
		admin := args["admin"]
		if admin != ":8081" {
			t.Errorf("%s: -admin=%q, want :8081", name, admin)
		}
		ports := map[string]int{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["admin"] != 8081 {
			t.Errorf("%s: container port \"admin\" is %d, want 8081 (the -admin address)", name, ports["admin"])
		}
		checkProbe(t, name, "readiness", c.ReadinessProbe, "/readyz", ports)
		checkProbe(t, name, "liveness", c.LivenessProbe, "/healthz", ports)
		if c.Resources.Requests["cpu"] == "" {
			t.Errorf("%s: no CPU request (the autoscaler's utilization is relative to it)", name)
		}
		switch binary {
		case "dispatcher":
			if args["replicas"] != "3" {
				t.Errorf("dispatcher: -replicas=%q, want 3 (every stream and bucket at R3)", args["replicas"])
			}
		case "api":
			if ports["http"] != 8080 || args["http"] != "0.0.0.0:8080" {
				t.Errorf("api: container port http %d and -http=%q, want 8080 and 0.0.0.0:8080", ports["http"], args["http"])
			}
		}
		checkFlags(t, binary, c.Args)
	}

	var svc serviceSpec
	decodeSpec(t, got["Service/jetflow-api"], &svc)
	api := deployments["jetflow-api"]
	for k, v := range svc.Selector {
		if api.Template.Metadata.Labels[k] != v {
			t.Errorf("Service jetflow-api selects %s=%s, which the api's pods do not carry", k, v)
		}
	}
	if len(svc.Selector) == 0 || len(svc.Ports) != 1 || svc.Ports[0].TargetPort != "http" {
		t.Errorf("Service jetflow-api: selector %v ports %+v, want one port to the api's \"http\" port", svc.Selector, svc.Ports)
	}

	var hpa hpaSpec
	decodeSpec(t, got["HorizontalPodAutoscaler/jetflow-worker"], &hpa)
	ref := hpa.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != "jetflow-worker" {
		t.Errorf("HPA targets %s %s/%s, want apps/v1 Deployment/jetflow-worker", ref.APIVersion, ref.Kind, ref.Name)
	}
	if hpa.MinReplicas < 1 || hpa.MaxReplicas < hpa.MinReplicas {
		t.Errorf("HPA replicas %d..%d", hpa.MinReplicas, hpa.MaxReplicas)
	}
	if len(hpa.Metrics) != 1 || hpa.Metrics[0].Type != "Resource" || hpa.Metrics[0].Resource.Name != "cpu" ||
		hpa.Metrics[0].Resource.Target.Type != "Utilization" || hpa.Metrics[0].Resource.Target.AverageUtilization <= 0 {
		t.Errorf("HPA metrics %+v, want CPU utilization", hpa.Metrics)
	}
}

func checkProbe(t *testing.T, name, kind string, p *probe, path string, ports map[string]int) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: no %s probe with httpGet", name, kind)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: %s probe on %q, want %s", name, kind, p.HTTPGet.Path, path)
	}
	switch port := p.HTTPGet.Port.(type) {
	case string:
		if ports[port] != 8081 {
			t.Errorf("%s: %s probe on port %q, which is not the admin port 8081", name, kind, port)
		}
	case int:
		if port != 8081 {
			t.Errorf("%s: %s probe on port %d, want the admin port 8081", name, kind, port)
		}
	default:
		t.Errorf("%s: %s probe port %v", name, kind, p.HTTPGet.Port)
	}
}

// parseArgs reads -name=value and --name value arguments.
func parseArgs(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if k, v, ok := strings.Cut(a, "="); ok {
			out[k] = v
		} else if i+1 < len(args) {
			out[a] = args[i+1]
			i++
		}
	}
	return out
}

// checkFlags parses args with the binary's own flag set, so that a flag
// renamed in the code fails here rather than in a pod's crash loop.
func checkFlags(t *testing.T, binary string, args []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing may run: -h ends the parse
	args = append(slices.Clone(args), "-h")
	var err error
	quiet(func() {
		switch binary {
		case "dispatcher":
			err = host.RunDispatcher(ctx, args)
		case "worker":
			err = host.RunWorker(ctx, args, worker.NewRegistry())
		case "api":
			err = host.RunAPI(ctx, args)
		default:
			t.Fatalf("unknown binary %s", binary)
		}
	})
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("%s does not accept the manifest's arguments %q: %v", binary, args[:len(args)-1], err)
	}
}

// quiet runs f with standard error discarded (the flag package prints the
// usage for -h).
func quiet(f func()) {
	old := os.Stderr
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		f()
		return
	}
	os.Stderr = devnull
	defer func() { os.Stderr = old; devnull.Close() }()
	f()
}

func TestKustomization(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("kubernetes", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Resources  []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Errorf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	files, _ := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "nats-values.yaml" && base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest %v", got, want)
	}
}

func TestNATSHelmValues(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("kubernetes", "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled   bool `yaml:"enabled"`
				FileStore struct {
					Enabled bool `yaml:"enabled"`
					PVC     struct {
						Enabled bool   `yaml:"enabled"`
						Size    string `yaml:"size"`
					} `yaml:"pvc"`
				} `yaml:"fileStore"`
				MemoryStore struct {
					Enabled bool `yaml:"enabled"`
				} `yaml:"memoryStore"`
			} `yaml:"jetstream"`
			Merge map[string]any `yaml:"merge"`
		} `yaml:"config"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false)
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("cluster enabled %v with %d replicas, want 3", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	js := c.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "" || js.MemoryStore.Enabled {
		t.Errorf("jetstream %+v, want JetStream on file storage with a PVC, no memory store", js)
	}
	if mp, _ := c.Merge["max_payload"].(string); !strings.HasPrefix(mp, "<<") {
		t.Errorf("config.merge.max_payload = %v, want a unit like << 8MB >>", c.Merge["max_payload"])
	}
}

func TestCompose(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("compose", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil { // resolves the anchors and merge keys
		t.Fatal(err)
	}
	count := map[string]int{}
	for name, s := range f.Services {
		repo, _, _ := strings.Cut(s.Image, ":")
		count[repo]++
		switch repo {
		case "jetflow/nats":
			args := parseArgs(s.Command)
			if args["n"] != name || args["c"] != "/etc/nats/nats.conf" ||
				args["routes"] != "nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222" {
				t.Errorf("%s: command %q", name, s.Command)
			}
			if len(s.Volumes) != 1 || !strings.HasSuffix(s.Volumes[0], ":/data") {
				t.Errorf("%s: volumes %v, want one on /data (JetStream's store_dir)", name, s.Volumes)
			}
		case "jetflow/dispatcher", "jetflow/worker", "jetflow/api":
			if s.Environment["NATS_URL"] != "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222" {
				t.Errorf("%s: NATS_URL %q, want all three nodes", name, s.Environment["NATS_URL"])
			}
			checkFlags(t, strings.TrimPrefix(repo, "jetflow/"), s.Command)
		default:
			t.Errorf("%s: unexpected image %s", name, s.Image)
		}
		if repo == "jetflow/dispatcher" && parseArgs(s.Command)["replicas"] != "3" {
			t.Errorf("%s: command %q, want -replicas 3", name, s.Command)
		}
		if repo == "jetflow/api" && (len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":8080")) {
			t.Errorf("api: ports %v, want its port 8080 published", s.Ports)
		}
	}
	if count["jetflow/nats"] != 3 || count["jetflow/dispatcher"] != 1 || count["jetflow/worker"] != 2 || count["jetflow/api"] != 1 {
		t.Errorf("services by image %v, want 3 NATS nodes, 1 dispatcher, 2 workers and the api", count)
	}
}

func TestDockerfiles(t *testing.T) {
	for _, b := range []string{"dispatcher", "worker", "api"} {
		s := read(t, filepath.Join("docker", "Dockerfile."+b))
		for _, want := range []string{"FROM golang:", " AS build", "CGO_ENABLED=0 go build", "./cmd/" + b, "FROM scratch", "COPY --from=build", `ENTRYPOINT ["/app"]`, "JETFLOW_ADMIN=:8081"} {
			if !strings.Contains(s, want) {
				t.Errorf("Dockerfile.%s lacks %q", b, want)
			}
		}
	}
	s := read(t, filepath.Join("docker", "Dockerfile.prebuilt"))
	for _, want := range []string{"FROM scratch", "ARG BIN", "COPY ${BIN} /app", `ENTRYPOINT ["/app"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile.prebuilt lacks %q", want)
		}
	}
	s = read(t, filepath.Join("docker", "Dockerfile.nats-prebuilt"))
	for _, want := range []string{"FROM scratch", "COPY nats-server /nats-server", "COPY nats.conf /etc/nats/nats.conf", `ENTRYPOINT ["/nats-server"]`} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile.nats-prebuilt lacks %q", want)
		}
	}
	conf := read(t, filepath.Join("docker", "nats.conf"))
	for _, want := range []string{"jetstream", "store_dir: /data", "cluster", "listen: 0.0.0.0:6222", "max_payload"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nats.conf lacks %q", want)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
