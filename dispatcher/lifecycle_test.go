package dispatcher_test

// Close and Shutdown, with Run and without, and their races with Run,
// emitters and Redeliver.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestCallsAfterStopReturnErrClosed: after Close or Shutdown (without Run),
// whatever the overflow policy, every entry point reports ErrClosed, and
// nothing is emitted, queued, dropped or handled.
func TestCallsAfterStopReturnErrClosed(t *testing.T) {
	stops := []struct {
		name string
		stop func(*dispatcher.Dispatcher) error
	}{
		{"Close", func(d *dispatcher.Dispatcher) error { return d.Close() }},
		{"Shutdown", func(d *dispatcher.Dispatcher) error { return d.Shutdown(context.Background()) }},
	}
	policies := []dispatcher.OverflowPolicy{dispatcher.Block, dispatcher.Reject, dispatcher.DropNewest, dispatcher.DropOldest}
	for _, s := range stops {
		for _, p := range policies {
			t.Run(fmt.Sprintf("%s/%v", s.name, p), func(t *testing.T) {
				d := newDispatcher(t, dispatcher.WithOverflow(p))
				var l callLog
				subscribe(t, d, ">", l.handler("h", nil))
				if err := s.stop(d); err != nil {
					t.Fatalf("%s() error = %v", s.name, err)
				}
				checkClosed(t, d)
				if st := d.Stats(); st.Emitted != 0 || st.Queued != 0 || st.Dropped != 0 {
					t.Errorf("Stats() = %+v, want nothing emitted, queued or dropped", st)
				}
				checkCalls(t, "after "+s.name, &l)
			})
		}
	}
}

func TestCloseDropsQueuedEvents(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	subscribe(t, d, "t", l.handler("h", nil))
	emitTopics(t, d, "t", "t", "t")

	err := d.Close()
	if !errors.Is(err, dispatcher.ErrDropped) {
		t.Errorf("Close() with 3 queued error = %v, want ErrDropped", err)
	}
	st := d.Stats()
	if st.Dropped != 3 || st.Queued != 0 || st.Emitted != 3 || st.Delivered != 0 {
		t.Errorf("Stats() after Close = %+v, want Dropped 3, Queued 0, Emitted 3, Delivered 0", st)
	}
	checkCalls(t, "after Close", &l)
	if err := d.Close(); err != nil {
		t.Errorf("second Close() error = %v, want nil", err)
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown() after Close error = %v, want nil", err)
	}
	if st := d.Stats(); st.Dropped != 3 {
		t.Errorf("Stats().Dropped after more stops = %d, want 3", st.Dropped)
	}
}

func TestCloseWithNothingQueuedReturnsNil(t *testing.T) {
	d := newDispatcher(t)
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
	emitTopics(t, d, "t")
	drain(t, d)
	if err := d.Close(); err != nil {
		t.Errorf("Close() with nothing queued error = %v, want nil", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close() error = %v, want nil", err)
	}
}

func TestCloseDropsPendingRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		emitTopics(t, d, "t")
		if n, err := d.Drain(context.Background(), 0); n != 1 || err != nil {
			t.Fatalf("Drain(0) = %d, %v, want 1, nil (a retry is pending, no dead letter yet)", n, err)
		}
		if r := d.Stats().Retrying; r != 1 {
			t.Fatalf("Stats().Retrying = %d, want 1", r)
		}
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() with a pending retry error = %v, want ErrDropped", err)
		}
		if st := d.Stats(); st.Dropped != 1 || st.Retrying != 0 || st.DeadLettered != 0 {
			t.Errorf("Stats() after Close = %+v, want Dropped 1, Retrying 0, DeadLettered 0", st)
		}
	})
}

func TestCloseFromHandlerStopsTheDrain(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	var closeErr error
	subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		l.add("h:%d", e.ID)
		if e.ID == 1 {
			closeErr = d.Close()
		}
		return nil
	})
	emitTopics(t, d, "t", "t", "t")
	n, err := d.Drain(context.Background(), 0)
	if n != 1 || !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Drain(0) closed by a handler = %d, %v, want 1, ErrClosed", n, err)
	}
	checkCalls(t, "after Close from a handler", &l, "h:1")
	if st := d.Stats(); st.Dropped != 2 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Dropped 2 (events 2 and 3), Queued 0", st)
	}
	if !errors.Is(closeErr, dispatcher.ErrDropped) {
		t.Errorf("Close() from a handler with events 2 and 3 still to process error = %v, want ErrDropped", closeErr)
	}
}

// TestCloseFromTickHandlerDropsItsRetry: a handler calls Close during a
// Drain, then fails with retry budget left. Its retry is scheduled after
// Close cleared the retry queue, and must still be accounted for (dropped,
// since the dispatcher is closed).
func TestCloseFromTickHandlerDropsItsRetry(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithRetry(2, nil))
	subscribe(t, d, "a", func(context.Context, dispatcher.Event) error {
		_ = d.Close() // reports the retry dropped, or not, by timing
		return errors.New("boom")
	})
	emit(t, d, "a", nil)
	_, _ = d.Drain(context.Background(), 0) // ErrClosed: the handler closed d
	if st := d.Stats(); st.Delivered+st.DeadLettered+st.Dropped == 0 {
		t.Errorf("event 1 accepted but neither delivered, dead-lettered nor dropped; Stats() = %+v", st)
	}
}

// TestCloseFinishesInFlightAndDropsQueued: Close waits for the in-flight
// handler (whose ctx it cancels), drops what is queued, counts it, and
// reports it with ErrDropped; Run returns nil.
func TestCloseFinishesInFlightAndDropsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queued = 9
		b, wait := startBlockedFirst(t, context.Background(), queued, false)
		d := b.d
		closed := make(chan error, 1)
		go func() { closed <- d.Close() }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close() error = %v while a handler was still running, want it to wait", err)
		default:
		}
		if err := d.Emit(context.Background(), "x", 100); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Emit during Close = %v, want ErrClosed", err)
		}
		close(b.release)
		b.checkStopDropped(t, "Close", recv(t, closed, "Close"), dispatcher.ErrDropped, wait, queued)
	})
}

// TestShutdownWithoutRunDrainsOnTheCaller: without Run, Shutdown processes
// what is queued on its caller's goroutine, follow-ups emitted by the
// handlers included, then closes the dispatcher.
func TestShutdownWithoutRunDrainsOnTheCaller(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	cascade(t, d, &l) // a emits b, b emits c
	emitTopics(t, d, "a", "x")
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown() error = %v", err)
	}
	checkCalls(t, "after Shutdown", &l, "a:1", "x:2", "b:3", "c:4")
	if st := d.Stats(); st.Delivered != 4 || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Delivered 4, Dropped 0, Queued 0", st)
	}
	checkClosed(t, d)
}

// TestShutdownWithoutRunWaitsForPendingRetries: without Run, Shutdown
// processes the queue and waits for each retry's backoff (fake clock)
// before it closes the dispatcher.
func TestShutdownWithoutRunWaitsForPendingRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithCapacity(16), dispatcher.WithRetry(3, linearBackoff))
		calls := timedCalls{start: time.Now()}
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			if e.ID == 1 && e.Attempt < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		for i := range 5 {
			emit(t, d, "t", i)
		}

		if err := d.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown() error = %v", err)
		}
		if took := time.Since(calls.start); took != 3*time.Second {
			t.Errorf("Shutdown() took %v of fake time, want 3s (backoffs 1s + 2s)", took)
		}
		checkCalls(t, "after Shutdown", &calls.log, "1#1@0s", "2#1@0s", "3#1@0s", "4#1@0s", "5#1@0s", "1#2@1s", "1#3@3s")
		want := dispatcher.Stats{Emitted: 5, Delivered: 5, Failed: 2, Retried: 2}
		if st := d.Stats(); st != want {
			t.Errorf("Stats() = %+v, want %+v", st, want)
		}
		checkClosed(t, d)
	})
}

func TestShutdownWithoutRunAfterDrainWaitsForTheRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithRetry(2, linearBackoff))
		calls := timedCalls{start: time.Now()}
		subscribe(t, d, "t", calls.failingFirstCall())
		emitTopics(t, d, "t")
		drain(t, d) // the first call fails; the retry waits
		advanceClock(400 * time.Millisecond)
		if err := d.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown() error = %v", err)
		}
		checkCalls(t, "after Shutdown", &calls.log, "1#1@0s", "1#2@1s")
	})
}

// TestShutdownDeadlineDropsWaitingRetries: Shutdown waits for retries, but
// not beyond its ctx: the retries still waiting then are dropped and
// counted, and the dispatcher is closed for good, with Run or without.
func TestShutdownDeadlineDropsWaitingRetries(t *testing.T) {
	for _, withRun := range []bool{false, true} {
		t.Run(fmt.Sprintf("run=%v", withRun), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bg := context.Background()
				d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithRetry(2, func(int) time.Duration { return 10 * time.Second }))
				calls := timedCalls{start: time.Now()}
				subscribe(t, d, "t", calls.failingFirstCall())
				const n = 3
				for i := range n {
					emit(t, d, "t", i)
				}
				var wait func() error
				if withRun {
					wait = startRun(t, bg, d)
				}

				ctx, cancel := context.WithTimeout(bg, 5*time.Second)
				defer cancel()
				if err := d.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown(5s) with retries due at 10s error = %v, want context.DeadlineExceeded", err)
				}
				if took := time.Since(calls.start); took != 5*time.Second {
					t.Errorf("Shutdown(5s) took %v of fake time, want 5s", took)
				}
				if withRun {
					if err := wait(); err != nil {
						t.Errorf("Run() error = %v, want nil", err)
					}
				}
				want := dispatcher.Stats{Emitted: n, Failed: n, Dropped: n}
				if got := d.Stats(); got != want {
					t.Errorf("Stats() = %+v, want %+v (the retries dropped)", got, want)
				}

				// The dispatcher is closed, and stays so: no retry runs later.
				advanceClock(time.Minute)
				checkClosed(t, d)
				wantCalls := []string{"1#1@0s", "2#1@0s", "3#1@0s"}
				if got := slices.Sorted(slices.Values(calls.log.get())); !slices.Equal(got, wantCalls) {
					t.Errorf("calls a minute later = %q, want %q in some order", got, wantCalls)
				}
			})
		})
	}
}

// TestShutdownFromHandlerReturnsErrRunning: Shutdown with a handler's ctx
// would wait for itself, so it reports ErrRunning, under Drain and under
// Run, and the dispatcher stays open.
func TestShutdownFromHandlerReturnsErrRunning(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"Drain", "Run"} {
		t.Run(mode, func(t *testing.T) {
			d := newDispatcher(t, dispatcher.WithWorkers(2))
			got := make(chan error, 1)
			subscribe(t, d, "x", func(hctx context.Context, e dispatcher.Event) error {
				if e.ID == 1 {
					got <- d.Shutdown(hctx)
				}
				return nil
			})
			var wait func() error
			if mode == "Run" {
				wait = startRun(t, ctx, d)
			}
			emit(t, d, "x", 1)
			if mode == "Drain" {
				if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
					t.Errorf("Drain(0) = %d, %v, want 1, nil", n, err)
				}
			}
			if err := recv(t, got, "the handler's Shutdown"); !errors.Is(err, dispatcher.ErrRunning) {
				t.Errorf("Shutdown(handler ctx) under %s error = %v, want ErrRunning", mode, err)
			}

			// The dispatcher is still open.
			if err := d.Emit(ctx, "x", 2); err != nil {
				t.Errorf("Emit after the refused Shutdown error = %v, want nil", err)
			}
			if mode == "Drain" {
				if n := drain(t, d); n != 1 {
					t.Errorf("Drain(0) after the refused Shutdown = %d, want 1", n)
				}
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown() error = %v", err)
			}
			if wait != nil {
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v", err)
				}
			}
			if st := d.Stats(); st.Delivered != 2 {
				t.Errorf("Stats().Delivered = %d, want 2", st.Delivered)
			}
		})
	}
}

func TestShutdownWaitsForARunningDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t)
		release := make(chan struct{})
		var l callLog
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			l.add("h:%d", e.ID)
			if e.ID == 1 {
				<-release
			}
			return nil
		})
		emitTopics(t, d, "t", "t")

		drained := make(chan error, 1)
		go func() {
			_, err := d.Drain(ctx, 0)
			drained <- err
		}()
		synctest.Wait() // the Drain is inside the handler
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(ctx) }()
		synctest.Wait() // Shutdown waits for the Drain
		select {
		case err := <-shut:
			t.Fatalf("Shutdown() returned %v while a Drain was inside a handler", err)
		default:
		}
		if err := d.Emit(ctx, "t", nil); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Emit during Shutdown error = %v, want ErrClosed", err)
		}
		close(release)
		if err := <-shut; err != nil {
			t.Errorf("Shutdown() error = %v, want nil", err)
		}
		if err := <-drained; err != nil && !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Drain(0) error = %v, want nil or ErrClosed", err)
		}
		checkCalls(t, "after Shutdown", &l, "h:1", "h:2")
		if st := d.Stats(); st.Dropped != 0 || st.Queued != 0 {
			t.Errorf("Stats() = %+v, want nothing dropped or queued", st)
		}
	})
}

// TestRunShutdownDrainsQueuedAndRetries: Run blocks until Shutdown, which
// processes the events queued before Run started, those emitted while it
// ran, and every retry, waiting for the backoff (fake clock).
func TestRunShutdownDrainsQueuedAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		backoff := func(k int) time.Duration { return time.Duration(k) * time.Second }
		d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(64), dispatcher.WithRetry(3, backoff))
		const n = 40
		var okCalls, flakyCalls, flakyOK [n]atomic.Int32
		subscribe(t, d, "job", func(ctx context.Context, e dispatcher.Event) error {
			okCalls[e.Payload.(int)].Add(1)
			return nil
		}, dispatcher.WithName("ok"))
		subscribe(t, d, "job", func(ctx context.Context, e dispatcher.Event) error {
			p := e.Payload.(int)
			flakyCalls[p].Add(1)
			if p%2 == 0 && e.Attempt < 3 {
				return fmt.Errorf("flaky %d, attempt %d", p, e.Attempt)
			}
			flakyOK[p].Add(1)
			return nil
		}, dispatcher.WithName("flaky"))

		for i := range n / 2 {
			emit(t, d, "job", i) // before Run: they wait in the queue
		}
		start := time.Now()
		wait := startRun(t, ctx, d)
		for i := n / 2; i < n; i++ {
			emit(t, d, "job", i)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown() error = %v, want nil", err)
		}
		if err := wait(); err != nil {
			t.Fatalf("Run() error = %v, want nil", err)
		}
		// Even payloads fail at t=0 and t=1s and succeed at t=3s.
		if got := time.Since(start); got < 3*time.Second {
			t.Errorf("Shutdown returned after %v (fake clock), want >= 3s: it did not wait for the retries", got)
		}
		for p := range n {
			wantCalls := int32(1)
			if p%2 == 0 {
				wantCalls = 3
			}
			if got := okCalls[p].Load(); got != 1 {
				t.Errorf("payload %d: ok called %d times, want 1", p, got)
			}
			if got := flakyCalls[p].Load(); got != wantCalls {
				t.Errorf("payload %d: flaky called %d times, want %d", p, got, wantCalls)
			}
			if got := flakyOK[p].Load(); got != 1 {
				t.Errorf("payload %d: flaky succeeded %d times, want 1", p, got)
			}
		}
		want := dispatcher.Stats{Emitted: n, Delivered: 2 * n, Failed: n, Retried: n}
		if got := d.Stats(); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
		if dl := d.DeadLetters(); len(dl) != 0 {
			t.Errorf("DeadLetters() = %v, want none", dl)
		}
		checkClosed(t, d)
	})
}

// TestShutdownAcceptsHandlerCascades: during Shutdown, outside emits get
// ErrClosed, emits from handlers are accepted and processed: a cascade of
// three levels completes.
func TestShutdownAcceptsHandlerCascades(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(64))
		gate := make(chan struct{})
		var emitErrs, l3 atomic.Int32
		subscribe(t, d, "l1", func(ctx context.Context, e dispatcher.Event) error {
			<-gate
			if err := d.Emit(ctx, "l2", e.Payload); err != nil {
				emitErrs.Add(1)
				return err
			}
			return nil
		})
		subscribe(t, d, "l2", func(ctx context.Context, e dispatcher.Event) error {
			if err := d.Emit(ctx, "l3", e.Payload); err != nil {
				emitErrs.Add(1)
				return err
			}
			return nil
		})
		subscribe(t, d, "l3", func(ctx context.Context, e dispatcher.Event) error {
			l3.Add(1)
			return nil
		})
		const n = 5
		for i := range n {
			emit(t, d, "l1", i)
		}
		wait := startRun(t, ctx, d)
		synctest.Wait() // a worker is inside an l1 handler, at the gate

		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(ctx) }()
		synctest.Wait() // Shutdown has stopped intake and waits
		select {
		case err := <-shut:
			t.Fatalf("Shutdown() error = %v before the handlers finished", err)
		default:
		}
		if err := d.Emit(ctx, "l1", 99); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("outside Emit during Shutdown = %v, want ErrClosed", err)
		}
		close(gate)
		if err := recv(t, shut, "Shutdown"); err != nil {
			t.Fatalf("Shutdown() error = %v, want nil", err)
		}
		if err := wait(); err != nil {
			t.Fatalf("Run() error = %v, want nil", err)
		}
		if got := l3.Load(); got != n {
			t.Errorf("level 3 handled %d events, want %d", got, n)
		}
		if got := emitErrs.Load(); got != 0 {
			t.Errorf("%d emits from handlers failed during Shutdown, want 0", got)
		}
		want := dispatcher.Stats{Emitted: 3 * n, Delivered: 3 * n}
		if got := d.Stats(); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
		checkClosed(t, d)
	})
}

// TestShutdownFinishesAfterRunCtxCancel: Run's ctx ends while Shutdown
// waits for it: Run returns ctx's error, and Shutdown finishes the job on
// its own goroutine.
func TestShutdownFinishesAfterRunCtxCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bg := context.Background()
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		const queued = 4
		b, wait := startBlockedFirst(t, ctx, queued, false)
		d := b.d
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(bg) }()
		synctest.Wait()
		cancel()
		synctest.Wait()
		close(b.release)
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run() error = %v, want context.Canceled", err)
		}
		if err := recv(t, shut, "Shutdown"); err != nil {
			t.Errorf("Shutdown() error = %v, want nil", err)
		}
		if got, want := b.handledOthers(), []int{1, 2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("handled after Run stopped: %v, want %v", got, want)
		}
		want := dispatcher.Stats{Emitted: queued + 1, Delivered: queued + 1}
		if got := d.Stats(); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
		checkClosed(t, d)
	})
}

// TestShutdownDeadlineWhileHandlerBlocks: Shutdown's ctx ends while a
// handler is still running: Shutdown returns ctx's error, what is left is
// counted as dropped, Run returns nil.
func TestShutdownDeadlineWhileHandlerBlocks(t *testing.T) {
	for _, honorCtx := range []bool{true, false} {
		t.Run(fmt.Sprintf("handler honors ctx=%v", honorCtx), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const queued = 4
				bg := context.Background()
				b, wait := startBlockedFirst(t, bg, queued, honorCtx)
				d := b.d
				sctx, cancel := context.WithTimeout(bg, 5*time.Second)
				defer cancel()
				start := time.Now()
				shut := make(chan error, 1)
				go func() { shut <- d.Shutdown(sctx) }()
				if !honorCtx {
					// Let the fake clock run well past the deadline while
					// the handler ignores its ctx, then let it finish.
					<-time.After(time.Minute)
					select {
					case err := <-shut:
						t.Logf("Shutdown returned %v before the in-flight handler finished", err)
						shut <- err
					default:
						t.Logf("Shutdown waits for the in-flight handler past its deadline (no goroutine may be left)")
					}
					close(b.release)
				}
				err := recv(t, shut, "Shutdown")
				if honorCtx {
					if got := time.Since(start); got != 5*time.Second {
						t.Errorf("Shutdown returned after %v (fake clock), want 5s", got)
					}
				}
				b.checkStopDropped(t, "Shutdown past its deadline", err, context.DeadlineExceeded, wait, queued)
			})
		})
	}
}

// TestShutdownWhileProducersEmitLosesNothing: Shutdown while producers
// emit from other goroutines (some blocked on a full ring) and handlers
// run: each Emit returns nil or ErrClosed, and every event whose Emit
// returned nil is delivered exactly once.
func TestShutdownWhileProducersEmitLosesNothing(t *testing.T) {
	const producers = 4
	const perProducer = 1 << 16
	trigger := int64(sizeFor(5000, 1000))
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(64))
	delivered := make([]atomic.Uint32, producers*perProducer)
	var total atomic.Int64
	reached := make(chan struct{})
	subscribe(t, d, "p.>", func(ctx context.Context, e dispatcher.Event) error {
		delivered[e.Payload.(int)].Add(1)
		if total.Add(1) == trigger {
			close(reached)
		}
		return nil
	})
	wait := startRun(t, ctx, d)
	accepted := make([]int, producers) // payloads p*perProducer + [0, accepted[p])
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		topic := fmt.Sprintf("p.%d", p)
		wg.Go(func() {
			for i := range perProducer {
				if err := d.Emit(ctx, topic, p*perProducer+i); err != nil {
					errs[p] = err
					return
				}
				accepted[p]++
			}
		})
	}
	recv(t, reached, "the first deliveries")
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() error = %v, want nil", err)
	}
	wg.Wait()
	if err := wait(); err != nil {
		t.Errorf("Run() error = %v, want nil", err)
	}
	sum := 0
	for p := range producers {
		if errs[p] != nil && !errors.Is(errs[p], dispatcher.ErrClosed) {
			t.Errorf("producer %d: Emit = %v, want nil or ErrClosed", p, errs[p])
		}
		sum += accepted[p]
		for i := range perProducer {
			want := uint32(0)
			if i < accepted[p] {
				want = 1
			}
			if got := delivered[p*perProducer+i].Load(); got != want {
				t.Errorf("producer %d, event %d (accepted: %v): delivered %d times, want %d", p, i, i < accepted[p], got, want)
			}
		}
	}
	st := d.Stats()
	if st.Emitted != uint64(sum) || st.Delivered != uint64(sum) || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Emitted = Delivered = %d accepted emits, Dropped 0, Queued 0", st, sum)
	}
	t.Logf("accepted %d emits (per producer %v); Shutdown began after %d deliveries", sum, accepted, trigger)
}

// TestShutdownCloseConcurrentAndRepeated: Shutdown and Close called
// together from several goroutines, then again, neither panic nor hang;
// Shutdown returns nil, at most one Close reports ErrDropped, and every
// event is either delivered or counted as dropped.
func TestShutdownCloseConcurrentAndRepeated(t *testing.T) {
	for _, withRun := range []bool{true, false} {
		t.Run(fmt.Sprintf("run=%v", withRun), func(t *testing.T) {
			ctx := context.Background()
			const n = 500
			d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(n))
			var delivered atomic.Int64
			subscribe(t, d, "x", func(ctx context.Context, e dispatcher.Event) error {
				delivered.Add(1)
				return nil
			})
			for i := range n {
				emit(t, d, "x", i)
			}
			var wait func() error
			if withRun {
				wait = startRun(t, ctx, d)
			}
			const callers = 8
			start := make(chan struct{})
			results := make([]error, callers)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					<-start
					if i%2 == 0 {
						results[i] = d.Shutdown(ctx)
					} else {
						results[i] = d.Close()
					}
				})
			}
			close(start)
			wg.Wait()
			dropErrs := 0
			for i, err := range results {
				switch {
				case i%2 == 0 && err != nil:
					t.Errorf("concurrent Shutdown = %v, want nil", err)
				case i%2 == 1 && errors.Is(err, dispatcher.ErrDropped):
					dropErrs++
				case i%2 == 1 && err != nil:
					t.Errorf("concurrent Close = %v, want nil or ErrDropped", err)
				}
			}
			if dropErrs > 1 {
				t.Errorf("%d Close calls reported ErrDropped, want at most 1", dropErrs)
			}
			if withRun {
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v, want nil", err)
				}
			}
			checkClosed(t, d)
			st := d.Stats()
			if got := uint64(delivered.Load()); got != st.Delivered || got+st.Dropped != n || st.Queued != 0 {
				t.Errorf("delivered %d, Stats() = %+v; want Delivered == delivered, delivered + Dropped == %d, Queued 0", got, st, n)
			}
			if (dropErrs == 1) != (st.Dropped > 0) {
				t.Errorf("%d ErrDropped from Close but Stats().Dropped = %d", dropErrs, st.Dropped)
			}
		})
	}
}

// TestRunShutdownCloseStartRace: Run started at the same moment as
// Shutdown or Close: whoever wins, nothing hangs, Shutdown returns nil,
// Run returns nil or ErrClosed, and every event is delivered (Shutdown) or
// delivered or dropped (Close).
func TestRunShutdownCloseStartRace(t *testing.T) {
	iters := sizeFor(300, 50)
	ctx := context.Background()
	const n = 100
	for i := range iters {
		useClose := i%2 == 1
		d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithCapacity(128))
		var delivered atomic.Int64
		subscribe(t, d, "x", func(context.Context, dispatcher.Event) error {
			delivered.Add(1)
			return nil
		})
		for j := range n {
			emit(t, d, "x", j)
		}
		start := make(chan struct{})
		runErr, stopErr := make(chan error, 1), make(chan error, 1)
		go func() {
			<-start
			runErr <- d.Run(ctx)
		}()
		go func() {
			<-start
			if useClose {
				stopErr <- d.Close()
			} else {
				stopErr <- d.Shutdown(ctx)
			}
		}()
		close(start)
		serr := recv(t, stopErr, "Shutdown or Close")
		rerr := recv(t, runErr, "Run")
		if rerr != nil && !errors.Is(rerr, dispatcher.ErrClosed) {
			t.Errorf("iteration %d: Run = %v, want nil or ErrClosed", i, rerr)
		}
		st := d.Stats()
		got := uint64(delivered.Load())
		if useClose {
			if serr != nil && !errors.Is(serr, dispatcher.ErrDropped) {
				t.Errorf("iteration %d: Close = %v, want nil or ErrDropped", i, serr)
			}
			if got+st.Dropped != n {
				t.Errorf("iteration %d: delivered %d + dropped %d, want %d", i, got, st.Dropped, n)
			}
		} else {
			if serr != nil {
				t.Errorf("iteration %d: Shutdown = %v, want nil", i, serr)
			}
			if got != n || st.Dropped != 0 {
				t.Errorf("iteration %d: delivered %d, dropped %d, want %d, 0", i, got, st.Dropped, n)
			}
		}
		if st.Queued != 0 {
			t.Errorf("iteration %d: Stats().Queued = %d after the stop, want 0", i, st.Queued)
		}
		if t.Failed() {
			break
		}
	}
}

// TestCloseWakesShutdownWaitingForRetry: a Shutdown without Run that waits
// for a retry's backoff is woken by Close, instead of sleeping until the
// dropped retry would have been due.
func TestCloseWakesShutdownWaitingForRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
		subscribe(t, d, "a", func(context.Context, dispatcher.Event) error { return errors.New("boom") })
		emit(t, d, "a", nil)
		drain(t, d) // the first call fails; its retry is due in 1h
		done := make(chan error, 1)
		go func() { done <- d.Shutdown(ctx) }()
		synctest.Wait() // Shutdown waits on the retry's timer
		_ = d.Close()   // ErrDropped: the retry
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Errorf("Shutdown still blocked after Close returned (waits for the dropped retry's 1h backoff)")
			<-done // the fake clock moves to the backoff's end once all wait
		}
	})
}

// TestRedeliverRacingShutdownLosesNothing: Redeliver racing the end of a
// Shutdown under Run. The dead letter is delivered, stays a dead letter, or
// is counted as dropped; it never vanishes.
func TestRedeliverRacingShutdownLosesNothing(t *testing.T) {
	iters := sizeFor(500, 50)
	ctx := context.Background()
	lost := 0
	for iter := 0; iter < iters && lost == 0; iter++ {
		d := newDispatcher(t, dispatcher.WithWorkers(1))
		var calls atomic.Int32
		subscribe(t, d, "a", func(context.Context, dispatcher.Event) error {
			if calls.Add(1) == 1 {
				return errors.New("first call fails")
			}
			return nil
		})
		wait := startRun(t, ctx, d)
		emit(t, d, "a", nil)
		waitFor(t, "the dead letter", func() bool { return len(d.DeadLetters()) > 0 })
		redelivered := make(chan struct{})
		go func() {
			defer close(redelivered)
			for {
				if n, err := d.Redeliver(ctx); err != nil || n > 0 {
					return
				}
			}
		}()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("iteration %d: Shutdown() error = %v", iter, err)
		}
		recv(t, redelivered, "the Redeliver loop to end")
		if err := wait(); err != nil {
			t.Errorf("iteration %d: Run() error = %v", iter, err)
		}
		if st := d.Stats(); st.Delivered == 0 && st.DeadLetters == 0 && st.Dropped == 0 {
			lost++
			t.Logf("iteration %d: dead letter vanished: %+v", iter, st)
		}
	}
	if lost > 0 {
		t.Errorf("dead letter redelivered during Shutdown lost (%d times)", lost)
	}
}

// TestShutdownDeadlineWithStuckHandler: Shutdown's ctx bounds
// Shutdown even when a handler under Run ignores its own cancelled ctx:
// Shutdown returns context.DeadlineExceeded at its deadline while the
// handler is still blocked; Run returns once the handler does.
func TestShutdownDeadlineWithStuckHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(1))
		entered := make(chan struct{})
		release := make(chan struct{})
		var returned atomic.Bool
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
			close(entered)
			<-release // ignores ctx
			returned.Store(true)
			return nil
		})
		wait := startRun(t, ctx, d)
		emit(t, d, "t", nil)
		recvOK(t, entered, "call of the handler")

		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(sctx) }()
		err, ok := recvOK(t, shut, "return of Shutdown at its deadline while a handler ignores its ctx")
		if ok {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Shutdown() error = %v, want context.DeadlineExceeded", err)
			}
			if waited := time.Since(start); waited != timeout {
				t.Errorf("Shutdown returned after %v of fake time, want %v", waited, timeout)
			}
			if returned.Load() {
				t.Errorf("the handler returned before it was released")
			}
		}
		close(release)
		if !ok {
			<-shut
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
	})
}

// TestCloseFromHandlerUnderRun: a handler that calls Close under Run
// must not deadlock (Close waiting for Run, Run for the worker inside
// Close): Close returns, Run returns nil, and the events still queued are
// dropped and counted. It runs in a child process: a deadlock in a
// synctest bubble ends the process.
func TestCloseFromHandlerUnderRun(t *testing.T) {
	if !isolatedChild(t) {
		return
	}
	synctest.Test(t, func(t *testing.T) {
		const events = 5
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(1))
		var calls atomic.Int64
		closed := make(chan error, 1)
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.Add(1)
			if e.ID == 1 {
				closed <- d.Close()
			}
			return nil
		})
		for range events {
			emit(t, d, "t", nil)
		}
		wait := startRun(t, ctx, d)
		if _, ok := recvOK(t, closed, "return of Close called from a handler under Run"); !ok {
			t.FailNow() // the bubble is deadlocked; this ends the child process
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d handler calls, want 1 (Close drops the rest)", n)
		}
		if st := d.Stats(); st.Emitted != events || st.Dropped != events-1 || st.Queued != 0 {
			t.Errorf("Stats() = %+v, want Emitted %d, Dropped %d, Queued 0", st, events, events-1)
		}
	})
}

// TestShutdownWithoutRunWaitsForClosesDrop: a Shutdown without Run that
// meets a Close from another goroutine returns once Close has finished its
// drop, as a Close returns: an event accepted before (here a delayed one in
// the time heap) has had its OnDone by then. Close sets the closed state
// before it drops, and Shutdown's drain stops at the state.
//
// The drain stops in one of two places: between two jobs, with a job left
// (queued after the slow one), or when it finds nothing left, Close having
// dropped it.
func TestShutdownWithoutRunWaitsForClosesDrop(t *testing.T) {
	for _, jobLeft := range []bool{false, true} {
		t.Run(fmt.Sprintf("jobLeft=%v", jobLeft), func(t *testing.T) {
			meetCloseMidDrop(t, "Shutdown", jobLeft, func(d *dispatcher.Dispatcher) error { return d.Shutdown(context.Background()) })
		})
	}
}
