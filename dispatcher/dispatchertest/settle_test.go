package dispatchertest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

func TestSettleFollowsCascades(t *testing.T) {
	d := dispatchertest.New(t)
	var rec dispatchertest.Recorder
	next := map[string]string{"a": "b", "b": "c"}
	on(t, d, "*", rec.Wrap(func(ctx context.Context, e dispatcher.Event) error {
		if to, ok := next[e.Topic]; ok {
			return d.Emit(ctx, to, nil)
		}
		return nil
	}))
	emit(t, d, "a", nil)
	if n, err := dispatchertest.Settle(t, d); n != 3 || err != nil {
		t.Errorf("Settle() = %d, %v, want 3, nil", n, err)
	}
	if got := rec.Topics(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("topics handled = %q, want a, b, c", got)
	}
}

func TestSettleRunsRetriesInFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = time.Minute
		d := dispatchertest.New(t, dispatcher.WithRetry(3, dispatcher.ConstantBackoff(wait)))
		dispatchertest.NoDeadLetters(t, d)
		start := time.Now()
		var calls []time.Duration // when each call ran, since start
		on(t, d, "job", func(_ context.Context, e dispatcher.Event) error {
			calls = append(calls, time.Since(start))
			if e.Attempt < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		emit(t, d, "job", nil)

		if n, err := dispatchertest.Settle(t, d); n != 3 || err != nil {
			t.Errorf("Settle() = %d, %v, want 3 (the event, two retries), nil", n, err)
		}
		if len(calls) != 3 {
			t.Fatalf("handler called %d times, want 3", len(calls))
		}
		// Each retry runs no earlier than due, and at most twice its wait
		// plus a millisecond after the call before.
		for i := 1; i < len(calls); i++ {
			if gap := calls[i] - calls[i-1]; gap < wait || gap > 2*wait+time.Millisecond {
				t.Errorf("call %d ran %v after call %d, want within [%v, %v]", i+1, gap, i, wait, 2*wait+time.Millisecond)
			}
		}
		if st := d.Stats(); st.Retried != 2 || st.Delivered != 1 || st.Retrying != 0 || st.Queued != 0 {
			t.Errorf("Stats() = %+v, want Retried 2, Delivered 1, nothing waiting", st)
		}
	})
}

func TestSettleWaitsForDelayedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := dispatchertest.New(t)
		var rec dispatchertest.Recorder
		on(t, d, "reminder", rec.Handle)
		start := time.Now()
		err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "reminder"}, dispatcher.After(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := dispatchertest.Settle(t, d); n != 1 || err != nil {
			t.Errorf("Settle() = %d, %v, want 1, nil", n, err)
		}
		if rec.Len("reminder") != 1 || time.Since(start) < time.Hour {
			t.Errorf("handled %d reminders after %v, want 1 after an hour at least", rec.Len("reminder"), time.Since(start))
		}
		if st := d.Stats(); st.Scheduled != 0 {
			t.Errorf("Scheduled %d after Settle, want 0", st.Scheduled)
		}
	})
}

func TestSettleReturnsTheDeadLetteredFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := dispatchertest.New(t, dispatcher.WithRetry(2, dispatcher.ConstantBackoff(time.Second)))
		fail := errors.New("down")
		on(t, d, "job", func(context.Context, dispatcher.Event) error { return fail })
		emit(t, d, "job", 1)
		emit(t, d, "job", 2)
		n, err := dispatchertest.Settle(t, d)
		if n != 4 || !errors.Is(err, fail) {
			t.Errorf("Settle() = %d, %v, want 4 and the handler's error", n, err)
		}
		var he *dispatcher.HandlerError
		if !errors.As(err, &he) || he.Attempt != 2 {
			t.Errorf("Settle() error = %v, want a *HandlerError of attempt 2", err)
		}
		if got := len(d.DeadLetters()); got != 2 {
			t.Errorf("DeadLetters() holds %d, want 2", got)
		}
	})
}

func TestSettleOutsideABubbleFailsInsteadOfSleeping(t *testing.T) {
	d := dispatchertest.New(t, dispatcher.WithRetry(2, dispatcher.ConstantBackoff(time.Hour)))
	on(t, d, "job", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	emit(t, d, "job", nil)
	fake := dispatchertest.NewFakeTB(t.Context())
	n, err := dispatchertest.Settle(fake, d)
	if n != 1 || err != nil {
		t.Errorf("Settle() = %d, %v, want 1, nil", n, err)
	}
	if f := fake.Fatals(); len(f) != 1 || !strings.Contains(f[0], "synctest.Test") || !strings.Contains(f[0], "1 retries") {
		t.Errorf("Settle() outside a bubble reported %q, want one Fatalf that asks for synctest.Test", f)
	}
}

func TestSettleReportsADispatcherItCannotDrain(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		d := dispatchertest.New(t)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		fake := dispatchertest.NewFakeTB(t.Context())
		dispatchertest.Settle(fake, d)
		if f := fake.Fatals(); len(f) != 1 || !strings.Contains(f[0], dispatcher.ErrClosed.Error()) {
			t.Errorf("Settle() of a closed dispatcher reported %q, want ErrClosed", f)
		}
	})
	t.Run("running", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			d := dispatchertest.New(t)
			runErr := make(chan error, 1)
			go func() { runErr <- d.Run(t.Context()) }()
			synctest.Wait() // Run took the queue; its workers are parked
			fake := dispatchertest.NewFakeTB(t.Context())
			dispatchertest.Settle(fake, d)
			if f := fake.Fatals(); len(f) != 1 || !strings.Contains(f[0], dispatcher.ErrRunning.Error()) {
				t.Errorf("Settle() under Run reported %q, want ErrRunning", f)
			}
			if err := d.Shutdown(t.Context()); err != nil {
				t.Errorf("Shutdown() error = %v", err)
			}
			if err := <-runErr; err != nil {
				t.Errorf("Run() error = %v", err)
			}
		})
	})
}
