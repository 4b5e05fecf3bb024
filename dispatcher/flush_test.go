package dispatcher_test

// Flush (SPEC part three, point 2): it returns once every event accepted
// before the call is finished, retries and delayed events included, with
// Run or on the caller's goroutine, and never waits for later events.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestFlushWithoutRunProcessesOnTheCaller: without Run, Flush processes on
// the caller's goroutine, following cascades and waiting for retries.
func TestFlushWithoutRunProcessesOnTheCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t)
		caller := goroutineID()
		var calls, elsewhere atomic.Int32
		subscribe(t, d, "a", func(ctx context.Context, e dispatcher.Event) error {
			if goroutineID() != caller {
				elsewhere.Add(1)
			}
			if calls.Add(1) == 1 {
				return errors.New("first call fails")
			}
			return d.Emit(ctx, "b", nil)
		}, dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Minute)))
		var bs atomic.Int32
		subscribe(t, d, "b", func(context.Context, dispatcher.Event) error { bs.Add(1); return nil })
		emit(t, d, "a", 1)
		emit(t, d, "a", 2)
		start := time.Now()
		if err := d.Flush(context.Background()); err != nil {
			t.Fatalf("Flush() error = %v", err)
		}
		if took := time.Since(start); took != time.Minute {
			t.Errorf("Flush took %v of fake time, want 1m0s (the retry's backoff)", took)
		}
		if calls.Load() != 3 || elsewhere.Load() != 0 {
			t.Errorf("%d calls of a, %d not on the caller's goroutine; want 3, 0", calls.Load(), elsewhere.Load())
		}
		if st := d.Stats(); st.Retrying != 0 || st.Delivered < 3 {
			t.Errorf("after Flush: %+v; want Retrying 0, Delivered 3 at least", st)
		}
		// The b emitted by the first round is processed in the next one;
		// the one the retry emitted came after the call, and need not be.
		if bs.Load() < 1 {
			t.Errorf("b handled %d times, want 1 at least", bs.Load())
		}
		drain(t, d)
		if bs.Load() != 2 {
			t.Errorf("b handled %d times after a Drain, want 2", bs.Load())
		}
	})
}

// TestFlushWaitsForDelayedEvents: a delayed event accepted before Flush is
// waited for, with and without Run.
func TestFlushWaitsForDelayedEvents(t *testing.T) {
	for _, mode := range []string{"without Run", "Run"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDispatcher(t)
				var h handledAt
				subscribe(t, d, "later", h.handler)
				if mode == "Run" {
					wait := startRun(t, context.Background(), d)
					defer stopRun(t, context.Background(), d, wait)
				}
				start := time.Now()
				emitDelayed(t, d, "", "10m", dispatcher.After(10*time.Minute))
				if err := d.Flush(context.Background()); err != nil {
					t.Fatalf("Flush() error = %v", err)
				}
				if took := time.Since(start); took != 10*time.Minute || len(h.got()) != 1 {
					t.Errorf("Flush returned after %v with %v handled, want 10m0s and [10m]", took, h.got())
				}
			})
		})
	}
}

// succeeded records the IDs of the events whose handler call succeeded.
type succeeded struct {
	mu  sync.Mutex
	ids map[uint64]bool
}

func (s *succeeded) add(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[uint64]bool)
	}
	s.ids[id] = true
}

// missing returns the IDs up to n that have not succeeded.
func (s *succeeded) missing(n uint64) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for id := uint64(1); id <= n; id++ {
		if !s.ids[id] {
			out = append(out, id)
		}
	}
	return out
}

// TestFlushUnderRunWaitsForRetriesInFlight: under Run, with keyed events
// whose handler fails and retries, each of several concurrent Flush calls
// returns only when every event accepted before it has succeeded, while
// emitters go on.
func TestFlushUnderRunWaitsForRetriesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(3), dispatcher.WithCapacity(64))
		var ok succeeded
		var calls sync.Map // event ID -> *atomic.Int32
		subscribe(t, d, "job", func(_ context.Context, e dispatcher.Event) error {
			n, _ := calls.LoadOrStore(e.ID, new(atomic.Int32))
			if n.(*atomic.Int32).Add(1) <= int32(e.ID%3) {
				return fmt.Errorf("event %d fails its first %d calls", e.ID, e.ID%3)
			}
			ok.add(e.ID)
			return nil
		}, dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Second)))
		wait := startRun(t, context.Background(), d)
		var wg sync.WaitGroup
		for f := range 4 {
			wg.Go(func() {
				for range 5 {
					before := d.Stats().Emitted // every ID up to it was accepted before the call
					if err := d.Flush(context.Background()); err != nil {
						t.Errorf("flusher %d: Flush() error = %v", f, err)
						return
					}
					if m := ok.missing(before); len(m) > 0 {
						t.Errorf("flusher %d: Flush returned with events %v of the first %d not finished", f, m, before)
					}
					advanceClock(700 * time.Millisecond)
				}
			})
		}
		for i := range 100 {
			emitKeyed(t, d, "job", fmt.Sprint(i%5), i)
			if i%7 == 0 {
				advanceClock(300 * time.Millisecond)
			}
		}
		wg.Wait()
		if err := d.Flush(context.Background()); err != nil {
			t.Errorf("last Flush() error = %v", err)
		}
		if m := ok.missing(100); len(m) > 0 {
			t.Errorf("after the last Flush, events %v not finished", m)
		}
		stopRun(t, context.Background(), d, wait)
	})
}

// TestFlushDoesNotWaitForLaterEvents: an event emitted after Flush began
// is processed but not waited for.
func TestFlushDoesNotWaitForLaterEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		early, late := make(chan struct{}), make(chan struct{})
		subscribe(t, d, "early", func(context.Context, dispatcher.Event) error { <-early; return nil })
		subscribe(t, d, "late", func(context.Context, dispatcher.Event) error { <-late; return nil })
		wait := startRun(t, context.Background(), d)
		emit(t, d, "early", nil)
		flushed := make(chan error, 1)
		go func() { flushed <- d.Flush(context.Background()) }()
		synctest.Wait() // Flush waits for "early"
		emit(t, d, "late", nil)
		synctest.Wait() // the other worker runs "late", which blocks
		close(early)
		if err, _ := recvOK(t, flushed, "Flush"); err != nil {
			t.Errorf("Flush() error = %v", err)
		}
		if st := d.Stats(); st.Delivered != 1 {
			t.Errorf("Delivered %d when Flush returned, want 1 (late still runs)", st.Delivered)
		}
		close(late)
		stopRun(t, context.Background(), d, wait)
	})
}

// TestFlushWaitsForAnEviction: under DropOldest, an emitter pops the
// oldest event and drops it a moment later (its Dropped hook and OnDone
// run in between). A Flush whose grace period covers that event waits for
// the drop: it does not return while the event is in the emitter's hands,
// in no part of the queue.
func TestFlushWaitsForAnEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var evictions atomic.Int32
		d := newDispatcher(t, dispatcher.WithWorkers(1), dispatcher.WithCapacity(2),
			dispatcher.WithOverflow(dispatcher.DropOldest),
			dispatcher.WithObserver(dispatcher.Observer{Dropped: func(_ context.Context, dr dispatcher.Drop) {
				if dr.Reason == dispatcher.DroppedOldest && evictions.Add(1) == 1 {
					<-release // the evicting emitter holds the popped event here
				}
			}}))
		gate := make(chan struct{})
		subscribe(t, d, "first", func(context.Context, dispatcher.Event) error { <-gate; return nil })
		subscribe(t, d, "next", func(context.Context, dispatcher.Event) error { return nil })
		wait := startRun(t, context.Background(), d)
		emit(t, d, "first", nil)
		synctest.Wait() // the worker is inside "first"
		var oldestDone atomic.Bool
		if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "next"},
			dispatcher.OnDone(func(error) { oldestDone.Store(true) })); err != nil {
			t.Fatalf("EmitEvent: %v", err)
		}
		emit(t, d, "next", nil) // the ring is full now
		evicted := make(chan error, 1)
		go func() { evicted <- d.Emit(context.Background(), "next", nil) }()
		synctest.Wait() // the emitter popped the oldest and waits in the hook
		flushed := make(chan bool, 1)
		go func() {
			if err := d.Flush(context.Background()); err != nil {
				t.Errorf("Flush() error = %v", err)
			}
			flushed <- oldestDone.Load()
		}()
		close(gate)
		synctest.Wait() // the worker processed what the ring held and sleeps
		var done bool
		returned := false
		select {
		case done = <-flushed:
			returned = true
			t.Error("Flush returned while the evicted event was still being dropped")
		default:
		}
		close(release)
		if err := recv(t, evicted, "the evicting Emit"); err != nil {
			t.Errorf("evicting Emit: %v", err)
		}
		if !returned {
			done = recv(t, flushed, "Flush")
		}
		if !done {
			t.Error("Flush returned before the evicted event's OnDone")
		}
		stopRun(t, context.Background(), d, wait)
	})
}

// TestFlushMisuse: from a handler, and during a Tick or Drain, Flush says
// why it cannot wait; after Close it reports ErrClosed; a ctx that ends
// first ends it.
func TestFlushMisuse(t *testing.T) {
	t.Run("from a handler", func(t *testing.T) {
		for _, mode := range []string{"Drain", "Run"} {
			t.Run(mode, func(t *testing.T) {
				d := newDispatcher(t)
				got := make(chan error, 1)
				subscribe(t, d, "t", func(ctx context.Context, _ dispatcher.Event) error {
					got <- d.Flush(ctx)
					return nil
				})
				emit(t, d, "t", nil)
				if mode == "Run" {
					wait := startRun(t, context.Background(), d)
					defer stopRun(t, context.Background(), d, wait)
				} else {
					drain(t, d)
				}
				if err := recv(t, got, "the handler's Flush"); !errors.Is(err, dispatcher.ErrRunning) {
					t.Errorf("Flush from a handler error = %v, want ErrRunning", err)
				}
			})
		}
	})
	t.Run("during Drain", func(t *testing.T) {
		d := newDispatcher(t)
		var err error
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
			err = d.Flush(context.Background()) // another goroutine's ctx, in effect
			return nil
		})
		emit(t, d, "t", nil)
		drain(t, d)
		if !errors.Is(err, dispatcher.ErrRunning) {
			t.Errorf("Flush during Drain error = %v, want ErrRunning", err)
		}
	})
	t.Run("after Close", func(t *testing.T) {
		d := newDispatcher(t)
		_ = d.Close()
		if err := d.Flush(context.Background()); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Flush after Close error = %v, want ErrClosed", err)
		}
	})
	t.Run("ctx ends first", func(t *testing.T) {
		for _, mode := range []string{"without Run", "Run"} {
			t.Run(mode, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					d := newDispatcher(t)
					subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
					if mode == "Run" {
						wait := startRun(t, context.Background(), d)
						defer stopRun(t, context.Background(), d, wait)
					}
					emitDelayed(t, d, "", "in an hour", dispatcher.After(time.Hour))
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					if err := d.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("Flush() error = %v, want DeadlineExceeded", err)
					}
					if st := d.Stats(); st.Scheduled != 1 {
						t.Errorf("Scheduled %d after the Flush, want 1: the dispatcher stays open", st.Scheduled)
					}
				})
			})
		}
	})
	t.Run("Close during Flush", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			d := newDispatcher(t)
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
			wait := startRun(t, context.Background(), d)
			emitDelayed(t, d, "", "in an hour", dispatcher.After(time.Hour))
			flushed := make(chan error, 1)
			go func() { flushed <- d.Flush(context.Background()) }()
			synctest.Wait()
			if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("Close() error = %v, want ErrDropped", err)
			}
			if err := recv(t, flushed, "Flush"); err != nil {
				t.Errorf("Flush() error = %v after Close dropped what it waited for, want nil", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run() error = %v", err)
			}
		})
	})
}

// TestRunTakesOverFromFlush: a Run that starts while a Flush processes on
// its caller's goroutine does not fail: Flush hands the queue over and
// waits for the workers. So `go d.Run(ctx)` followed at once by Flush
// works whichever goroutine comes first.
func TestRunTakesOverFromFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		var h handledAt
		subscribe(t, d, "later", h.handler)
		emitDelayed(t, d, "", "1h", dispatcher.After(time.Hour))
		flushed := make(chan error, 1)
		go func() { flushed <- d.Flush(context.Background()) }()
		synctest.Wait() // Flush owns the queue and waits for the due time
		wait := startRun(t, context.Background(), d)
		synctest.Wait()
		if !dispatcher.Running(d) {
			t.Fatal("Run did not take the queue from Flush")
		}
		advanceClock(time.Hour)
		if err := recv(t, flushed, "Flush"); err != nil {
			t.Errorf("Flush() error = %v", err)
		}
		if got := h.got(); len(got) != 1 {
			t.Errorf("handled %v, want [1h]", got)
		}
		stopRun(t, context.Background(), d, wait)
	})
}

// TestFlushWithoutRunWaitsForClosesDrop: a Flush without Run that meets a
// Close from another goroutine returns once Close has finished its drop:
// an event accepted before the Flush (here a delayed one in the time heap)
// has had its OnDone by then. Close sets the closed state before it drops,
// and the Flush's rounds stop at the state: Flush returned at once, before
// the drop, until it waited for Close to mark the dispatcher closed.
func TestFlushWithoutRunWaitsForClosesDrop(t *testing.T) {
	for _, jobLeft := range []bool{false, true} {
		t.Run(fmt.Sprintf("jobLeft=%v", jobLeft), func(t *testing.T) {
			meetCloseMidDrop(t, "Flush", jobLeft, func(d *dispatcher.Dispatcher) error { return d.Flush(context.Background()) })
		})
	}
}

// TestFlushWithoutRunEndsWhenDropOldestCancelsWhatItWaits: a Flush without
// Run that waits for the due time of delayed events returns as soon as a
// DropOldest emit cancels them (they are finished: dropped, OnDone told),
// not at their old due time. Nothing woke it before: it slept until then
// (an hour here; a day with At a day ahead).
func TestFlushWithoutRunEndsWhenDropOldestCancelsWhatItWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithCapacity(2), dispatcher.WithOverflow(dispatcher.DropOldest))
		subscribe(t, d, "later", func(context.Context, dispatcher.Event) error { return nil })
		ctx := context.Background()
		var r doneRecorder
		for _, name := range []string{"x1", "x2"} {
			if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "later"}, dispatcher.After(time.Hour), r.option(name)); err != nil {
				t.Fatalf("EmitEvent(%s) error = %v", name, err)
			}
		}
		start := time.Now()
		flushed := make(chan time.Time, 1)
		go func() {
			if err := d.Flush(ctx); err != nil {
				t.Errorf("Flush() error = %v", err)
			}
			flushed <- time.Now()
		}()
		synctest.Wait() // the Flush took x1 and x2 and waits for their due time
		for _, name := range []string{"e1", "e2"} {
			if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "later"}, dispatcher.After(2*time.Hour), r.option(name)); err != nil {
				t.Fatalf("EmitEvent(%s) error = %v", name, err)
			}
		}
		for _, name := range []string{"x1", "x2"} {
			if err := r.once(t, name); !errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("OnDone(%s) = %v, want ErrDropped", name, err)
			}
		}
		synctest.Wait()
		select {
		case <-flushed:
		default:
			end := <-flushed // the fake clock runs to the cancelled events' due time
			t.Errorf("Flush returned %v after everything it waited for was dropped (at once), want at once", end.Sub(start))
		}
	})
}

// TestFlushUnderRunWaitsForAHandlerThatOutlivesShutdown: a Shutdown whose
// ctx ends closes the dispatcher without waiting for a handler that
// ignores its ctx. A Flush that waits for that handler's event returns
// when the handler does, not when the dispatcher closes: the event has not
// finished before then, and Close did not discard it. (The queued events
// behind it are discarded, which finishes them.) A Flush whose own ctx
// ends first returns its error.
func TestFlushUnderRunWaitsForAHandlerThatOutlivesShutdown(t *testing.T) {
	for _, flushCtxEnds := range []bool{false, true} {
		t.Run(fmt.Sprintf("flushCtxEnds=%v", flushCtxEnds), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const queued = 2
				bg := context.Background()
				b, wait := startBlockedFirst(t, bg, queued, false)
				fctx, fcancel := context.WithCancel(bg)
				defer fcancel()
				flushed := make(chan error, 1)
				go func() { flushed <- b.d.Flush(fctx) }()
				synctest.Wait() // Flush waits for payload 0
				shutdownPastItsDeadline(t, b.d)
				select {
				case err := <-flushed:
					t.Fatalf("Flush returned %v while the handler of an event accepted before it still runs", err)
				default:
				}
				want := error(nil)
				if flushCtxEnds {
					fcancel()
					want = context.Canceled
					if err := recv(t, flushed, "Flush"); !errors.Is(err, want) {
						t.Errorf("Flush() with its ctx cancelled = %v, want %v", err, want)
					}
				}
				close(b.release)
				if !flushCtxEnds {
					if err := recv(t, flushed, "Flush"); err != nil {
						t.Errorf("Flush() after the handler returned = %v, want nil", err)
					}
				}
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v, want nil", err)
				}
				want2 := dispatcher.Stats{Emitted: queued + 1, Delivered: 1, Dropped: queued}
				if got := b.d.Stats(); got != want2 {
					t.Errorf("Stats() = %+v, want %+v", got, want2)
				}
			})
		})
	}
}

// TestFlushAfterCloseDoesNotWaitForLaterEvents: Flush under Run waits for
// a retry due in an hour; an event emitted after the call is handled by a
// handler that calls Close (or outlives a Shutdown whose ctx ends) and then
// waits until Flush has returned. Close discards the retry, so Flush must
// return nil without waiting for that handler, whose event it never waited
// for: waiting for every handler call to end would deadlock here.
func TestFlushAfterCloseDoesNotWaitForLaterEvents(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bg := context.Background()
				d := newDispatcher(t, dispatcher.WithWorkers(1))
				subscribe(t, d, "r", func(context.Context, dispatcher.Event) error {
					return errBoom
				}, dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Hour)))
				flushed := make(chan error, 1)
				flushDone := make(chan struct{})
				giveUp := make(chan struct{})
				subscribe(t, d, "late", func(context.Context, dispatcher.Event) error {
					if how == "close" {
						_ = d.Close()
					}
					select { // a handler that waits for the flusher
					case <-flushDone:
					case <-giveUp:
					}
					return nil
				})
				wait := startRun(t, bg, d)
				emit(t, d, "r", nil)
				synctest.Wait() // the first call failed; its retry is due in an hour
				go func() { flushed <- d.Flush(bg); close(flushDone) }()
				synctest.Wait()         // Flush waits for the retry
				emit(t, d, "late", nil) // not an event Flush waits for
				synctest.Wait()
				if how == "shutdown" {
					shutdownPastItsDeadline(t, d)
				}
				checkFlushReturnedNil(t, flushed, func() { close(giveUp) },
					"after Close discarded the retry it waits for: it waits for the handler of a later event")
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v, want nil", err)
				}
			})
		})
	}
}

// TestFlushAfterCloseEndsWithTheCallsItWaitsFor: two handlers outlive a
// Shutdown whose ctx ends, one for an event accepted before a Flush and
// one for an event after it. Flush returns when the first returns, while
// the second still runs (and Run with it).
func TestFlushAfterCloseEndsWithTheCallsItWaitsFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bg := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		early, late := make(chan struct{}), make(chan struct{})
		subscribe(t, d, "early", func(context.Context, dispatcher.Event) error { <-early; return nil })
		subscribe(t, d, "late", func(context.Context, dispatcher.Event) error { <-late; return nil })
		wait := startRun(t, bg, d)
		emit(t, d, "early", nil)
		synctest.Wait() // one worker is inside "early"
		flushed := make(chan error, 1)
		go func() { flushed <- d.Flush(bg) }()
		synctest.Wait()
		emit(t, d, "late", nil)
		synctest.Wait() // the other worker is inside "late"
		shutdownPastItsDeadline(t, d)
		select {
		case err := <-flushed:
			t.Fatalf("Flush returned %v while the handler of an event accepted before it runs", err)
		default:
		}
		close(early)
		synctest.Wait()
		releaseLate := sync.OnceFunc(func() { close(late) })
		checkFlushReturnedNil(t, flushed, releaseLate,
			"after the handler it waits for returned (the other runs an event emitted after it)")
		releaseLate()
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
	})
}

// shutdownPastItsDeadline calls d.Shutdown with a ctx that ends a second
// later, checks that Shutdown gives up with the ctx's error (a handler
// outlives it), and waits for the bubble to settle.
func shutdownPastItsDeadline(t *testing.T, d *dispatcher.Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown(1s) error = %v, want context.DeadlineExceeded", err)
	}
	synctest.Wait()
}

// checkFlushReturnedNil checks that the Flush reporting on flushed has
// returned, with nil. If it has not, it reports that it is still blocked
// (when says after what), then calls unblock and waits for it.
func checkFlushReturnedNil(t *testing.T, flushed <-chan error, unblock func(), when string) {
	t.Helper()
	select {
	case err := <-flushed:
		if err != nil {
			t.Errorf("Flush() = %v, want nil", err)
		}
	default:
		t.Errorf("Flush still blocked %s", when)
		unblock()
		recv(t, flushed, "Flush")
	}
}
