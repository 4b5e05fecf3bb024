package dispatcher_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestRunHandlerGoexit: a handler that ends its worker goroutine with
// runtime.Goexit (as t.FailNow does) fails only its own call; the
// subscriber after it still gets the event, the other events are all
// delivered by a replacement worker, and Shutdown completes.
func TestRunHandlerGoexit(t *testing.T) {
	for _, key := range []string{"", "k"} {
		t.Run("key="+key, func(t *testing.T) {
			d, err := dispatcher.New(dispatcher.WithWorkers(1))
			if err != nil {
				t.Fatal(err)
			}
			var first, second atomic.Int64
			running := make(chan struct{}) // Run owns the queue: Shutdown must not drain on this goroutine
			var once sync.Once
			d.On("t", func(_ context.Context, e dispatcher.Event) error {
				if e.ID == 3 {
					runtime.Goexit()
				}
				first.Add(1)
				return nil
			}, dispatcher.WithName("first"))
			d.On("t", func(context.Context, dispatcher.Event) error {
				second.Add(1)
				once.Do(func() { close(running) })
				return nil
			}, dispatcher.WithName("second"))
			ctx := context.Background()
			for range 10 {
				if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "t", Key: key}); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			var runErr error
			wg.Go(func() { runErr = d.Run(ctx) })
			<-running
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := d.Shutdown(sctx); err != nil {
				t.Errorf("Shutdown() = %v, want nil", err)
			}
			wg.Wait()
			if runErr != nil {
				t.Errorf("Run() = %v, want nil", runErr)
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
	d, err := dispatcher.New()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	d.On("t", func(_ context.Context, e dispatcher.Event) error {
		if e.ID == 2 {
			runtime.Goexit()
		}
		got = append(got, e.ID)
		return nil
	})
	ctx := context.Background()
	for range 4 {
		if err := d.Emit(ctx, "t", nil); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Drain(ctx, 0)
	}()
	<-done
	n, err := d.Drain(ctx, 0)
	if n != 2 || err != nil {
		t.Errorf("second Drain(0) = %d, %v, want 2, nil", n, err)
	}
	if want := []uint64{1, 3, 4}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if st := d.Stats(); st.Failed != 1 || st.DeadLettered != 1 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Failed 1, DeadLettered 1, Queued 0", st)
	}
}
