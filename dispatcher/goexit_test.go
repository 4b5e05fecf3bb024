package dispatcher_test

// Handlers that end their goroutine with runtime.Goexit, as t.FailNow does.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestRunHandlerGoexit: a handler that ends its worker goroutine with
// runtime.Goexit fails only its own call; the subscriber after it still
// gets the event, the other events are all delivered by a replacement
// worker, and Shutdown completes.
func TestRunHandlerGoexit(t *testing.T) {
	for _, key := range []string{"", "k"} {
		t.Run("key="+key, func(t *testing.T) {
			d := newDispatcher(t, dispatcher.WithWorkers(1))
			var first, second atomic.Int64
			running := make(chan struct{}) // Run handles events: Shutdown must not drain on this goroutine
			var once sync.Once
			subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
				if e.ID == 3 {
					runtime.Goexit()
				}
				first.Add(1)
				return nil
			}, dispatcher.WithName("first"))
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
				second.Add(1)
				once.Do(func() { close(running) })
				return nil
			}, dispatcher.WithName("second"))
			ctx := context.Background()
			for range 10 {
				emitKeyed(t, d, "t", key, nil)
			}
			wait := startRun(t, ctx, d)
			recv(t, running, "the first delivery under Run")
			sctx, cancel := context.WithTimeout(ctx, waitTimeout)
			defer cancel()
			stopRun(t, sctx, d, wait)
			if got := first.Load(); got != 9 {
				t.Errorf("first handler delivered %d events, want 9", got)
			}
			if got := second.Load(); got != 10 {
				t.Errorf("second handler delivered %d events, want 10 (event 3 queued for it alone)", got)
			}
			dls := d.DeadLetters()
			if len(dls) != 1 || dls[0].Event.ID != 3 || dls[0].Subscriber != "first" || !errors.Is(dls[0].Err, dispatcher.ErrGoexit) {
				t.Errorf("DeadLetters() = %+v, want event 3 for \"first\" with ErrGoexit", dls)
			}
		})
	}
}

// TestDrainHandlerGoexit: a handler that calls runtime.Goexit ends the
// goroutine running Drain; a later Drain processes the rest, in order.
func TestDrainHandlerGoexit(t *testing.T) {
	d := newDispatcher(t)
	var got []uint64
	subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		if e.ID == 2 {
			runtime.Goexit()
		}
		got = append(got, e.ID)
		return nil
	})
	for i := range 4 {
		emit(t, d, "t", i)
	}
	drainOnGoroutine(t, context.Background(), d) // the Goexit ends its goroutine
	n, err := d.Drain(context.Background(), 0)
	if n != 2 || err != nil {
		t.Errorf("second Drain(0) = %d, %v, want 2, nil", n, err)
	}
	if want := []uint64{1, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if st := d.Stats(); st.Failed != 1 || st.DeadLettered != 1 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Failed 1, DeadLettered 1, Queued 0", st)
	}
}

// goexitAfterPanic is a handler that ends its goroutine with
// runtime.Goexit, and panics in a deferred call while Goexit unwinds. A
// recover in the dispatcher then stops the panic, but not the Goexit.
func goexitAfterPanic(context.Context, dispatcher.Event) error {
	defer func() { panic("deferred panic during Goexit") }()
	runtime.Goexit()
	return nil
}

// TestGoexitWithDeferredPanic: a handler that calls runtime.Goexit
// and panics in a deferred call fails its call like any other failure:
// counted in Stats.Failed, one dead letter, and the subscriber after it in
// the fan-out still gets the event. Without Run the Goexit ends the
// goroutine running Drain, so that Drain runs on a goroutine of its own and
// a second Drain processes what is left.
func TestGoexitWithDeferredPanic(t *testing.T) {
	check := func(t *testing.T, d *dispatcher.Dispatcher, next []uint64) {
		t.Helper()
		if len(next) != 1 || next[0] != 1 {
			t.Errorf("the subscriber after the exiting one got events %v, want [1]", next)
		}
		if st := d.Stats(); st.Failed != 1 || st.DeadLettered != 1 {
			t.Errorf("Stats() = %+v, want Failed 1, DeadLettered 1", st)
		}
		if dls := d.DeadLetters(); len(dls) != 1 || dls[0].Subscriber != "exits" || dls[0].Event.ID != 1 {
			t.Errorf("DeadLetters() = %+v, want event 1 for \"exits\"", dls)
		}
	}
	t.Run("Drain", func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t)
		var next []uint64 // written by the Drains, one after the other
		subscribe(t, d, "t", goexitAfterPanic, dispatcher.WithName("exits"))
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			next = append(next, e.ID)
			return nil
		}, dispatcher.WithName("next"))
		emit(t, d, "t", nil)
		drainOnGoroutine(t, ctx, d) // the Goexit ends its goroutine
		d.Drain(ctx, 0)             //nolint:errcheck // its error is the dead letter's
		check(t, d, next)
		_ = d.Close()
	})
	t.Run("Run", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			d := newDispatcher(t, dispatcher.WithWorkers(1))
			got := make(chan uint64, 1)
			subscribe(t, d, "t", goexitAfterPanic, dispatcher.WithName("exits"))
			subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
				got <- e.ID
				return nil
			}, dispatcher.WithName("next"))
			emit(t, d, "t", nil)
			wait := startRun(t, ctx, d)
			var next []uint64
			if id, ok := recvOK(t, got, "delivery to the subscriber after the exiting one"); ok {
				next = append(next, id)
			}
			stopRun(t, ctx, d, wait)
			check(t, d, next)
		})
	})
}

// TestGoexitWithFullRetryQueue: a handler's runtime.Goexit while the
// retry queue is full (capacity 1, one retry waiting for its backoff) must
// not drop the event for the subscribers after it in the fan-out: they get
// it later, from the next Drain, and nothing is counted as dropped. (With
// capacity 1 a Drain's batch holds one event; the rest of a batch that a
// Goexit interrupts is TestGoexitKeepsKeyOrder's concern.)
func TestGoexitWithFullRetryQueue(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithCapacity(1), dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
	subscribe(t, d, "f", func(context.Context, dispatcher.Event) error {
		return errors.New("failing")
	}, dispatcher.WithName("failing"))
	exited := false
	var got []string // written by the Drains, one after the other
	subscribe(t, d, "g", func(context.Context, dispatcher.Event) error {
		if !exited {
			exited = true
			runtime.Goexit()
		}
		return nil
	}, dispatcher.WithName("exits"))
	for _, name := range []string{"b", "c"} {
		subscribe(t, d, "g", func(context.Context, dispatcher.Event) error {
			got = append(got, name)
			return nil
		}, dispatcher.WithName(name))
	}
	emit(t, d, "f", nil)
	if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
		t.Fatalf("Drain(0) = %d, %v, want 1, nil (the failure waits for its retry)", n, err)
	}
	if st := d.Stats(); st.Retrying != 1 {
		t.Fatalf("Stats().Retrying = %d, want 1: the retry queue (capacity 1) is full", st.Retrying)
	}
	emit(t, d, "g", nil)
	drainOnGoroutine(t, ctx, d) // the Goexit ends its goroutine
	d.Drain(ctx, 0)             //nolint:errcheck // "exits" may be a dead letter: its retry found the queue full
	if len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Errorf("subscribers after the exiting one got the event: %v, want [b c]", got)
	}
	if st := d.Stats(); st.Dropped != 0 {
		t.Errorf("Stats().Dropped = %d, want 0", st.Dropped)
	}
	_ = d.Close()
}

// TestGoexitKeepsKeyOrder: under Run with one worker, subscriber A
// calls runtime.Goexit on event 1 once; subscriber B, which never fails,
// must still see the key's events in emit order.
func TestGoexitKeepsKeyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const events = 3
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(1))
		exited := false // only the one worker calls A at a time
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			if e.ID == 1 && !exited {
				exited = true
				runtime.Goexit()
			}
			return nil
		}, dispatcher.WithName("a"))
		got := make(chan uint64, events)
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			got <- e.ID
			return nil
		}, dispatcher.WithName("b"))
		for range events {
			emitKeyed(t, d, "t", "k", nil)
		}
		wait := startRun(t, ctx, d)
		var order []uint64
		for range events {
			id, ok := recvOK(t, got, "delivery to b")
			if !ok {
				break
			}
			order = append(order, id)
		}
		stopRun(t, ctx, d, wait)
		if want := []uint64{1, 2, 3}; fmt.Sprint(order) != fmt.Sprint(want) {
			t.Errorf("b saw key k's events in order %v, want %v", order, want)
		}
	})
}
