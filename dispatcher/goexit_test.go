package dispatcher_test

// Handlers that end their goroutine with runtime.Goexit, as t.FailNow does.

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

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
				if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "t", Key: key}); err != nil {
					t.Fatalf("EmitEvent() error = %v", err)
				}
			}
			wait := startRun(t, ctx, d)
			recv(t, running, "the first delivery under Run")
			sctx, cancel := context.WithTimeout(ctx, waitTimeout)
			defer cancel()
			if err := d.Shutdown(sctx); err != nil {
				t.Errorf("Shutdown() error = %v, want nil", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run() error = %v, want nil", err)
			}
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
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = d.Drain(context.Background(), 0) // never returns: its goroutine ends in the handler
	}()
	recv(t, done, "the goroutine of the first Drain to end")
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
