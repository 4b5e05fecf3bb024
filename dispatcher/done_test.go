package dispatcher_test

// Completion (SPEC part two): OnDone runs exactly once per accepted event,
// with what became of it; and stopping Run by its ctx requeues the calls
// it cut short instead of failing them. Time runs on synctest's fake clock.

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

// TestOnDoneNotCalledWhenEmitFails: an EmitEvent that returns an error
// accepted nothing, so its done never runs, not even when the dispatcher
// later processes or drops everything else.
func TestOnDoneNotCalledWhenEmitFails(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		opts  []dispatcher.Option
		fill  int // events emitted first, without OnDone
		stop  string
		ctx   context.Context
		topic string
		want  error
	}{
		{name: "Reject, full", opts: []dispatcher.Option{dispatcher.WithCapacity(1), dispatcher.WithOverflow(dispatcher.Reject)}, fill: 1, want: dispatcher.ErrFull},
		{name: "DropNewest, full", opts: []dispatcher.Option{dispatcher.WithCapacity(1), dispatcher.WithOverflow(dispatcher.DropNewest)}, fill: 1, want: dispatcher.ErrDropped},
		{name: "Block, full, ctx ended", opts: []dispatcher.Option{dispatcher.WithCapacity(1)}, fill: 1, ctx: cancelled, want: context.Canceled},
		{name: "after Close", stop: "Close", want: dispatcher.ErrClosed},
		{name: "after Shutdown", stop: "Shutdown", want: dispatcher.ErrClosed},
		{name: "empty topic", topic: "-", want: dispatcher.ErrBadTopic},
		{name: "wildcard topic", topic: "t.*", want: dispatcher.ErrBadTopic},
		{name: "bad topic", topic: "a..b", want: dispatcher.ErrBadTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDispatcher(t, tt.opts...)
			var calls int
			subscribe(t, d, ">", func(context.Context, dispatcher.Event) error { calls++; return nil })
			for i := range tt.fill {
				emit(t, d, "t", i)
			}
			switch tt.stop {
			case "Close":
				_ = d.Close()
			case "Shutdown":
				if err := d.Shutdown(context.Background()); err != nil {
					t.Fatalf("Shutdown() error = %v", err)
				}
			}
			ctx, topic := tt.ctx, tt.topic
			if ctx == nil {
				ctx = context.Background()
			}
			switch topic {
			case "":
				topic = "t"
			case "-":
				topic = ""
			}
			var dr doneRecorder
			if err := d.EmitEvent(ctx, dispatcher.Event{Topic: topic, Key: "k"}, dr.option("e")); !errors.Is(err, tt.want) {
				t.Errorf("EmitEvent() error = %v, want %v", err, tt.want)
			}
			if tt.stop == "" {
				if n := drain(t, d); n != tt.fill || calls != tt.fill {
					t.Errorf("Drain(0) = %d with %d calls, want %d", n, calls, tt.fill)
				}
			}
			_ = d.Close()
			dr.notYet(t, "e", "after the failed EmitEvent, a Drain and Close")
		})
	}
}

// TestOnDoneResult: done gets nil when every subscriber eventually
// succeeded or none matched, and otherwise the dead letters' errors
// joined: errors.Is reaches each handler error, errors.As each
// *HandlerError. It runs once, on Drain's goroutine, before Drain returns.
func TestOnDoneResult(t *testing.T) {
	err1, err2 := errors.New("one"), errors.New("two")
	ok := func(context.Context, dispatcher.Event) error { return nil }
	fail := func(err error) dispatcher.Handler {
		return func(context.Context, dispatcher.Event) error { return err }
	}
	failUntil := func(attempt int, err error) dispatcher.Handler {
		return func(_ context.Context, e dispatcher.Event) error {
			if e.Attempt < attempt {
				return err
			}
			return nil
		}
	}
	tests := []struct {
		name     string
		attempts int                  // WithRetry's, no backoff
		give     []dispatcher.Handler // subscribers s0, s1, ... of "t"
		wantIs   []error              // nil: done gets nil
		wantSubs []string             // the subscribers its HandlerErrors name
		wantPan  bool                 // errors.As reaches a *PanicError
	}{
		{name: "every subscriber succeeded", attempts: 1, give: []dispatcher.Handler{ok, ok}},
		{name: "no subscriber matched", attempts: 1},
		{name: "one dead letter", attempts: 1, give: []dispatcher.Handler{ok, fail(err1), ok}, wantIs: []error{err1}, wantSubs: []string{"s1"}},
		{name: "two dead letters", attempts: 1, give: []dispatcher.Handler{fail(err1), ok, fail(err2)}, wantIs: []error{err1, err2}, wantSubs: []string{"s0", "s2"}},
		{name: "retries that succeed", attempts: 3, give: []dispatcher.Handler{failUntil(2, err1), failUntil(3, err2), ok}},
		{name: "retries run out", attempts: 3, give: []dispatcher.Handler{failUntil(4, err1), failUntil(3, err2)}, wantIs: []error{err1}, wantSubs: []string{"s0"}},
		{name: "Permanent", attempts: 5, give: []dispatcher.Handler{fail(dispatcher.Permanent(err2))}, wantIs: []error{err2}, wantSubs: []string{"s0"}},
		{name: "panic", attempts: 1, give: []dispatcher.Handler{func(context.Context, dispatcher.Event) error { panic(err1) }}, wantIs: []error{err1}, wantSubs: []string{"s0"}, wantPan: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			d := newDispatcher(t, dispatcher.WithRetry(tt.attempts, nil))
			subscribe(t, d, "other", ok)
			for i, h := range tt.give {
				subscribe(t, d, "t", h, dispatcher.WithName(fmt.Sprintf("s%d", i)))
			}
			emit(t, d, "t", "before") // an event without OnDone first: the tracked one is ID 2
			var (
				mu       sync.Mutex
				got      []error
				gids     []uint64
				returned bool // Drain returned
				late     bool // done ran after Drain returned
			)
			done := dispatcher.OnDone(func(err error) {
				mu.Lock()
				defer mu.Unlock()
				got, gids, late = append(got, err), append(gids, goroutineID()), returned
			})
			if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "t"}, done); err != nil {
				t.Fatalf("EmitEvent() error = %v", err)
			}
			_, derr := d.Drain(ctx, 0)
			mu.Lock()
			returned = true
			mu.Unlock()
			drain(t, d) // nothing left: done must not run again

			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("OnDone called %d times (%v), want once", len(got), got)
			}
			if late {
				t.Errorf("OnDone ran after Drain returned, want during Drain")
			}
			if caller := goroutineID(); gids[0] != caller {
				t.Errorf("OnDone ran on goroutine %d, want Drain's caller %d", gids[0], caller)
			}
			err := got[0]
			if tt.wantIs == nil {
				if err != nil {
					t.Errorf("OnDone got %v, want nil", err)
				}
				return
			}
			for _, w := range tt.wantIs {
				if !errors.Is(err, w) {
					t.Errorf("OnDone got %v, want errors.Is(_, %v)", err, w)
				}
				if !errors.Is(derr, w) {
					t.Errorf("Drain(0) error = %v, want errors.Is(_, %v)", derr, w)
				}
			}
			var he *dispatcher.HandlerError
			if !errors.As(err, &he) {
				t.Errorf("OnDone got %v, want errors.As to reach a *HandlerError", err)
			}
			var subs []string
			for _, he := range handlerErrors(err) {
				subs = append(subs, he.Subscriber)
				if he.EventID != 2 || he.Topic != "t" {
					t.Errorf("OnDone's HandlerError = %+v, want event 2 on t", he)
				}
			}
			slices.Sort(subs)
			if !slices.Equal(subs, tt.wantSubs) {
				t.Errorf("OnDone's HandlerErrors name %q, want %q", subs, tt.wantSubs)
			}
			if errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("OnDone got %v, want no ErrDropped: nothing was dropped", err)
			}
			var pe *dispatcher.PanicError
			if got := errors.As(err, &pe); got != tt.wantPan {
				t.Errorf("OnDone got %v: errors.As reaches a *PanicError = %v, want %v", err, got, tt.wantPan)
			}
		})
	}
}

// TestOnDoneRunsOnDrainCaller: done runs on the goroutine that calls the
// Drain which finishes the event (no goroutine of its own), also when
// that is a later Drain on another goroutine that makes a retry.
func TestOnDoneRunsOnDrainCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithRetry(2, linearBackoff))
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			if e.Payload == "retry" && e.Attempt == 1 {
				return errors.New("once")
			}
			return nil
		})
		type call struct {
			name string
			gid  uint64
		}
		var mu sync.Mutex
		var calls []call
		done := func(name string) dispatcher.EmitOption {
			return dispatcher.OnDone(func(error) {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, call{name, goroutineID()})
			})
		}
		for _, p := range []string{"plain", "retry"} {
			if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "t", Payload: p}, done(p)); err != nil {
				t.Fatalf("EmitEvent() error = %v", err)
			}
		}
		// drainOn drains on a new goroutine and returns its id.
		drainOn := func() uint64 {
			gid := make(chan uint64, 1)
			go func() {
				_, _ = d.Drain(context.Background(), 0)
				gid <- goroutineID()
			}()
			return <-gid
		}
		first := drainOn()
		advanceClock(time.Second) // the retry comes due
		second := drainOn()
		mu.Lock()
		defer mu.Unlock()
		want := []call{{"plain", first}, {"retry", second}}
		if !slices.Equal(calls, want) {
			t.Errorf("OnDone calls (event, goroutine) = %v, want %v (the Drains' goroutines)", calls, want)
		}
	})
}

// TestOnDoneRunExactlyOnce: under Run with 4 workers, keys, retries with
// backoff, dead letters and Shutdown at the end, each event's done runs
// exactly once, after every subscriber finished with it (the handlers'
// own record says so when done runs), with the error its dead letters
// explain.
func TestOnDoneRunExactlyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		n := sizeFor(300, 60)
		const attempts = 3
		d := newDispatcher(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(1024),
			dispatcher.WithRetry(attempts, linearBackoff))
		errBad := errors.New("bad")
		errPerm := errors.New("permanent")
		// outcome says whether call attempt of subscriber s for payload
		// i fails, and with what.
		outcome := func(s string, i, attempt int) error {
			switch {
			case s == "flaky" && i%3 == 0 && attempt < 1+i%2+1: // 1 or 2 failures, then success
				return fmt.Errorf("flaky %d#%d", i, attempt)
			case s == "bad" && i%5 == 0:
				return errBad
			case s == "perm" && i%7 == 0:
				return dispatcher.Permanent(errPerm)
			}
			return nil
		}
		subs := []string{"ok", "flaky", "bad", "perm"}

		var mu sync.Mutex
		finished := make([]map[string]bool, n) // payload -> subscribers that made their last call
		doneErrs := make([][]error, n)
		for i := range finished {
			finished[i] = map[string]bool{}
		}
		for _, s := range subs {
			subscribe(t, d, "t.>", func(_ context.Context, e dispatcher.Event) error {
				i := e.Payload.(int)
				err := outcome(s, i, e.Attempt)
				mu.Lock()
				if finished[i][s] {
					t.Errorf("subscriber %s called for payload %d after its last call (attempt %d)", s, i, e.Attempt)
				}
				if err == nil || e.Attempt == attempts || errors.Is(err, errPerm) {
					finished[i][s] = true
				}
				mu.Unlock()
				return err
			}, dispatcher.WithName(s))
		}
		wait := startRun(t, ctx, d)
		for i := range n {
			e := dispatcher.Event{Topic: fmt.Sprintf("t.%d", i%5), Payload: i}
			if i%4 != 3 {
				e.Key = fmt.Sprintf("k%d", i%8)
			}
			err := d.EmitEvent(ctx, e, dispatcher.OnDone(func(err error) {
				mu.Lock()
				defer mu.Unlock()
				for _, s := range subs {
					if !finished[i][s] {
						t.Errorf("OnDone of payload %d ran before subscriber %s finished", i, s)
					}
				}
				doneErrs[i] = append(doneErrs[i], err)
			}))
			if err != nil {
				t.Fatalf("EmitEvent(%d) error = %v", i, err)
			}
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v", err)
		}

		mu.Lock()
		defer mu.Unlock()
		dead := 0
		for i := range n {
			if len(doneErrs[i]) != 1 {
				t.Errorf("OnDone of payload %d called %d times, want once", i, len(doneErrs[i]))
				continue
			}
			err := doneErrs[i][0]
			wantBad, wantPerm := i%5 == 0, i%7 == 0
			if wantBad {
				dead++
			}
			if wantPerm {
				dead++
			}
			if errors.Is(err, errBad) != wantBad || errors.Is(err, errPerm) != wantPerm || (err == nil) != (!wantBad && !wantPerm) {
				t.Errorf("OnDone of payload %d got %v, want bad %v, permanent %v", i, err, wantBad, wantPerm)
			}
			if errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("OnDone of payload %d got %v, want no ErrDropped", i, err)
			}
		}
		st := d.Stats()
		if st.Emitted != uint64(n) || st.Dropped != 0 || st.Queued != 0 || st.Retrying != 0 || st.DeadLettered != uint64(dead) {
			t.Errorf("Stats() = %+v, want Emitted %d, DeadLettered %d, nothing dropped or left", st, n, dead)
		}
	})
}

// TestOnDoneDropped: an event discarded in any way, or one subscriber's
// share of it, ends with done getting an error that wraps ErrDropped,
// once, and only when the discarding happens.
func TestOnDoneDropped(t *testing.T) {
	fail := errors.New("fail")
	failFirst := func(_ context.Context, e dispatcher.Event) error {
		if e.Attempt == 1 {
			return fail
		}
		return nil
	}
	ok := func(context.Context, dispatcher.Event) error { return nil }
	hour := func(int) time.Duration { return time.Hour }
	tests := []struct {
		name        string
		opts        []dispatcher.Option
		give        func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder)
		wantDropped uint64           // Stats.Dropped at the end
		wantAlso    map[string]error // events whose done got another result (nil: success)
	}{
		{
			name: "DropOldest eviction",
			opts: []dispatcher.Option{dispatcher.WithCapacity(1), dispatcher.WithOverflow(dispatcher.DropOldest)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", ok)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				dr.notYet(t, "e", "while queued")
				emitWithDone(t, d, dr, "newer", dispatcher.Event{Topic: "t"})
				if len(dr.calls("e")) != 1 {
					t.Errorf("OnDone of the evicted event not called by the EmitEvent that evicted it")
				}
				dr.notYet(t, "newer", "while queued")
				drain(t, d)
			},
			wantDropped: 1,
			wantAlso:    map[string]error{"newer": nil},
		},
		{
			name: "Close with queued events",
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", ok)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				emitWithDone(t, d, dr, "keyed", dispatcher.Event{Topic: "t", Key: "k"})
				if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
					t.Errorf("Close() error = %v, want ErrDropped", err)
				}
			},
			wantDropped: 2,
			wantAlso:    map[string]error{"keyed": dispatcher.ErrDropped},
		},
		{
			name: "Close with waiting retries",
			opts: []dispatcher.Option{dispatcher.WithRetry(3, linearBackoff)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", ok)
				subscribe(t, d, "t", failFirst)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				drainIgnoringFailures(t, d)
				dr.notYet(t, "e", "with a retry waiting")
				if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
					t.Errorf("Close() error = %v, want ErrDropped", err)
				}
			},
			wantDropped: 1,
		},
		{
			name: "Shutdown's ctx ends with retries waiting",
			opts: []dispatcher.Option{dispatcher.WithRetry(3, hour)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", failFirst)
				subscribe(t, d, "u", ok)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				emitWithDone(t, d, dr, "fine", dispatcher.Event{Topic: "u"})
				sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := d.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown() error = %v, want DeadlineExceeded", err)
				}
			},
			wantDropped: 1,
			wantAlso:    map[string]error{"fine": nil},
		},
		{
			name: "Shutdown's ctx ends with retries waiting, under Run",
			opts: []dispatcher.Option{dispatcher.WithRetry(3, hour), dispatcher.WithWorkers(2)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", failFirst)
				subscribe(t, d, "u", ok)
				wait := startRun(t, context.Background(), d)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t", Key: "k"})
				emitWithDone(t, d, dr, "fine", dispatcher.Event{Topic: "u", Key: "k"})
				synctest.Wait()
				dr.notYet(t, "e", "with a retry waiting")
				sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := d.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown() error = %v, want DeadlineExceeded", err)
				}
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v, want nil", err)
				}
			},
			wantDropped: 1,
			wantAlso:    map[string]error{"fine": nil},
		},
		{
			name: "Unsubscribe with a retry pending",
			opts: []dispatcher.Option{dispatcher.WithRetry(2, linearBackoff)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", ok)
				sub := subscribe(t, d, "t", failFirst)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				drainIgnoringFailures(t, d)
				sub.Unsubscribe()
				drain(t, d)
				dr.notYet(t, "e", "before the retry is due")
				advanceClock(time.Second)
				drain(t, d)
			},
			wantDropped: 1,
		},
		{
			name: "Unsubscribe with a retry pending, under Run",
			opts: []dispatcher.Option{dispatcher.WithRetry(2, linearBackoff), dispatcher.WithWorkers(2)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", ok)
				sub := subscribe(t, d, "t", failFirst)
				wait := startRun(t, context.Background(), d)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t", Key: "k"})
				synctest.Wait()
				sub.Unsubscribe()
				dr.notYet(t, "e", "before the retry is due")
				advanceClock(time.Second)
				synctest.Wait()
				if len(dr.calls("e")) != 1 {
					t.Errorf("OnDone not called once the dropped retry came due")
				}
				if err := d.Shutdown(context.Background()); err != nil {
					t.Errorf("Shutdown() error = %v", err)
				}
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v", err)
				}
			},
			wantDropped: 1,
		},
		{
			name: "Close from a handler during Drain",
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
					if e.ID == 1 {
						_ = d.Close()
					}
					return nil
				})
				emitWithDone(t, d, dr, "first", dispatcher.Event{Topic: "t"})
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				if _, err := d.Drain(context.Background(), 0); !errors.Is(err, dispatcher.ErrClosed) {
					t.Errorf("Drain(0) error = %v, want ErrClosed", err)
				}
			},
			wantDropped: 1,
			wantAlso:    map[string]error{"first": nil},
		},
		{
			name: "a dead letter and a dropped retry",
			opts: []dispatcher.Option{dispatcher.WithRetry(3, linearBackoff)},
			give: func(t *testing.T, d *dispatcher.Dispatcher, dr *doneRecorder) {
				subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return fail },
					dispatcher.WithRetry(1, nil), dispatcher.WithName("dead"))
				subscribe(t, d, "t", failFirst)
				emitWithDone(t, d, dr, "e", dispatcher.Event{Topic: "t"})
				drainIgnoringFailures(t, d)
				dr.notYet(t, "e", "with a retry waiting")
				_ = d.Close()
				if err := dr.once(t, "e"); !errors.Is(err, fail) {
					t.Errorf("OnDone got %v, want it to join the dead letter's error too", err)
				} else if hes := handlerErrors(err); len(hes) != 1 || hes[0].Subscriber != "dead" {
					t.Errorf("OnDone got %v, want the HandlerError of dead", err)
				}
			},
			wantDropped: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDispatcher(t, tt.opts...)
				var dr doneRecorder
				tt.give(t, d, &dr)
				_ = d.Close()
				if err := dr.once(t, "e"); !errors.Is(err, dispatcher.ErrDropped) {
					t.Errorf("OnDone of the dropped event got %v, want ErrDropped", err)
				}
				for name, want := range tt.wantAlso {
					err := dr.once(t, name)
					if (want == nil && err != nil) || !errors.Is(err, want) {
						t.Errorf("OnDone of %s got %v, want %v", name, err, want)
					}
				}
				if st := d.Stats(); st.Dropped != tt.wantDropped {
					t.Errorf("Stats().Dropped = %d, want %d", st.Dropped, tt.wantDropped)
				}
			})
		})
	}
}

// stopCase is a dispatcher under Run whose subscriber B is cut short on
// event 1 of key "k" (it waits for its ctx and returns ctx.Err()), with
// a recording subscriber A before or after it, and events 2 and 3 of the
// key queued behind.
type stopCase struct {
	d     *dispatcher.Dispatcher
	log   callLog
	dr    doneRecorder
	block chan struct{} // closed: B no longer blocks
	a, b  *dispatcher.Subscription
}

// startStopCase starts Run with ctx and workers 4 and leaves B blocked in
// event 1's call. bFirst subscribes B before A.
func startStopCase(t *testing.T, ctx context.Context, bFirst bool) (c *stopCase, wait func() error) {
	t.Helper()
	c = &stopCase{d: newDispatcher(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(64)), block: make(chan struct{})}
	a := func(_ context.Context, e dispatcher.Event) error {
		c.log.add("A:%d", e.ID)
		return nil
	}
	b := func(ctx context.Context, e dispatcher.Event) error {
		c.log.add("B:%d", e.ID)
		if e.ID != 1 {
			return nil
		}
		select {
		case <-c.block:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if bFirst {
		c.b = subscribe(t, c.d, "t", b, dispatcher.WithName("B"))
		c.a = subscribe(t, c.d, "t", a, dispatcher.WithName("A"))
	} else {
		c.a = subscribe(t, c.d, "t", a, dispatcher.WithName("A"))
		c.b = subscribe(t, c.d, "t", b, dispatcher.WithName("B"))
	}
	wait = startRun(t, ctx, c.d)
	for i := 1; i <= 3; i++ {
		emitWithDone(t, c.d, &c.dr, fmt.Sprint(i), dispatcher.Event{Topic: "t", Key: "k", Payload: i})
	}
	synctest.Wait() // B waits in event 1's call; events 2 and 3 wait behind its key
	return c, wait
}

// TestRunStopRequeuesCutShortCalls: cancelling Run's ctx while a handler
// waits for it (and then returns ctx.Err()) is no failure: nothing is
// counted failed, retried or dead-lettered, done is not called, and the
// (event, subscriber) pairs not delivered yet (the one cut short and,
// after it, those not called yet) stay queued in order; a following Drain
// or Run delivers each of them once, before the events behind them, and
// subscribers that had already succeeded are not called again.
func TestRunStopRequeuesCutShortCalls(t *testing.T) {
	tests := []struct {
		name       string
		bFirst     bool   // B, cut short, subscribed before A
		resume     string // "Drain" or "Run"
		wantBefore []string
		wantAfter  []string
		wantQueued int // one per (event, subscriber) share of event 1, and events 2 and 3
	}{
		{
			name: "A before B, Drain", resume: "Drain",
			wantBefore: []string{"A:1", "B:1"},
			wantAfter:  []string{"B:1", "A:2", "B:2", "A:3", "B:3"},
			wantQueued: 3,
		},
		{
			name: "A before B, Run", resume: "Run",
			wantBefore: []string{"A:1", "B:1"},
			wantAfter:  []string{"B:1", "A:2", "B:2", "A:3", "B:3"},
			wantQueued: 3,
		},
		{
			name: "B before A, Drain", bFirst: true, resume: "Drain",
			wantBefore: []string{"B:1"},
			wantAfter:  []string{"B:1", "A:1", "B:2", "A:2", "B:3", "A:3"},
			wantQueued: 4,
		},
		{
			name: "B before A, Run", bFirst: true, resume: "Run",
			wantBefore: []string{"B:1"},
			wantAfter:  []string{"B:1", "A:1", "B:2", "A:2", "B:3", "A:3"},
			wantQueued: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				c, wait := startStopCase(t, ctx, tt.bFirst)
				cancel()
				if err := wait(); !errors.Is(err, context.Canceled) {
					t.Errorf("Run() after its ctx was cancelled = %v, want context.Canceled", err)
				}
				close(c.block)
				checkCalls(t, "under Run", &c.log, tt.wantBefore...)
				delivered := uint64(len(tt.wantBefore) - 1)
				want := dispatcher.Stats{Emitted: 3, Delivered: delivered, Queued: tt.wantQueued}
				if st := c.d.Stats(); st != want {
					t.Errorf("Stats() after Run = %+v, want %+v", st, want)
				}
				if dls := c.d.DeadLetters(); len(dls) != 0 {
					t.Errorf("DeadLetters() = %+v, want none", dls)
				}
				for _, e := range []string{"1", "2", "3"} {
					c.dr.notYet(t, e, "after Run")
				}

				c.log = callLog{}
				switch tt.resume {
				case "Drain":
					if n := drain(t, c.d); n != tt.wantQueued {
						t.Errorf("Drain(0) = %d, want %d", n, tt.wantQueued)
					}
				case "Run":
					wait := startRun(t, context.Background(), c.d)
					if err := c.d.Shutdown(context.Background()); err != nil {
						t.Errorf("Shutdown() error = %v", err)
					}
					if err := wait(); err != nil {
						t.Errorf("second Run() error = %v", err)
					}
				}
				checkCalls(t, "after "+tt.resume, &c.log, tt.wantAfter...)
				want = dispatcher.Stats{Emitted: 3, Delivered: 6}
				if st := c.d.Stats(); st != want {
					t.Errorf("Stats() after %s = %+v, want %+v", tt.resume, st, want)
				}
				for _, e := range []string{"1", "2", "3"} {
					if err := c.dr.once(t, e); err != nil {
						t.Errorf("OnDone of event %s got %v, want nil", e, err)
					}
				}
			})
		})
	}
}

// TestRunStopCallThatSucceedsIsNotRequeued: a call that returns nil after
// Run's ctx was cancelled delivered its event: it is not made again.
func TestRunStopCallThatSucceedsIsNotRequeued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		d := newDispatcher(t, dispatcher.WithWorkers(2))
		var l callLog
		subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
			l.add("%d", e.ID)
			if e.ID == 1 {
				<-ctx.Done()
			}
			return nil
		})
		wait := startRun(t, ctx, d)
		var dr doneRecorder
		emitWithDone(t, d, &dr, "1", dispatcher.Event{Topic: "t", Key: "k"})
		emitWithDone(t, d, &dr, "2", dispatcher.Event{Topic: "t", Key: "k"})
		synctest.Wait()
		cancel()
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
		if err := dr.once(t, "1"); err != nil {
			t.Errorf("OnDone of event 1 got %v, want nil", err)
		}
		dr.notYet(t, "2", "after Run")
		drain(t, d)
		checkCalls(t, "calls", &l, "1", "2")
		if err := dr.once(t, "2"); err != nil {
			t.Errorf("OnDone of event 2 got %v, want nil", err)
		}
		want := dispatcher.Stats{Emitted: 2, Delivered: 2}
		if st := d.Stats(); st != want {
			t.Errorf("Stats() = %+v, want %+v", st, want)
		}
	})
}

// TestRunStopByCloseDropsCutShortCalls: when Close (or Shutdown whose ctx
// ends) stops Run, a call cut short is no failure either, but its pair is
// dropped and counted, with everything queued behind it, and done gets
// ErrDropped.
func TestRunStopByCloseDropsCutShortCalls(t *testing.T) {
	tests := []struct {
		name        string
		bFirst      bool
		stop        string // "Close" or "Shutdown"
		wantCalls   []string
		wantDropped uint64 // one per share of event 1, and events 2 and 3
	}{
		{name: "Close, A before B", stop: "Close", wantCalls: []string{"A:1", "B:1"}, wantDropped: 3},
		{name: "Close, B before A", bFirst: true, stop: "Close", wantCalls: []string{"B:1"}, wantDropped: 4},
		{name: "Shutdown's ctx, A before B", stop: "Shutdown", wantCalls: []string{"A:1", "B:1"}, wantDropped: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, wait := startStopCase(t, context.Background(), tt.bFirst)
				switch tt.stop {
				case "Close":
					if err := c.d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
						t.Errorf("Close() error = %v, want ErrDropped", err)
					}
				case "Shutdown":
					sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					if err := c.d.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("Shutdown() error = %v, want DeadlineExceeded", err)
					}
				}
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v, want nil", err)
				}
				checkCalls(t, "calls", &c.log, tt.wantCalls...)
				want := dispatcher.Stats{Emitted: 3, Delivered: uint64(len(tt.wantCalls) - 1), Dropped: tt.wantDropped}
				if st := c.d.Stats(); st != want {
					t.Errorf("Stats() = %+v, want %+v", st, want)
				}
				if dls := c.d.DeadLetters(); len(dls) != 0 {
					t.Errorf("DeadLetters() = %+v, want none", dls)
				}
				for _, e := range []string{"1", "2", "3"} {
					if err := c.dr.once(t, e); !errors.Is(err, dispatcher.ErrDropped) {
						t.Errorf("OnDone of event %s got %v, want ErrDropped", e, err)
					}
				}
				checkClosed(t, c.d)
			})
		})
	}
}

// TestRunStopCutShortOfUnsubscribedIsDropped: when the subscriber whose
// call Run's stop cut short has unsubscribed meanwhile, its pair cannot be
// requeued: it is discarded like a pending retry of a subscriber that
// left, so it is counted in Stats.Dropped and done gets ErrDropped, not
// nil (its call never succeeded).
func TestRunStopCutShortOfUnsubscribedIsDropped(t *testing.T) {
	tests := []struct {
		name        string
		stop        string // "ctx" or "Close"
		wantDropped uint64 // B's share of event 1 (and, under Close, events 2 and 3)
	}{
		{name: "Run's ctx", stop: "ctx", wantDropped: 1},
		{name: "Close", stop: "Close", wantDropped: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				c, wait := startStopCase(t, ctx, false)
				c.b.Unsubscribe() // B's call for event 1 is in progress
				switch tt.stop {
				case "ctx":
					cancel()
					if err := wait(); !errors.Is(err, context.Canceled) {
						t.Errorf("Run() = %v, want context.Canceled", err)
					}
					drain(t, c.d)
					checkCalls(t, "calls", &c.log, "A:1", "B:1", "A:2", "A:3")
				case "Close":
					_ = c.d.Close()
					if err := wait(); err != nil {
						t.Errorf("Run() = %v, want nil", err)
					}
				}
				if st := c.d.Stats(); st.Failed != 0 || st.DeadLettered != 0 || st.Dropped != tt.wantDropped {
					t.Errorf("Stats() = %+v, want nothing failed and Dropped %d (B's share of event 1 counted)", st, tt.wantDropped)
				}
				if err := c.dr.once(t, "1"); !errors.Is(err, dispatcher.ErrDropped) {
					t.Errorf("OnDone of event 1 got %v, want ErrDropped: B's cut-short call never succeeded and its pair was discarded", err)
				}
			})
		})
	}
}

// TestOnDoneExactlyOnceWhenRunStops: producers emit with OnDone while Run's
// workers handle, retry and order events by key, and the dispatcher is
// stopped in the middle: by Close, by Shutdown, or by Run's ctx followed by
// Shutdown on the caller's goroutine. Every event EmitEvent accepted gets
// its done exactly once, the others never; only Close drops anything.
func TestOnDoneExactlyOnceWhenRunStops(t *testing.T) {
	const producers, perProducer = 2, 400
	for _, stop := range []string{"Close", "Shutdown", "Run's ctx, then Shutdown"} {
		t.Run(stop, func(t *testing.T) {
			for range sizeFor(10, 2) {
				checkDoneWhenRunStops(t, stop, producers, perProducer)
			}
		})
	}
}

func checkDoneWhenRunStops(t *testing.T, stop string, producers, perProducer int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDispatcher(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(64), dispatcher.WithRetry(3, nil))
	n := producers * perProducer
	doneCalls := make([]atomic.Int32, n)
	doneErrs := make([]atomic.Pointer[error], n)
	accepted := make([]bool, n) // written by the producer of the event only
	var handled atomic.Int32
	midway := make(chan struct{})
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
		if handled.Add(1) == int32(n/4) {
			close(midway)
		}
		return nil
	})
	subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		if e.Payload.(int)%3 == 0 && e.Attempt == 1 {
			return errors.New("flaky")
		}
		return nil
	})
	wait := startRun(t, ctx, d)
	var wg sync.WaitGroup
	for pr := range producers {
		wg.Go(func() {
			for k := range perProducer {
				i := pr*perProducer + k
				e := dispatcher.Event{Topic: "t", Key: fmt.Sprintf("k%d", i%5), Payload: i}
				err := d.EmitEvent(context.Background(), e, dispatcher.OnDone(func(err error) {
					doneCalls[i].Add(1)
					doneErrs[i].Store(&err)
				}))
				accepted[i] = err == nil
				if err != nil && !errors.Is(err, dispatcher.ErrClosed) {
					t.Errorf("EmitEvent(%d) error = %v, want nil or ErrClosed", i, err)
				}
			}
		})
	}
	recv(t, midway, "a quarter of the calls")
	switch stop {
	case "Close":
		_ = d.Close()
	case "Shutdown":
		if err := d.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
	case "Run's ctx, then Shutdown":
		cancel()
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
		if err := d.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
	}
	if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v", err)
	}
	wg.Wait()
	dropped := 0
	for i := range n {
		calls := doneCalls[i].Load()
		switch {
		case accepted[i] && calls != 1:
			t.Errorf("%s: OnDone of accepted event %d called %d times, want once", stop, i, calls)
		case !accepted[i] && calls != 0:
			t.Errorf("%s: OnDone of event %d, which EmitEvent refused, called %d times", stop, i, calls)
		case calls == 1:
			err := *doneErrs[i].Load()
			if errors.Is(err, dispatcher.ErrDropped) {
				dropped++
			} else if err != nil {
				t.Errorf("%s: OnDone of event %d got %v, want nil or ErrDropped", stop, i, err)
			}
		}
	}
	if stop != "Close" && dropped != 0 {
		t.Errorf("%s: %d events dropped, want none", stop, dropped)
	}
}
