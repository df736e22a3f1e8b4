package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is one measurement: one workload at one setting.
type Result struct {
	// Workload is one of Workloads; Case tells the setting apart, e.g. "c=100".
	Workload string `json:"workload"`
	Case     string `json:"case"`
	// Durability is the NATS server's sync setting.
	Durability string `json:"durability"`
	// Workers is the number of workers (0: external, not known);
	// Concurrency the clients or orchestrations in flight (0 when it does
	// not apply).
	Workers     int `json:"workers"`
	Concurrency int `json:"concurrency"`
	// DurationS is how long the measured part took, in seconds.
	DurationS float64 `json:"duration_s"`
	// Count is how many items were measured (LatencyOf says which), Errors
	// how many failed.
	Count  int `json:"count"`
	Errors int `json:"errors"`
	// Throughput is Count per second of DurationS, in ThroughputUnit.
	Throughput     float64 `json:"throughput"`
	ThroughputUnit string  `json:"throughput_unit"`
	// LatencyOf says what the latencies measure.
	LatencyOf string  `json:"latency_of"`
	P50Ms     float64 `json:"p50_ms"`
	P95Ms     float64 `json:"p95_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	MeanMs    float64 `json:"mean_ms"`
	// Metrics are workload-specific figures, named with their unit.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	Notes   []string           `json:"notes,omitempty"`

	// lat are the raw latencies, kept for the plot.
	lat []time.Duration
}

// setLatencies fills the latency fields from d.
func (r *Result) setLatencies(d []time.Duration) {
	s := summarize(d)
	r.lat = s.sorted
	r.P50Ms, r.P95Ms, r.P99Ms = round3(ms(s.p50)), round3(ms(s.p95)), round3(ms(s.p99))
	r.MaxMs, r.MeanMs = round3(ms(s.max)), round3(ms(s.mean))
}

// setRate fills DurationS and Throughput from Count and d.
func (r *Result) setRate(d time.Duration, unit string) {
	r.DurationS = round3(d.Seconds())
	r.ThroughputUnit = unit
	if d > 0 {
		r.Throughput = round3(float64(r.Count) / d.Seconds())
	}
}

func (r *Result) metric(name string, v float64) {
	if r.Metrics == nil {
		r.Metrics = map[string]float64{}
	}
	r.Metrics[name] = round3(v)
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Meta describes the run: the machine and the settings.
type Meta struct {
	StartedAt           time.Time `json:"started_at"`
	GoVersion           string    `json:"go_version"`
	GOOS                string    `json:"goos"`
	GOARCH              string    `json:"goarch"`
	NumCPU              int       `json:"num_cpu"`
	GOMAXPROCS          int       `json:"gomaxprocs"`
	CPUModel            string    `json:"cpu_model,omitempty"`
	NATSServer          string    `json:"nats_server"`
	NATSVersion         string    `json:"nats_version"`
	Embedded            bool      `json:"embedded"`
	Storage             string    `json:"storage"`
	Durability          string    `json:"durability"`
	Workers             int       `json:"workers"`
	WorkerConcurrency   int       `json:"worker_concurrency"`
	ActivityConcurrency int       `json:"activity_concurrency"`
	External            bool      `json:"external"`
	Workloads           []string  `json:"workloads"`
	TotalS              float64   `json:"total_s"`
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's one-minute load
	// (all processes on the machine, not only the bench) at the start and
	// the end: on a shared machine, they say how noisy the run was.
	LoadAvgStart float64 `json:"loadavg_start,omitempty"`
	LoadAvgEnd   float64 `json:"loadavg_end,omitempty"`
}

// Report is everything a run measured.
type Report struct {
	Meta    Meta     `json:"meta"`
	Results []Result `json:"results"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the settings and a table of the results.
func (r *Report) WriteMarkdown(w io.Writer) error {
	m := r.Meta
	var b strings.Builder
	fmt.Fprintf(&b, "jetflow bench, %s: %s/%s, %d CPU (GOMAXPROCS %d)", m.StartedAt.Format(time.RFC3339), m.GOOS, m.GOARCH, m.NumCPU, m.GOMAXPROCS)
	if m.CPUModel != "" {
		fmt.Fprintf(&b, ", %s", m.CPUModel)
	}
	fmt.Fprintf(&b, ", %s.\n", m.GoVersion)
	where := "NATS " + m.NATSVersion + " (" + m.NATSServer + ")"
	if !m.Embedded {
		where = "NATS " + m.NATSVersion + " at " + m.NATSServer
	}
	fmt.Fprintf(&b, "Server: %s, %s storage, sync: %s. ", where, m.Storage, m.Durability)
	if m.External {
		b.WriteString("Dispatcher and workers: external (not started by the bench)")
	} else {
		fmt.Fprintf(&b, "Workers: %d in-process (episode concurrency %d, activity concurrency %d each), one dispatcher", m.Workers, m.WorkerConcurrency, m.ActivityConcurrency)
	}
	fmt.Fprintf(&b, ". Total %.0f s", m.TotalS)
	if m.LoadAvgStart > 0 || m.LoadAvgEnd > 0 {
		fmt.Fprintf(&b, "; machine load average %.2f at the start, %.2f at the end", m.LoadAvgStart, m.LoadAvgEnd)
	}
	b.WriteString(".\n\n")
	b.WriteString("| workload | case | sync | workers | conc. | duration s | count | err | throughput | p50 ms | p95 ms | p99 ms | details |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, res := range r.Results {
		workers := "ext."
		if res.Workers > 0 {
			workers = strconv.Itoa(res.Workers)
		}
		conc := "-"
		if res.Concurrency > 0 {
			conc = strconv.Itoa(res.Concurrency)
		}
		tp := "-"
		if res.Throughput > 0 {
			tp = fmt.Sprintf("%s %s", num(res.Throughput), res.ThroughputUnit)
		}
		lat := func(v float64) string {
			if res.LatencyOf == "" || res.Count == 0 {
				return "-"
			}
			return num(v)
		}
		var details []string
		if res.LatencyOf != "" {
			details = append(details, "latency: "+res.LatencyOf)
		}
		for _, k := range slices.Sorted(maps.Keys(res.Metrics)) {
			details = append(details, k+"="+num(res.Metrics[k]))
		}
		details = append(details, res.Notes...)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %d | %s | %s | %s | %s | %s |\n",
			res.Workload, cell(res.Case), shortDurability(res.Durability), workers, conc, num(res.DurationS),
			res.Count, res.Errors, tp, lat(res.P50Ms), lat(res.P95Ms), lat(res.P99Ms), cell(strings.Join(details, "; ")))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// num prints a figure with as many decimals as it deserves.
func num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 100 || a == float64(int64(a)):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func shortDurability(d string) string {
	if i := strings.IndexByte(d, ' '); i > 0 {
		return d[:i]
	}
	return d
}
