package dispatcher

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
)

// rtCPUTime returns the CPU time (user + system) the process has used.
func rtCPUTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rtWaitParked waits until n workers of d are parked. The sleepers count
// is internal; there is no public way to ask whether a worker sleeps.
func rtWaitParked(t *testing.T, d *Dispatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(rtTimeout)
	for d.sleepers.Load() != int32(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers parked after %v", d.sleepers.Load(), n, rtTimeout)
		}
		runtime.Gosched()
	}
}

// TestIdleRunUsesNoCPU: a running dispatcher with nothing to do parks its
// workers and uses (next to) no CPU. This is the one test that measures
// real time: one idle second.
func TestIdleRunUsesNoCPU(t *testing.T) {
	const workers = 4
	const limit = 50 * time.Millisecond
	ctx := context.Background()
	d := rtNew(t, WithWorkers(workers))
	handled := make(chan struct{}, 1)
	rtOn(t, d, "x", func(context.Context, Event) error {
		handled <- struct{}{}
		return nil
	})
	wait := rtStartRun(t, ctx, d)
	rtEmit(t, d, "x", 0) // the workers have run once
	rtRecv(t, handled, "the warm-up event")
	rtWaitParked(t, d, workers)
	runtime.GC() // no collection in the window: nothing allocates while idle

	before := rtCPUTime(t)
	time.Sleep(time.Second) // the one real wait of the package's tests: the idle second is the point
	used := rtCPUTime(t) - before

	t.Logf("CPU used by the whole process in one idle second with %d parked workers: %v (limit %v; the race detector and the test runtime are included)", workers, used, limit)
	if used >= limit {
		t.Errorf("idle dispatcher used %v of CPU in one second, want < %v", used, limit)
	}
	if n := d.sleepers.Load(); n != workers {
		t.Errorf("%d of %d workers parked at the end of the idle second", n, workers)
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := wait(); err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestIdleParkedWorkerWakes: an event emitted while every worker is parked
// wakes one, which handles it while Run runs. The wake-up latency (emit to
// handler) is logged, not asserted.
func TestIdleParkedWorkerWakes(t *testing.T) {
	const samples = 100
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			ctx := context.Background()
			d := rtNew(t, WithWorkers(workers))
			got := make(chan time.Duration, 1)
			rtOn(t, d, "wake", func(_ context.Context, e Event) error {
				got <- time.Since(e.Payload.(time.Time))
				return nil
			})
			wait := rtStartRun(t, ctx, d)
			lat := make([]time.Duration, samples)
			for i := range lat {
				rtWaitParked(t, d, workers)
				rtEmit(t, d, "wake", time.Now())
				lat[i] = rtRecv(t, got, fmt.Sprintf("wake-up %d to be handled", i))
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown = %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run = %v", err)
			}
			slices.Sort(lat)
			t.Logf("wake latency of a parked worker (emit to handler), %d samples: p50 %v, p90 %v, p99 %v, max %v",
				samples, lat[samples/2-1], lat[samples*9/10-1], lat[samples*99/100-1], lat[samples-1])
		})
	}
}
