package jetstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetflow/jetflow/pkg/jetstore"
	"github.com/jetflow/jetflow/pkg/messages"
)

// fill stores n instances, the last running of them Running and the others
// Completed, written by 32 writers at once through the Store.
func fill(b *testing.B, s *jetstore.Store, n, running int) {
	b.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				rs := messages.StatusCompleted
				if i >= n-running {
					rs = messages.StatusRunning
				}
				st := record(fmt.Sprintf("bench-%06d", i), rs, t0.Add(time.Duration(i)*time.Millisecond), `{"step":1}`)
				if _, err := s.CreateStatus(ctx, st, 0); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkListFirstPageRunning lists the first page of 100 Running
// instances among 100,000 stored, 90,000 of them Completed and stored
// before every Running one, on memory and on file storage. (With a single
// index bucket keyed <status>.<instance>, the memory store answered in
// 35-100 ms: it serves a wildcard filter over many subjects by scanning
// every message. Each status has its own bucket for that reason.)
func BenchmarkListFirstPageRunning(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  jetstore.Config
	}{{"memory", testConfig}, {"file", jetstore.Config{}}} {
		b.Run(c.name, func(b *testing.B) {
			s, _ := openWith(b, c.cfg)
			start := time.Now()
			fill(b, s, 100_000, 10_000)
			b.Logf("stored 100,000 instances in %v", time.Since(start).Round(time.Millisecond))
			ctx := context.Background()
			f := jetstore.ListFilter{Statuses: []messages.RuntimeStatus{messages.StatusRunning}}
			for b.Loop() {
				page, next, err := s.List(ctx, f, 100, "")
				if err != nil || len(page) != 100 || next == "" {
					b.Fatalf("%d records, next %q, %v", len(page), next, err)
				}
			}
		})
	}
}
