package dispatcher_test

// The deterministic mode: Tick and Drain process events on the caller's
// goroutine, without Run.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestTickProcessesOnlyEventsQueuedWhenItBegan(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t)
	var l callLog
	cascade(t, d, &l)
	emitTopics(t, d, "a")

	for i, want := range []struct {
		n     int
		calls []string
	}{
		{1, []string{"a:1"}},
		{1, []string{"a:1", "b:2"}},
		{1, []string{"a:1", "b:2", "c:3"}},
		{0, []string{"a:1", "b:2", "c:3"}},
	} {
		n, err := d.Tick(ctx)
		if n != want.n || err != nil {
			t.Errorf("Tick #%d = %d, %v, want %d, nil", i+1, n, err, want.n)
		}
		checkCalls(t, fmt.Sprintf("after Tick #%d", i+1), &l, want.calls...)
		if i == 0 {
			if q := d.Stats().Queued; q != 1 {
				t.Errorf("after Tick #1: Stats().Queued = %d, want 1 (the follow-up)", q)
			}
		}
	}
}

func TestDrainFollowsCascades(t *testing.T) {
	all := []string{"a:1", "a:2", "b:3", "b:4", "c:5", "c:6"}
	tests := []struct {
		give      int // limit
		want      int
		wantQueue int
		calls     []string
	}{
		{give: 0, want: 6, calls: all},
		{give: -1, want: 6, calls: all},
		// a:1, a:2 and b:3 ran; b:4 and c:5 (emitted by b:3) wait.
		{give: 3, want: 3, wantQueue: 2, calls: all[:3]},
		{give: 6, want: 6, calls: all},
		{give: 100, want: 6, calls: all},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit=%d", tt.give), func(t *testing.T) {
			d := newDispatcher(t)
			var l callLog
			cascade(t, d, &l)
			emitTopics(t, d, "a", "a")
			n, err := d.Drain(context.Background(), tt.give)
			if n != tt.want || err != nil {
				t.Errorf("Drain(%d) = %d, %v, want %d, nil", tt.give, n, err, tt.want)
			}
			checkCalls(t, fmt.Sprintf("after Drain(%d)", tt.give), &l, tt.calls...)
			if q := d.Stats().Queued; q != tt.wantQueue {
				t.Errorf("after Drain(%d): Stats().Queued = %d, want %d", tt.give, q, tt.wantQueue)
			}
			if n := drain(t, d); n != 6-tt.want {
				t.Errorf("second Drain(0) = %d, want %d", n, 6-tt.want)
			}
			checkCalls(t, "after both drains", &l, all...)
		})
	}
}

func TestDrainLimit(t *testing.T) {
	tests := []struct {
		give      int // limit
		want      int
		wantQueue int
	}{
		{give: 1, want: 1, wantQueue: 4},
		{give: 2, want: 2, wantQueue: 3},
		{give: 5, want: 5, wantQueue: 0},
		{give: 7, want: 5, wantQueue: 0},
		{give: 0, want: 5, wantQueue: 0},
		{give: -1, want: 5, wantQueue: 0},
		{give: -100, want: 5, wantQueue: 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit=%d", tt.give), func(t *testing.T) {
			d := newDispatcher(t)
			var l callLog
			subscribe(t, d, "t", l.handler("h", nil))
			emitTopics(t, d, "t", "t", "t", "t", "t")
			n, err := d.Drain(context.Background(), tt.give)
			if n != tt.want || err != nil {
				t.Errorf("Drain(%d) = %d, %v, want %d, nil", tt.give, n, err, tt.want)
			}
			if q := d.Stats().Queued; q != tt.wantQueue {
				t.Errorf("after Drain(%d): Stats().Queued = %d, want %d", tt.give, q, tt.wantQueue)
			}
			// The rest is still there, in order.
			if n := drain(t, d); n != tt.wantQueue {
				t.Errorf("second Drain(0) = %d, want %d", n, tt.wantQueue)
			}
			checkCalls(t, "after both drains", &l, "h:1", "h:2", "h:3", "h:4", "h:5")
		})
	}
}

func TestTickAndDrainJoinHandlerFailures(t *testing.T) {
	errA := errors.New("a failed")
	errB := errors.New("b failed")
	errC := errors.New("c panicked")
	for _, name := range []string{"Tick", "Drain"} {
		t.Run(name, func(t *testing.T) {
			d := newDispatcher(t)
			var l callLog
			subscribe(t, d, "t", l.handler("a", errA), dispatcher.WithName("a"))
			subscribe(t, d, "t", l.handler("ok", nil), dispatcher.WithName("ok"))
			subscribe(t, d, "t", l.handler("b", errB), dispatcher.WithName("b"))
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { panic("boom") }, dispatcher.WithName("p"))
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { panic(errC) }, dispatcher.WithName("c"))
			emitTopics(t, d, "t", "t")

			var n int
			var err error
			if name == "Tick" {
				n, err = d.Tick(context.Background())
			} else {
				n, err = d.Drain(context.Background(), 0)
			}
			if n != 2 {
				t.Errorf("%s() = %d, want 2", name, n)
			}
			for _, want := range []error{errA, errB, errC} {
				if !errors.Is(err, want) {
					t.Errorf("%s() error = %v, want it to wrap %v", name, err, want)
				}
			}
			var pe *dispatcher.PanicError
			if !errors.As(err, &pe) {
				t.Fatalf("%s() error = %v, want a *PanicError in it", name, err)
			}
			if pe.Value != "boom" {
				t.Errorf("first *PanicError Value = %v, want %q", pe.Value, "boom")
			}
			var he *dispatcher.HandlerError
			if !errors.As(err, &he) {
				t.Fatalf("%s() error = %v, want a *HandlerError in it", name, err)
			}
			if he.Subscriber != "a" || he.EventID != 1 || he.Topic != "t" || he.Attempt != 1 || !errors.Is(he, errA) {
				t.Errorf("first *HandlerError = %+v, want subscriber a, event 1, topic t, attempt 1, wrapping errA", he)
			}
			var got []string
			for _, he := range handlerErrors(err) {
				got = append(got, fmt.Sprintf("%s:%d", he.Subscriber, he.EventID))
			}
			want := []string{"a:1", "b:1", "p:1", "c:1", "a:2", "b:2", "p:2", "c:2"}
			if !slices.Equal(got, want) {
				t.Errorf("%s() error's failures = %q, want %q", name, got, want)
			}
			checkCalls(t, "the good handler", &l, "a:1", "ok:1", "b:1", "a:2", "ok:2", "b:2")

			// The next call reports only its own failures.
			if n, err := d.Tick(context.Background()); n != 0 || err != nil {
				t.Errorf("Tick() on an empty queue = %d, %v, want 0, nil", n, err)
			}
		})
	}
}

func TestDrainErrorReachesEveryFailure(t *testing.T) {
	d := newDispatcher(t)
	subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		return fmt.Errorf("fail %d", e.ID)
	})
	for range 100 {
		emitTopics(t, d, "t")
	}
	n, err := d.Drain(context.Background(), 0)
	if n != 100 {
		t.Errorf("Drain(0) = %d, want 100", n)
	}
	if got := len(handlerErrors(err)); got != 100 {
		t.Errorf("Drain(0) error lists %d handler failures, want 100", got)
	}
	if err == nil || !strings.Contains(err.Error(), "fail 100") {
		t.Errorf("Drain(0) error does not reach the 100th failure")
	}
	if got := len(d.DeadLetters()); got != 100 {
		t.Errorf("len(DeadLetters()) = %d, want 100", got)
	}
}

func TestTickAndDrainWithCancelledContext(t *testing.T) {
	for _, name := range []string{"Tick", "Drain"} {
		t.Run(name, func(t *testing.T) {
			d := newDispatcher(t)
			var l callLog
			subscribe(t, d, "t", l.handler("h", nil))
			emitTopics(t, d, "t", "t", "t")

			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var n int
			var err error
			if name == "Tick" {
				n, err = d.Tick(ctx)
			} else {
				n, err = d.Drain(ctx, 0)
			}
			if n != 0 || !errors.Is(err, context.Canceled) {
				t.Errorf("%s(cancelled ctx) = %d, %v, want 0, context.Canceled", name, n, err)
			}
			checkCalls(t, "after the cancelled call", &l)
			if q := d.Stats().Queued; q != 3 {
				t.Errorf("after %s(cancelled ctx): Stats().Queued = %d, want 3", name, q)
			}
			if n := drain(t, d); n != 3 {
				t.Errorf("Drain(0) after the cancelled call = %d, want 3", n)
			}
			checkCalls(t, "after Drain", &l, "h:1", "h:2", "h:3")
		})
	}
}

func TestDrainCancelledByHandlerKeepsTheRestQueued(t *testing.T) {
	d := newDispatcher(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var l callLog
	subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		l.add("h:%d", e.ID)
		if e.ID == 2 {
			cancel()
		}
		return nil
	})
	emitTopics(t, d, "t", "t", "t", "t", "t")

	n, err := d.Drain(ctx, 0)
	if n != 2 || !errors.Is(err, context.Canceled) {
		t.Errorf("Drain(0) cancelled in a handler = %d, %v, want 2, context.Canceled", n, err)
	}
	if q := d.Stats().Queued; q != 3 {
		t.Errorf("Stats().Queued = %d, want 3", q)
	}
	if n := drain(t, d); n != 3 {
		t.Errorf("Drain(0) = %d, want 3", n)
	}
	checkCalls(t, "after both drains", &l, "h:1", "h:2", "h:3", "h:4", "h:5")
}

// TestNestedTickDrainAndRunReturnErrRunning: a handler called by Drain
// cannot start another Tick, Drain or Run: the queue is taken.
func TestNestedTickDrainAndRunReturnErrRunning(t *testing.T) {
	d := newDispatcher(t)
	var tickErr, drainErr, runErr error
	var tickN, drainN int
	subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		tickN, tickErr = d.Tick(ctx)
		drainN, drainErr = d.Drain(ctx, 0)
		runErr = d.Run(ctx)
		return nil
	})
	emitTopics(t, d, "t", "t")
	if n := drain(t, d); n != 2 {
		t.Errorf("Drain(0) = %d, want 2", n)
	}
	if tickN != 0 || !errors.Is(tickErr, dispatcher.ErrRunning) {
		t.Errorf("Tick() from a handler = %d, %v, want 0, ErrRunning", tickN, tickErr)
	}
	if drainN != 0 || !errors.Is(drainErr, dispatcher.ErrRunning) {
		t.Errorf("Drain(0) from a handler = %d, %v, want 0, ErrRunning", drainN, drainErr)
	}
	if !errors.Is(runErr, dispatcher.ErrRunning) {
		t.Errorf("Run() from a handler during Drain error = %v, want ErrRunning", runErr)
	}
}

func TestConcurrentDrainReturnsErrRunning(t *testing.T) {
	d := newDispatcher(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
		close(entered)
		<-release
		return nil
	})
	emitTopics(t, d, "t")
	type result struct {
		n   int
		err error
	}
	done := make(chan result)
	go func() {
		n, err := d.Drain(context.Background(), 0)
		done <- result{n, err}
	}()
	<-entered
	if n, err := d.Drain(context.Background(), 0); n != 0 || !errors.Is(err, dispatcher.ErrRunning) {
		t.Errorf("concurrent Drain(0) = %d, %v, want 0, ErrRunning", n, err)
	}
	if n, err := d.Tick(context.Background()); n != 0 || !errors.Is(err, dispatcher.ErrRunning) {
		t.Errorf("concurrent Tick() = %d, %v, want 0, ErrRunning", n, err)
	}
	close(release)
	if r := <-done; r.n != 1 || r.err != nil {
		t.Errorf("first Drain(0) = %d, %v, want 1, nil", r.n, r.err)
	}
	// Once the first returned, the queue is free again.
	emitTopics(t, d, "t2")
	if n, err := d.Tick(context.Background()); n != 1 || err != nil {
		t.Errorf("Tick() after the concurrent Drain = %d, %v, want 1, nil", n, err)
	}
}

// mapCtx is a ctx type that is not comparable.
type mapCtx struct {
	context.Context
	m map[string]int
}

// anyCtx is a comparable ctx type; comparing two of its values panics
// when both hold a map.
type anyCtx struct {
	context.Context
	v any
}

// TestDrainWithUncomparableContext: a ctx is an interface value, and
// comparing two of them panics when their dynamic type is comparable but a
// value inside is not. Two Drains with such ctxs must not panic.
func TestDrainWithUncomparableContext(t *testing.T) {
	tests := []struct {
		name string
		give func() context.Context
	}{
		{"map field", func() context.Context { return mapCtx{context.Background(), map[string]int{}} }},
		{"map in an interface field", func() context.Context { return anyCtx{context.Background(), map[string]int{}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDispatcher(t)
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
			for i := range 2 {
				emit(t, d, "t", nil)
				var (
					n   int
					err error
				)
				if p := panicValue(func() { n, err = d.Drain(tt.give(), 0) }); p != nil {
					t.Errorf("Drain #%d panicked: %v", i+1, p)
				} else if n != 1 || err != nil {
					t.Errorf("Drain #%d = %d, %v, want 1, nil", i+1, n, err)
				}
			}
			_ = d.Close()
		})
	}
}
