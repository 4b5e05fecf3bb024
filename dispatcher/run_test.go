package dispatcher

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
)

// rtTimeout bounds every wait of the runtime tests. Outside a synctest
// bubble it is real time and only fires when something hangs; inside a
// bubble it is fake time, which advances only when every goroutine of the
// bubble is blocked, so it turns a deadlock into a test failure.
const rtTimeout = 10 * time.Second

// rtRecv receives from ch, failing the test after rtTimeout. It must be
// called from the test's goroutine.
func rtRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(rtTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", rtTimeout, what)
		panic("unreachable")
	}
}

// rtStartRun calls d.Run(ctx) on a new goroutine and returns a function
// that waits for Run's result (at most once; later calls return the same
// error). If the test ends without waiting, a cleanup closes d and waits,
// so that no goroutine outlives the test.
func rtStartRun(t *testing.T, ctx context.Context, d *Dispatcher) (wait func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	var (
		returned bool
		err      error
	)
	// Wait until Run owns the queue, so that a Shutdown or Close that
	// follows finds it running (Run after either returns ErrClosed). The
	// owner field is internal: there is no public way to ask.
	for !returned && d.owner.Load() != ownerRun {
		select {
		case err = <-errc: // Run already returned: wait reports it
			returned = true
		default:
			runtime.Gosched()
		}
	}
	wait = func() error {
		t.Helper()
		if !returned {
			err = rtRecv(t, errc, "Run to return")
			returned = true
		}
		return err
	}
	t.Cleanup(func() {
		if !returned {
			d.Close() //nolint:errcheck // cleanup after a failed test
			wait()    //nolint:errcheck
		}
	})
	return wait
}

// rtNew is New that fails the test on error.
func rtNew(t *testing.T, opts ...Option) *Dispatcher {
	t.Helper()
	d, err := New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// rtOn is On that fails the test on error.
func rtOn(t *testing.T, d *Dispatcher, pattern string, h Handler, opts ...SubscribeOption) *Subscription {
	t.Helper()
	s, err := d.On(pattern, h, opts...)
	if err != nil {
		t.Fatalf("On(%q): %v", pattern, err)
	}
	return s
}

// rtEmit is Emit that fails the test on error (test goroutine only).
func rtEmit(t *testing.T, d *Dispatcher, topic string, payload any) {
	t.Helper()
	if err := d.Emit(context.Background(), topic, payload); err != nil {
		t.Fatalf("Emit(%q, %v) = %v, want nil", topic, payload, err)
	}
}

// rtCheckClosed checks that every entry point reports a closed dispatcher.
func rtCheckClosed(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx := context.Background()
	if err := d.Emit(ctx, "after.close", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Emit after stop = %v, want ErrClosed", err)
	}
	if err := d.EmitEvent(ctx, Event{Topic: "after.close", Key: "k"}); !errors.Is(err, ErrClosed) {
		t.Errorf("EmitEvent after stop = %v, want ErrClosed", err)
	}
	if n, err := d.Tick(ctx); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Tick after stop = %d, %v, want 0, ErrClosed", n, err)
	}
	if n, err := d.Drain(ctx, 0); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Drain after stop = %d, %v, want 0, ErrClosed", n, err)
	}
	if err := d.Run(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after stop = %v, want ErrClosed", err)
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown again = %v, want nil", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close again = %v, want nil", err)
	}
}

// TestRunShutdownDrainsQueuedAndRetries: Run blocks until Shutdown, which
// processes the events queued before Run started, those emitted while it
// ran, and every retry, waiting for the backoff (fake clock).
func TestRunShutdownDrainsQueuedAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		backoff := func(k int) time.Duration { return time.Duration(k) * time.Second }
		d := rtNew(t, WithWorkers(2), WithCapacity(64), WithRetry(3, backoff))
		const n = 40
		var okCalls, flakyCalls, flakyOK [n]atomic.Int32
		rtOn(t, d, "job", func(ctx context.Context, e Event) error {
			okCalls[e.Payload.(int)].Add(1)
			return nil
		}, WithName("ok"))
		rtOn(t, d, "job", func(ctx context.Context, e Event) error {
			p := e.Payload.(int)
			flakyCalls[p].Add(1)
			if p%2 == 0 && e.Attempt < 3 {
				return fmt.Errorf("flaky %d, attempt %d", p, e.Attempt)
			}
			flakyOK[p].Add(1)
			return nil
		}, WithName("flaky"))

		for i := range n / 2 {
			rtEmit(t, d, "job", i) // before Run: they wait in the queue
		}
		start := time.Now()
		wait := rtStartRun(t, ctx, d)
		for i := n / 2; i < n; i++ {
			rtEmit(t, d, "job", i)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
		if err := wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		// Even payloads fail at t=0 and t=1s and succeed at t=3s.
		if got := time.Since(start); got < 3*time.Second {
			t.Errorf("Shutdown returned after %v (fake clock), want >= 3s: it did not wait for the retries", got)
		}
		for p := range n {
			wantCalls := int32(1)
			if p%2 == 0 {
				wantCalls = 3
			}
			if got := okCalls[p].Load(); got != 1 {
				t.Errorf("payload %d: ok called %d times, want 1", p, got)
			}
			if got := flakyCalls[p].Load(); got != wantCalls {
				t.Errorf("payload %d: flaky called %d times, want %d", p, got, wantCalls)
			}
			if got := flakyOK[p].Load(); got != 1 {
				t.Errorf("payload %d: flaky succeeded %d times, want 1", p, got)
			}
		}
		want := Stats{Emitted: n, Delivered: 2 * n, Failed: n, Retried: n}
		if got := d.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
		if dl := d.DeadLetters(); len(dl) != 0 {
			t.Errorf("DeadLetters = %v, want none", dl)
		}
		rtCheckClosed(t, d)
	})
}

// TestShutdownWithoutRunDrainsOnCaller: without Run, Shutdown does the
// work itself, retries with backoff included.
func TestShutdownWithoutRunDrainsOnCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := rtNew(t, WithCapacity(16), WithRetry(2, func(int) time.Duration { return time.Minute }))
		var calls, ok atomic.Int32
		rtOn(t, d, "job", func(ctx context.Context, e Event) error {
			calls.Add(1)
			if e.Payload.(int) == 0 && e.Attempt == 1 {
				return errors.New("first call fails")
			}
			ok.Add(1)
			return nil
		})
		for i := range 5 {
			rtEmit(t, d, "job", i)
		}
		start := time.Now()
		if err := d.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
		if got := time.Since(start); got < time.Minute {
			t.Errorf("Shutdown returned after %v (fake clock), want >= 1m", got)
		}
		if calls.Load() != 6 || ok.Load() != 5 {
			t.Errorf("calls = %d, successes = %d, want 6, 5", calls.Load(), ok.Load())
		}
		rtCheckClosed(t, d)
	})
}

// TestShutdownAcceptsHandlerCascades: during Shutdown, outside emits get
// ErrClosed, emits from handlers are accepted and processed: a cascade of
// three levels completes.
func TestShutdownAcceptsHandlerCascades(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := rtNew(t, WithWorkers(2), WithCapacity(64))
		gate := make(chan struct{})
		var emitErrs, l3 atomic.Int32
		rtOn(t, d, "l1", func(ctx context.Context, e Event) error {
			<-gate
			if err := d.Emit(ctx, "l2", e.Payload); err != nil {
				emitErrs.Add(1)
				return err
			}
			return nil
		})
		rtOn(t, d, "l2", func(ctx context.Context, e Event) error {
			if err := d.Emit(ctx, "l3", e.Payload); err != nil {
				emitErrs.Add(1)
				return err
			}
			return nil
		})
		rtOn(t, d, "l3", func(ctx context.Context, e Event) error {
			l3.Add(1)
			return nil
		})
		const n = 5
		for i := range n {
			rtEmit(t, d, "l1", i)
		}
		wait := rtStartRun(t, ctx, d)
		synctest.Wait() // a worker is inside an l1 handler, at the gate

		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(ctx) }()
		synctest.Wait() // Shutdown has stopped intake and waits
		select {
		case err := <-shut:
			t.Fatalf("Shutdown = %v before the handlers finished", err)
		default:
		}
		if err := d.Emit(ctx, "l1", 99); !errors.Is(err, ErrClosed) {
			t.Errorf("outside Emit during Shutdown = %v, want ErrClosed", err)
		}
		close(gate)
		if err := rtRecv(t, shut, "Shutdown"); err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
		if err := wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if got := l3.Load(); got != n {
			t.Errorf("level 3 handled %d events, want %d", got, n)
		}
		if got := emitErrs.Load(); got != 0 {
			t.Errorf("%d emits from handlers failed during Shutdown, want 0", got)
		}
		want := Stats{Emitted: 3 * n, Delivered: 3 * n}
		if got := d.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
		rtCheckClosed(t, d)
	})
}

// rtBlockedFirst sets up one worker busy in a handler call for payload 0,
// blocked until release is closed (or, if honorCtx, until its ctx ends),
// with payloads 1..queued waiting in the queue behind it. The handler
// records the ctx error it saw when it finished and the order of the other
// payloads.
type rtBlockedFirst struct {
	d       *Dispatcher
	release chan struct{}
	mu      sync.Mutex
	ctxErr  error // ctx.Err() seen by the in-flight call when it finished
	done    bool  // the in-flight call finished
	others  []int // the other payloads, in handling order
}

// checkInFlightCancelled checks that the blocked call finished with its ctx
// cancelled and that no other event was handled (after says when).
func (b *rtBlockedFirst) checkInFlightCancelled(t *testing.T, after string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done || !errors.Is(b.ctxErr, context.Canceled) {
		t.Errorf("in-flight handler: finished %v, ctx.Err() = %v; want finished with context.Canceled", b.done, b.ctxErr)
	}
	if len(b.others) != 0 {
		t.Errorf("events handled %s: %v, want none", after, b.others)
	}
}

// checkRestDropped checks that the dispatcher is closed with the blocked
// call delivered and the queued events behind it dropped.
func (b *rtBlockedFirst) checkRestDropped(t *testing.T, queued int) {
	t.Helper()
	want := Stats{Emitted: uint64(queued) + 1, Delivered: 1, Dropped: uint64(queued)}
	if got := b.d.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	rtCheckClosed(t, b.d)
}

// rtShutdownAfterProducers reports the producers' errors, then shuts d
// down gracefully and joins its Run.
func rtShutdownAfterProducers(t *testing.T, ctx context.Context, d *Dispatcher, wait func() error, errs []error) {
	t.Helper()
	for pr, err := range errs {
		if err != nil {
			t.Errorf("producer %d: %v", pr, err)
		}
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := wait(); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func rtStartBlockedFirst(t *testing.T, ctx context.Context, queued int, honorCtx bool, opts ...Option) (*rtBlockedFirst, func() error) {
	t.Helper()
	b := &rtBlockedFirst{
		d:       rtNew(t, append([]Option{WithWorkers(1), WithCapacity(64)}, opts...)...),
		release: make(chan struct{}),
	}
	rtOn(t, b.d, "x", func(hctx context.Context, e Event) error {
		p := e.Payload.(int)
		if p != 0 {
			b.mu.Lock()
			b.others = append(b.others, p)
			b.mu.Unlock()
			return nil
		}
		if honorCtx {
			select {
			case <-b.release:
			case <-hctx.Done():
			}
		} else {
			<-b.release
		}
		b.mu.Lock()
		b.ctxErr, b.done = hctx.Err(), true
		b.mu.Unlock()
		return nil
	})
	wait := rtStartRun(t, ctx, b.d)
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
	})
	rtEmit(t, b.d, "x", 0)
	synctest.Wait() // the only worker is inside the handler for payload 0
	for i := 1; i <= queued; i++ {
		rtEmit(t, b.d, "x", i)
	}
	if got := b.d.Stats().Queued; got != queued {
		t.Fatalf("Stats.Queued = %d with the worker busy, want %d", got, queued)
	}
	return b, wait
}

// TestCloseFinishesInFlightAndDropsQueued: Close waits for the in-flight
// handler (whose ctx it cancels), drops what is queued, counts it, and
// reports it with ErrDropped; Run returns nil.
func TestCloseFinishesInFlightAndDropsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queued = 9
		b, wait := rtStartBlockedFirst(t, context.Background(), queued, false)
		d := b.d
		closed := make(chan error, 1)
		go func() { closed <- d.Close() }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close = %v while a handler was still running, want it to wait", err)
		default:
		}
		if err := d.Emit(context.Background(), "x", 100); !errors.Is(err, ErrClosed) {
			t.Errorf("Emit during Close = %v, want ErrClosed", err)
		}
		close(b.release)
		err := rtRecv(t, closed, "Close")
		if !errors.Is(err, ErrDropped) {
			t.Errorf("Close = %v, want an error wrapping ErrDropped", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v, want nil after Close", err)
		}
		b.checkInFlightCancelled(t, "after Close")
		b.checkRestDropped(t, queued)
	})
}

// TestRunCtxCancelKeepsQueued: cancelling Run's ctx cancels the in-flight
// handler's ctx, lets it finish, and leaves the queued events for a later
// Drain (in order) or a second Run.
func TestRunCtxCancelKeepsQueued(t *testing.T) {
	for _, then := range []string{"Drain", "Run"} {
		t.Run("then="+then, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const queued = 9
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				b, wait := rtStartBlockedFirst(t, ctx, queued, false)
				d := b.d
				cancel()
				synctest.Wait()
				close(b.release)
				if err := wait(); !errors.Is(err, context.Canceled) {
					t.Fatalf("Run = %v, want context.Canceled", err)
				}
				b.checkInFlightCancelled(t, "after cancel")
				st := d.Stats()
				if st.Queued != queued || st.Dropped != 0 || st.Delivered != 1 {
					t.Errorf("Stats after cancel = %+v, want Queued %d, Dropped 0, Delivered 1", st, queued)
				}

				bg := context.Background()
				switch then {
				case "Drain":
					n, err := d.Drain(bg, 0)
					if n != queued || err != nil {
						t.Errorf("Drain(0) = %d, %v, want %d, nil", n, err, queued)
					}
				case "Run":
					wait2 := rtStartRun(t, bg, d)
					if err := d.Shutdown(bg); err != nil {
						t.Errorf("Shutdown = %v, want nil", err)
					}
					if err := wait2(); err != nil {
						t.Errorf("second Run = %v, want nil", err)
					}
				}
				want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9}
				b.mu.Lock()
				if !slices.Equal(b.others, want) {
					t.Errorf("handled after %s: %v, want %v", then, b.others, want)
				}
				b.mu.Unlock()
				if st := d.Stats(); st.Queued != 0 || st.Delivered != queued+1 {
					t.Errorf("Stats at the end = %+v, want Queued 0, Delivered %d", st, queued+1)
				}
				if then == "Drain" {
					if err := d.Shutdown(bg); err != nil {
						t.Errorf("Shutdown = %v, want nil", err)
					}
				}
			})
		})
	}
}

// TestRunCtxCancelManyWorkersThenDrainInOrder: four workers are stopped
// by ctx in the middle of a keyed load; nothing is lost or handled twice,
// Stats.Queued counts exactly what is left, the Drain that follows handles
// it in ID order, and per-key order holds across Run and Drain.
func TestRunCtxCancelManyWorkersThenDrainInOrder(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 4000
	}
	d := rtNew(t, WithWorkers(4), WithCapacity(n))
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		seen     = make([]int, n+1) // by event ID
		perKey   = make(map[string][]uint64)
		draining bool
		drained  []uint64
		handled  atomic.Int64
	)
	rtOn(t, d, "load", func(hctx context.Context, e Event) error {
		mu.Lock()
		seen[e.ID]++
		if e.Key != "" {
			perKey[e.Key] = append(perKey[e.Key], e.ID)
		}
		if draining {
			drained = append(drained, e.ID)
		}
		mu.Unlock()
		if handled.Add(1) == int64(n/3) {
			cancel() // stop Run from inside, in the middle of the load
		}
		return nil
	})
	for i := range n {
		key := ""
		if i%3 != 0 {
			key = keys[i%len(keys)]
		}
		if err := d.EmitEvent(context.Background(), Event{Topic: "load", Key: key}); err != nil {
			t.Fatalf("EmitEvent %d: %v", i, err)
		}
	}
	wait := rtStartRun(t, ctx, d)
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	byRun := int(handled.Load())
	st := d.Stats()
	if st.Delivered != uint64(byRun) || st.Queued != n-byRun || st.Dropped != 0 {
		t.Errorf("after cancel: Stats = %+v, handled %d; want Delivered %d, Queued %d, Dropped 0", st, byRun, byRun, n-byRun)
	}
	mu.Lock()
	draining = true
	mu.Unlock()
	got, err := d.Drain(context.Background(), 0)
	if got != n-byRun || err != nil {
		t.Errorf("Drain(0) = %d, %v, want %d, nil", got, err, n-byRun)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("Run handled %d of %d events before its ctx ended; Drain handled %d", byRun, n, len(drained))
	for i := 1; i < len(drained); i++ {
		if drained[i] < drained[i-1] {
			t.Errorf("Drain handled event %d after event %d, want ID order", drained[i], drained[i-1])
			break
		}
	}
	for id := 1; id <= n; id++ {
		if seen[id] != 1 {
			t.Errorf("event %d handled %d times, want 1", id, seen[id])
		}
	}
	for k, ids := range perKey {
		for i := 1; i < len(ids); i++ {
			if ids[i] < ids[i-1] {
				t.Errorf("key %s: event %d handled after event %d (Run and Drain together)", k, ids[i], ids[i-1])
				break
			}
		}
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

// TestRunExclusiveOwnership: one Run at a time; Tick and Drain during Run,
// and Run during a Drain, get ErrRunning; Run after Shutdown or Close gets
// ErrClosed.
func TestRunExclusiveOwnership(t *testing.T) {
	ctx := context.Background()

	t.Run("concurrent Run", func(t *testing.T) {
		d := rtNew(t, WithWorkers(2))
		errc := make(chan error, 2)
		for range 2 {
			go func() { errc <- d.Run(ctx) }()
		}
		if err := rtRecv(t, errc, "the losing Run"); !errors.Is(err, ErrRunning) {
			t.Errorf("one of two concurrent Runs = %v, want ErrRunning", err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := rtRecv(t, errc, "the winning Run"); err != nil {
			t.Errorf("the winning Run = %v, want nil", err)
		}
	})

	t.Run("Tick and Drain during Run", func(t *testing.T) {
		d := rtNew(t, WithWorkers(2))
		ran := make(chan struct{}, 1)
		rtOn(t, d, "x", func(ctx context.Context, e Event) error {
			select {
			case ran <- struct{}{}:
			default:
			}
			return nil
		})
		wait := rtStartRun(t, ctx, d)
		rtEmit(t, d, "x", 1)
		rtRecv(t, ran, "the handler under Run") // Run owns the queue now
		if err := d.Run(ctx); !errors.Is(err, ErrRunning) {
			t.Errorf("second Run = %v, want ErrRunning", err)
		}
		if n, err := d.Tick(ctx); n != 0 || !errors.Is(err, ErrRunning) {
			t.Errorf("Tick during Run = %d, %v, want 0, ErrRunning", n, err)
		}
		if n, err := d.Drain(ctx, 0); n != 0 || !errors.Is(err, ErrRunning) {
			t.Errorf("Drain during Run = %d, %v, want 0, ErrRunning", n, err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		rtCheckClosed(t, d)
	})

	t.Run("Run during Drain", func(t *testing.T) {
		d := rtNew(t)
		var runErr error
		rtOn(t, d, "x", func(ctx context.Context, e Event) error {
			runErr = d.Run(ctx)
			return nil
		})
		rtEmit(t, d, "x", 1)
		if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
			t.Errorf("Drain = %d, %v, want 1, nil", n, err)
		}
		if !errors.Is(runErr, ErrRunning) {
			t.Errorf("Run from a handler during Drain = %v, want ErrRunning", runErr)
		}
	})

	t.Run("Run after Close", func(t *testing.T) {
		d := rtNew(t, WithWorkers(2))
		wait := rtStartRun(t, ctx, d)
		if err := d.Close(); err != nil {
			t.Errorf("Close = %v, want nil (nothing queued)", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v, want nil after Close", err)
		}
		rtCheckClosed(t, d)
	})

	t.Run("Run after Close without Run", func(t *testing.T) {
		d := rtNew(t)
		if err := d.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		rtCheckClosed(t, d)
	})
}

// TestShutdownCloseConcurrentAndRepeated: Shutdown and Close called
// together from several goroutines, then again, neither panic nor hang;
// Shutdown returns nil, at most one Close reports ErrDropped, and every
// event is either delivered or counted as dropped.
func TestShutdownCloseConcurrentAndRepeated(t *testing.T) {
	for _, withRun := range []bool{true, false} {
		t.Run(fmt.Sprintf("run=%v", withRun), func(t *testing.T) {
			ctx := context.Background()
			const n = 500
			d := rtNew(t, WithWorkers(2), WithCapacity(n))
			var delivered atomic.Int64
			rtOn(t, d, "x", func(ctx context.Context, e Event) error {
				delivered.Add(1)
				return nil
			})
			for i := range n {
				rtEmit(t, d, "x", i)
			}
			var wait func() error
			if withRun {
				wait = rtStartRun(t, ctx, d)
			}
			const callers = 8
			start := make(chan struct{})
			results := make([]error, callers)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					<-start
					if i%2 == 0 {
						results[i] = d.Shutdown(ctx)
					} else {
						results[i] = d.Close()
					}
				})
			}
			close(start)
			wg.Wait()
			dropErrs := 0
			for i, err := range results {
				switch {
				case i%2 == 0 && err != nil:
					t.Errorf("concurrent Shutdown = %v, want nil", err)
				case i%2 == 1 && errors.Is(err, ErrDropped):
					dropErrs++
				case i%2 == 1 && err != nil:
					t.Errorf("concurrent Close = %v, want nil or ErrDropped", err)
				}
			}
			if dropErrs > 1 {
				t.Errorf("%d Close calls reported ErrDropped, want at most 1", dropErrs)
			}
			if withRun {
				if err := wait(); err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			}
			rtCheckClosed(t, d)
			st := d.Stats()
			if got := uint64(delivered.Load()); got != st.Delivered || got+st.Dropped != n || st.Queued != 0 {
				t.Errorf("delivered %d, Stats = %+v; want Delivered == delivered, delivered + Dropped == %d, Queued 0", got, st, n)
			}
			if (dropErrs == 1) != (st.Dropped > 0) {
				t.Errorf("%d ErrDropped from Close but Stats.Dropped = %d", dropErrs, st.Dropped)
			}
		})
	}
}

// TestShutdownFromHandlerReturnsErrRunning: Shutdown with a handler's ctx
// would wait for itself, so it reports ErrRunning, under Run and Drain.
func TestShutdownFromHandlerReturnsErrRunning(t *testing.T) {
	ctx := context.Background()
	t.Run("Run", func(t *testing.T) {
		d := rtNew(t, WithWorkers(2))
		got := make(chan error, 1)
		rtOn(t, d, "x", func(hctx context.Context, e Event) error {
			got <- d.Shutdown(hctx)
			return nil
		})
		wait := rtStartRun(t, ctx, d)
		rtEmit(t, d, "x", 1)
		if err := rtRecv(t, got, "the handler"); !errors.Is(err, ErrRunning) {
			t.Errorf("Shutdown from a handler under Run = %v, want ErrRunning", err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	t.Run("Drain", func(t *testing.T) {
		d := rtNew(t)
		var got error
		rtOn(t, d, "x", func(hctx context.Context, e Event) error {
			got = d.Shutdown(hctx)
			return nil
		})
		rtEmit(t, d, "x", 1)
		if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
			t.Errorf("Drain = %d, %v", n, err)
		}
		if !errors.Is(got, ErrRunning) {
			t.Errorf("Shutdown from a handler under Drain = %v, want ErrRunning", got)
		}
		if err := d.Emit(ctx, "x", 2); err != nil {
			t.Errorf("Emit after the refused Shutdown = %v, want nil: the dispatcher must still be open", err)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	})
}

// TestShutdownDeadlineWhileHandlerBlocks: Shutdown's ctx ends while a
// handler is still running: Shutdown returns ctx's error, what is left is
// counted as dropped, Run returns nil.
func TestShutdownDeadlineWhileHandlerBlocks(t *testing.T) {
	for _, honorCtx := range []bool{true, false} {
		t.Run(fmt.Sprintf("handler honors ctx=%v", honorCtx), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const queued = 4
				bg := context.Background()
				b, wait := rtStartBlockedFirst(t, bg, queued, honorCtx)
				d := b.d
				sctx, cancel := context.WithTimeout(bg, 5*time.Second)
				defer cancel()
				start := time.Now()
				shut := make(chan error, 1)
				go func() { shut <- d.Shutdown(sctx) }()
				if !honorCtx {
					// Let the fake clock run well past the deadline while
					// the handler ignores its ctx, then let it finish.
					<-time.After(time.Minute)
					select {
					case err := <-shut:
						t.Logf("Shutdown returned %v before the in-flight handler finished", err)
						shut <- err
					default:
						t.Logf("Shutdown waits for the in-flight handler past its deadline (no goroutine may be left)")
					}
					close(b.release)
				}
				err := rtRecv(t, shut, "Shutdown")
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
				}
				if honorCtx {
					if got := time.Since(start); got != 5*time.Second {
						t.Errorf("Shutdown returned after %v (fake clock), want 5s", got)
					}
				}
				if err := wait(); err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
				b.checkInFlightCancelled(t, "after the deadline")
				b.checkRestDropped(t, queued)
			})
		})
	}
}

// TestShutdownWhileProducersEmitLosesNothing: Shutdown while producers
// emit from other goroutines (some blocked on a full ring) and handlers
// run: each Emit returns nil or ErrClosed, and every event whose Emit
// returned nil is delivered exactly once.
func TestShutdownWhileProducersEmitLosesNothing(t *testing.T) {
	const producers = 4
	const perProducer = 1 << 16
	trigger := int64(5000)
	if testing.Short() {
		trigger = 1000
	}
	ctx := context.Background()
	d := rtNew(t, WithWorkers(2), WithCapacity(64))
	delivered := make([]atomic.Uint32, producers*perProducer)
	var total atomic.Int64
	reached := make(chan struct{})
	rtOn(t, d, "p.>", func(ctx context.Context, e Event) error {
		delivered[e.Payload.(int)].Add(1)
		if total.Add(1) == trigger {
			close(reached)
		}
		return nil
	})
	wait := rtStartRun(t, ctx, d)
	accepted := make([]int, producers) // payloads p*perProducer + [0, accepted[p])
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		topic := fmt.Sprintf("p.%d", p)
		wg.Go(func() {
			for i := range perProducer {
				if err := d.Emit(ctx, topic, p*perProducer+i); err != nil {
					errs[p] = err
					return
				}
				accepted[p]++
			}
		})
	}
	rtRecv(t, reached, "the first deliveries")
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	wg.Wait()
	if err := wait(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	sum := 0
	for p := range producers {
		if errs[p] != nil && !errors.Is(errs[p], ErrClosed) {
			t.Errorf("producer %d: Emit = %v, want nil or ErrClosed", p, errs[p])
		}
		sum += accepted[p]
		for i := range perProducer {
			want := uint32(0)
			if i < accepted[p] {
				want = 1
			}
			if got := delivered[p*perProducer+i].Load(); got != want {
				t.Errorf("producer %d, event %d (accepted: %v): delivered %d times, want %d", p, i, i < accepted[p], got, want)
			}
		}
	}
	st := d.Stats()
	if st.Emitted != uint64(sum) || st.Delivered != uint64(sum) || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("Stats = %+v, want Emitted = Delivered = %d accepted emits, Dropped 0, Queued 0", st, sum)
	}
	t.Logf("accepted %d emits (per producer %v); Shutdown began after %d deliveries", sum, accepted, trigger)
}

// TestRunHandlerEmitOnFullRingNoDeadlock (Behaviour 6): handlers that emit
// on a full ring under Block never deadlock, even with every worker inside
// a handler; each follow-up is delivered or its Emit returned an error.
func TestRunHandlerEmitOnFullRingNoDeadlock(t *testing.T) {
	const fanout = 10

	t.Run("workers=1", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			d := rtNew(t, WithCapacity(2), WithWorkers(1), WithOverflow(Block))
			var accepted, errored, other, delivered atomic.Int64
			rtOn(t, d, "trigger", func(hctx context.Context, e Event) error {
				for i := range fanout {
					switch err := d.Emit(hctx, "follow", i); {
					case err == nil:
						accepted.Add(1)
					case errors.Is(err, ErrFull):
						errored.Add(1)
					default:
						errored.Add(1)
						other.Add(1)
					}
				}
				return nil
			})
			rtOn(t, d, "follow", func(context.Context, Event) error {
				delivered.Add(1)
				return nil
			})
			wait := rtStartRun(t, ctx, d)
			const triggers = 20
			for i := range triggers {
				rtEmit(t, d, "trigger", i) // Block: waits for the worker
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown = %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run = %v", err)
			}
			if got := delivered.Load() + errored.Load(); got != fanout*triggers {
				t.Errorf("delivered %d + errored %d = %d, want %d", delivered.Load(), errored.Load(), got, fanout*triggers)
			}
			if accepted.Load() != delivered.Load() {
				t.Errorf("accepted %d follow-ups, delivered %d", accepted.Load(), delivered.Load())
			}
			if other.Load() != 0 {
				t.Errorf("%d emits failed with an error other than ErrFull", other.Load())
			}
			if errored.Load() == 0 {
				t.Errorf("no emit found the ring full: the test did not test anything")
			}
			t.Logf("follow-ups: %d delivered, %d refused with ErrFull", delivered.Load(), errored.Load())
		})
	})

	t.Run("workers=4", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			const workers = 4
			d := rtNew(t, WithCapacity(2), WithWorkers(workers), WithOverflow(Block))
			gate := make(chan struct{})
			started := make(chan struct{}, workers)
			var accepted, errored, other, delivered, fillers atomic.Int64
			rtOn(t, d, "trigger", func(hctx context.Context, e Event) error {
				started <- struct{}{}
				<-gate
				for i := range fanout {
					switch err := d.Emit(hctx, "follow", i); {
					case err == nil:
						accepted.Add(1)
					case errors.Is(err, ErrFull):
						errored.Add(1)
					default:
						errored.Add(1)
						other.Add(1)
					}
				}
				return nil
			})
			rtOn(t, d, "follow", func(context.Context, Event) error {
				delivered.Add(1)
				return nil
			})
			rtOn(t, d, "filler", func(context.Context, Event) error {
				fillers.Add(1)
				return nil
			})
			wait := rtStartRun(t, ctx, d)
			for i := range workers {
				rtEmit(t, d, "trigger", i)
				rtRecv(t, started, "a worker to enter the trigger handler")
			}
			// Every worker is inside a handler: fill the ring.
			rtEmit(t, d, "filler", 0)
			rtEmit(t, d, "filler", 1)
			if got := d.Stats().Queued; got != 2 {
				t.Fatalf("Stats.Queued = %d with every worker in a handler, want 2 (a full ring)", got)
			}
			close(gate)
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown = %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run = %v", err)
			}
			if got := delivered.Load() + errored.Load(); got != fanout*workers {
				t.Errorf("delivered %d + errored %d = %d, want %d", delivered.Load(), errored.Load(), got, fanout*workers)
			}
			if accepted.Load() != delivered.Load() {
				t.Errorf("accepted %d follow-ups, delivered %d", accepted.Load(), delivered.Load())
			}
			if other.Load() != 0 {
				t.Errorf("%d emits failed with an error other than ErrFull", other.Load())
			}
			if errored.Load() == 0 {
				t.Errorf("no emit found the ring full: the test did not test anything")
			}
			if fillers.Load() != 2 {
				t.Errorf("fillers delivered %d, want 2", fillers.Load())
			}
			t.Logf("follow-ups: %d delivered, %d refused with ErrFull", delivered.Load(), errored.Load())
		})
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
	events := 100_000
	if testing.Short() {
		events = 20_000
	}
	ctx := context.Background()
	d := rtNew(t, WithWorkers(4), WithCapacity(1024), WithRetry(2, nil), WithDeadLetterLimit(events))
	var calls, ok atomic.Int64
	rtOn(t, d, "load", func(ctx context.Context, e Event) error {
		calls.Add(1)
		if e.Payload.(int)%3 == 0 && e.Attempt == 1 {
			return errors.New("fails on the first call only")
		}
		ok.Add(1)
		return nil
	})
	wait := rtStartRun(t, ctx, d)
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
	rtShutdownAfterProducers(t, ctx, d, wait, errs)
	retryable := (events + 2) / 3
	if dl := d.DeadLetters(); len(dl) > 0 {
		t.Errorf("%d of %d pairs that fail only on their first call became dead letters after 1 call, want 0: "+
			"a retry due at once must reach the workers at once (if it waits in the retry heap for the scheduler "+
			"goroutine, which lags under load, the heap, bounded by the capacity, fills up); first: %+v", len(dl), retryable, dl[0])
	}
	if got := ok.Load(); got != int64(events) {
		t.Errorf("%d events handled successfully, want %d", got, events)
	}
	st := d.Stats()
	if st.Retried+st.DeadLettered != uint64(retryable) || st.Failed != uint64(retryable) {
		t.Errorf("Stats = %+v, want Failed %d = Retried + DeadLettered", st, retryable)
	}
}

// TestShutdownFinishesAfterRunCtxCancel: Run's ctx ends while Shutdown
// waits for it: Run returns ctx's error, and Shutdown finishes the job on
// its own goroutine.
func TestShutdownFinishesAfterRunCtxCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bg := context.Background()
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		const queued = 4
		b, wait := rtStartBlockedFirst(t, ctx, queued, false)
		d := b.d
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(bg) }()
		synctest.Wait()
		cancel()
		synctest.Wait()
		close(b.release)
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
		if err := rtRecv(t, shut, "Shutdown"); err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
		b.mu.Lock()
		if want := []int{1, 2, 3, 4}; !slices.Equal(b.others, want) {
			t.Errorf("handled after Run stopped: %v, want %v", b.others, want)
		}
		b.mu.Unlock()
		want := Stats{Emitted: queued + 1, Delivered: queued + 1}
		if got := d.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
		rtCheckClosed(t, d)
	})
}

// TestCloseUnblocksBlockedEmitters: emitters waiting for room under Block
// get ErrClosed as soon as Close begins, before the in-flight handler ends.
func TestCloseUnblocksBlockedEmitters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queued = 2
		b, wait := rtStartBlockedFirst(t, context.Background(), queued, false, WithCapacity(queued))
		d := b.d
		const emitters = 3
		results := make(chan error, emitters)
		for i := range emitters {
			go func() { results <- d.Emit(context.Background(), "x", 100+i) }()
		}
		synctest.Wait() // the emitters wait for room
		if len(results) != 0 {
			t.Fatalf("an Emit on a full ring returned under Block: %v", <-results)
		}
		closed := make(chan error, 1)
		go func() { closed <- d.Close() }()
		synctest.Wait() // Close waits for the handler; the emitters must be free
		for range emitters {
			select {
			case err := <-results:
				if !errors.Is(err, ErrClosed) {
					t.Errorf("blocked Emit after Close = %v, want ErrClosed", err)
				}
			default:
				t.Errorf("an emitter is still blocked while Close waits for the handler")
			}
		}
		close(b.release)
		if err := rtRecv(t, closed, "Close"); !errors.Is(err, ErrDropped) {
			t.Errorf("Close = %v, want ErrDropped", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v", err)
		}
		want := Stats{Emitted: queued + 1, Delivered: 1, Dropped: queued}
		if got := d.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
	})
}

// TestShutdownDeadlineDropsWaitingRetries: Shutdown waits for retries,
// but not beyond its ctx: retries still waiting then are dropped and
// counted.
func TestShutdownDeadlineDropsWaitingRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bg := context.Background()
		d := rtNew(t, WithWorkers(2), WithRetry(2, func(int) time.Duration { return time.Hour }))
		rtOn(t, d, "x", func(ctx context.Context, e Event) error {
			if e.Attempt == 1 {
				return errors.New("first call fails")
			}
			return nil
		})
		const n = 3
		for i := range n {
			rtEmit(t, d, "x", i)
		}
		wait := rtStartRun(t, bg, d)
		sctx, cancel := context.WithTimeout(bg, time.Minute)
		defer cancel()
		start := time.Now()
		if err := d.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
		}
		if got := time.Since(start); got != time.Minute {
			t.Errorf("Shutdown returned after %v (fake clock), want 1m", got)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v", err)
		}
		want := Stats{Emitted: n, Failed: n, Dropped: n}
		if got := d.Stats(); got != want {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
		rtCheckClosed(t, d)
	})
}

// TestRunShutdownCloseStartRace: Run started at the same moment as
// Shutdown or Close: whoever wins, nothing hangs, Shutdown returns nil,
// Run returns nil or ErrClosed, and every event is delivered (Shutdown) or
// delivered or dropped (Close).
func TestRunShutdownCloseStartRace(t *testing.T) {
	iters := 300
	if testing.Short() {
		iters = 50
	}
	ctx := context.Background()
	const n = 100
	for i := range iters {
		useClose := i%2 == 1
		d := rtNew(t, WithWorkers(2), WithCapacity(128))
		var delivered atomic.Int64
		rtOn(t, d, "x", func(context.Context, Event) error {
			delivered.Add(1)
			return nil
		})
		for j := range n {
			rtEmit(t, d, "x", j)
		}
		start := make(chan struct{})
		runErr, stopErr := make(chan error, 1), make(chan error, 1)
		go func() {
			<-start
			runErr <- d.Run(ctx)
		}()
		go func() {
			<-start
			if useClose {
				stopErr <- d.Close()
			} else {
				stopErr <- d.Shutdown(ctx)
			}
		}()
		close(start)
		serr := rtRecv(t, stopErr, "Shutdown or Close")
		rerr := rtRecv(t, runErr, "Run")
		if rerr != nil && !errors.Is(rerr, ErrClosed) {
			t.Errorf("iteration %d: Run = %v, want nil or ErrClosed", i, rerr)
		}
		st := d.Stats()
		got := uint64(delivered.Load())
		if useClose {
			if serr != nil && !errors.Is(serr, ErrDropped) {
				t.Errorf("iteration %d: Close = %v, want nil or ErrDropped", i, serr)
			}
			if got+st.Dropped != n {
				t.Errorf("iteration %d: delivered %d + dropped %d, want %d", i, got, st.Dropped, n)
			}
		} else {
			if serr != nil {
				t.Errorf("iteration %d: Shutdown = %v, want nil", i, serr)
			}
			if got != n || st.Dropped != 0 {
				t.Errorf("iteration %d: delivered %d, dropped %d, want %d, 0", i, got, st.Dropped, n)
			}
		}
		if st.Queued != 0 {
			t.Errorf("iteration %d: Stats.Queued = %d after the stop, want 0", i, st.Queued)
		}
		if t.Failed() {
			break
		}
	}
}

// TestRunBlockedEmitterLooksForRoomItself: workers wake emitters blocked on
// a full ring only once the ring is half empty (roomMade). Here the only
// worker takes a batch that leaves the ring above half, and the batch's
// first handler waits for something the blocked emitter does after its
// Emit returns. The emitter must find the room on its own within
// blockedRecheck; if it slept until a wake-up, nothing would move again
// and synctest would report the deadlock.
func TestRunBlockedEmitterLooksForRoomItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const capacity = 512 // one batch (at most popBatch) leaves it above half
		ctx := context.Background()
		d := rtNew(t, WithCapacity(capacity), WithWorkers(1), WithOverflow(Block))
		released := make(chan struct{})
		var delivered atomic.Int64
		rtOn(t, d, "ev", func(_ context.Context, e Event) error {
			if e.ID == 1 {
				<-released
			}
			delivered.Add(1)
			return nil
		})
		for i := range capacity {
			rtEmit(t, d, "ev", i) // fills the ring; nothing consumes yet
		}
		emitted := make(chan error, 1)
		go func() {
			err := d.Emit(ctx, "ev", capacity) // blocks: the ring is full
			close(released)                    // what handler 1 waits for
			emitted <- err
		}()
		synctest.Wait() // the emitter is blocked

		start := time.Now() // synctest's fake clock: it moves only when all wait
		wait := rtStartRun(t, ctx, d)
		if err := <-emitted; err != nil {
			t.Errorf("blocked Emit = %v, want nil", err)
		}
		if waited := time.Since(start); waited > blockedRecheck {
			t.Errorf("the blocked Emit returned after %v, want at most blockedRecheck (%v)", waited, blockedRecheck)
		}
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run = %v", err)
		}
		if got := delivered.Load(); got != capacity+1 {
			t.Errorf("delivered %d events, want %d", got, capacity+1)
		}
	})
}
