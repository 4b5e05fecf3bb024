package dispatcher_test

// The helpers every test file of the package shares. Those that fail the
// test call t.Fatal, so they must run on the test's goroutine.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// waitTimeout bounds every wait of the tests. Outside a synctest bubble it
// is real time and only fires when something hangs; inside a bubble it is
// fake time, which advances only when every goroutine of the bubble is
// blocked, so it turns a deadlock into a test failure.
const waitTimeout = 10 * time.Second

// newDispatcher returns New(opts...), failing the test on error, and closes
// the dispatcher when the test ends.
func newDispatcher(t testing.TB, opts ...dispatcher.Option) *dispatcher.Dispatcher {
	t.Helper()
	d, err := dispatcher.New(opts...)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { _ = d.Close() }) // what it drops does not matter any more
	return d
}

// subscribe is On that fails the test on error.
func subscribe(t testing.TB, d *dispatcher.Dispatcher, pattern string, h dispatcher.Handler, opts ...dispatcher.SubscribeOption) *dispatcher.Subscription {
	t.Helper()
	sub, err := d.On(pattern, h, opts...)
	if err != nil {
		t.Fatalf("On(%q) error = %v", pattern, err)
	}
	return sub
}

// emit is Emit that fails the test on error.
func emit(t testing.TB, d *dispatcher.Dispatcher, topic string, payload any) {
	t.Helper()
	if err := d.Emit(context.Background(), topic, payload); err != nil {
		t.Fatalf("Emit(%q, %v) error = %v", topic, payload, err)
	}
}

// emitKeyed is EmitEvent of an event with an ordering key that fails the
// test on error.
func emitKeyed(t testing.TB, d *dispatcher.Dispatcher, topic, key string, payload any) {
	t.Helper()
	if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: topic, Key: key, Payload: payload}); err != nil {
		t.Fatalf("EmitEvent(%q, key %q) error = %v", topic, key, err)
	}
}

// emitTopics emits one event per topic, in order; an event's payload is its
// topic's index in topics.
func emitTopics(t testing.TB, d *dispatcher.Dispatcher, topics ...string) {
	t.Helper()
	for i, topic := range topics {
		emit(t, d, topic, i)
	}
}

// drain is Drain(ctx, 0) that fails the test on any error.
func drain(t testing.TB, d *dispatcher.Dispatcher) int {
	t.Helper()
	n, err := d.Drain(context.Background(), 0)
	if err != nil {
		t.Fatalf("Drain(0) error = %v", err)
	}
	return n
}

// drainIgnoringFailures is Drain(ctx, 0) that fails the test only on errors
// that are not handler failures.
func drainIgnoringFailures(t testing.TB, d *dispatcher.Dispatcher) int {
	t.Helper()
	n, err := d.Drain(context.Background(), 0)
	for _, e := range []error{dispatcher.ErrClosed, dispatcher.ErrRunning, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			t.Fatalf("Drain(0) error = %v", err)
		}
	}
	return n
}

// recv receives from ch, failing the test after waitTimeout.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		panic("unreachable")
	}
}

// recvOK is recv that reports a timeout with t.Errorf instead of t.Fatalf:
// ok reports whether a value came. The test goes on, so that it can
// release what its goroutines wait for before it ends (inside a synctest
// bubble, goroutines left blocked make synctest panic, and under Run a
// Fatal would leave them blocked). Only on the test's goroutine.
func recvOK[T any](t testing.TB, ch <-chan T, what string) (v T, ok bool) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v = <-ch:
		return v, true
	case <-timer.C:
		t.Errorf("timed out after %v waiting for %s: the dispatcher is stuck", waitTimeout, what)
		return v, false
	}
}

// waitFor yields until cond holds, failing the test after waitTimeout. It
// is for what no channel announces, outside synctest bubbles.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		runtime.Gosched()
	}
}

// advanceClock moves synctest's fake clock on by d. Every call is inside
// a synctest bubble: there the timer fires as soon as every goroutine of
// the bubble waits, with the clock moved by d, so no test waits in real
// time.
func advanceClock(d time.Duration) { <-time.After(d) }

// startRun calls d.Run(ctx) on a new goroutine, waits until Run has taken
// the queue (so that a Shutdown or Close that follows finds it running) or
// returned, and returns a function that waits for Run's result (later calls
// return the same error). If the test ends without waiting, a cleanup
// closes d and waits, so that no goroutine outlives the test.
func startRun(t testing.TB, ctx context.Context, d *dispatcher.Dispatcher) (wait func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	var (
		returned bool
		err      error
	)
	for !returned && !dispatcher.Running(d) {
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
			err = recv(t, errc, "Run to return")
			returned = true
		}
		return err
	}
	t.Cleanup(func() {
		if !returned {
			_ = d.Close() // cleanup after a failed test
			_ = wait()
		}
	})
	return wait
}

// shutdownAfterProducers reports the producers' errors, then shuts d down
// and joins its Run.
func shutdownAfterProducers(t testing.TB, ctx context.Context, d *dispatcher.Dispatcher, wait func() error, errs []error) {
	t.Helper()
	for pr, err := range errs {
		if err != nil {
			t.Errorf("producer %d: %v", pr, err)
		}
	}
	stopRun(t, ctx, d, wait)
}

// stopRun shuts d down with ctx and joins its Run (wait is startRun's),
// reporting an error from either.
func stopRun(t testing.TB, ctx context.Context, d *dispatcher.Dispatcher, wait func() error) {
	t.Helper()
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() error = %v, want nil", err)
	}
	if err := wait(); err != nil {
		t.Errorf("Run() error = %v, want nil", err)
	}
}

// drainOnGoroutine calls Drain(ctx, 0) on a goroutine of its own and waits
// for that goroutine to end: for a handler that ends its goroutine with
// runtime.Goexit, so that Drain never returns. The Drain's result is lost.
func drainOnGoroutine(t testing.TB, ctx context.Context, d *dispatcher.Dispatcher) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = d.Drain(ctx, 0)
	}()
	recv(t, done, "the goroutine of the Drain to end")
}

// checkClosed checks that every entry point reports a closed dispatcher,
// and that stopping it again is harmless.
func checkClosed(t testing.TB, d *dispatcher.Dispatcher) {
	t.Helper()
	ctx := context.Background()
	if err := d.Emit(ctx, "after.close", 1); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Emit after stop error = %v, want ErrClosed", err)
	}
	if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "after.close", Key: "k"}); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("EmitEvent after stop error = %v, want ErrClosed", err)
	}
	if n, err := d.Tick(ctx); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Tick() after stop = %d, %v, want 0, ErrClosed", n, err)
	}
	if n, err := d.Drain(ctx, 0); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Drain(0) after stop = %d, %v, want 0, ErrClosed", n, err)
	}
	if n, err := d.Redeliver(ctx); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Redeliver() after stop = %d, %v, want 0, ErrClosed", n, err)
	}
	if err := d.Run(ctx); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Run() after stop error = %v, want ErrClosed", err)
	}
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() again error = %v, want nil", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close() again error = %v, want nil", err)
	}
}

// callLog records handler calls as strings, safe for concurrent use.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf(format, args...))
}

func (l *callLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// handler returns a Handler that records "name:ID" (and the attempt when
// it is not the first) and returns err.
func (l *callLog) handler(name string, err error) dispatcher.Handler {
	return func(ctx context.Context, e dispatcher.Event) error {
		if e.Attempt > 1 {
			l.add("%s:%d#%d", name, e.ID, e.Attempt)
		} else {
			l.add("%s:%d", name, e.ID)
		}
		return err
	}
}

// checkCalls checks that l holds exactly want; what says when.
func checkCalls(t testing.TB, what string, l *callLog, want ...string) {
	t.Helper()
	if got := l.get(); !slices.Equal(got, want) {
		t.Errorf("%s: calls = %q, want %q", what, got, want)
	}
}

// record subscribes to pattern a handler that appends each event to the
// slice it returns. The handler is not safe for concurrent use: the
// events must be delivered by Tick, Drain or a Shutdown without Run.
func record(t testing.TB, d *dispatcher.Dispatcher, pattern string) *[]dispatcher.Event {
	t.Helper()
	var got []dispatcher.Event
	subscribe(t, d, pattern, func(_ context.Context, e dispatcher.Event) error {
		got = append(got, e)
		return nil
	})
	return &got
}

// eventIDs returns the IDs of evs.
func eventIDs(evs []dispatcher.Event) []uint64 {
	ids := make([]uint64, 0, len(evs))
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	return ids
}

// cascade subscribes handlers that re-emit: "a" emits "b", "b" emits "c".
// Every event on a one-token topic is logged as "topic:ID".
func cascade(t testing.TB, d *dispatcher.Dispatcher, l *callLog) {
	t.Helper()
	next := map[string]string{"a": "b", "b": "c"}
	subscribe(t, d, "*", func(ctx context.Context, e dispatcher.Event) error {
		l.add("%s:%d", e.Topic, e.ID)
		if to, ok := next[e.Topic]; ok {
			if err := d.Emit(ctx, to, nil); err != nil {
				t.Errorf("Emit(%q) from a handler error = %v", to, err)
			}
		}
		return nil
	})
}

// handlerErrors returns the *HandlerError leaves of a joined error.
func handlerErrors(err error) []*dispatcher.HandlerError {
	var out []*dispatcher.HandlerError
	var walk func(error)
	walk = func(err error) {
		if he, ok := err.(*dispatcher.HandlerError); ok {
			out = append(out, he)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// blockedFirst is a dispatcher under Run with one worker busy in a handler
// call for payload 0 and payloads 1..queued waiting behind it (see
// startBlockedFirst). The handler records the ctx error the blocked call
// saw when it finished, and the order of the other payloads.
type blockedFirst struct {
	d       *dispatcher.Dispatcher
	release chan struct{} // closing it ends the blocked call
	mu      sync.Mutex
	ctxErr  error // ctx.Err() seen by the blocked call when it finished
	done    bool  // the blocked call finished
	others  []int // the other payloads, in handling order
}

// startBlockedFirst starts b.d's Run with one worker (capacity 64, then
// opts), emits payload 0, waits until the worker is inside its handler
// call, and emits payloads 1..queued. The call for payload 0 blocks until
// b.release is closed, or, if honorCtx, until its ctx ends. It must run
// inside a synctest bubble.
func startBlockedFirst(t *testing.T, ctx context.Context, queued int, honorCtx bool, opts ...dispatcher.Option) (b *blockedFirst, wait func() error) {
	t.Helper()
	b = &blockedFirst{
		d:       newDispatcher(t, append([]dispatcher.Option{dispatcher.WithWorkers(1), dispatcher.WithCapacity(64)}, opts...)...),
		release: make(chan struct{}),
	}
	subscribe(t, b.d, "x", func(hctx context.Context, e dispatcher.Event) error {
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
	wait = startRun(t, ctx, b.d)
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
	})
	emit(t, b.d, "x", 0)
	synctest.Wait() // the only worker is inside the handler for payload 0
	for i := 1; i <= queued; i++ {
		emit(t, b.d, "x", i)
	}
	if got := b.d.Stats().Queued; got != queued {
		t.Fatalf("Stats().Queued = %d with the worker busy, want %d", got, queued)
	}
	return b, wait
}

// handledOthers returns the payloads other than 0 handled so far, in order.
func (b *blockedFirst) handledOthers() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.others)
}

// checkInFlightCancelled checks that the blocked call finished with its ctx
// cancelled and that no other event was handled (after says when).
func (b *blockedFirst) checkInFlightCancelled(t *testing.T, after string) {
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

// checkStopDropped checks the end of a stop that gave up on the queue: the
// stop's error wraps want, Run returned nil, the blocked call finished with
// its ctx cancelled and no other event was handled, the queued events were
// dropped, and the dispatcher is closed.
func (b *blockedFirst) checkStopDropped(t *testing.T, stop string, err, want error, wait func() error, queued int) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s error = %v, want it to wrap %v", stop, err, want)
	}
	if err := wait(); err != nil {
		t.Errorf("Run() after %s error = %v, want nil", stop, err)
	}
	b.checkInFlightCancelled(t, "after "+stop)
	wantStats := dispatcher.Stats{Emitted: uint64(queued) + 1, Delivered: 1, Dropped: uint64(queued)}
	if got := b.d.Stats(); got != wantStats {
		t.Errorf("Stats() after %s = %+v, want %+v", stop, got, wantStats)
	}
	checkClosed(t, b.d)
}

// linearBackoff is a retry backoff: call k+1 is due k seconds after call k
// failed.
func linearBackoff(attempt int) time.Duration { return time.Duration(attempt) * time.Second }

// timedCalls records "ID#attempt@elapsed" for each handler call, elapsed
// being the time since start (synctest's fake clock).
type timedCalls struct {
	start time.Time
	log   callLog
}

func (c *timedCalls) record(e dispatcher.Event) {
	c.log.add("%d#%d@%v", e.ID, e.Attempt, time.Since(c.start))
}

// failingFirstCall returns a Handler that records each call and fails the
// first call of each event.
func (c *timedCalls) failingFirstCall() dispatcher.Handler {
	return func(_ context.Context, e dispatcher.Event) error {
		c.record(e)
		if e.Attempt == 1 {
			return errors.New("first call fails")
		}
		return nil
	}
}

// sizeFor returns full, or short under -short: the size of a load test.
func sizeFor(full, short int) int {
	if testing.Short() {
		return short
	}
	return full
}

// doneRecorder records the OnDone calls of events under a name the test
// gives each event. It is safe for concurrent use: done may run on a
// worker, on an emitter (DropOldest) or on the caller of Close.
type doneRecorder struct {
	mu   sync.Mutex
	errs map[string][]error // the error of each call, by event name
}

// option returns an OnDone option that records its calls under name.
func (r *doneRecorder) option(name string) dispatcher.EmitOption {
	return dispatcher.OnDone(func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.errs == nil {
			r.errs = make(map[string][]error)
		}
		r.errs[name] = append(r.errs[name], err)
	})
}

// calls returns the errors of the done calls of name so far.
func (r *doneRecorder) calls(name string) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs[name])
}

// once checks that the done of name ran exactly once, and returns the
// error it got (nil if it did not run).
func (r *doneRecorder) once(t testing.TB, name string) error {
	t.Helper()
	errs := r.calls(name)
	if len(errs) != 1 {
		t.Errorf("OnDone of event %s called %d times (%v), want once", name, len(errs), errs)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// notYet checks that the done of name has not run; when says when.
func (r *doneRecorder) notYet(t testing.TB, name, when string) {
	t.Helper()
	if errs := r.calls(name); len(errs) != 0 {
		t.Errorf("%s: OnDone of event %s called %d times (%v), want not yet", when, name, len(errs), errs)
	}
}

// emitWithDone is EmitEvent(e) with an OnDone recorded by r under name,
// failing the test on error.
func emitWithDone(t testing.TB, d *dispatcher.Dispatcher, r *doneRecorder, name string, e dispatcher.Event) {
	t.Helper()
	if err := d.EmitEvent(context.Background(), e, r.option(name)); err != nil {
		t.Fatalf("EmitEvent(%s: %+v) error = %v", name, e, err)
	}
}

// goroutineID returns the calling goroutine's id, read from the first
// line of its stack trace ("goroutine 42 [running]:").
func goroutineID() uint64 {
	var buf [64]byte
	var id uint64
	_, _ = fmt.Sscanf(string(buf[:runtime.Stack(buf[:], false)]), "goroutine %d ", &id)
	return id
}

// panicValue calls f and returns the value it panicked with, or nil.
func panicValue(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}

// allStacks returns the stack traces of every goroutine, for the message
// of a test that found something hung.
func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// joinedLeaves returns the errors that err joins (errors.Join), recursively:
// err itself if it joins none, nothing for nil.
func joinedLeaves(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var leaves []error
	for _, e := range j.Unwrap() {
		leaves = append(leaves, joinedLeaves(e)...)
	}
	return leaves
}

// isJoin reports whether err joins other errors (has Unwrap() []error).
func isJoin(err error) bool {
	_, ok := err.(interface{ Unwrap() []error })
	return ok
}

// goGroup joins goroutines on a channel, done, which is closed once every
// goroutine started by Go has returned and started has been called. Unlike
// a sync.WaitGroup's Wait, a receive from done is durably blocking inside a
// synctest bubble (synctest.Wait and the fake clock see it as blocked), and
// it can be selected on together with a timeout.
type goGroup struct {
	n    atomic.Int32 // goroutines running, plus one until started
	done chan struct{}
}

// newGoGroup returns a group that counts one extra member until started
// is called, so that done is not closed while goroutines are still being
// started.
func newGoGroup() *goGroup {
	g := &goGroup{done: make(chan struct{})}
	g.n.Store(1)
	return g
}

// Go runs f on a new goroutine of the group.
func (g *goGroup) Go(f func()) {
	g.n.Add(1)
	go func() {
		defer g.finish()
		f()
	}()
}

// started says that Go will not be called again.
func (g *goGroup) started() { g.finish() }

func (g *goGroup) finish() {
	if g.n.Add(-1) == 0 {
		close(g.done)
	}
}

// isolatedChildEnv holds, in a child process started by isolatedChild, the
// name of the test the child runs.
const isolatedChildEnv = "RINGBUS_ISOLATED_TEST"

// isolatedChild runs the calling test again in a child process (the test
// binary, with -test.run selecting that test alone) and reports whether
// the caller is that child, where the test's body then runs:
//
//	if !isolatedChild(t) {
//		return
//	}
//
// In the parent it returns false after checking that the child passed,
// and reports the child's output if not. It is for tests whose failure
// ends the process: a panic on a dispatcher goroutine, or a synctest
// bubble whose goroutines deadlock. Such a failure then ends only the
// child; the parent reports it, panic and stacks included, as this test's
// failure, and the other tests still run.
func isolatedChild(t *testing.T) bool {
	t.Helper()
	if os.Getenv(isolatedChildEnv) == t.Name() {
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
	cmd.Env = append(os.Environ(), isolatedChildEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" (")) {
		t.Errorf("%s failed in a child process (%v); its output:\n%s", t.Name(), err, out)
	}
	return false
}

// meetCloseMidDrop runs call (a Flush or Shutdown without Run) on a
// goroutine of its own while a Close from another goroutine is in the
// middle of its drop, and checks that call returns only once the drop is
// over. The dispatcher holds x, a delayed event waiting in the time heap,
// and a job on "slow", whose handler call runs on call's goroutine and
// holds it until Close has begun; with jobLeft, a job on "left" queued
// behind it. Close's Dropped hook holds Close when it drops x. name says
// what call is, for the messages.
func meetCloseMidDrop(t *testing.T, name string, jobLeft bool, call func(*dispatcher.Dispatcher) error) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		inHook, release := make(chan struct{}), make(chan struct{})
		d := newDispatcher(t, dispatcher.WithObserver(dispatcher.Observer{Dropped: func(_ context.Context, dr dispatcher.Drop) {
			if dr.Event.Topic == "later" && dr.Reason == dispatcher.DroppedClosed { // x
				inHook <- struct{}{}
				<-release // Close is in the middle of its drop
			}
		}}))
		started, proceed := make(chan struct{}), make(chan struct{})
		subscribe(t, d, "slow", func(context.Context, dispatcher.Event) error {
			started <- struct{}{}
			<-proceed
			return nil
		})
		subscribe(t, d, "later", func(context.Context, dispatcher.Event) error { return nil })
		subscribe(t, d, "left", func(context.Context, dispatcher.Event) error { return nil })
		ctx := context.Background()
		var r doneRecorder
		if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "later"}, dispatcher.After(time.Hour), r.option("x")); err != nil {
			t.Fatalf("EmitEvent(x) error = %v", err)
		}
		if _, err := d.Tick(ctx); err != nil { // x goes to the time heap
			t.Fatalf("Tick() error = %v", err)
		}
		emit(t, d, "slow", nil)
		if jobLeft {
			emit(t, d, "left", nil)
		}
		returned := make(chan error, 1)
		go func() { returned <- call(d) }()
		<-started // call runs slow's handler
		closed := make(chan error, 1)
		go func() { closed <- d.Close() }()
		<-inHook // Close is dropping x
		proceed <- struct{}{}
		synctest.Wait()
		select {
		case err := <-returned:
			t.Errorf("%s() = %v returned while Close was still dropping x (x's OnDone calls: %v)", name, err, r.calls("x"))
			close(release)
		default:
			close(release)
			if err := <-returned; err != nil {
				t.Errorf("%s() error = %v", name, err)
			}
		}
		<-closed
		if err := r.once(t, "x"); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("OnDone(x) = %v, want ErrDropped", err)
		}
	})
}
