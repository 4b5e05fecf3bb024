package dispatcher_test

// Retries: which calls are retried, when (backoffs run on synctest's fake
// clock: no test here sleeps for real), and their budget under Run's load.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestRetryOnlyTheFailedSubscriber(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	fail := errors.New("fail")
	subscribe(t, d, "t", l.handler("good", nil))
	bad := subscribe(t, d, "t", l.handler("bad", fail))
	emitTopics(t, d, "t")

	n, err := d.Drain(context.Background(), 0)
	if n != 3 {
		t.Errorf("Drain(0) = %d, want 3 (the event and two retries)", n)
	}
	if !errors.Is(err, fail) {
		t.Errorf("Drain(0) error = %v, want it to wrap the handler's error", err)
	}
	if hes := handlerErrors(err); len(hes) != 1 || hes[0].Attempt != 3 {
		t.Errorf("Drain(0) error reports %d failures (%v), want the one dead letter, attempt 3", len(hes), err)
	}
	checkCalls(t, "retries", &l, "good:1", "bad:1", "bad:1#2", "bad:1#3")
	st := d.Stats()
	want := dispatcher.Stats{Emitted: 1, Delivered: 1, Failed: 3, Retried: 2, DeadLettered: 1, DeadLetters: 1}
	if st != want {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	dls := d.DeadLetters()
	if len(dls) != 1 || dls[0].Attempts != 3 || dls[0].Event.Attempt != 3 || dls[0].Subscriber != bad.Name() || !errors.Is(dls[0].Err, fail) {
		t.Errorf("DeadLetters() = %+v, want one of %s after 3 attempts", dls, bad.Name())
	}
}

func TestRetryThatSucceedsIsNoDeadLetter(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		l.add("flaky:%d#%d", e.ID, e.Attempt)
		if e.Attempt < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	emitTopics(t, d, "t")
	if n, err := d.Drain(context.Background(), 0); n != 2 || err != nil {
		t.Errorf("Drain(0) = %d, %v, want 2, nil (a retried failure is not reported)", n, err)
	}
	checkCalls(t, "flaky handler", &l, "flaky:1#1", "flaky:1#2")
	if st := d.Stats(); st.Delivered != 1 || st.Failed != 1 || st.Retried != 1 || st.DeadLettered != 0 || len(d.DeadLetters()) != 0 {
		t.Errorf("Stats() = %+v, DeadLetters() = %v, want Delivered 1, Failed 1, Retried 1, no dead letter", st, d.DeadLetters())
	}
}

func TestRetryWithNilBackoffRunsOnTheNextTick(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	fail := errors.New("fail")
	subscribe(t, d, "t", l.handler("good", nil))
	subscribe(t, d, "t", l.handler("bad", fail))
	emitTopics(t, d, "t")

	steps := []struct {
		n        int
		dead     bool
		calls    []string
		retrying int
	}{
		{n: 1, calls: []string{"good:1", "bad:1"}, retrying: 1},
		{n: 1, calls: []string{"good:1", "bad:1", "bad:1#2"}, retrying: 1},
		{n: 1, dead: true, calls: []string{"good:1", "bad:1", "bad:1#2", "bad:1#3"}},
		{n: 0, calls: []string{"good:1", "bad:1", "bad:1#2", "bad:1#3"}},
	}
	for i, s := range steps {
		n, err := d.Tick(ctx)
		if n != s.n {
			t.Errorf("Tick #%d = %d, want %d", i+1, n, s.n)
		}
		if got := errors.Is(err, fail); got != s.dead {
			t.Errorf("Tick #%d error = %v, want a dead letter reported: %v", i+1, err, s.dead)
		}
		checkCalls(t, fmt.Sprintf("after Tick #%d", i+1), &l, s.calls...)
		if r := d.Stats().Retrying; r != s.retrying {
			t.Errorf("after Tick #%d: Stats().Retrying = %d, want %d", i+1, r, s.retrying)
		}
	}
}

func TestRetryQueueFullMakesADeadLetterAtOnce(t *testing.T) {
	// The retry queue holds as many jobs as the capacity: 1 here. The
	// second failure of the event finds it full and is dead-lettered
	// without a retry.
	d := newDispatcher(t, dispatcher.WithCapacity(1), dispatcher.WithRetry(2, nil))
	var l callLog
	fail := errors.New("fail")
	subscribe(t, d, "t", l.handler("a", fail), dispatcher.WithName("a"))
	subscribe(t, d, "t", l.handler("b", fail), dispatcher.WithName("b"))
	emitTopics(t, d, "t")
	drainIgnoringFailures(t, d)

	checkCalls(t, "calls", &l, "a:1", "b:1", "a:1#2")
	var got []string
	for _, dl := range d.DeadLetters() {
		got = append(got, fmt.Sprintf("%s after %d", dl.Subscriber, dl.Attempts))
	}
	if want := []string{"b after 1", "a after 2"}; !slices.Equal(got, want) {
		t.Errorf("DeadLetters() = %q, want %q", got, want)
	}
}

func TestRetryBackoffTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		fail := errors.New("fail")
		d := newDispatcher(t, dispatcher.WithRetry(3, linearBackoff))
		calls := timedCalls{start: time.Now()}
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			return fail
		})
		emitTopics(t, d, "t")

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
		d := newDispatcher(t, dispatcher.WithRetry(2, linearBackoff))
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		emitTopics(t, d, "t")
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
		d := newDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Second }))
		calls := timedCalls{start: time.Now()}
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			return errors.New("fail")
		})

		emitTopics(t, d, "t") // event 1 fails at 0s: retry due at 1s
		if n, _ := d.Tick(ctx); n != 1 {
			t.Errorf("Tick() at 0s = %d, want 1", n)
		}
		advanceClock(500 * time.Millisecond)
		emitTopics(t, d, "t") // event 2 fails at 0.5s: retry due at 1.5s
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
		d := newDispatcher(t, dispatcher.WithRetry(4, backoff))
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		emitTopics(t, d, "t")
		if n := drainIgnoringFailures(t, d); n != 4 {
			t.Errorf("Drain(0) = %d, want 4", n)
		}
		if want := []int{1, 2, 3}; fmt.Sprint(asked) != fmt.Sprint(want) {
			t.Errorf("backoff called with %v, want %v (no backoff after the last call)", asked, want)
		}
	})
}

func TestRedeliverRunsAtOnceWhateverTheBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
		calls := timedCalls{start: time.Now()}
		healed := false
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			if !healed {
				return errors.New("down")
			}
			return nil
		})
		emitTopics(t, d, "t")
		drain(t, d)
		advanceClock(time.Hour)
		drainIgnoringFailures(t, d) // the retry fails: dead letter
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

// TestRunRetryWithoutBackoffKeepsBudgetUnderLoad: with WithRetry(2, nil),
// a pair that fails once is retried at once under Run and succeeds. The
// retry queue holds as many jobs as the capacity and workers take ready
// retries before new events, so a retry may only be refused when that many
// retries are outstanding, which a load of 4 workers taking 32 events at
// a time never comes near: no pair may become a dead letter.
func TestRunRetryWithoutBackoffKeepsBudgetUnderLoad(t *testing.T) {
	const producers = 8
	events := sizeFor(100_000, 20_000)
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(1024), dispatcher.WithRetry(2, nil), dispatcher.WithDeadLetterLimit(events))
	var calls, ok atomic.Int64
	subscribe(t, d, "load", func(ctx context.Context, e dispatcher.Event) error {
		calls.Add(1)
		if e.Payload.(int)%3 == 0 && e.Attempt == 1 {
			return errors.New("fails on the first call only")
		}
		ok.Add(1)
		return nil
	})
	wait := startRun(t, ctx, d)
	var wg sync.WaitGroup
	errs := make([]error, producers)
	for pr := range producers {
		wg.Go(func() {
			for p := pr; p < events; p += producers {
				if err := d.Emit(ctx, "load", p); err != nil {
					errs[pr] = err
					return
				}
			}
		})
	}
	wg.Wait()
	shutdownAfterProducers(t, ctx, d, wait, errs)
	retryable := (events + 2) / 3
	if dl := d.DeadLetters(); len(dl) > 0 {
		t.Errorf("%d of %d pairs that fail only on their first call became dead letters after 1 call, want 0: "+
			"a retry due at once must reach the workers at once (if it waits for something that lags under load, "+
			"the retry queue, bounded by the capacity, fills up); first: %+v", len(dl), retryable, dl[0])
	}
	if got := ok.Load(); got != int64(events) {
		t.Errorf("%d events handled successfully, want %d", got, events)
	}
	st := d.Stats()
	if st.Retried+st.DeadLettered != uint64(retryable) || st.Failed != uint64(retryable) {
		t.Errorf("Stats() = %+v, want Failed %d = Retried + DeadLettered", st, retryable)
	}
}

// backoffPanics is a retry backoff that panics.
func backoffPanics(int) time.Duration { panic("kaboom") }

// checkBackoffDeadLetter checks that the one failed pair of a dispatcher
// whose backoff panics became a dead letter whose error tells so.
func checkBackoffDeadLetter(t *testing.T, d *dispatcher.Dispatcher) {
	t.Helper()
	dls := d.DeadLetters()
	if len(dls) != 1 {
		t.Fatalf("DeadLetters() = %+v, want 1", dls)
	}
	if msg := fmt.Sprint(dls[0].Err); !strings.Contains(msg, "backoff") || !strings.Contains(msg, "kaboom") {
		t.Errorf("dead letter error = %q, want it to name the backoff and its panic %q", msg, "kaboom")
	}
}

// TestBackoffPanicDrain: a WithRetry backoff that panics must not
// crash a Drain: the failed pair becomes a dead letter whose error tells
// of the backoff's panic.
func TestBackoffPanicDrain(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithRetry(3, backoffPanics))
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("failing") })
	emit(t, d, "t", nil)
	var err error
	if p := panicValue(func() { _, err = d.Drain(ctx, 0) }); p != nil {
		t.Fatalf("Drain(0) panicked: %v", p)
	}
	if err == nil {
		t.Errorf("Drain(0) error = nil, want the dead letter's")
	}
	checkBackoffDeadLetter(t, d)
	_ = d.Close()
}

// TestBackoffPanicRun: a WithRetry backoff that panics must not
// crash a worker under Run: the failed pair becomes a dead letter whose
// error tells of the backoff's panic. It runs in a child process: a panic
// on a worker goroutine ends the process.
func TestBackoffPanicRun(t *testing.T) {
	if !isolatedChild(t) {
		return
	}
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(1), dispatcher.WithRetry(3, backoffPanics))
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("failing") })
		emit(t, d, "t", nil)
		wait := startRun(t, ctx, d)
		synctest.Wait() // Run owns the queue: Shutdown must not drain on this goroutine
		sctx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		stopRun(t, sctx, d, wait)
		checkBackoffDeadLetter(t, d)
	})
}

// TestRetryHeap checks the waiting retries' heap against a sorted list:
// order by due time then scheduling order, the index each delayed event's
// tracker records (DropOldest removes by it), and cleared slots.
func TestRetryHeap(t *testing.T) {
	for seed := range uint64(20) {
		if err := dispatcher.CheckRetryHeap(seed, 2000); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}
