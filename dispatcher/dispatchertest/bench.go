package dispatchertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// Load is what Benchmark emits.
type Load struct {
	// Event returns the i-th event of the run (0 <= i < b.N): its Topic,
	// Key and Payload, as given to EmitEvent. Required. With several
	// producers it is called concurrently.
	Event func(i int) dispatcher.Event
	// Producers is how many goroutines emit the events, each a share of
	// them. Default 1.
	Producers int
}

// Benchmark runs d under Run, emits b.N events from load, waits until
// every one of them is finished (each subscriber delivered it, retries
// included, or it failed), and shuts d down. Besides the usual ns/op it
// reports:
//
//   - events/s: b.N over the time from the first emit to the last event
//     finished;
//   - p50-ns and p99-ns: the median and 99th percentile latency of an
//     event, from its EmitEvent call to its OnDone, so a blocked emit's
//     wait for room counts;
//   - failed/op: the fraction of the events that were not handled: an
//     event dead-lettered or dropped (OnDone got an error), or refused by
//     the overflow policy (EmitEvent returned ErrFull or ErrDropped).
//
// Any other EmitEvent error (d closed, the benchmark's context ended)
// fails the benchmark. Each event carries an OnDone and two time.Now
// calls: the same cost in every configuration, but a part of what is
// measured.
//
// d is the dispatcher to measure, with its subscriptions, fresh for each
// call (the benchmark function runs more than once with growing b.N),
// never Run before; Benchmark stops it. Run it for each configuration to
// compare (workers, capacity, overflow policy) in b.Run sub-benchmarks,
// and compare the runs with benchstat:
//
//	go test -run '^$' -bench Pipeline -count 10 | tee new.txt
//	benchstat -col /workers new.txt
func Benchmark(b *testing.B, d *dispatcher.Dispatcher, load Load) {
	b.Helper()
	benchmark(b, b.N, d, load)
}

// benchB is the part of *testing.B that benchmark uses, so that the
// package's tests can see its failures and metrics.
type benchB interface {
	TB
	ResetTimer()
	StopTimer()
	ReportMetric(n float64, unit string)
}

func benchmark(b benchB, n int, d *dispatcher.Dispatcher, load Load) {
	b.Helper()
	if load.Event == nil {
		b.Fatalf("dispatchertest: Benchmark: Load.Event is nil")
		return
	}
	producers := max(load.Producers, 1)
	ctx := b.Context()

	// latency[i] is written once, by event i's OnDone (or by its producer
	// when the emit failed), before that event's left.Add(-1); the
	// reader waits for finished, closed by the last Add.
	latency := make([]time.Duration, n)
	var left atomic.Int64
	left.Store(int64(n))
	finished := make(chan struct{})
	if n == 0 {
		close(finished)
	}
	var (
		failed atomic.Int64 // events not handled
		mu     sync.Mutex
		broken int   // emits that failed for another reason than the overflow policy
		first  error // the first of those
	)
	finish := func(i int, took time.Duration, err error) {
		latency[i] = took
		switch {
		case err == nil:
		case took >= 0 || errors.Is(err, dispatcher.ErrFull) || errors.Is(err, dispatcher.ErrDropped):
			failed.Add(1)
		default:
			mu.Lock()
			if broken++; broken == 1 {
				first = err
			}
			mu.Unlock()
		}
		if left.Add(-1) == 0 {
			close(finished)
		}
	}

	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(context.WithoutCancel(ctx)) }()

	b.ResetTimer()
	start := time.Now()
	var producing sync.WaitGroup
	for p := range producers {
		producing.Go(func() {
			for i := p; i < n; i += producers {
				emitted := time.Now()
				done := dispatcher.OnDone(func(err error) { finish(i, time.Since(emitted), err) })
				if err := d.EmitEvent(ctx, load.Event(i), done); err != nil {
					finish(i, -1, fmt.Errorf("EmitEvent: %w", err)) // -1: no latency
				}
			}
		})
	}
	producing.Wait()
	<-finished
	elapsed := time.Since(start)
	b.StopTimer()

	if err := d.Shutdown(ctx); err != nil {
		b.Errorf("dispatchertest: Benchmark: Shutdown error = %v", err)
	}
	if err := <-runErr; err != nil {
		b.Errorf("dispatchertest: Benchmark: Run error = %v", err)
	}
	if broken > 0 {
		b.Errorf("dispatchertest: Benchmark: %d of %d emits failed; the first: %v", broken, n, first)
	}
	if n == 0 {
		return
	}
	latency = slices.DeleteFunc(latency, func(l time.Duration) bool { return l < 0 })
	slices.Sort(latency)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(failed.Load())/float64(n), "failed/op")
	if len(latency) > 0 {
		b.ReportMetric(float64(percentile(latency, 50)), "p50-ns")
		b.ReportMetric(float64(percentile(latency, 99)), "p99-ns")
	}
}

// percentile returns the p-th percentile of sorted (not empty), by the
// nearest-rank method: the smallest value with at least p% of the values
// at or below it.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (len(sorted)*p + 99) / 100 // ceil(len * p / 100)
	return sorted[max(rank, 1)-1]
}
