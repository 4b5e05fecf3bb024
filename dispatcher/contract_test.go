package dispatcher_test

// Contract tests for the deterministic mode (Tick and Drain, no Run): the
// options, On and Emit, and behaviour points 1 to 5 of the specification.
// They use only the exported API.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// mustNewDispatcher returns a dispatcher built with opts, closed at the end
// of the test.
func mustNewDispatcher(t *testing.T, opts ...dispatcher.Option) *dispatcher.Dispatcher {
	t.Helper()
	d, err := dispatcher.New(opts...)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// mustSubscribe subscribes h to pattern and fails the test on error.
func mustSubscribe(t *testing.T, d *dispatcher.Dispatcher, pattern string, h dispatcher.Handler, opts ...dispatcher.SubscribeOption) *dispatcher.Subscription {
	t.Helper()
	sub, err := d.On(pattern, h, opts...)
	if err != nil {
		t.Fatalf("On(%q) error = %v", pattern, err)
	}
	return sub
}

// mustEmit emits one event per topic, the payload being the topic's index.
func mustEmit(t *testing.T, d *dispatcher.Dispatcher, topics ...string) {
	t.Helper()
	for i, topic := range topics {
		if err := d.Emit(context.Background(), topic, i); err != nil {
			t.Fatalf("Emit(%q) error = %v", topic, err)
		}
	}
}

// mustDrain drains without limit and fails the test on any error.
func mustDrain(t *testing.T, d *dispatcher.Dispatcher) int {
	t.Helper()
	n, err := d.Drain(context.Background(), 0)
	if err != nil {
		t.Fatalf("Drain(0) error = %v", err)
	}
	return n
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

func checkCalls(t *testing.T, what string, l *callLog, want ...string) {
	t.Helper()
	if got := l.get(); !slices.Equal(got, want) {
		t.Errorf("%s: calls = %q, want %q", what, got, want)
	}
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

// ---------------------------------------------------------------------------
// New and its options.

func TestNewRejectsBadOptionValues(t *testing.T) {
	tests := []struct {
		name string
		give dispatcher.Option
	}{
		{"WithCapacity(0)", dispatcher.WithCapacity(0)},
		{"WithCapacity(-1)", dispatcher.WithCapacity(-1)},
		{"WithCapacity(1<<30+1)", dispatcher.WithCapacity(1<<30 + 1)},
		{"WithWorkers(0)", dispatcher.WithWorkers(0)},
		{"WithWorkers(-1)", dispatcher.WithWorkers(-1)},
		{"WithOverflow(9)", dispatcher.WithOverflow(dispatcher.OverflowPolicy(9))},
		{"WithOverflow(-1)", dispatcher.WithOverflow(dispatcher.OverflowPolicy(-1))},
		{"WithRetry(0,nil)", dispatcher.WithRetry(0, nil)},
		{"WithRetry(-1,nil)", dispatcher.WithRetry(-1, nil)},
		{"WithDeadLetterLimit(0)", dispatcher.WithDeadLetterLimit(0)},
		{"WithDeadLetterLimit(-1)", dispatcher.WithDeadLetterLimit(-1)},
		{"nil option", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := dispatcher.New(tt.give)
			if !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("New(%s) error = %v, want ErrInvalidOption", tt.name, err)
			}
			if d != nil {
				t.Errorf("New(%s) returned a dispatcher with its error", tt.name)
			}
			// A bad option among good ones is still refused.
			_, err = dispatcher.New(dispatcher.WithCapacity(8), tt.give, dispatcher.WithWorkers(1))
			if !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("New(good, %s, good) error = %v, want ErrInvalidOption", tt.name, err)
			}
		})
	}
}

func TestNewAcceptsGoodOptionValues(t *testing.T) {
	tests := []struct {
		name string
		give []dispatcher.Option
	}{
		{"no options", nil},
		{"WithCapacity(1)", []dispatcher.Option{dispatcher.WithCapacity(1)}},
		{"WithCapacity(1000)", []dispatcher.Option{dispatcher.WithCapacity(1000)}},
		{"WithWorkers(1)", []dispatcher.Option{dispatcher.WithWorkers(1)}},
		{"WithWorkers(64)", []dispatcher.Option{dispatcher.WithWorkers(64)}},
		{"Block", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.Block)}},
		{"Reject", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.Reject)}},
		{"DropNewest", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.DropNewest)}},
		{"DropOldest", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.DropOldest)}},
		{"WithRetry(1,nil)", []dispatcher.Option{dispatcher.WithRetry(1, nil)}},
		{"WithRetry(5,backoff)", []dispatcher.Option{dispatcher.WithRetry(5, func(int) time.Duration { return 0 })}},
		{"WithDeadLetterLimit(1)", []dispatcher.Option{dispatcher.WithDeadLetterLimit(1)}},
		{"all", []dispatcher.Option{
			dispatcher.WithCapacity(16), dispatcher.WithWorkers(2),
			dispatcher.WithOverflow(dispatcher.Reject), dispatcher.WithRetry(2, nil),
			dispatcher.WithDeadLetterLimit(4),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustNewDispatcher(t, tt.give...)
			var l callLog
			mustSubscribe(t, d, "a", l.handler("h", nil))
			mustEmit(t, d, "a")
			if n := mustDrain(t, d); n != 1 {
				t.Errorf("Drain(0) = %d, want 1", n)
			}
			checkCalls(t, "after Drain", &l, "h:1")
		})
	}
}

func TestWithCapacityRoundsUpToPowerOfTwo(t *testing.T) {
	tests := []struct {
		give int
		want int
	}{
		{give: 1, want: 1},
		{give: 2, want: 2},
		{give: 3, want: 4},
		{give: 4, want: 4},
		{give: 5, want: 8},
		{give: 100, want: 128},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.give), func(t *testing.T) {
			ctx := context.Background()
			// No Close in a cleanup and no Drain until the queue proved
			// to hold want events: a ring that overwrites an unconsumed
			// slot makes both spin forever, and this test must fail, not
			// hang the package.
			d, err := dispatcher.New(dispatcher.WithCapacity(tt.give), dispatcher.WithOverflow(dispatcher.Reject))
			if err != nil {
				t.Fatalf("New(WithCapacity(%d)) error = %v", tt.give, err)
			}
			var l callLog
			mustSubscribe(t, d, "a", l.handler("h", nil))
			for i := range tt.want {
				if err := d.Emit(ctx, "a", i); err != nil {
					t.Fatalf("WithCapacity(%d): Emit #%d error = %v, want nil", tt.give, i+1, err)
				}
			}
			if err := d.Emit(ctx, "a", tt.want); !errors.Is(err, dispatcher.ErrFull) {
				t.Fatalf("WithCapacity(%d): Emit #%d error = %v, want ErrFull (the queue holds %d)", tt.give, tt.want+1, err, tt.want)
			}
			if got := d.Stats().Queued; got != tt.want {
				t.Errorf("WithCapacity(%d): Stats().Queued = %d, want %d", tt.give, got, tt.want)
			}
			if n := mustDrain(t, d); n != tt.want {
				t.Errorf("WithCapacity(%d): Drain(0) = %d, want %d", tt.give, n, tt.want)
			}
			if got := len(l.get()); got != tt.want {
				t.Errorf("WithCapacity(%d): %d handler calls, want %d", tt.give, got, tt.want)
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close() error = %v", err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// On, subscriptions and Emit's argument checks.

func TestOnRejectsBadPatterns(t *testing.T) {
	for _, give := range []string{
		"", ".", "..", "a.", ".a", "a..b", "a*b", "*a", "a*", "a>", ">a", "a.b>",
		">.a", "a.>.b", ">.>", "**", ">>", "a.**", "run.*x",
	} {
		t.Run(give, func(t *testing.T) {
			d := mustNewDispatcher(t)
			sub, err := d.On(give, func(context.Context, dispatcher.Event) error { return nil })
			if !errors.Is(err, dispatcher.ErrBadTopic) {
				t.Errorf("On(%q) error = %v, want ErrBadTopic", give, err)
			}
			if sub != nil {
				t.Errorf("On(%q) returned a subscription with its error", give)
			}
		})
	}
}

func TestOnAcceptsGoodPatterns(t *testing.T) {
	for _, give := range []string{
		"a", "run.finished", "*", ">", "run.*", "*.finished", "run.>", "*.*.>", "a.*.c", "a-b_c.D9",
	} {
		t.Run(give, func(t *testing.T) {
			d := mustNewDispatcher(t)
			if _, err := d.On(give, func(context.Context, dispatcher.Event) error { return nil }); err != nil {
				t.Errorf("On(%q) error = %v, want nil", give, err)
			}
		})
	}
}

func TestOnRejectsNilHandlerAndBadSubscribeOptions(t *testing.T) {
	ok := func(context.Context, dispatcher.Event) error { return nil }
	tests := []struct {
		name string
		h    dispatcher.Handler
		opts []dispatcher.SubscribeOption
	}{
		{"nil handler", nil, nil},
		{"WithName(\"\")", ok, []dispatcher.SubscribeOption{dispatcher.WithName("")}},
		{"nil SubscribeOption", ok, []dispatcher.SubscribeOption{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			sub, err := d.On("a", tt.h, tt.opts...)
			if !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("On(%q, %s) error = %v, want ErrInvalidOption", "a", tt.name, err)
			}
			if sub != nil {
				t.Errorf("On(%q, %s) returned a subscription with its error", "a", tt.name)
			}
			// Nothing was subscribed: an event on "a" reaches no handler.
			mustEmit(t, d, "a")
			mustDrain(t, d)
			if st := d.Stats(); st.Delivered+st.Failed != 0 {
				t.Errorf("handler calls after a refused On = %d, want 0", st.Delivered+st.Failed)
			}
		})
	}
}

func TestSubscriptionNames(t *testing.T) {
	d := mustNewDispatcher(t)
	fail := errors.New("fail")
	var l callLog
	named := mustSubscribe(t, d, "run.finished", l.handler("named", fail), dispatcher.WithName("audit"))
	gen1 := mustSubscribe(t, d, "run.finished", l.handler("gen1", fail))
	gen2 := mustSubscribe(t, d, "run.finished", l.handler("gen2", fail))

	if got := named.Name(); got != "audit" {
		t.Errorf("Name() = %q, want %q", got, "audit")
	}
	for _, s := range []*dispatcher.Subscription{gen1, gen2} {
		if got := s.Name(); got == "" || !strings.Contains(got, "run.finished") {
			t.Errorf("generated Name() = %q, want a non-empty name that contains the pattern", got)
		}
	}
	if gen1.Name() == gen2.Name() {
		t.Errorf("two subscriptions to one pattern got the same generated name %q", gen1.Name())
	}

	mustEmit(t, d, "run.finished")
	_, err := d.Drain(context.Background(), 0)
	dls := d.DeadLetters()
	var gotNames []string
	for _, dl := range dls {
		gotNames = append(gotNames, dl.Subscriber)
	}
	wantNames := []string{"audit", gen1.Name(), gen2.Name()}
	if !slices.Equal(gotNames, wantNames) {
		t.Errorf("DeadLetters() subscribers = %q, want %q", gotNames, wantNames)
	}
	var errNames []string
	for _, he := range handlerErrors(err) {
		errNames = append(errNames, he.Subscriber)
	}
	if !slices.Equal(errNames, wantNames) {
		t.Errorf("Drain error's HandlerError subscribers = %q, want %q", errNames, wantNames)
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	a := mustSubscribe(t, d, "t", l.handler("a", nil))
	mustSubscribe(t, d, "t", l.handler("b", nil))

	mustEmit(t, d, "t")
	mustDrain(t, d)
	a.Unsubscribe()
	mustEmit(t, d, "t")
	mustDrain(t, d)
	checkCalls(t, "after Unsubscribe", &l, "a:1", "b:1", "b:2")
}

func TestUnsubscribeAppliesToEventsAlreadyQueued(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	a := mustSubscribe(t, d, "t", l.handler("a", nil))
	mustEmit(t, d, "t", "t")
	a.Unsubscribe()
	mustDrain(t, d)
	checkCalls(t, "queued before Unsubscribe, drained after", &l)
}

func TestUnsubscribeIsIdempotent(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	a := mustSubscribe(t, d, "t", l.handler("a", nil))
	b := mustSubscribe(t, d, "t", l.handler("b", nil))
	a.Unsubscribe()
	a.Unsubscribe()
	a.Unsubscribe()
	mustEmit(t, d, "t")
	mustDrain(t, d)
	// The repeated Unsubscribe must not remove another subscription.
	checkCalls(t, "after three Unsubscribe calls", &l, "b:1")
	b.Unsubscribe()
	mustEmit(t, d, "t")
	mustDrain(t, d)
	checkCalls(t, "after every Unsubscribe", &l, "b:1")
}

func TestUnsubscribeFromInsideHandler(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	var self *dispatcher.Subscription
	self = mustSubscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		l.add("once:%d", e.ID)
		self.Unsubscribe()
		self.Unsubscribe() // still idempotent from a handler
		return nil
	})
	mustSubscribe(t, d, "t", l.handler("other", nil))
	mustEmit(t, d, "t", "t", "t")
	if n := mustDrain(t, d); n != 3 {
		t.Errorf("Drain(0) = %d, want 3", n)
	}
	checkCalls(t, "handler that unsubscribes itself", &l, "once:1", "other:1", "other:2", "other:3")
}

func TestEmitRejectsBadTopics(t *testing.T) {
	for _, give := range []string{"", "a..b", "run.*", "run.>", "a*b", "*", ">", ".a", "a.", "a>b"} {
		t.Run(give, func(t *testing.T) {
			d := mustNewDispatcher(t)
			if err := d.Emit(context.Background(), give, nil); !errors.Is(err, dispatcher.ErrBadTopic) {
				t.Errorf("Emit(%q) error = %v, want ErrBadTopic", give, err)
			}
			if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: give}); !errors.Is(err, dispatcher.ErrBadTopic) {
				t.Errorf("EmitEvent(Topic: %q) error = %v, want ErrBadTopic", give, err)
			}
			if st := d.Stats(); st.Emitted != 0 || st.Queued != 0 {
				t.Errorf("after a bad Emit: Stats() Emitted = %d, Queued = %d, want 0, 0", st.Emitted, st.Queued)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Behaviour 1: Emit never runs a handler.

func TestEmitNeverRunsHandlers(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	mustSubscribe(t, d, "t", l.handler("exact", nil))
	mustSubscribe(t, d, ">", l.handler("all", nil))
	mustEmit(t, d, "t", "t", "t")
	if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "t", Key: "k"}); err != nil {
		t.Fatalf("EmitEvent() error = %v", err)
	}
	checkCalls(t, "after Emit, before Tick", &l)
	st := d.Stats()
	if st.Emitted != 4 || st.Queued != 4 || st.Delivered != 0 {
		t.Errorf("Stats() = %+v, want Emitted 4, Queued 4, Delivered 0", st)
	}
	if n, err := d.Tick(context.Background()); n != 4 || err != nil {
		t.Errorf("Tick() = %d, %v, want 4, nil", n, err)
	}
	checkCalls(t, "after Tick", &l,
		"exact:1", "all:1", "exact:2", "all:2", "exact:3", "all:3", "exact:4", "all:4")
	if st := d.Stats(); st.Queued != 0 || st.Delivered != 8 {
		t.Errorf("Stats() after Tick: Queued = %d, Delivered = %d, want 0, 8", st.Queued, st.Delivered)
	}
}

// ---------------------------------------------------------------------------
// Behaviour 2: Tick and Drain.

// cascade subscribes handlers that re-emit: "a" emits "b", "b" emits "c".
func cascade(t *testing.T, d *dispatcher.Dispatcher, l *callLog) {
	t.Helper()
	next := map[string]string{"a": "b", "b": "c"}
	mustSubscribe(t, d, "*", func(ctx context.Context, e dispatcher.Event) error {
		l.add("%s:%d", e.Topic, e.ID)
		if to, ok := next[e.Topic]; ok {
			if err := d.Emit(ctx, to, nil); err != nil {
				t.Errorf("Emit(%q) from a handler error = %v", to, err)
			}
		}
		return nil
	})
}

func TestTickProcessesOnlyEventsQueuedWhenItBegan(t *testing.T) {
	ctx := context.Background()
	d := mustNewDispatcher(t)
	var l callLog
	cascade(t, d, &l)
	mustEmit(t, d, "a")

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
			d := mustNewDispatcher(t)
			var l callLog
			cascade(t, d, &l)
			mustEmit(t, d, "a", "a")
			n, err := d.Drain(context.Background(), tt.give)
			if n != tt.want || err != nil {
				t.Errorf("Drain(%d) = %d, %v, want %d, nil", tt.give, n, err, tt.want)
			}
			checkCalls(t, fmt.Sprintf("after Drain(%d)", tt.give), &l, tt.calls...)
			if q := d.Stats().Queued; q != tt.wantQueue {
				t.Errorf("after Drain(%d): Stats().Queued = %d, want %d", tt.give, q, tt.wantQueue)
			}
			if n := mustDrain(t, d); n != 6-tt.want {
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
			d := mustNewDispatcher(t)
			var l callLog
			mustSubscribe(t, d, "t", l.handler("h", nil))
			mustEmit(t, d, "t", "t", "t", "t", "t")
			n, err := d.Drain(context.Background(), tt.give)
			if n != tt.want || err != nil {
				t.Errorf("Drain(%d) = %d, %v, want %d, nil", tt.give, n, err, tt.want)
			}
			if q := d.Stats().Queued; q != tt.wantQueue {
				t.Errorf("after Drain(%d): Stats().Queued = %d, want %d", tt.give, q, tt.wantQueue)
			}
			// The rest is still there, in order.
			if n := mustDrain(t, d); n != tt.wantQueue {
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
			d := mustNewDispatcher(t)
			var l callLog
			mustSubscribe(t, d, "t", l.handler("a", errA), dispatcher.WithName("a"))
			mustSubscribe(t, d, "t", l.handler("ok", nil), dispatcher.WithName("ok"))
			mustSubscribe(t, d, "t", l.handler("b", errB), dispatcher.WithName("b"))
			mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { panic("boom") }, dispatcher.WithName("p"))
			mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { panic(errC) }, dispatcher.WithName("c"))
			mustEmit(t, d, "t", "t")

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
	d := mustNewDispatcher(t)
	mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		return fmt.Errorf("fail %d", e.ID)
	})
	for range 100 {
		mustEmit(t, d, "t")
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

// TestStatsQueuedSeenFromAHandler: while a Tick processes the first of
// three events, the other two still wait to be processed.
func TestStatsQueuedSeenFromAHandler(t *testing.T) {
	d := mustNewDispatcher(t)
	var seen []int
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
		seen = append(seen, d.Stats().Queued)
		return nil
	})
	mustEmit(t, d, "t", "t", "t")
	mustDrain(t, d)
	if want := []int{2, 1, 0}; !slices.Equal(seen, want) {
		t.Errorf("Stats().Queued seen by the handler for events 1, 2, 3 = %v, want %v", seen, want)
	}
}

func TestTickAndDrainWithCancelledContext(t *testing.T) {
	for _, name := range []string{"Tick", "Drain"} {
		t.Run(name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			var l callLog
			mustSubscribe(t, d, "t", l.handler("h", nil))
			mustEmit(t, d, "t", "t", "t")

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
			if n := mustDrain(t, d); n != 3 {
				t.Errorf("Drain(0) after the cancelled call = %d, want 3", n)
			}
			checkCalls(t, "after Drain", &l, "h:1", "h:2", "h:3")
		})
	}
}

func TestDrainCancelledByHandlerKeepsTheRestQueued(t *testing.T) {
	d := mustNewDispatcher(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var l callLog
	mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		l.add("h:%d", e.ID)
		if e.ID == 2 {
			cancel()
		}
		return nil
	})
	mustEmit(t, d, "t", "t", "t", "t", "t")

	n, err := d.Drain(ctx, 0)
	if n != 2 || !errors.Is(err, context.Canceled) {
		t.Errorf("Drain(0) cancelled in a handler = %d, %v, want 2, context.Canceled", n, err)
	}
	if q := d.Stats().Queued; q != 3 {
		t.Errorf("Stats().Queued = %d, want 3", q)
	}
	if n := mustDrain(t, d); n != 3 {
		t.Errorf("Drain(0) = %d, want 3", n)
	}
	checkCalls(t, "after both drains", &l, "h:1", "h:2", "h:3", "h:4", "h:5")
}

func TestNestedTickAndDrainReturnErrRunning(t *testing.T) {
	d := mustNewDispatcher(t)
	var tickErr, drainErr error
	var tickN, drainN int
	mustSubscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		tickN, tickErr = d.Tick(ctx)
		drainN, drainErr = d.Drain(ctx, 0)
		return nil
	})
	mustEmit(t, d, "t", "t")
	if n := mustDrain(t, d); n != 2 {
		t.Errorf("Drain(0) = %d, want 2", n)
	}
	if tickN != 0 || !errors.Is(tickErr, dispatcher.ErrRunning) {
		t.Errorf("Tick() from a handler = %d, %v, want 0, ErrRunning", tickN, tickErr)
	}
	if drainN != 0 || !errors.Is(drainErr, dispatcher.ErrRunning) {
		t.Errorf("Drain(0) from a handler = %d, %v, want 0, ErrRunning", drainN, drainErr)
	}
}

func TestConcurrentDrainReturnsErrRunning(t *testing.T) {
	d := mustNewDispatcher(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
		close(entered)
		<-release
		return nil
	})
	mustEmit(t, d, "t")
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
	mustEmit(t, d, "t2")
	if n, err := d.Tick(context.Background()); n != 1 || err != nil {
		t.Errorf("Tick() after the concurrent Drain = %d, %v, want 1, nil", n, err)
	}
}

func TestTickAndDrainAfterStopReturnErrClosed(t *testing.T) {
	stops := map[string]func(*dispatcher.Dispatcher) error{
		"Close":    func(d *dispatcher.Dispatcher) error { return d.Close() },
		"Shutdown": func(d *dispatcher.Dispatcher) error { return d.Shutdown(context.Background()) },
	}
	for name, stop := range stops {
		t.Run(name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			if err := stop(d); err != nil {
				t.Fatalf("%s() error = %v", name, err)
			}
			if n, err := d.Tick(context.Background()); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
				t.Errorf("Tick() after %s = %d, %v, want 0, ErrClosed", name, n, err)
			}
			if n, err := d.Drain(context.Background(), 0); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
				t.Errorf("Drain(0) after %s = %d, %v, want 0, ErrClosed", name, n, err)
			}
		})
	}
}

func TestEventIDsFollowEmitOrder(t *testing.T) {
	d := mustNewDispatcher(t)
	var got []dispatcher.Event
	mustSubscribe(t, d, ">", func(_ context.Context, e dispatcher.Event) error {
		got = append(got, e)
		return nil
	})
	ctx := context.Background()
	mustEmit(t, d, "a", "b.c", "a")
	if err := d.EmitEvent(ctx, dispatcher.Event{ID: 99, Topic: "k", Key: "key", Payload: "p", Attempt: 7}); err != nil {
		t.Fatalf("EmitEvent() error = %v", err)
	}
	mustEmit(t, d, "z")
	mustDrain(t, d)

	want := []dispatcher.Event{
		{ID: 1, Topic: "a", Payload: 0, Attempt: 1},
		{ID: 2, Topic: "b.c", Payload: 1, Attempt: 1},
		{ID: 3, Topic: "a", Payload: 2, Attempt: 1},
		{ID: 4, Topic: "k", Key: "key", Payload: "p", Attempt: 1},
		{ID: 5, Topic: "z", Payload: 0, Attempt: 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("delivered events =\n%+v\nwant\n%+v", got, want)
	}
}

// ---------------------------------------------------------------------------
// Behaviour 3: handler isolation, retries, dead letters, Redeliver.

func TestFailingHandlerDoesNotStopOthers(t *testing.T) {
	sentinel := errors.New("sentinel")
	tests := []struct {
		name    string
		h       dispatcher.Handler
		wantIs  error // errors.Is(dl.Err, wantIs), if set
		wantPan any   // the *PanicError's Value, if a panic
	}{
		{
			name:   "error",
			h:      func(context.Context, dispatcher.Event) error { return sentinel },
			wantIs: sentinel,
		},
		{
			name:    "panic string",
			h:       func(context.Context, dispatcher.Event) error { panic("boom") },
			wantPan: "boom",
		},
		{
			name:    "panic error",
			h:       func(context.Context, dispatcher.Event) error { panic(sentinel) },
			wantIs:  sentinel,
			wantPan: sentinel,
		},
		{
			name:   "panic wrapped error",
			h:      func(context.Context, dispatcher.Event) error { panic(fmt.Errorf("ctx: %w", sentinel)) },
			wantIs: sentinel,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			var l callLog
			mustSubscribe(t, d, "t", l.handler("before", nil))
			mustSubscribe(t, d, "t", tt.h, dispatcher.WithName("bad"))
			mustSubscribe(t, d, "t", l.handler("after", nil))
			mustEmit(t, d, "t", "t")

			n, err := d.Drain(context.Background(), 0)
			if n != 2 {
				t.Errorf("Drain(0) = %d, want 2", n)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Drain(0) error = %v, want it to wrap %v", err, tt.wantIs)
			}
			checkCalls(t, "good handlers", &l, "before:1", "after:1", "before:2", "after:2")

			dls := d.DeadLetters()
			if len(dls) != 2 {
				t.Fatalf("len(DeadLetters()) = %d, want 2", len(dls))
			}
			for i, dl := range dls {
				wantID := uint64(i + 1)
				if dl.Subscriber != "bad" || dl.Attempts != 1 || dl.Event.ID != wantID ||
					dl.Event.Topic != "t" || dl.Event.Payload != i || dl.Event.Attempt != 1 {
					t.Errorf("DeadLetters()[%d] = %+v, want subscriber bad, 1 attempt, event %d on t", i, dl, wantID)
				}
				if dl.Err == nil {
					t.Errorf("DeadLetters()[%d].Err = nil", i)
				}
				if tt.wantIs != nil && !errors.Is(dl.Err, tt.wantIs) {
					t.Errorf("DeadLetters()[%d].Err = %v, want it to wrap %v", i, dl.Err, tt.wantIs)
				}
				var pe *dispatcher.PanicError
				isPanic := errors.As(dl.Err, &pe)
				if isPanic != strings.HasPrefix(tt.name, "panic") {
					t.Errorf("DeadLetters()[%d].Err = %v: *PanicError %v, want %v", i, dl.Err, isPanic, !isPanic)
				}
				if isPanic {
					if tt.wantPan != nil && pe.Value != tt.wantPan {
						t.Errorf("PanicError.Value = %v, want %v", pe.Value, tt.wantPan)
					}
					if !strings.Contains(string(pe.Stack), "contract_test.go") {
						t.Errorf("PanicError.Stack does not show the panicking handler:\n%s", pe.Stack)
					}
					if !strings.Contains(pe.Error(), fmt.Sprint(pe.Value)) {
						t.Errorf("PanicError.Error() = %q, want it to show the value %v", pe.Error(), pe.Value)
					}
				}
			}
			st := d.Stats()
			if st.Delivered != 4 || st.Failed != 2 || st.DeadLettered != 2 || st.DeadLetters != 2 {
				t.Errorf("Stats() = %+v, want Delivered 4, Failed 2, DeadLettered 2, DeadLetters 2", st)
			}
		})
	}
}

func TestPanicNilBecomesPanicError(t *testing.T) {
	d := mustNewDispatcher(t)
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { panic(nil) }) //nolint:govet // on purpose
	mustEmit(t, d, "t")
	_, err := d.Drain(context.Background(), 0)
	var pe *dispatcher.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Drain(0) error = %v, want a *PanicError", err)
	}
	var pn *runtime.PanicNilError
	if !errors.As(err, &pn) {
		t.Errorf("Drain(0) error = %v, want a *runtime.PanicNilError through PanicError.Unwrap", err)
	}
}

func TestRetryOnlyTheFailedSubscriber(t *testing.T) {
	d := mustNewDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	fail := errors.New("fail")
	mustSubscribe(t, d, "t", l.handler("good", nil))
	bad := mustSubscribe(t, d, "t", l.handler("bad", fail))
	mustEmit(t, d, "t")

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
	d := mustNewDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	mustSubscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		l.add("flaky:%d#%d", e.ID, e.Attempt)
		if e.Attempt < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	mustEmit(t, d, "t")
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
	d := mustNewDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	fail := errors.New("fail")
	mustSubscribe(t, d, "t", l.handler("good", nil))
	mustSubscribe(t, d, "t", l.handler("bad", fail))
	mustEmit(t, d, "t")

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
	d := mustNewDispatcher(t, dispatcher.WithCapacity(1), dispatcher.WithRetry(2, nil))
	var l callLog
	fail := errors.New("fail")
	mustSubscribe(t, d, "t", l.handler("a", fail), dispatcher.WithName("a"))
	mustSubscribe(t, d, "t", l.handler("b", fail), dispatcher.WithName("b"))
	mustEmit(t, d, "t")
	mustDrainIgnoringFailures(t, d)

	checkCalls(t, "calls", &l, "a:1", "b:1", "a:1#2")
	var got []string
	for _, dl := range d.DeadLetters() {
		got = append(got, fmt.Sprintf("%s after %d", dl.Subscriber, dl.Attempts))
	}
	if want := []string{"b after 1", "a after 2"}; !slices.Equal(got, want) {
		t.Errorf("DeadLetters() = %q, want %q", got, want)
	}
}

// mustDrainIgnoringFailures drains and fails the test only on errors that
// are not handler failures.
func mustDrainIgnoringFailures(t *testing.T, d *dispatcher.Dispatcher) int {
	t.Helper()
	n, err := d.Drain(context.Background(), 0)
	for _, e := range []error{dispatcher.ErrClosed, dispatcher.ErrRunning, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			t.Fatalf("Drain(0) error = %v", err)
		}
	}
	return n
}

func TestDeadLetterLimitKeepsTheNewest(t *testing.T) {
	d := mustNewDispatcher(t, dispatcher.WithDeadLetterLimit(2))
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	mustEmit(t, d, "t", "t", "t")
	mustDrainIgnoringFailures(t, d)

	var ids []uint64
	for _, dl := range d.DeadLetters() {
		ids = append(ids, dl.Event.ID)
	}
	if want := []uint64{2, 3}; !slices.Equal(ids, want) {
		t.Errorf("DeadLetters() event IDs = %v, want %v", ids, want)
	}
	st := d.Stats()
	if st.Dropped != 1 || st.DeadLettered != 3 || st.DeadLetters != 2 {
		t.Errorf("Stats() = %+v, want Dropped 1, DeadLettered 3, DeadLetters 2", st)
	}
}

func TestDeadLettersIsACopy(t *testing.T) {
	d := mustNewDispatcher(t)
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	mustEmit(t, d, "t")
	mustDrainIgnoringFailures(t, d)
	dls := d.DeadLetters()
	dls[0].Subscriber = "changed"
	if got := d.DeadLetters()[0].Subscriber; got == "changed" {
		t.Errorf("changing DeadLetters()'s result changed the dispatcher's dead letters")
	}
}

func TestRedeliverQueuesForTheFailedSubscriberOnly(t *testing.T) {
	ctx := context.Background()
	d := mustNewDispatcher(t)
	var l callLog
	healed := false
	mustSubscribe(t, d, "t", l.handler("good", nil))
	mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		l.add("bad:%d#%d", e.ID, e.Attempt)
		if !healed {
			return errors.New("down")
		}
		return nil
	})
	mustEmit(t, d, "t", "t")
	mustDrainIgnoringFailures(t, d)
	if got := len(d.DeadLetters()); got != 2 {
		t.Fatalf("len(DeadLetters()) = %d, want 2", got)
	}

	healed = true
	n, err := d.Redeliver(ctx)
	if n != 2 || err != nil {
		t.Errorf("Redeliver() = %d, %v, want 2, nil", n, err)
	}
	if dls := d.DeadLetters(); len(dls) != 0 {
		t.Errorf("DeadLetters() after Redeliver = %+v, want none", dls)
	}
	checkCalls(t, "Redeliver itself runs nothing", &l, "good:1", "bad:1#1", "good:2", "bad:2#1")
	if q := d.Stats().Queued; q != 2 {
		t.Errorf("Stats().Queued after Redeliver = %d, want 2", q)
	}

	if n, err := d.Tick(ctx); n != 2 || err != nil {
		t.Errorf("Tick() after Redeliver = %d, %v, want 2, nil", n, err)
	}
	checkCalls(t, "after the redelivery", &l,
		"good:1", "bad:1#1", "good:2", "bad:2#1", "bad:1#1", "bad:2#1")
	st := d.Stats()
	if st.Delivered != 4 || st.Failed != 2 || st.Retried != 0 || st.DeadLettered != 2 || st.DeadLetters != 0 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Delivered 4, Failed 2, Retried 0, DeadLettered 2, no dead letter, nothing queued", st)
	}
}

func TestRedeliverGivesAFreshRetryBudget(t *testing.T) {
	ctx := context.Background()
	d := mustNewDispatcher(t, dispatcher.WithRetry(2, nil))
	var l callLog
	mustSubscribe(t, d, "t", l.handler("bad", errors.New("fail")))
	mustEmit(t, d, "t")
	mustDrainIgnoringFailures(t, d)
	if n, err := d.Redeliver(ctx); n != 1 || err != nil {
		t.Fatalf("Redeliver() = %d, %v, want 1, nil", n, err)
	}
	mustDrainIgnoringFailures(t, d)
	checkCalls(t, "two budgets", &l, "bad:1", "bad:1#2", "bad:1", "bad:1#2")
	dls := d.DeadLetters()
	if len(dls) != 1 || dls[0].Attempts != 2 {
		t.Errorf("DeadLetters() = %+v, want one after 2 attempts", dls)
	}
	if st := d.Stats(); st.Retried != 2 || st.Failed != 4 || st.DeadLettered != 2 {
		t.Errorf("Stats() = %+v, want Retried 2, Failed 4, DeadLettered 2", st)
	}
}

func TestRedeliverKeepsDeadLettersOfUnsubscribedSubscribers(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	fail := errors.New("fail")
	a := mustSubscribe(t, d, "t", l.handler("a", fail), dispatcher.WithName("a"))
	mustSubscribe(t, d, "t", l.handler("b", fail), dispatcher.WithName("b"))
	mustEmit(t, d, "t")
	mustDrainIgnoringFailures(t, d)
	a.Unsubscribe()

	if n, err := d.Redeliver(context.Background()); n != 1 || err != nil {
		t.Errorf("Redeliver() = %d, %v, want 1, nil", n, err)
	}
	dls := d.DeadLetters()
	if len(dls) != 1 || dls[0].Subscriber != "a" {
		t.Errorf("DeadLetters() = %+v, want a's only", dls)
	}
	mustDrainIgnoringFailures(t, d)
	checkCalls(t, "after Redeliver", &l, "a:1", "b:1", "b:1")
}

func TestRedeliverIsBoundedByCapacity(t *testing.T) {
	d := mustNewDispatcher(t, dispatcher.WithCapacity(2))
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	for range 3 {
		mustEmit(t, d, "t")
		mustDrainIgnoringFailures(t, d)
	}
	if n, err := d.Redeliver(context.Background()); n != 2 || err != nil {
		t.Errorf("Redeliver() with 3 dead letters and capacity 2 = %d, %v, want 2, nil", n, err)
	}
	dls := d.DeadLetters()
	if len(dls) != 1 || dls[0].Event.ID != 3 {
		t.Errorf("DeadLetters() = %+v, want the newest (event 3) left", dls)
	}
	if n := mustDrainIgnoringFailures(t, d); n != 2 {
		t.Errorf("Drain(0) = %d, want 2", n)
	}
}

func TestRedeliverErrors(t *testing.T) {
	t.Run("cancelled ctx", func(t *testing.T) {
		d := mustNewDispatcher(t)
		mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		mustEmit(t, d, "t")
		mustDrainIgnoringFailures(t, d)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if n, err := d.Redeliver(ctx); n != 0 || !errors.Is(err, context.Canceled) {
			t.Errorf("Redeliver(cancelled) = %d, %v, want 0, context.Canceled", n, err)
		}
		if got := len(d.DeadLetters()); got != 1 {
			t.Errorf("len(DeadLetters()) = %d, want 1", got)
		}
	})
	for _, name := range []string{"Close", "Shutdown"} {
		t.Run("after "+name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
			mustEmit(t, d, "t")
			mustDrainIgnoringFailures(t, d)
			if name == "Close" {
				_ = d.Close()
			} else {
				_ = d.Shutdown(context.Background())
			}
			if n, err := d.Redeliver(context.Background()); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
				t.Errorf("Redeliver() after %s = %d, %v, want 0, ErrClosed", name, n, err)
			}
			if got := len(d.DeadLetters()); got != 1 {
				t.Errorf("len(DeadLetters()) after %s = %d, want 1 (still readable)", name, got)
			}
		})
	}
}

func TestUnsubscribeDiscardsPendingRetries(t *testing.T) {
	d := mustNewDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	sub := mustSubscribe(t, d, "t", l.handler("bad", errors.New("fail")))
	mustEmit(t, d, "t")
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatalf("Tick() error = %v", err)
	}
	sub.Unsubscribe()
	mustDrain(t, d)
	checkCalls(t, "after Unsubscribe", &l, "bad:1")
	st := d.Stats()
	if st.Dropped != 1 || st.Retried != 0 || st.DeadLettered != 0 || st.Retrying != 0 {
		t.Errorf("Stats() = %+v, want Dropped 1 (the discarded retry), Retried 0, DeadLettered 0, Retrying 0", st)
	}
}

// ---------------------------------------------------------------------------
// Behaviour 4: ordering without Run.

func TestGlobalFIFOAcrossTopics(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	for _, p := range []string{"a", "b", "c.d", "c.*"} {
		mustSubscribe(t, d, p, l.handler(p, nil))
	}
	ctx := context.Background()
	topics := []string{"b", "a", "c.d", "a", "b", "c.e", "c.d"}
	for i, topic := range topics {
		if i%2 == 0 {
			mustEmit(t, d, topic)
			continue
		}
		if err := d.EmitEvent(ctx, dispatcher.Event{Topic: topic, Key: "k"}); err != nil {
			t.Fatalf("EmitEvent(%q) error = %v", topic, err)
		}
	}
	if n := mustDrain(t, d); n != len(topics) {
		t.Errorf("Drain(0) = %d, want %d", n, len(topics))
	}
	checkCalls(t, "global FIFO", &l,
		"b:1", "a:2", "c.d:3", "c.*:3", "a:4", "b:5", "c.*:6", "c.d:7", "c.*:7")
}

func TestHandlersRunInSubscriptionOrder(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	// Exact and wildcard subscriptions, interleaved.
	for i, p := range []string{"run.finished", "run.*", ">", "run.finished", "run.>", "*.finished", "other", "*.*"} {
		name := fmt.Sprintf("%d(%s)", i+1, p)
		mustSubscribe(t, d, p, l.handler(name, nil))
	}
	tests := []struct {
		give string
		want []string
	}{
		{"run.finished", []string{"1(run.finished)", "2(run.*)", "3(>)", "4(run.finished)", "5(run.>)", "6(*.finished)", "8(*.*)"}},
		{"run.started", []string{"2(run.*)", "3(>)", "5(run.>)", "8(*.*)"}},
		{"run.a.b", []string{"3(>)", "5(run.>)"}},
		{"job.finished", []string{"3(>)", "6(*.finished)", "8(*.*)"}},
		{"other", []string{"3(>)", "7(other)"}},
		{"run", []string{"3(>)"}},
	}
	for i, tt := range tests {
		mustEmit(t, d, tt.give)
		mustDrain(t, d)
		var got []string
		suffix := fmt.Sprintf(":%d", i+1)
		for _, c := range l.get() {
			if s, ok := strings.CutSuffix(c, suffix); ok {
				got = append(got, s)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("handlers for %q = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestSubscriptionOrderAfterUnsubscribeAndResubscribe(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	a := mustSubscribe(t, d, "t", l.handler("a", nil))
	mustSubscribe(t, d, "*", l.handler("b", nil))
	a.Unsubscribe()
	mustSubscribe(t, d, "t", l.handler("a2", nil))
	mustSubscribe(t, d, ">", l.handler("c", nil))
	mustEmit(t, d, "t")
	mustDrain(t, d)
	checkCalls(t, "order", &l, "b:1", "a2:1", "c:1")
}

// ---------------------------------------------------------------------------
// Behaviour 5: topics through the dispatcher (the matcher has its own tests).

func TestTopicPatternsThroughTheDispatcher(t *testing.T) {
	tests := []struct {
		pattern string
		topic   string
		want    bool
	}{
		{"run.finished", "run.finished", true},
		{"run.finished", "run.finishedx", false},
		{"run.finished", "run", false},
		{"run.finished", "run.finished.x", false},
		{"run.*", "run.finished", true},
		{"run.*", "run", false},
		{"run.*", "run.a.b", false},
		{"run.*", "job.finished", false},
		{"*.finished", "run.finished", true},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.c", false},
		{"*", "run", true},
		{"*", "run.finished", false},
		{"run.>", "run.a", true},
		{"run.>", "run.a.b", true},
		{"run.>", "run", false},
		{"run.>", "runner.a", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"*.>", "a", false},
		{"*.>", "a.b", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.topic, func(t *testing.T) {
			d := mustNewDispatcher(t)
			var got []string
			mustSubscribe(t, d, tt.pattern, func(_ context.Context, e dispatcher.Event) error {
				got = append(got, e.Topic)
				return nil
			})
			mustEmit(t, d, tt.topic)
			mustDrain(t, d)
			if matched := len(got) == 1; matched != tt.want || len(got) > 1 {
				t.Errorf("On(%q) got %q for Emit(%q), want delivered: %v", tt.pattern, got, tt.topic, tt.want)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Handle[T].

type runFinished struct {
	Tenant string
	Rows   int
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

func TestHandleTypedPayloads(t *testing.T) {
	ctx := context.Background()

	t.Run("struct", func(t *testing.T) {
		d := mustNewDispatcher(t)
		var got []runFinished
		mustSubscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, r runFinished) error {
			got = append(got, r)
			return nil
		}))
		if err := d.Emit(ctx, "t", runFinished{"t1", 3}); err != nil {
			t.Fatal(err)
		}
		mustDrain(t, d)
		if want := []runFinished{{"t1", 3}}; !slices.Equal(got, want) {
			t.Errorf("Handle[runFinished] got %+v, want %+v", got, want)
		}
	})

	t.Run("pointer", func(t *testing.T) {
		d := mustNewDispatcher(t)
		var got *runFinished
		mustSubscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, r *runFinished) error {
			got = r
			r.Rows++ // the pointer is shared: the emitter sees it
			return nil
		}))
		p := &runFinished{"t1", 3}
		if err := d.Emit(ctx, "t", p); err != nil {
			t.Fatal(err)
		}
		mustDrain(t, d)
		if got != p || p.Rows != 4 {
			t.Errorf("Handle[*runFinished] got %p (Rows now %d), want %p (Rows 4)", got, p.Rows, p)
		}
	})

	t.Run("interface", func(t *testing.T) {
		d := mustNewDispatcher(t)
		var got []string
		mustSubscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, s fmt.Stringer) error {
			got = append(got, s.String())
			return nil
		}))
		if err := d.Emit(ctx, "t", stringer{"hello"}); err != nil {
			t.Fatal(err)
		}
		mustDrain(t, d)
		if want := []string{"hello"}; !slices.Equal(got, want) {
			t.Errorf("Handle[fmt.Stringer] got %q, want %q", got, want)
		}
	})
}

func TestHandleWrongPayloadType(t *testing.T) {
	tests := []struct {
		name    string
		h       dispatcher.Handler
		payload any
	}{
		{"struct want, int given", dispatcher.Handle(func(context.Context, runFinished) error { return nil }), 7},
		{"pointer want, struct given", dispatcher.Handle(func(context.Context, *runFinished) error { return nil }), runFinished{}},
		{"struct want, pointer given", dispatcher.Handle(func(context.Context, runFinished) error { return nil }), &runFinished{}},
		{"int want, int64 given", dispatcher.Handle(func(context.Context, int) error { return nil }), int64(7)},
		{"int want, nil given", dispatcher.Handle(func(context.Context, int) error { return nil }), nil},
		{"struct want, nil given", dispatcher.Handle(func(context.Context, runFinished) error { return nil }), nil},
		{"Stringer want, int given", dispatcher.Handle(func(context.Context, fmt.Stringer) error { return nil }), 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			var l callLog
			mustSubscribe(t, d, "t", tt.h, dispatcher.WithName("typed"))
			mustSubscribe(t, d, "t", l.handler("untyped", nil))
			if err := d.Emit(context.Background(), "t", tt.payload); err != nil {
				t.Fatal(err)
			}
			_, err := d.Drain(context.Background(), 0)
			if !errors.Is(err, dispatcher.ErrPayloadType) {
				t.Errorf("Drain(0) error = %v, want ErrPayloadType", err)
			}
			dls := d.DeadLetters()
			if len(dls) != 1 || dls[0].Subscriber != "typed" || !errors.Is(dls[0].Err, dispatcher.ErrPayloadType) {
				t.Errorf("DeadLetters() = %+v, want one of typed with ErrPayloadType", dls)
			}
			checkCalls(t, "the other handler still runs", &l, "untyped:1")
		})
	}
}

func TestHandleNilPayloadIsZeroValueForNilableTypes(t *testing.T) {
	tests := []struct {
		name string
		h    func(called *bool) dispatcher.Handler
	}{
		{"pointer", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p *runFinished) error { *c = p == nil; return nil })
		}},
		{"interface", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p fmt.Stringer) error { *c = p == nil; return nil })
		}},
		{"any", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p any) error { *c = p == nil; return nil })
		}},
		{"error", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p error) error { *c = p == nil; return nil })
		}},
		{"slice", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p []int) error { *c = p == nil; return nil })
		}},
		{"map", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p map[string]int) error { *c = p == nil; return nil })
		}},
		{"func", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p func()) error { *c = p == nil; return nil })
		}},
		{"chan", func(c *bool) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p chan int) error { *c = p == nil; return nil })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			var gotNil bool
			mustSubscribe(t, d, "t", tt.h(&gotNil))
			if err := d.Emit(context.Background(), "t", nil); err != nil {
				t.Fatal(err)
			}
			if n, err := d.Drain(context.Background(), 0); n != 1 || err != nil {
				t.Errorf("Drain(0) = %d, %v, want 1, nil", n, err)
			}
			if !gotNil {
				t.Errorf("Handle[%s] with a nil payload did not get the zero value", tt.name)
			}
		})
	}
}
