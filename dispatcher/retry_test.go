package dispatcher_test

// Retries with backoff (behaviour 8), on synctest's fake clock: no test
// here sleeps for real.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// linearBackoff is the backoff of these tests: call k+1 is due k seconds
// after call k failed.
func linearBackoff(attempt int) time.Duration { return time.Duration(attempt) * time.Second }

// timedCalls records "#attempt@elapsed" for each handler call.
type timedCalls struct {
	start time.Time
	log   callLog
}

func (c *timedCalls) record(e dispatcher.Event) {
	c.log.add("%d#%d@%v", e.ID, e.Attempt, time.Since(c.start))
}

func TestRetryBackoffTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		fail := errors.New("fail")
		d := mustNewDispatcher(t, dispatcher.WithRetry(3, linearBackoff))
		calls := timedCalls{start: time.Now()}
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			return fail
		})
		mustEmit(t, d, "t")

		steps := []struct {
			sleep    time.Duration // before the Drain
			want     int
			dead     bool // the Drain reports the dead letter
			retrying int  // Stats().Retrying after the Drain
			calls    []string
		}{
			{sleep: 0, want: 1, retrying: 1, calls: []string{"1#1@0s"}},
			{sleep: 0, want: 0, retrying: 1, calls: []string{"1#1@0s"}},                                   // not due
			{sleep: 999 * time.Millisecond, want: 0, retrying: 1, calls: []string{"1#1@0s"}},              // 1ms early
			{sleep: time.Millisecond, want: 1, retrying: 1, calls: []string{"1#1@0s", "1#2@1s"}},          // now == due
			{sleep: 1999 * time.Millisecond, want: 0, retrying: 1, calls: []string{"1#1@0s", "1#2@1s"}},   // backoff(2) = 2s
			{sleep: time.Millisecond, want: 1, dead: true, calls: []string{"1#1@0s", "1#2@1s", "1#3@3s"}}, // budget spent
			{sleep: time.Hour, want: 0, calls: []string{"1#1@0s", "1#2@1s", "1#3@3s"}},
		}
		for i, s := range steps {
			advanceClock(s.sleep)
			n, err := d.Drain(ctx, 0)
			if n != s.want {
				t.Errorf("step %d (+%v): Drain(0) = %d, want %d", i+1, s.sleep, n, s.want)
			}
			if got := errors.Is(err, fail); got != s.dead || (!s.dead && err != nil) {
				t.Errorf("step %d (+%v): Drain(0) error = %v, want the dead letter reported: %v", i+1, s.sleep, err, s.dead)
			}
			if r := d.Stats().Retrying; r != s.retrying {
				t.Errorf("step %d (+%v): Stats().Retrying = %d, want %d", i+1, s.sleep, r, s.retrying)
			}
			checkCalls(t, fmt.Sprintf("step %d (+%v)", i+1, s.sleep), &calls.log, s.calls...)
		}
		st := d.Stats()
		if st.Failed != 3 || st.Retried != 2 || st.DeadLettered != 1 || st.Queued != 0 || st.Retrying != 0 {
			t.Errorf("Stats() = %+v, want Failed 3, Retried 2, DeadLettered 1, nothing queued or retrying", st)
		}
		if dls := d.DeadLetters(); len(dls) != 1 || dls[0].Attempts != 3 || dls[0].Event.Attempt != 3 {
			t.Errorf("DeadLetters() = %+v, want one after 3 attempts", dls)
		}
	})
}

func TestRetryNotDueDoesNotKeepDrainGoing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithRetry(2, linearBackoff))
		mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		mustEmit(t, d, "t")
		start := time.Now()
		if n, err := d.Drain(context.Background(), 0); n != 1 || err != nil {
			t.Errorf("Drain(0) = %d, %v, want 1, nil", n, err)
		}
		if n, err := d.Tick(context.Background()); n != 0 || err != nil {
			t.Errorf("Tick() before the retry is due = %d, %v, want 0, nil", n, err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Drain and Tick waited %v of fake time for a retry, want 0", waited)
		}
	})
}

func TestTickTakesOnlyRetriesThatAreDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := mustNewDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Second }))
		calls := timedCalls{start: time.Now()}
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			return errors.New("fail")
		})

		mustEmit(t, d, "t") // event 1 fails at 0s: retry due at 1s
		if n, _ := d.Tick(ctx); n != 1 {
			t.Errorf("Tick() at 0s = %d, want 1", n)
		}
		advanceClock(500 * time.Millisecond)
		mustEmit(t, d, "t") // event 2 fails at 0.5s: retry due at 1.5s
		if n, _ := d.Tick(ctx); n != 1 {
			t.Errorf("Tick() at 0.5s = %d, want 1", n)
		}
		if r := d.Stats().Retrying; r != 2 {
			t.Errorf("Stats().Retrying at 0.5s = %d, want 2", r)
		}

		advanceClock(500 * time.Millisecond)
		if n, _ := d.Tick(ctx); n != 1 {
			t.Errorf("Tick() at 1s = %d, want 1 (event 1's retry only)", n)
		}
		checkCalls(t, "at 1s", &calls.log, "1#1@0s", "2#1@500ms", "1#2@1s")
		if r := d.Stats().Retrying; r != 1 {
			t.Errorf("Stats().Retrying at 1s = %d, want 1", r)
		}

		advanceClock(500 * time.Millisecond)
		if n, _ := d.Tick(ctx); n != 1 {
			t.Errorf("Tick() at 1.5s = %d, want 1 (event 2's retry)", n)
		}
		checkCalls(t, "at 1.5s", &calls.log, "1#1@0s", "2#1@500ms", "1#2@1s", "2#2@1.5s")
		if st := d.Stats(); st.Retrying != 0 || st.DeadLettered != 2 {
			t.Errorf("Stats() at 1.5s = %+v, want Retrying 0, DeadLettered 2", st)
		}
	})
}

func TestRetryBackoffGetsTheFailedAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var asked []int
		backoff := func(attempt int) time.Duration {
			asked = append(asked, attempt)
			return 0
		}
		d := mustNewDispatcher(t, dispatcher.WithRetry(4, backoff))
		mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		mustEmit(t, d, "t")
		if n := mustDrainIgnoringFailures(t, d); n != 4 {
			t.Errorf("Drain(0) = %d, want 4", n)
		}
		if want := []int{1, 2, 3}; fmt.Sprint(asked) != fmt.Sprint(want) {
			t.Errorf("backoff called with %v, want %v (no backoff after the last call)", asked, want)
		}
	})
}

func TestShutdownWithoutRunWaitsForPendingRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithRetry(3, linearBackoff))
		calls := timedCalls{start: time.Now()}
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			if e.Attempt < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		mustEmit(t, d, "t")

		if err := d.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown() error = %v", err)
		}
		if took := time.Since(calls.start); took != 3*time.Second {
			t.Errorf("Shutdown() took %v of fake time, want 3s (backoffs 1s + 2s)", took)
		}
		checkCalls(t, "after Shutdown", &calls.log, "1#1@0s", "1#2@1s", "1#3@3s")
		st := d.Stats()
		if st.Delivered != 1 || st.Failed != 2 || st.Retried != 2 || st.Dropped != 0 || st.DeadLettered != 0 || st.Retrying != 0 {
			t.Errorf("Stats() = %+v, want Delivered 1, Failed 2, Retried 2, nothing dropped, dead or retrying", st)
		}
		if err := d.Emit(context.Background(), "t", nil); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Emit after Shutdown error = %v, want ErrClosed", err)
		}
	})
}

func TestShutdownWithoutRunAfterDrainWaitsForTheRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithRetry(2, linearBackoff))
		calls := timedCalls{start: time.Now()}
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			if e.Attempt == 1 {
				return errors.New("once")
			}
			return nil
		})
		mustEmit(t, d, "t")
		mustDrain(t, d) // the first call fails; the retry waits
		advanceClock(400 * time.Millisecond)
		if err := d.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown() error = %v", err)
		}
		checkCalls(t, "after Shutdown", &calls.log, "1#1@0s", "1#2@1s")
	})
}

func TestShutdownWithoutRunContextEndsBeforeRetryIsDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return 10 * time.Second }))
		calls := timedCalls{start: time.Now()}
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			return errors.New("fail")
		})
		mustEmit(t, d, "t")

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := d.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown(5s) with a retry due at 10s error = %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(calls.start); took != 5*time.Second {
			t.Errorf("Shutdown(5s) took %v of fake time, want 5s", took)
		}
		checkCalls(t, "after Shutdown", &calls.log, "1#1@0s")
		st := d.Stats()
		if st.Dropped != 1 || st.Retrying != 0 || st.Retried != 0 || st.DeadLettered != 0 {
			t.Errorf("Stats() = %+v, want Dropped 1 (the retry), Retrying 0, Retried 0, DeadLettered 0", st)
		}

		// The dispatcher is closed, and stays so.
		advanceClock(time.Minute)
		if n, err := d.Drain(context.Background(), 0); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Drain(0) after the failed Shutdown = %d, %v, want 0, ErrClosed", n, err)
		}
		if err := d.Emit(context.Background(), "t", nil); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Emit after the failed Shutdown error = %v, want ErrClosed", err)
		}
		if err := d.Shutdown(context.Background()); err != nil {
			t.Errorf("second Shutdown() error = %v, want nil", err)
		}
		checkCalls(t, "a minute later", &calls.log, "1#1@0s")
	})
}

func TestRedeliverRunsAtOnceWhateverTheBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := mustNewDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
		calls := timedCalls{start: time.Now()}
		healed := false
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			if !healed {
				return errors.New("down")
			}
			return nil
		})
		mustEmit(t, d, "t")
		mustDrain(t, d)
		advanceClock(time.Hour)
		mustDrainIgnoringFailures(t, d) // the retry fails: dead letter
		healed = true
		if n, err := d.Redeliver(ctx); n != 1 || err != nil {
			t.Fatalf("Redeliver() = %d, %v, want 1, nil", n, err)
		}
		if n, err := d.Tick(ctx); n != 1 || err != nil {
			t.Errorf("Tick() right after Redeliver = %d, %v, want 1, nil", n, err)
		}
		checkCalls(t, "calls", &calls.log, "1#1@0s", "1#2@1h0m0s", "1#1@1h0m0s")
	})
}

// advanceClock moves synctest's fake clock on by d. It is time.Sleep, and
// every call is inside a synctest bubble: there a sleep returns as soon as
// every goroutine of the bubble waits, with the clock moved by d, so no
// test waits in real time.
func advanceClock(d time.Duration) { time.Sleep(d) }
