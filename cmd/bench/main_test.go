package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/bench"
)

func TestMain(m *testing.M) {
	if bench.IsChild() {
		os.Exit(bench.ChildMain())
	}
	os.Exit(m.Run())
}

// TestRunWritesOutputs runs the command on tiny settings and checks the
// files it writes. Speed is not checked.
func TestRunWritesOutputs(t *testing.T) {
	dir := t.TempDir()
	jsonPath, mdPath, svgPath, cpuPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.md"), filepath.Join(dir, "r.svg"), filepath.Join(dir, "cpu.out")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-workloads", "hello,fanout", "-warmup", "2", "-hello-concurrency", "1,4", "-hello-count", "8",
		"-fanout", "20", "-fanout-runs", "1", "-out", jsonPath, "-md", mdPath, "-svg", svgPath, "-cpuprofile", cpuPath, "-q"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var rep bench.Report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results JSON: %v", err)
	}
	if len(rep.Results) != 3 || rep.Results[0].Workload != "hello" || rep.Results[0].Count != 8 || rep.Results[2].Workload != "fanout" || rep.Results[2].Count != 20 {
		t.Errorf("results %+v", rep.Results)
	}
	md, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, stdout.Bytes()) || !strings.Contains(string(md), "| hello | c=4 |") {
		t.Errorf("markdown file and stdout differ or lack the hello row:\n%s\n---\n%s", md, stdout.String())
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(svg), "<svg") || strings.Count(string(svg), "<polyline") != 2 {
		t.Errorf("svg: %.300s", svg)
	}
	if fi, err := os.Stat(cpuPath); err != nil || fi.Size() == 0 {
		t.Errorf("cpu profile: %v", err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-workloads", "nope"},
		{"-hello-concurrency", "1,x"},
		{"-server", "nats://127.0.0.1:1", "-sync-always"},
		{"-memory-cleanup", "maybe"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), append(args, "-q"), &stdout, &stderr); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
