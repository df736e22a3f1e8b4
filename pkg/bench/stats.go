package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// summary is the distribution of a set of latencies.
type summary struct {
	n                  int
	p50, p95, p99, max time.Duration
	mean               time.Duration
	sorted             []time.Duration
}

// summarize sorts a copy of d and takes its percentiles (nearest rank).
func summarize(d []time.Duration) summary {
	s := summary{n: len(d)}
	if len(d) == 0 {
		return s
	}
	s.sorted = slices.Clone(d)
	slices.Sort(s.sorted)
	var sum time.Duration
	for _, v := range s.sorted {
		sum += v
	}
	s.mean = sum / time.Duration(len(d))
	s.p50 = percentile(s.sorted, 0.50)
	s.p95 = percentile(s.sorted, 0.95)
	s.p99 = percentile(s.sorted, 0.99)
	s.max = s.sorted[len(s.sorted)-1]
	return s
}

// percentile returns the nearest-rank q-quantile of sorted values.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round3 keeps three decimals, so that the JSON stays readable.
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// recorder collects latencies and errors from many goroutines.
type recorder struct {
	mu     sync.Mutex
	lat    []time.Duration
	errs   int
	first  error
	last   time.Time
	hasEnd bool
}

func (r *recorder) ok(d time.Duration, at time.Time) {
	r.mu.Lock()
	r.lat = append(r.lat, d)
	if !r.hasEnd || at.After(r.last) {
		r.last, r.hasEnd = at, true
	}
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.errs++
	if r.first == nil {
		r.first = err
	}
	r.mu.Unlock()
}
