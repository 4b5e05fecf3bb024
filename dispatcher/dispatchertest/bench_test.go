package dispatchertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

// keyed returns the i-th event of a load over eight keys.
func keyed(i int) dispatcher.Event {
	return dispatcher.Event{Topic: "job", Key: fmt.Sprint("k", i%8), Payload: i}
}

func TestBenchmarkReportsThroughputAndLatency(t *testing.T) {
	const n = 2000
	d := dispatchertest.New(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(64))
	var handled atomic.Int64
	on(t, d, "job", func(context.Context, dispatcher.Event) error {
		handled.Add(1)
		return nil
	})
	fake := dispatchertest.NewFakeTB(t.Context())
	dispatchertest.RunBenchmark(fake, n, d, dispatchertest.Load{Event: keyed, Producers: 3})

	if errs, fatals := fake.Errors(), fake.Fatals(); len(errs)+len(fatals) != 0 {
		t.Fatalf("Benchmark reported %q %q, want nothing", errs, fatals)
	}
	if got := handled.Load(); got != n {
		t.Errorf("handler ran %d times, want %d", got, n)
	}
	if got := fake.TimerCalls(); !slices.Equal(got, []string{"reset", "stop"}) {
		t.Errorf("timer calls = %q, want reset, then stop", got)
	}
	m := fake.Metrics()
	if m["events/s"] <= 0 || m["p50-ns"] <= 0 || m["p50-ns"] > m["p99-ns"] || m["failed/op"] != 0 {
		t.Errorf("metrics = %v, want events/s > 0, 0 < p50-ns <= p99-ns, failed/op 0", m)
	}
	if err := d.Emit(t.Context(), "job", 0); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Emit() after Benchmark error = %v, want ErrClosed: Benchmark shuts the dispatcher down", err)
	}
}

func TestBenchmarkReportsWhatWasNotHandled(t *testing.T) {
	t.Run("dead letters count, a broken load fails", func(t *testing.T) {
		d := dispatchertest.New(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(1024))
		on(t, d, "job", func(_ context.Context, e dispatcher.Event) error {
			if e.Payload.(int)%10 == 0 {
				return errors.New("every tenth fails")
			}
			return nil
		})
		fake := dispatchertest.NewFakeTB(t.Context())
		// Events 0..99 carry their index; 100 more go to a bad topic,
		// which Emit refuses with ErrBadTopic: a broken load.
		dispatchertest.RunBenchmark(fake, 200, d, dispatchertest.Load{Event: func(i int) dispatcher.Event {
			if i >= 100 {
				return dispatcher.Event{Topic: "bad topic"}
			}
			return keyed(i)
		}})
		if got := fake.Metrics()["failed/op"]; got != 0.05 {
			t.Errorf("failed/op = %v, want 0.05 (10 of 200 events dead-lettered)", got)
		}
		if errs := fake.Errors(); len(errs) != 1 || !strings.Contains(errs[0], "100 of 200 emits failed") || !strings.Contains(errs[0], dispatcher.ErrBadTopic.Error()) {
			t.Errorf("Benchmark reported %q, want 100 of 200 emits failed with ErrBadTopic", errs)
		}
	})
	t.Run("a closed dispatcher fails", func(t *testing.T) {
		d := dispatchertest.New(t)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		fake := dispatchertest.NewFakeTB(t.Context())
		dispatchertest.RunBenchmark(fake, 10, d, dispatchertest.Load{Event: keyed})
		errs := strings.Join(fake.Errors(), "\n")
		if !strings.Contains(errs, "10 of 10 emits failed") || !strings.Contains(errs, "EmitEvent: "+dispatcher.ErrClosed.Error()) {
			t.Errorf("Benchmark of a closed dispatcher reported %q, want every EmitEvent failed with ErrClosed", errs)
		}
		if _, ok := fake.Metrics()["p50-ns"]; ok {
			t.Errorf("Benchmark reported a latency with no event handled: %v", fake.Metrics())
		}
	})
	t.Run("no load", func(t *testing.T) {
		d := dispatchertest.New(t)
		fake := dispatchertest.NewFakeTB(t.Context())
		dispatchertest.RunBenchmark(fake, 10, d, dispatchertest.Load{})
		if f := fake.Fatals(); len(f) != 1 || !strings.Contains(f[0], "Load.Event is nil") {
			t.Errorf("Benchmark without Load.Event reported %q, want a Fatalf", f)
		}
	})
}

func TestPercentile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		give []time.Duration
		p    int
		want time.Duration
	}{
		{give: ms(7), p: 50, want: 7 * time.Millisecond},
		{give: ms(7), p: 99, want: 7 * time.Millisecond},
		{give: ms(1, 2, 3, 4), p: 50, want: 2 * time.Millisecond},
		{give: ms(1, 2, 3, 4, 5), p: 50, want: 3 * time.Millisecond},
		{give: ms(1, 2, 3, 4, 5), p: 99, want: 5 * time.Millisecond},
		{give: ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), p: 10, want: 1 * time.Millisecond},
		{give: ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), p: 11, want: 2 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := dispatchertest.Percentile(tt.give, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %d) = %v, want %v", tt.give, tt.p, got, tt.want)
		}
	}
}

// TestBenchmarkWithTestingB runs Benchmark the way go test -bench does,
// with a real *testing.B, and checks the metrics it leaves in the result.
func TestBenchmarkWithTestingB(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a benchmark for -test.benchtime")
	}
	res := testing.Benchmark(func(b *testing.B) {
		d, err := dispatcher.New(dispatcher.WithWorkers(2))
		if err != nil {
			b.Fatal(err)
		}
		d.On("job", func(context.Context, dispatcher.Event) error { return nil })
		dispatchertest.Benchmark(b, d, dispatchertest.Load{Event: keyed})
	})
	if res.N == 0 {
		t.Fatalf("testing.Benchmark result %+v: the benchmark failed", res)
	}
	for _, unit := range []string{"events/s", "p50-ns", "p99-ns"} {
		if res.Extra[unit] <= 0 {
			t.Errorf("metric %s = %v, want > 0 (all: %v)", unit, res.Extra[unit], res.Extra)
		}
	}
}

// BenchmarkWorkers shows Benchmark tuning the number of workers: run it
// with go test -run '^$' -bench Workers -count 10 and compare with
// benchstat.
func BenchmarkWorkers(b *testing.B) {
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			d, err := dispatcher.New(dispatcher.WithWorkers(workers), dispatcher.WithCapacity(1024))
			if err != nil {
				b.Fatal(err)
			}
			d.On("job", func(context.Context, dispatcher.Event) error { return nil })
			dispatchertest.Benchmark(b, d, dispatchertest.Load{Event: keyed, Producers: 2})
		})
	}
}
