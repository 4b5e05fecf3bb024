package dispatcher_test

// Regression tests for misuse and adversarial use of the exported API:
// crashes, hangs, silent losses and unclear errors. Each test pins what
// the package documentation or the contract promises in one such case;
// its comment says what must hold.
//
// Waits inside testing/synctest bubbles are bounded by muGuard of fake
// time, so a stuck dispatcher fails the test at once. A test whose failure
// would take the whole test process down (a panic on a dispatcher
// goroutine, or a bubble whose goroutines deadlock, which synctest reports
// by panicking) runs in a child process: see muIsolated.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/ringbus/ringbus/dispatcher"
)

// muGuard bounds every wait inside a synctest bubble. It is fake time: it
// passes only once every goroutine of the bubble is blocked, so it turns a
// deadlock or a lost wake-up into a failure at once, never into a slow
// test.
const muGuard = time.Hour

// muNew returns a dispatcher built with opts. It registers no Close: some
// tests leave a dispatcher that a bug made unusable.
func muNew(t *testing.T, opts ...dispatcher.Option) *dispatcher.Dispatcher {
	t.Helper()
	d, err := dispatcher.New(opts...)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return d
}

// muOn subscribes h to pattern and fails the test on error.
func muOn(t *testing.T, d *dispatcher.Dispatcher, pattern string, h dispatcher.Handler, opts ...dispatcher.SubscribeOption) {
	t.Helper()
	if _, err := d.On(pattern, h, opts...); err != nil {
		t.Fatalf("On(%q) error = %v", pattern, err)
	}
}

// muEmit emits one event from outside any handler and fails the test on
// error. Only on the test's goroutine.
func muEmit(t *testing.T, d *dispatcher.Dispatcher, topic, key string, payload any) {
	t.Helper()
	if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: topic, Key: key, Payload: payload}); err != nil {
		t.Fatalf("EmitEvent(%q, key %q) error = %v", topic, key, err)
	}
}

// muRun calls d.Run(ctx) on a new goroutine and returns a function that
// waits for Run to return and reports its error. Every test that calls
// muRun calls wait, which joins the goroutine.
func muRun(ctx context.Context, d *dispatcher.Dispatcher) (wait func() error) {
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = <-errc })
		return err
	}
}

// muRecv receives from ch, or fails the test when nothing comes within
// muGuard; ok reports whether a value came. Only inside a synctest bubble
// (the guard is fake time) and on the test's goroutine.
func muRecv[T any](t *testing.T, ch <-chan T, what string) (v T, ok bool) {
	t.Helper()
	select {
	case v = <-ch:
		return v, true
	case <-time.After(muGuard):
		t.Errorf("no %s within %v of fake time: the dispatcher is stuck", what, muGuard)
		return v, false
	}
}

// muPanic calls f and returns the value it panicked with, or nil.
func muPanic(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}

// muChildEnv holds, in a child process started by muIsolated, the name of
// the test the child runs.
const muChildEnv = "RINGBUS_MISUSE_CHILD"

// muIsolated runs the calling test again in a child process (the test
// binary, with -test.run selecting that test alone) and reports whether
// the caller is that child, where the test's body then runs. In the
// parent it returns false after checking that the child passed, and
// reports the child's output if not. It is for tests whose failure ends
// the process: a panic on a dispatcher goroutine, or a synctest bubble
// whose goroutines deadlock. Such a failure then ends only the child; the
// parent reports it, panic and stacks included, as this test's failure,
// and the other tests still run.
func muIsolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv(muChildEnv) == t.Name() {
		return true
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable() error = %v", err)
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	args := []string{"-test.run=" + strings.Join(parts, "/"), "-test.count=1", "-test.v"}
	if deadline, ok := t.Deadline(); ok {
		// The child stops at the parent's own deadline (go test -timeout).
		args = append(args, "-test.timeout="+time.Until(deadline).String())
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), muChildEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" (")) {
		t.Errorf("%s failed in a child process (%v); its output:\n%s", t.Name(), err, out)
	}
	return false
}

// TestMisuseDropOldestCascade: under DropOldest, a handler emits more
// events than the queue holds while Drain or Shutdown (without Run)
// processes a full queue, so the emits evict events that the round in
// progress counted on processing. Neither may panic, and every accepted event is
// accounted for: delivered (one subscriber, so one handler call each),
// dropped or still queued.
func TestMisuseDropOldestCascade(t *testing.T) {
	for _, stop := range []string{"Drain", "Shutdown"} {
		t.Run(stop, func(t *testing.T) {
			const capacity, cascade = 256, 300
			ctx := context.Background()
			d := muNew(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.DropOldest))
			calls := 0 // handlers run on this goroutine: no Run
			var emitErrs []error
			muOn(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
				calls++
				if e.ID == 1 {
					for i := range cascade {
						if err := d.Emit(ctx, "t", i); err != nil {
							emitErrs = append(emitErrs, err)
						}
					}
				}
				return nil
			})
			for i := range capacity {
				muEmit(t, d, "t", "", i)
			}
			var err error
			if p := muPanic(func() {
				if stop == "Drain" {
					_, err = d.Drain(ctx, 0)
				} else {
					err = d.Shutdown(ctx)
				}
			}); p != nil {
				t.Errorf("%s() panicked: %v", stop, p)
			} else if err != nil {
				t.Errorf("%s() error = %v, want nil", stop, err)
			}
			if len(emitErrs) > 0 {
				t.Errorf("DropOldest emits from the handler failed: %v", errors.Join(emitErrs...))
			}
			st := d.Stats()
			if st.Emitted != capacity+cascade {
				t.Errorf("Stats().Emitted = %d, want %d", st.Emitted, capacity+cascade)
			}
			if sum := uint64(calls) + st.Dropped + uint64(st.Queued); sum != st.Emitted {
				t.Errorf("%d handler calls + Dropped %d + Queued %d = %d, want Emitted %d",
					calls, st.Dropped, st.Queued, sum, st.Emitted)
			}
			if st.Queued != 0 {
				t.Errorf("Stats().Queued = %d after %s, want 0", st.Queued, stop)
			}
			_ = d.Close()
		})
	}
}

// TestMisuseHotKeyDoesNotBlockOtherKeys: under Run, a key whose handler is
// slow delays its own events only. Two cases, two workers, a hot key whose
// handler blocks on each call until the test releases it:
//   - cold queued behind hot: hot1..hot4, cold, hot5..hot8 are queued
//     before Run. The worker that takes hot1 may take cold in the same
//     batch; once hot1 returns, cold must run without waiting for hot2..hot8
//     (the next hot event is handed to the other worker, not run first).
//   - cold emitted while hot blocks: the other worker is idle and runs it.
func TestMisuseHotKeyDoesNotBlockOtherKeys(t *testing.T) {
	for _, when := range []string{"queued behind hot", "emitted while hot blocks"} {
		t.Run(when, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const hot = 8
				ctx := context.Background()
				d := muNew(t, dispatcher.WithWorkers(2))
				entered := make(chan struct{}, hot)
				release := make(chan struct{})
				cold := make(chan struct{}, 1)
				muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
					switch e.Key {
					case "hot":
						entered <- struct{}{}
						<-release // ignores ctx, as a stuck handler does
					case "cold":
						cold <- struct{}{}
					}
					return nil
				})
				var wait func() error
				if when == "queued behind hot" {
					for i := range hot {
						if i == hot/2 {
							muEmit(t, d, "t", "cold", nil)
						}
						muEmit(t, d, "t", "hot", nil)
					}
					wait = muRun(ctx, d)
					muRecv(t, entered, "call of the hot handler")
					release <- struct{}{} // hot1 returns; hot2 may start and block
				} else {
					wait = muRun(ctx, d)
					for range hot {
						muEmit(t, d, "t", "hot", nil)
					}
					if _, ok := muRecv(t, entered, "call of the hot handler"); ok {
						muEmit(t, d, "t", "cold", nil)
					}
				}
				muRecv(t, cold, "call of the cold handler while the hot handler blocks (head-of-line blocking across keys)")
				close(release)
				if err := d.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown() error = %v", err)
				}
				if err := wait(); err != nil {
					t.Errorf("Run() error = %v, want nil", err)
				}
				if st := d.Stats(); st.Delivered != hot+1 {
					t.Errorf("Stats().Delivered = %d, want %d", st.Delivered, hot+1)
				}
			})
		})
	}
}

// TestMisuseShutdownDeadlineWithStuckHandler: Shutdown's ctx bounds
// Shutdown even when a handler under Run ignores its own cancelled ctx:
// Shutdown returns context.DeadlineExceeded at its deadline while the
// handler is still blocked; Run returns once the handler does.
func TestMisuseShutdownDeadlineWithStuckHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		ctx := context.Background()
		d := muNew(t, dispatcher.WithWorkers(1))
		entered := make(chan struct{})
		release := make(chan struct{})
		var returned atomic.Bool
		muOn(t, d, "t", func(context.Context, dispatcher.Event) error {
			close(entered)
			<-release // ignores ctx
			returned.Store(true)
			return nil
		})
		wait := muRun(ctx, d)
		muEmit(t, d, "t", "", nil)
		muRecv(t, entered, "call of the handler")

		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(sctx) }()
		err, ok := muRecv(t, shut, "return of Shutdown at its deadline while a handler ignores its ctx")
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

// muCountingCtx counts the calls of its ctx methods: an emitter blocked on
// a full ring that uses its ctx while nothing happens is polling.
type muCountingCtx struct {
	context.Context
	calls *atomic.Int64
}

func (c muCountingCtx) Deadline() (time.Time, bool) { c.calls.Add(1); return c.Context.Deadline() }
func (c muCountingCtx) Done() <-chan struct{}       { c.calls.Add(1); return c.Context.Done() }
func (c muCountingCtx) Err() error                  { c.calls.Add(1); return c.Context.Err() }
func (c muCountingCtx) Value(k any) any             { c.calls.Add(1); return c.Context.Value(k) }

// TestMisuseBlockedEmittersDoNotPoll: emitters blocked under Block on a
// full ring, with the only worker stuck in a handler, sleep until
// something happens: room, their ctx's end (its error comes back), or
// Close (ErrClosed). A dispatcher that makes them look for room on a timer
// (every millisecond) wakes each of them 1,000 times in the test's idle
// second of fake time; an hour would be 36 million wake-ups. The test sees the polling
// through the ctx the emitters were given: a sleeping emitter does not use
// it. (An internal wake-up counter, exported to tests by an
// export_test.go, would be a more direct probe.)
func TestMisuseBlockedEmittersDoNotPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const emitters = 10
		// Fake time is kept short: it is slow where emitters poll.
		const idle = time.Second
		const deadline = idle + time.Second // emitter 0's ctx
		base := context.Background()
		d := muNew(t, dispatcher.WithWorkers(1), dispatcher.WithCapacity(1)) // Block is the default
		entered := make(chan struct{})
		muOn(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
			if e.ID == 1 {
				close(entered)
				<-ctx.Done() // until Close cancels it
			}
			return nil
		})
		wait := muRun(base, d)
		muEmit(t, d, "t", "", nil)
		muRecv(t, entered, "call of the handler")
		muEmit(t, d, "t", "", nil) // the ring (capacity 1) is full now

		expiry := time.Now().Add(deadline)
		dctx, cancelD := context.WithDeadline(base, expiry)
		defer cancelD()
		cctx, cancelC := context.WithCancel(base)
		defer cancelC()
		var calls atomic.Int64
		errs := make([]error, emitters)
		done := make([]chan struct{}, emitters)
		for i := range emitters {
			ctx := base
			switch i {
			case 0:
				ctx = dctx
			case 1:
				ctx = cctx
			}
			done[i] = make(chan struct{})
			go func() {
				defer close(done[i])
				errs[i] = d.Emit(muCountingCtx{ctx, &calls}, "t", nil)
			}()
		}
		blocked := func(i int) bool {
			select {
			case <-done[i]:
				return false
			default:
				return true
			}
		}
		synctest.Wait() // every emitter is blocked
		before, st := calls.Load(), d.Stats()
		time.Sleep(idle)
		synctest.Wait()
		if n := calls.Load() - before; n != 0 {
			t.Errorf("blocked emitters used their ctx %d times in %v of fake time in which nothing happened: they poll", n, idle)
		}
		if now := d.Stats(); now != st {
			t.Errorf("Stats() changed while nothing happened: %+v, then %+v", st, now)
		}
		for i := range emitters {
			if !blocked(i) {
				t.Errorf("emitter %d returned %v while the ring stayed full", i, errs[i])
			}
		}

		cancelC()
		synctest.Wait()
		if blocked(1) {
			t.Errorf("emitter 1 still blocked after its ctx was cancelled")
		} else if !errors.Is(errs[1], context.Canceled) {
			t.Errorf("emitter 1: Emit() error = %v after its ctx was cancelled, want context.Canceled", errs[1])
		}
		time.Sleep(time.Until(expiry))
		synctest.Wait()
		if blocked(0) {
			t.Errorf("emitter 0 still blocked after its ctx's deadline")
		} else if !errors.Is(errs[0], context.DeadlineExceeded) {
			t.Errorf("emitter 0: Emit() error = %v at its ctx's deadline, want context.DeadlineExceeded", errs[0])
		}

		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped (one event queued)", err)
		}
		for i := 2; i < emitters; i++ {
			if _, ok := muRecv(t, done[i], fmt.Sprintf("return of blocked emitter %d after Close", i)); !ok {
				continue
			}
			if !errors.Is(errs[i], dispatcher.ErrClosed) {
				t.Errorf("emitter %d: Emit() error = %v after Close, want ErrClosed", i, errs[i])
			}
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
	})
}

// muGoexitAfterPanic is a handler that ends its goroutine with
// runtime.Goexit, and panics in a deferred call while Goexit unwinds. A
// recover in the dispatcher then stops the panic, but not the Goexit.
func muGoexitAfterPanic(context.Context, dispatcher.Event) error {
	defer func() { panic("deferred panic during Goexit") }()
	runtime.Goexit()
	return nil
}

// TestMisuseGoexitWithDeferredPanic: a handler that calls runtime.Goexit
// and panics in a deferred call fails its call like any other failure:
// counted in Stats.Failed, one dead letter, and the subscriber after it in
// the fan-out still gets the event. Without Run the Goexit ends the
// goroutine running Drain, so that Drain runs on a goroutine of its own and
// a second Drain processes what is left.
func TestMisuseGoexitWithDeferredPanic(t *testing.T) {
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
		d := muNew(t)
		var next []uint64 // written by the Drains, one after the other
		muOn(t, d, "t", muGoexitAfterPanic, dispatcher.WithName("exits"))
		muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			next = append(next, e.ID)
			return nil
		}, dispatcher.WithName("next"))
		muEmit(t, d, "t", "", nil)
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			d.Drain(ctx, 0) //nolint:errcheck // the Goexit ends this goroutine
		}()
		<-exited
		d.Drain(ctx, 0) //nolint:errcheck // its error is the dead letter's
		check(t, d, next)
		_ = d.Close()
	})
	t.Run("Run", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			d := muNew(t, dispatcher.WithWorkers(1))
			got := make(chan uint64, 1)
			muOn(t, d, "t", muGoexitAfterPanic, dispatcher.WithName("exits"))
			muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
				got <- e.ID
				return nil
			}, dispatcher.WithName("next"))
			muEmit(t, d, "t", "", nil)
			wait := muRun(ctx, d)
			var next []uint64
			if id, ok := muRecv(t, got, "delivery to the subscriber after the exiting one"); ok {
				next = append(next, id)
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown() error = %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run() error = %v, want nil", err)
			}
			check(t, d, next)
		})
	})
}

// TestMisuseGoexitWithFullRetryQueue: a handler's runtime.Goexit while the
// retry queue is full (capacity 1, one retry waiting for its backoff) must
// not drop the event for the subscribers after it in the fan-out: they get
// it later, from the next Drain, and nothing is counted as dropped. (With
// capacity 1 a Drain's batch holds one event; the rest of a batch that a
// Goexit interrupts is TestMisuseGoexitKeepsKeyOrder's concern.)
func TestMisuseGoexitWithFullRetryQueue(t *testing.T) {
	ctx := context.Background()
	d := muNew(t, dispatcher.WithCapacity(1), dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
	muOn(t, d, "f", func(context.Context, dispatcher.Event) error {
		return errors.New("failing")
	}, dispatcher.WithName("failing"))
	exited := false
	var got []string // written by the Drains, one after the other
	muOn(t, d, "g", func(context.Context, dispatcher.Event) error {
		if !exited {
			exited = true
			runtime.Goexit()
		}
		return nil
	}, dispatcher.WithName("exits"))
	for _, name := range []string{"b", "c"} {
		muOn(t, d, "g", func(context.Context, dispatcher.Event) error {
			got = append(got, name)
			return nil
		}, dispatcher.WithName(name))
	}
	muEmit(t, d, "f", "", nil)
	if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
		t.Fatalf("Drain(0) = %d, %v, want 1, nil (the failure waits for its retry)", n, err)
	}
	if st := d.Stats(); st.Retrying != 1 {
		t.Fatalf("Stats().Retrying = %d, want 1: the retry queue (capacity 1) is full", st.Retrying)
	}
	muEmit(t, d, "g", "", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Drain(ctx, 0) //nolint:errcheck // the Goexit ends this goroutine
	}()
	<-done
	d.Drain(ctx, 0) //nolint:errcheck // "exits" may be a dead letter: its retry found the queue full
	if len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Errorf("subscribers after the exiting one got the event: %v, want [b c]", got)
	}
	if st := d.Stats(); st.Dropped != 0 {
		t.Errorf("Stats().Dropped = %d, want 0", st.Dropped)
	}
	_ = d.Close()
}

// TestMisuseGoexitKeepsKeyOrder: under Run with one worker, subscriber A
// calls runtime.Goexit on event 1 once; subscriber B, which never fails,
// must still see the key's events in emit order.
func TestMisuseGoexitKeepsKeyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const events = 3
		ctx := context.Background()
		d := muNew(t, dispatcher.WithWorkers(1))
		exited := false // only the one worker calls A at a time
		muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			if e.ID == 1 && !exited {
				exited = true
				runtime.Goexit()
			}
			return nil
		}, dispatcher.WithName("a"))
		got := make(chan uint64, events)
		muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			got <- e.ID
			return nil
		}, dispatcher.WithName("b"))
		for range events {
			muEmit(t, d, "t", "k", nil)
		}
		wait := muRun(ctx, d)
		var order []uint64
		for range events {
			id, ok := muRecv(t, got, "delivery to b")
			if !ok {
				break
			}
			order = append(order, id)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
		if want := []uint64{1, 2, 3}; fmt.Sprint(order) != fmt.Sprint(want) {
			t.Errorf("b saw key k's events in order %v, want %v", order, want)
		}
	})
}

// muPayload is big enough to get an allocation of its own (no tiny-block
// neighbour keeps it alive).
type muPayload struct{ _ [256]byte }

// muEmitTracked emits n events on topic with fresh *muPayload payloads and
// returns weak pointers to them; it keeps no strong reference.
//
//go:noinline
func muEmitTracked(t *testing.T, d *dispatcher.Dispatcher, topic string, n int) []weak.Pointer[muPayload] {
	t.Helper()
	ws := make([]weak.Pointer[muPayload], n)
	for i := range ws {
		p := new(muPayload)
		ws[i] = weak.Make(p)
		muEmit(t, d, topic, "", p)
	}
	return ws
}

// muAlive runs the garbage collector until every payload of ws is
// collected, at most a few cycles, and returns how many are still alive.
func muAlive(ws []weak.Pointer[muPayload]) int {
	alive := len(ws)
	for range 5 {
		runtime.GC()
		alive = 0
		for _, w := range ws {
			if w.Value() != nil {
				alive++
			}
		}
		if alive == 0 {
			break
		}
	}
	return alive
}

// TestMisusePayloadsNotKeptAlive: the dispatcher keeps no reference to a
// payload it is done with: after Drain delivered the events, and after
// Close dropped the retries of failed ones, the payloads can be collected
// while the dispatcher itself is still reachable.
func TestMisusePayloadsNotKeptAlive(t *testing.T) {
	ctx := context.Background()
	t.Run("delivered by Drain", func(t *testing.T) {
		d := muNew(t)
		muOn(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
		ws := muEmitTracked(t, d, "t", 3)
		if n, err := d.Drain(ctx, 0); n != 3 || err != nil {
			t.Fatalf("Drain(0) = %d, %v, want 3, nil", n, err)
		}
		if alive := muAlive(ws); alive != 0 {
			t.Errorf("%d of %d payloads still reachable after Drain returned", alive, len(ws))
		}
		runtime.KeepAlive(d)
	})
	t.Run("retries dropped by Close", func(t *testing.T) {
		d := muNew(t, dispatcher.WithRetry(3, func(int) time.Duration { return time.Hour }))
		muOn(t, d, "fail", func(context.Context, dispatcher.Event) error { return errors.New("failing") })
		muOn(t, d, "ok", func(context.Context, dispatcher.Event) error { return nil })
		ws := muEmitTracked(t, d, "fail", 3)
		if n, err := d.Drain(ctx, 0); n != 3 || err != nil {
			t.Fatalf("Drain(0) = %d, %v, want 3, nil (the failures wait for their retries)", n, err)
		}
		// Three more events, with other payloads, take the tracked ones'
		// place in whatever the consumer reuses between calls: what is
		// left to keep them is the retries.
		for range 3 {
			muEmit(t, d, "ok", "", 0)
		}
		if n, err := d.Drain(ctx, 0); n != 3 || err != nil {
			t.Fatalf("second Drain(0) = %d, %v, want 3, nil", n, err)
		}
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped (3 retries)", err)
		}
		if alive := muAlive(ws); alive != 0 {
			t.Errorf("%d of %d payloads of dropped retries still reachable after Close", alive, len(ws))
		}
		runtime.KeepAlive(d)
	})
}

// TestMisuseBlockFairness: producers blocked under Block are served in
// turn: none is starved while the others keep getting room. Four
// producers emit 50 events each into a queue of 4 that one worker empties
// one event per step of the test; the event IDs give the order in which
// the events were accepted. With emitters served first come, first served,
// a waiting producer gets room before any producer that queued after it,
// so between two of its accepted events come at most the three other
// producers' (one each), plus whatever got in without waiting while there
// was room. The bound allows far more: every producer that has events left
// has one accepted in every window of 2*capacity*producers = 32 accepted
// events. A dispatcher that lets woken or newly arrived emitters race for
// the freed slots (barging) can starve one producer for longer.
func TestMisuseBlockFairness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const producers, each, capacity = 4, 50, 4
		const window = 2 * capacity * producers
		ctx := context.Background()
		d := muNew(t, dispatcher.WithCapacity(capacity), dispatcher.WithWorkers(1)) // Block is the default
		step := make(chan struct{})
		byID := make([]int, producers*each+1) // event ID -> producer; written by the one worker
		muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			<-step
			byID[e.ID] = e.Payload.(int)
			return nil
		})
		wait := muRun(ctx, d)
		var wg sync.WaitGroup
		emitErrs := make([]error, producers)
		for p := range producers {
			wg.Go(func() {
				for range each {
					if err := d.Emit(ctx, "t", p); err != nil {
						emitErrs[p] = err
						return
					}
				}
			})
		}
		for i := range producers * each {
			synctest.Wait() // the emitters that can get room have it
			select {
			case step <- struct{}{}:
			case <-time.After(muGuard):
				t.Errorf("the worker took no event %d within %v of fake time", i+1, muGuard)
			}
			if t.Failed() {
				break
			}
		}
		close(step) // lets the handler run through whatever is left
		wg.Wait()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
		for p, err := range emitErrs {
			if err != nil {
				t.Errorf("producer %d: Emit() error = %v", p, err)
			}
		}
		if t.Failed() {
			return
		}
		for p := range producers {
			last, worst, at := uint64(0), uint64(0), uint64(0)
			for id := uint64(1); id < uint64(len(byID)); id++ {
				if byID[id] != p {
					continue
				}
				if gap := id - last; gap > worst {
					worst, at = gap, id
				}
				last = id
			}
			if worst > window {
				t.Errorf("producer %d had no event accepted among %d in a row (up to event %d), want at most %d",
					p, worst-1, at, window-1)
			}
		}
	})
}

// TestMisuseCloseFromHandlerUnderRun: a handler that calls Close under Run
// must not deadlock (Close waiting for Run, Run for the worker inside
// Close): Close returns, Run returns nil, and the events still queued are
// dropped and counted. It runs in a child process: a deadlock in a
// synctest bubble ends the process.
func TestMisuseCloseFromHandlerUnderRun(t *testing.T) {
	if !muIsolated(t) {
		return
	}
	synctest.Test(t, func(t *testing.T) {
		const events = 5
		ctx := context.Background()
		d := muNew(t, dispatcher.WithWorkers(1))
		var calls atomic.Int64
		closed := make(chan error, 1)
		muOn(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.Add(1)
			if e.ID == 1 {
				closed <- d.Close()
			}
			return nil
		})
		for range events {
			muEmit(t, d, "t", "", nil)
		}
		wait := muRun(ctx, d)
		if _, ok := muRecv(t, closed, "return of Close called from a handler under Run"); !ok {
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

// TestMisuseNilContext: a nil ctx is a programming error that Emit, Drain
// and Run report at once, with a panic whose message names the method and
// the nil Context, before they touch the dispatcher's state: after a
// recovered panic the dispatcher works.
func TestMisuseNilContext(t *testing.T) {
	var nilCtx context.Context // nil: the misuse under test
	ctx := context.Background()
	check := func(t *testing.T, method string, p any) {
		t.Helper()
		if p == nil {
			t.Errorf("%s(nil ctx) did not panic", method)
			return
		}
		msg := fmt.Sprint(p)
		if !strings.Contains(msg, method) || !strings.Contains(msg, "nil") || !strings.Contains(strings.ToLower(msg), "context") {
			t.Errorf("%s(nil ctx) panicked with %q, want a message naming %s and the nil Context", method, msg, method)
		}
	}
	t.Run("Emit", func(t *testing.T) {
		d := muNew(t)
		check(t, "Emit", muPanic(func() { _ = d.Emit(nilCtx, "t", nil) }))
		if st := d.Stats(); st.Emitted != 0 {
			t.Errorf("Stats().Emitted = %d after Emit(nil ctx), want 0", st.Emitted)
		}
		_ = d.Close()
	})
	t.Run("Drain", func(t *testing.T) {
		d := muNew(t)
		muOn(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
		muEmit(t, d, "t", "", nil)
		check(t, "Drain", muPanic(func() { _, _ = d.Drain(nilCtx, 0) }))
		if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
			t.Errorf("Drain(0) after a Drain(nil ctx) panic = %d, %v, want 1, nil", n, err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	t.Run("Run", func(t *testing.T) {
		d := muNew(t)
		muOn(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
		muEmit(t, d, "t", "", nil)
		check(t, "Run", muPanic(func() { _ = d.Run(nilCtx) }))
		n, err := d.Drain(ctx, 0)
		if n != 1 || err != nil {
			// Not calling Close: a Run that panicked half-way may hold
			// a lock Close waits for.
			t.Fatalf("Drain(0) after a Run(nil ctx) panic = %d, %v, want 1, nil", n, err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
}

// muMapCtx is a ctx type that is not comparable.
type muMapCtx struct {
	context.Context
	m map[string]int
}

// muAnyCtx is a comparable ctx type; comparing two of its values panics
// when both hold a map.
type muAnyCtx struct {
	context.Context
	v any
}

// TestMisuseUncomparableContext: a ctx is an interface value, and
// comparing two of them panics when their dynamic type is comparable but a
// value inside is not. Two Drains with such ctxs must not panic.
func TestMisuseUncomparableContext(t *testing.T) {
	tests := []struct {
		name string
		give func() context.Context
	}{
		{"map field", func() context.Context { return muMapCtx{context.Background(), map[string]int{}} }},
		{"map in an interface field", func() context.Context { return muAnyCtx{context.Background(), map[string]int{}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := muNew(t)
			muOn(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
			for i := range 2 {
				muEmit(t, d, "t", "", nil)
				var (
					n   int
					err error
				)
				if p := muPanic(func() { n, err = d.Drain(tt.give(), 0) }); p != nil {
					t.Errorf("Drain #%d panicked: %v", i+1, p)
				} else if n != 1 || err != nil {
					t.Errorf("Drain #%d = %d, %v, want 1, nil", i+1, n, err)
				}
			}
			_ = d.Close()
		})
	}
}

// muBackoffPanics is a retry backoff that panics.
func muBackoffPanics(int) time.Duration { panic("kaboom") }

// muCheckBackoffDeadLetter checks that the one failed pair of a dispatcher
// whose backoff panics became a dead letter whose error tells so.
func muCheckBackoffDeadLetter(t *testing.T, d *dispatcher.Dispatcher) {
	t.Helper()
	dls := d.DeadLetters()
	if len(dls) != 1 {
		t.Fatalf("DeadLetters() = %+v, want 1", dls)
	}
	if msg := fmt.Sprint(dls[0].Err); !strings.Contains(msg, "backoff") || !strings.Contains(msg, "kaboom") {
		t.Errorf("dead letter error = %q, want it to name the backoff and its panic %q", msg, "kaboom")
	}
}

// TestMisuseBackoffPanicDrain: a WithRetry backoff that panics must not
// crash a Drain: the failed pair becomes a dead letter whose error tells
// of the backoff's panic.
func TestMisuseBackoffPanicDrain(t *testing.T) {
	ctx := context.Background()
	d := muNew(t, dispatcher.WithRetry(3, muBackoffPanics))
	muOn(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("failing") })
	muEmit(t, d, "t", "", nil)
	var err error
	if p := muPanic(func() { _, err = d.Drain(ctx, 0) }); p != nil {
		t.Fatalf("Drain(0) panicked: %v", p)
	}
	if err == nil {
		t.Errorf("Drain(0) error = nil, want the dead letter's")
	}
	muCheckBackoffDeadLetter(t, d)
	_ = d.Close()
}

// TestMisuseBackoffPanicRun: a WithRetry backoff that panics must not
// crash a worker under Run: the failed pair becomes a dead letter whose
// error tells of the backoff's panic. It runs in a child process: a panic
// on a worker goroutine ends the process.
func TestMisuseBackoffPanicRun(t *testing.T) {
	if !muIsolated(t) {
		return
	}
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := muNew(t, dispatcher.WithWorkers(1), dispatcher.WithRetry(3, muBackoffPanics))
		muOn(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("failing") })
		muEmit(t, d, "t", "", nil)
		wait := muRun(ctx, d)
		synctest.Wait() // Run owns the queue: Shutdown must not drain on this goroutine
		sctx, cancel := context.WithTimeout(ctx, muGuard)
		defer cancel()
		if err := d.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown() error = %v, want nil", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
		muCheckBackoffDeadLetter(t, d)
	})
}

// TestMisuseOptionBounds: WithCapacity and WithWorkers have upper bounds
// (2^24 events at most, 4096 workers) and New rejects values beyond them
// with an error wrapping ErrInvalidOption that names the option. A
// rejected value is followed by another bad option, which makes a New that
// wrongly accepts the first fail on the second instead of allocating, say,
// a ring of 2^30 slots: the test then sees an error that names the wrong
// option.
func TestMisuseOptionBounds(t *testing.T) {
	stop := dispatcher.WithDeadLetterLimit(0) // invalid
	tests := []struct {
		name   string
		give   dispatcher.Option
		option string // named by the error; "" when the value is accepted
	}{
		{"WithCapacity(1<<20)", dispatcher.WithCapacity(1 << 20), ""},
		{"WithCapacity(1<<25)", dispatcher.WithCapacity(1 << 25), "WithCapacity"},
		{"WithCapacity(1<<30)", dispatcher.WithCapacity(1 << 30), "WithCapacity"},
		{"WithWorkers(4096)", dispatcher.WithWorkers(4096), ""},
		{"WithWorkers(100000)", dispatcher.WithWorkers(100000), "WithWorkers"},
		{"WithWorkers(1<<30)", dispatcher.WithWorkers(1 << 30), "WithWorkers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.option == "" {
				d, err := dispatcher.New(tt.give)
				if err != nil {
					t.Fatalf("New(%s) error = %v, want nil", tt.name, err)
				}
				_ = d.Close()
				return
			}
			var err error
			if p := muPanic(func() { _, err = dispatcher.New(tt.give, stop) }); p != nil {
				t.Fatalf("New(%s, ...) panicked: %v", tt.name, p)
			}
			if !errors.Is(err, dispatcher.ErrInvalidOption) || !strings.Contains(fmt.Sprint(err), tt.option) {
				t.Errorf("New(%s, WithDeadLetterLimit(0)) error = %v, want ErrInvalidOption for %s", tt.name, err, tt.option)
			}
		})
	}
}

// TestMisuseClearErrors: misuse gets an error that says what is wrong.
func TestMisuseClearErrors(t *testing.T) {
	ctx := context.Background()
	ok := func(context.Context, dispatcher.Event) error { return nil }
	t.Run("duplicate WithName", func(t *testing.T) {
		d := muNew(t)
		muOn(t, d, "a", ok, dispatcher.WithName("x"))
		if _, err := d.On("b", ok, dispatcher.WithName("x")); !errors.Is(err, dispatcher.ErrInvalidOption) {
			t.Errorf("second On with WithName(%q) error = %v, want ErrInvalidOption", "x", err)
		}
	})
	t.Run("bad topics", func(t *testing.T) {
		d := muNew(t)
		for _, topic := range []string{"order placed", "order/placed", "a,b"} {
			if err := d.Emit(ctx, topic, nil); !errors.Is(err, dispatcher.ErrBadTopic) {
				t.Errorf("Emit(%q) error = %v, want ErrBadTopic", topic, err)
			}
		}
		if _, err := d.On("order.#", ok); !errors.Is(err, dispatcher.ErrBadTopic) {
			t.Errorf("On(%q) error = %v, want ErrBadTopic", "order.#", err)
		}
	})
	t.Run("ErrRunning names Run", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			d := muNew(t)
			wait := muRun(ctx, d)
			synctest.Wait() // Run owns the queue and its workers are idle
			_, err := d.Drain(ctx, 0)
			if !errors.Is(err, dispatcher.ErrRunning) || !strings.Contains(fmt.Sprint(err), "Run") {
				t.Errorf("Drain(0) under Run error = %v, want ErrRunning with a message that mentions Run", err)
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown() error = %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run() error = %v, want nil", err)
			}
		})
	})
}
