package dispatcher_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// A handler calls Close during a Drain, then fails with retry budget left:
// its retry is scheduled after Close cleared the retry queue, and must still
// be accounted for (dropped, since the dispatcher is closed).
func TestCloseFromTickHandlerDropsItsRetry(t *testing.T) {
	ctx := context.Background()
	d, _ := dispatcher.New(dispatcher.WithRetry(2, nil))
	d.On("a", func(ctx context.Context, e dispatcher.Event) error {
		d.Close()
		return errors.New("boom")
	})
	if err := d.Emit(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	d.Drain(ctx, 0)
	st := d.Stats()
	t.Logf("stats after Close: %+v", st)
	if st.Delivered+st.DeadLettered+st.Dropped == 0 {
		t.Errorf("event 1 accepted but neither delivered, dead-lettered nor dropped; Retrying=%d", st.Retrying)
	}
}

// Shutdown without Run, waiting for a retry's backoff, must be
// woken by Close instead of sleeping until the dropped retry was due.
func TestCloseWakesShutdownWaitingForRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d, _ := dispatcher.New(dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
		d.On("a", func(ctx context.Context, e dispatcher.Event) error { return errors.New("boom") })
		d.Emit(ctx, "a", nil)
		d.Drain(ctx, 0) // first call fails; retry due in 1h
		done := make(chan error, 1)
		go func() { done <- d.Shutdown(ctx) }()
		synctest.Wait() // Shutdown waits on the retry's timer
		d.Close()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Errorf("Shutdown still blocked after Close returned (waits for the dropped retry's 1h backoff)")
			<-done // the fake clock moves to the backoff's end once all wait
		}
	})
}

// Redeliver racing the end of a Shutdown under Run: a dead letter is
// delivered, stays a dead letter, or is counted as dropped; never none.
func TestRedeliverRacingShutdownLosesNothing(t *testing.T) {
	iters := 500
	if testing.Short() {
		iters = 50
	}
	lost := 0
	for iter := 0; iter < iters && lost == 0; iter++ {
		d, _ := dispatcher.New(dispatcher.WithWorkers(1))
		var calls atomic.Int32
		d.On("a", func(ctx context.Context, e dispatcher.Event) error {
			if calls.Add(1) == 1 {
				return errors.New("first call fails")
			}
			return nil
		})
		ctx := context.Background()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
		d.Emit(ctx, "a", nil)
		for len(d.DeadLetters()) == 0 {
			runtime.Gosched()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := d.Redeliver(ctx)
				if err != nil || n > 0 {
					return
				}
			}
		}()
		d.Shutdown(ctx)
		wg.Wait()
		st := d.Stats()
		if st.Delivered == 0 && st.DeadLetters == 0 && st.Dropped == 0 {
			lost++
			t.Logf("iter %d: dead letter vanished: %+v", iter, st)
		}
	}
	if lost > 0 {
		t.Errorf("dead letter redelivered during Shutdown lost (%d times)", lost)
	}
}
