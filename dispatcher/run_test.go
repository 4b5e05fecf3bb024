package dispatcher_test

// Run's worker pool: who owns the queue, cancelling Run's ctx, and idle
// workers.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// cpuTime returns the CPU time (user + system) the process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestRunExclusiveOwnership: one Run at a time; Tick and Drain during Run
// get ErrRunning; Close stops Run, and Run after Shutdown or Close gets
// ErrClosed.
func TestRunExclusiveOwnership(t *testing.T) {
	ctx := context.Background()

	t.Run("concurrent Run", func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		errc := make(chan error, 2)
		for range 2 {
			go func() { errc <- d.Run(ctx) }()
		}
		if err := recv(t, errc, "the losing Run"); !errors.Is(err, dispatcher.ErrRunning) {
			t.Errorf("one of two concurrent Runs = %v, want ErrRunning", err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
		if err := recv(t, errc, "the winning Run"); err != nil {
			t.Errorf("the winning Run() error = %v, want nil", err)
		}
	})

	t.Run("Tick and Drain during Run", func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		ran := make(chan struct{}, 1)
		subscribe(t, d, "x", func(ctx context.Context, e dispatcher.Event) error {
			select {
			case ran <- struct{}{}:
			default:
			}
			return nil
		})
		wait := startRun(t, ctx, d)
		emit(t, d, "x", 1)
		recv(t, ran, "the handler under Run") // Run owns the queue now
		if err := d.Run(ctx); !errors.Is(err, dispatcher.ErrRunning) {
			t.Errorf("second Run() error = %v, want ErrRunning", err)
		}
		if n, err := d.Tick(ctx); n != 0 || !errors.Is(err, dispatcher.ErrRunning) {
			t.Errorf("Tick() during Run = %d, %v, want 0, ErrRunning", n, err)
		}
		if n, err := d.Drain(ctx, 0); n != 0 || !errors.Is(err, dispatcher.ErrRunning) {
			t.Errorf("Drain(0) during Run = %d, %v, want 0, ErrRunning", n, err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
		checkClosed(t, d)
	})

	t.Run("Run after Close", func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		wait := startRun(t, ctx, d)
		if err := d.Close(); err != nil {
			t.Errorf("Close() error = %v, want nil (nothing queued)", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil after Close", err)
		}
		checkClosed(t, d)
	})
}

// TestRunCtxCancelKeepsQueued: cancelling Run's ctx cancels the in-flight
// handler's ctx, lets it finish, and leaves the queued events for a later
// Drain (in order) or a second Run.
func TestRunCtxCancelKeepsQueued(t *testing.T) {
	for _, then := range []string{"Drain", "Run"} {
		t.Run("then="+then, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const queued = 9
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				b, wait := startBlockedFirst(t, ctx, queued, false)
				d := b.d
				cancel()
				synctest.Wait()
				close(b.release)
				if err := wait(); !errors.Is(err, context.Canceled) {
					t.Fatalf("Run() error = %v, want context.Canceled", err)
				}
				b.checkInFlightCancelled(t, "after cancel")
				st := d.Stats()
				if st.Queued != queued || st.Dropped != 0 || st.Delivered != 1 {
					t.Errorf("Stats() after cancel = %+v, want Queued %d, Dropped 0, Delivered 1", st, queued)
				}

				bg := context.Background()
				switch then {
				case "Drain":
					n, err := d.Drain(bg, 0)
					if n != queued || err != nil {
						t.Errorf("Drain(0) = %d, %v, want %d, nil", n, err, queued)
					}
				case "Run":
					wait2 := startRun(t, bg, d)
					if err := d.Shutdown(bg); err != nil {
						t.Errorf("Shutdown() error = %v, want nil", err)
					}
					if err := wait2(); err != nil {
						t.Errorf("second Run() error = %v, want nil", err)
					}
				}
				if got, want := b.handledOthers(), []int{1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(got, want) {
					t.Errorf("handled after %s: %v, want %v", then, got, want)
				}
				if st := d.Stats(); st.Queued != 0 || st.Delivered != queued+1 {
					t.Errorf("Stats() at the end = %+v, want Queued 0, Delivered %d", st, queued+1)
				}
				if then == "Drain" {
					if err := d.Shutdown(bg); err != nil {
						t.Errorf("Shutdown() error = %v, want nil", err)
					}
				}
			})
		})
	}
}

// TestRunCtxCancelManyWorkersThenDrainInOrder: four workers are stopped
// by ctx in the middle of a keyed load; nothing is lost or handled twice,
// Stats.Queued counts exactly what is left, the Drain that follows handles
// it in ID order, and per-key order holds across Run and Drain.
func TestRunCtxCancelManyWorkersThenDrainInOrder(t *testing.T) {
	n := sizeFor(20000, 4000)
	d := newDispatcher(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(n))
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		seen     = make([]int, n+1) // by event ID
		perKey   = make(map[string][]uint64)
		draining bool
		drained  []uint64
		handled  atomic.Int64
	)
	subscribe(t, d, "load", func(hctx context.Context, e dispatcher.Event) error {
		mu.Lock()
		seen[e.ID]++
		if e.Key != "" {
			perKey[e.Key] = append(perKey[e.Key], e.ID)
		}
		if draining {
			drained = append(drained, e.ID)
		}
		mu.Unlock()
		if handled.Add(1) == int64(n/3) {
			cancel() // stop Run from inside, in the middle of the load
		}
		return nil
	})
	for i := range n {
		key := ""
		if i%3 != 0 {
			key = keys[i%len(keys)]
		}
		if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "load", Key: key}); err != nil {
			t.Fatalf("EmitEvent %d: %v", i, err)
		}
	}
	wait := startRun(t, ctx, d)
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() error = %v, want context.Canceled", err)
	}
	byRun := int(handled.Load())
	st := d.Stats()
	if st.Delivered != uint64(byRun) || st.Queued != n-byRun || st.Dropped != 0 {
		t.Errorf("after cancel: Stats() = %+v, handled %d; want Delivered %d, Queued %d, Dropped 0", st, byRun, byRun, n-byRun)
	}
	mu.Lock()
	draining = true
	mu.Unlock()
	got, err := d.Drain(context.Background(), 0)
	if got != n-byRun || err != nil {
		t.Errorf("Drain(0) = %d, %v, want %d, nil", got, err, n-byRun)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("Run handled %d of %d events before its ctx ended; Drain handled %d", byRun, n, len(drained))
	for i := 1; i < len(drained); i++ {
		if drained[i] < drained[i-1] {
			t.Errorf("Drain handled event %d after event %d, want ID order", drained[i], drained[i-1])
			break
		}
	}
	for id := 1; id <= n; id++ {
		if seen[id] != 1 {
			t.Errorf("event %d handled %d times, want 1", id, seen[id])
		}
	}
	for k, ids := range perKey {
		for i := 1; i < len(ids); i++ {
			if ids[i] < ids[i-1] {
				t.Errorf("key %s: event %d handled after event %d (Run and Drain together)", k, ids[i], ids[i-1])
				break
			}
		}
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown() error = %v", err)
	}
}

// waitParked waits until n workers of d are parked.
func waitParked(t *testing.T, d *dispatcher.Dispatcher, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d workers to park", n), func() bool { return dispatcher.Sleepers(d) == n })
}

// TestIdleRunUsesNoCPU: a running dispatcher with nothing to do parks its
// workers and uses (next to) no CPU. In a synctest bubble, an idle hour of
// fake time passes as fast as the bubble's goroutines let it: at once when
// they all sleep without timers, but only after every wake-up when
// something polls (a 1ms ticker would mean 3.6 million of them), which the
// process's CPU time shows.
func TestIdleRunUsesNoCPU(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers = 4
		const limit = 50 * time.Millisecond
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(workers))
		handled := make(chan struct{}, 1)
		subscribe(t, d, "x", func(context.Context, dispatcher.Event) error {
			handled <- struct{}{}
			return nil
		})
		wait := startRun(t, ctx, d)
		emit(t, d, "x", 0) // the workers have run once
		recv(t, handled, "the warm-up event")
		synctest.Wait() // every goroutine of the bubble waits: a spinning worker would never let it return
		runtime.GC()    // no collection in the window: nothing allocates while idle

		before := cpuTime(t)
		advanceClock(time.Hour)
		used := cpuTime(t) - before

		t.Logf("CPU used by the whole process in an idle hour of fake time with %d parked workers: %v (limit %v; the race detector and the test runtime are included)", workers, used, limit)
		if used >= limit {
			t.Errorf("idle dispatcher used %v of CPU in an hour, want < %v", used, limit)
		}
		if n := dispatcher.Sleepers(d); n != workers {
			t.Errorf("%d of %d workers parked at the end of the idle hour", n, workers)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v", err)
		}
	})
}

// TestIdleParkedWorkerWakes: an event emitted while every worker is parked
// wakes one, which handles it while Run runs. The wake-up latency (emit to
// handler) is logged, not asserted.
func TestIdleParkedWorkerWakes(t *testing.T) {
	const samples = 100
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			ctx := context.Background()
			d := newDispatcher(t, dispatcher.WithWorkers(workers))
			got := make(chan time.Duration, 1)
			subscribe(t, d, "wake", func(_ context.Context, e dispatcher.Event) error {
				got <- time.Since(e.Payload.(time.Time))
				return nil
			})
			wait := startRun(t, ctx, d)
			lat := make([]time.Duration, samples)
			for i := range lat {
				waitParked(t, d, workers)
				emit(t, d, "wake", time.Now())
				lat[i] = recv(t, got, fmt.Sprintf("wake-up %d to be handled", i))
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown() error = %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run() error = %v", err)
			}
			slices.Sort(lat)
			t.Logf("wake latency of a parked worker (emit to handler), %d samples: p50 %v, p90 %v, p99 %v, max %v",
				samples, lat[samples/2-1], lat[samples*9/10-1], lat[samples*99/100-1], lat[samples-1])
		})
	}
}
