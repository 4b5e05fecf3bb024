package dispatcher_test

// Failing and panicking handlers, dead letters, and Redeliver, RedeliverIf
// and DiscardIf.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestFailingHandlerDoesNotStopOthers: a handler that fails or panics, typed
// (Handle) or not, fails only its own call: the handlers before and after it
// still run, and its (event, subscriber) pair becomes a dead letter.
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
		{
			name:   "error from Handle",
			h:      dispatcher.Handle(func(context.Context, int) error { return sentinel }),
			wantIs: sentinel,
		},
		{
			name:    "panic in Handle",
			h:       dispatcher.Handle(func(context.Context, int) error { panic(sentinel) }),
			wantIs:  sentinel,
			wantPan: sentinel,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDispatcher(t)
			var l callLog
			subscribe(t, d, "t", l.handler("before", nil))
			subscribe(t, d, "t", tt.h, dispatcher.WithName("bad"))
			subscribe(t, d, "t", l.handler("after", nil))
			emitTopics(t, d, "t", "t")

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
				if wantPanic := strings.HasPrefix(tt.name, "panic"); isPanic != wantPanic {
					t.Errorf("DeadLetters()[%d].Err = %v: *PanicError %v, want %v", i, dl.Err, isPanic, wantPanic)
				}
				if isPanic {
					if tt.wantPan != nil && pe.Value != tt.wantPan {
						t.Errorf("PanicError.Value = %v, want %v", pe.Value, tt.wantPan)
					}
					if !strings.Contains(string(pe.Stack), "deadletter_test.go") {
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
	d := newDispatcher(t)
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { panic(nil) }) //nolint:govet // on purpose
	emitTopics(t, d, "t")
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

func TestDeadLetterLimitKeepsTheNewest(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithDeadLetterLimit(2))
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	emitTopics(t, d, "t", "t", "t")
	drainIgnoringFailures(t, d)

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
	d := newDispatcher(t)
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	emitTopics(t, d, "t")
	drainIgnoringFailures(t, d)
	dls := d.DeadLetters()
	dls[0].Subscriber = "changed"
	if got := d.DeadLetters()[0].Subscriber; got == "changed" {
		t.Errorf("changing DeadLetters()'s result changed the dispatcher's dead letters")
	}
}

func TestRedeliverQueuesForTheFailedSubscriberOnly(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t)
	var l callLog
	healed := false
	subscribe(t, d, "t", l.handler("good", nil))
	subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		l.add("bad:%d#%d", e.ID, e.Attempt)
		if !healed {
			return errors.New("down")
		}
		return nil
	})
	emitTopics(t, d, "t", "t")
	drainIgnoringFailures(t, d)
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

// redeliverFuncs are the two ways to redeliver every dead letter.
var redeliverFuncs = []struct {
	name string
	run  func(ctx context.Context, d *dispatcher.Dispatcher) (int, error)
}{
	{"Redeliver", func(ctx context.Context, d *dispatcher.Dispatcher) (int, error) { return d.Redeliver(ctx) }},
	{"RedeliverIf", func(ctx context.Context, d *dispatcher.Dispatcher) (int, error) {
		return d.RedeliverIf(ctx, func(dispatcher.DeadLetter) bool { return true })
	}},
}

func TestRedeliverGivesAFreshRetryBudget(t *testing.T) {
	for _, rf := range redeliverFuncs {
		t.Run(rf.name, func(t *testing.T) {
			d := newDispatcher(t, dispatcher.WithRetry(2, nil))
			var l callLog
			subscribe(t, d, "t", l.handler("bad", errors.New("fail")))
			emitTopics(t, d, "t")
			drainIgnoringFailures(t, d)
			if n, err := rf.run(context.Background(), d); n != 1 || err != nil {
				t.Fatalf("%s() = %d, %v, want 1, nil", rf.name, n, err)
			}
			drainIgnoringFailures(t, d)
			checkCalls(t, "two budgets", &l, "bad:1", "bad:1#2", "bad:1", "bad:1#2")
			dls := d.DeadLetters()
			if len(dls) != 1 || dls[0].Attempts != 2 {
				t.Errorf("DeadLetters() = %+v, want one after 2 attempts", dls)
			}
			if st := d.Stats(); st.Retried != 2 || st.Failed != 4 || st.DeadLettered != 2 {
				t.Errorf("Stats() = %+v, want Retried 2, Failed 4, DeadLettered 2", st)
			}
		})
	}
}

var (
	errTransient = errors.New("transient")
	errInvalid   = errors.New("invalid")
)

// dlFixture is a dispatcher with six dead letters, oldest first a:1 b:1
// a:2 b:2 a:3 b:3 (subscriber:event ID): subscribers "a" and "b" on "t"
// failed events 1 to 3, with an error wrapping errTransient for events 1
// and 3 and errInvalid for event 2. Once healed, they succeed and log
// "subscriber:ID#attempt".
type dlFixture struct {
	d      *dispatcher.Dispatcher
	log    callLog
	healed atomic.Bool
}

// dlAll is what dlFixture's DeadLetters are at first, as dlPairs says.
var dlAll = []string{"a:1", "b:1", "a:2", "b:2", "a:3", "b:3"}

func newDLFixture(t *testing.T, opts ...dispatcher.Option) *dlFixture {
	t.Helper()
	f := &dlFixture{d: newDispatcher(t, opts...)}
	for _, name := range []string{"a", "b"} {
		subscribe(t, f.d, "t", f.handler(name), dispatcher.WithName(name))
	}
	emitTopics(t, f.d, "t", "t", "t")
	drainIgnoringFailures(t, f.d)
	if got := dlPairs(f.d); !slices.Equal(got, dlAll) {
		t.Fatalf("fixture: DeadLetters() = %q, want %q", got, dlAll)
	}
	return f
}

func (f *dlFixture) handler(name string) dispatcher.Handler {
	return func(_ context.Context, e dispatcher.Event) error {
		switch {
		case f.healed.Load():
			f.log.add("%s:%d#%d", name, e.ID, e.Attempt)
			return nil
		case e.ID%2 == 1:
			return fmt.Errorf("event %d: %w", e.ID, errTransient)
		default:
			return fmt.Errorf("event %d: %w", e.ID, errInvalid)
		}
	}
}

// dlPairs returns d's dead letters as "subscriber:eventID", oldest first.
func dlPairs(d *dispatcher.Dispatcher) []string {
	var out []string
	for _, dl := range d.DeadLetters() {
		out = append(out, fmt.Sprintf("%s:%d", dl.Subscriber, dl.Event.ID))
	}
	return out
}

// dlCalls returns the calls ("subscriber:ID#1") that redelivering pairs
// (as dlPairs says) makes.
func dlCalls(pairs []string) []string {
	out := make([]string, 0, len(pairs))
	for _, p := range pairs {
		out = append(out, p+"#1")
	}
	return out
}

// dlWithout returns all without the elements of drop, in order.
func dlWithout(all, drop []string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
}

// dlOp is RedeliverIf or DiscardIf, as one signature.
type dlOp struct {
	name       string
	run        func(ctx context.Context, d *dispatcher.Dispatcher, match func(dispatcher.DeadLetter) bool) (int, error)
	redelivers bool
}

var (
	redeliverIfOp = dlOp{"RedeliverIf", func(ctx context.Context, d *dispatcher.Dispatcher, match func(dispatcher.DeadLetter) bool) (int, error) {
		return d.RedeliverIf(ctx, match)
	}, true}
	discardIfOp = dlOp{"DiscardIf", func(_ context.Context, d *dispatcher.Dispatcher, match func(dispatcher.DeadLetter) bool) (int, error) {
		return d.DiscardIf(match), nil
	}, false}
	dlOps = []dlOp{redeliverIfOp, discardIfOp}
)

// TestRedeliverIfAndDiscardIfChoose: RedeliverIf and DiscardIf act on the
// dead letters match chooses, oldest first, and leave the others in order.
// A redelivered pair is called again for its own subscriber only, with
// Attempt 1; a discarded one is gone and not counted as dropped.
func TestRedeliverIfAndDiscardIfChoose(t *testing.T) {
	tests := []struct {
		name  string
		match func(dispatcher.DeadLetter) bool
		want  []string // the dead letters chosen, as dlPairs says
	}{
		{
			name:  "every",
			match: func(dispatcher.DeadLetter) bool { return true },
			want:  dlAll,
		},
		{
			name:  "none",
			match: func(dispatcher.DeadLetter) bool { return false },
		},
		{
			name:  "by subscriber",
			match: func(dl dispatcher.DeadLetter) bool { return dl.Subscriber == "b" },
			want:  []string{"b:1", "b:2", "b:3"},
		},
		{
			name:  "by error",
			match: func(dl dispatcher.DeadLetter) bool { return errors.Is(dl.Err, errTransient) },
			want:  []string{"a:1", "b:1", "a:3", "b:3"},
		},
		{
			name:  "by error and subscriber",
			match: func(dl dispatcher.DeadLetter) bool { return errors.Is(dl.Err, errInvalid) && dl.Subscriber == "a" },
			want:  []string{"a:2"},
		},
	}
	for _, op := range dlOps {
		for _, tt := range tests {
			t.Run(op.name+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				f := newDLFixture(t)
				n, err := op.run(ctx, f.d, tt.match)
				if n != len(tt.want) || err != nil {
					t.Errorf("%s() = %d, %v, want %d, nil", op.name, n, err, len(tt.want))
				}
				wantLeft := dlWithout(dlAll, tt.want)
				if got := dlPairs(f.d); !slices.Equal(got, wantLeft) {
					t.Errorf("DeadLetters() after %s = %q, want %q", op.name, got, wantLeft)
				}
				wantQueued := 0
				if op.redelivers {
					wantQueued = len(tt.want)
				}
				st := f.d.Stats()
				if st.DeadLetters != len(wantLeft) || st.DeadLettered != 6 || st.Dropped != 0 || st.Queued != wantQueued {
					t.Errorf("Stats() after %s = %+v, want DeadLetters %d, DeadLettered 6, Dropped 0, Queued %d",
						op.name, st, len(wantLeft), wantQueued)
				}

				f.healed.Store(true)
				if n := drain(t, f.d); n != wantQueued {
					t.Errorf("Drain(0) = %d, want %d", n, wantQueued)
				}
				var wantCalls []string
				if op.redelivers {
					wantCalls = dlCalls(tt.want)
				}
				checkCalls(t, "after "+op.name, &f.log, wantCalls...)
				if got := dlPairs(f.d); !slices.Equal(got, wantLeft) {
					t.Errorf("DeadLetters() after the drain = %q, want %q", got, wantLeft)
				}
				if st := f.d.Stats(); st.Retried != 0 || st.Delivered != uint64(len(wantCalls)) {
					t.Errorf("Stats() after the drain = %+v, want Retried 0, Delivered %d", st, len(wantCalls))
				}
			})
		}
	}
	t.Run("Redeliver is RedeliverIf every", func(t *testing.T) {
		f := newDLFixture(t)
		if n, err := f.d.Redeliver(context.Background()); n != 6 || err != nil {
			t.Errorf("Redeliver() = %d, %v, want 6, nil", n, err)
		}
		f.healed.Store(true)
		drain(t, f.d)
		checkCalls(t, "after Redeliver", &f.log, dlCalls(dlAll)...)
	})
}

// TestRedeliverKeepsDeadLettersOfUnsubscribedSubscribers: a dead letter
// belongs to its subscription, not to its name: after Unsubscribe it stays
// a dead letter, even when a new subscription takes the name, and the new
// one never gets it.
func TestRedeliverKeepsDeadLettersOfUnsubscribedSubscribers(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t)
	var l callLog
	fail := errors.New("fail")
	a := subscribe(t, d, "t", l.handler("a", fail), dispatcher.WithName("a"))
	subscribe(t, d, "t", l.handler("b", fail), dispatcher.WithName("b"))
	emitTopics(t, d, "t")
	drainIgnoringFailures(t, d)
	a.Unsubscribe()
	subscribe(t, d, "u", l.handler("new a", nil), dispatcher.WithName("a"))

	byA := func(dl dispatcher.DeadLetter) bool { return dl.Subscriber == "a" }
	if n, err := d.RedeliverIf(ctx, byA); n != 0 || err != nil {
		t.Errorf("RedeliverIf(subscriber a) = %d, %v, want 0, nil", n, err)
	}
	if n, err := d.Redeliver(ctx); n != 1 || err != nil {
		t.Errorf("Redeliver() = %d, %v, want 1, nil", n, err)
	}
	if got, want := dlPairs(d), []string{"a:1"}; !slices.Equal(got, want) {
		t.Errorf("DeadLetters() = %q, want %q", got, want)
	}
	drainIgnoringFailures(t, d)
	checkCalls(t, "after the redeliveries", &l, "a:1", "b:1", "b:1")
	if n := d.DiscardIf(byA); n != 1 {
		t.Errorf("DiscardIf(subscriber a) = %d, want 1: an old subscription's dead letter can be discarded", n)
	}
}

// TestRedeliverIsBoundedByCapacity: redeliveries pending are bounded by
// the capacity; chosen dead letters that do not fit stay, in order.
func TestRedeliverIsBoundedByCapacity(t *testing.T) {
	tests := []struct {
		name     string
		match    func(dispatcher.DeadLetter) bool // nil: Redeliver
		wantN    int
		wantLeft []uint64
	}{
		{name: "Redeliver", wantN: 2, wantLeft: []uint64{3, 4}},
		{
			name:     "RedeliverIf",
			match:    func(dl dispatcher.DeadLetter) bool { return dl.Event.ID != 2 },
			wantN:    2,
			wantLeft: []uint64{2, 4},
		},
		{
			name:     "RedeliverIf that fits",
			match:    func(dl dispatcher.DeadLetter) bool { return dl.Event.ID >= 3 },
			wantN:    2,
			wantLeft: []uint64{1, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			d := newDispatcher(t, dispatcher.WithCapacity(2))
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
			for range 4 {
				emitTopics(t, d, "t")
				drainIgnoringFailures(t, d)
			}
			var n int
			var err error
			if tt.match == nil {
				n, err = d.Redeliver(ctx)
			} else {
				n, err = d.RedeliverIf(ctx, tt.match)
			}
			if n != tt.wantN || err != nil {
				t.Errorf("%s with 4 dead letters and capacity 2 = %d, %v, want %d, nil", tt.name, n, err, tt.wantN)
			}
			var left []uint64
			for _, dl := range d.DeadLetters() {
				left = append(left, dl.Event.ID)
			}
			if !slices.Equal(left, tt.wantLeft) {
				t.Errorf("DeadLetters() event IDs = %v, want %v", left, tt.wantLeft)
			}
			if n := drainIgnoringFailures(t, d); n != tt.wantN {
				t.Errorf("Drain(0) = %d, want %d", n, tt.wantN)
			}
		})
	}
}

// TestRedeliverIfHonoursCtx: a ctx done at the call changes nothing and
// match is not called; a ctx that ends in a match call stops the calls
// there, and what was chosen until then is queued.
func TestRedeliverIfHonoursCtx(t *testing.T) {
	tests := []struct {
		name     string
		give     func() (context.Context, context.CancelFunc)
		cancelAt int  // cancel in the match call for this dead letter (1: the oldest); 0: never
		choose   bool // what match reports for the dead letter where it cancels
		wantErr  error
		want     []string // the dead letters queued
	}{
		{
			name: "cancelled before",
			give: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantErr: context.Canceled,
		},
		{
			name: "deadline passed before",
			give: func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(context.Background(), time.Unix(0, 0))
			},
			wantErr: context.DeadlineExceeded,
		},
		{
			name:     "cancelled in match, chosen",
			give:     func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancelAt: 2,
			choose:   true,
			wantErr:  context.Canceled,
			want:     []string{"a:1", "b:1"},
		},
		{
			name:     "cancelled in match, not chosen",
			give:     func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancelAt: 3,
			choose:   false,
			wantErr:  context.Canceled,
			want:     []string{"a:1", "b:1"},
		},
		{
			name:     "cancelled in the last match",
			give:     func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancelAt: 6,
			choose:   true,
			want:     dlAll, // every dead letter was considered
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newDLFixture(t)
			ctx, cancel := tt.give()
			defer cancel()
			calls := 0
			n, err := f.d.RedeliverIf(ctx, func(dispatcher.DeadLetter) bool {
				calls++
				if calls == tt.cancelAt {
					cancel()
					return tt.choose
				}
				return true
			})
			if n != len(tt.want) || !errors.Is(err, tt.wantErr) {
				t.Errorf("RedeliverIf() = %d, %v, want %d, %v", n, err, len(tt.want), tt.wantErr)
			}
			if want := tt.cancelAt; calls != want {
				t.Errorf("match called %d times, want %d", calls, want)
			}
			if got, want := dlPairs(f.d), dlWithout(dlAll, tt.want); !slices.Equal(got, want) {
				t.Errorf("DeadLetters() = %q, want %q", got, want)
			}
			f.healed.Store(true)
			drain(t, f.d)
			checkCalls(t, "queued by RedeliverIf", &f.log, dlCalls(tt.want)...)
		})
	}
	t.Run("Redeliver cancelled before", func(t *testing.T) {
		f := newDLFixture(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if n, err := f.d.Redeliver(ctx); n != 0 || !errors.Is(err, context.Canceled) {
			t.Errorf("Redeliver(cancelled) = %d, %v, want 0, context.Canceled", n, err)
		}
		if got := dlPairs(f.d); !slices.Equal(got, dlAll) {
			t.Errorf("DeadLetters() = %q, want %q", got, dlAll)
		}
	})
}

// TestRedeliverAfterStop: after Shutdown or Close, Redeliver and
// RedeliverIf return ErrClosed without calling match, and the dead letters
// stay readable; DiscardIf still removes them.
func TestRedeliverAfterStop(t *testing.T) {
	for _, name := range []string{"Close", "Shutdown"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newDLFixture(t)
			if name == "Close" {
				_ = f.d.Close()
			} else {
				_ = f.d.Shutdown(ctx)
			}
			if n, err := f.d.Redeliver(ctx); n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
				t.Errorf("Redeliver() after %s = %d, %v, want 0, ErrClosed", name, n, err)
			}
			n, err := f.d.RedeliverIf(ctx, func(dispatcher.DeadLetter) bool {
				t.Errorf("RedeliverIf after %s called match", name)
				return true
			})
			if n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
				t.Errorf("RedeliverIf() after %s = %d, %v, want 0, ErrClosed", name, n, err)
			}
			if got := dlPairs(f.d); !slices.Equal(got, dlAll) {
				t.Errorf("DeadLetters() after %s = %q, want %q (still readable)", name, got, dlAll)
			}
			if n := f.d.DiscardIf(func(dl dispatcher.DeadLetter) bool { return dl.Subscriber == "a" }); n != 3 {
				t.Errorf("DiscardIf(subscriber a) after %s = %d, want 3", name, n)
			}
			if got, want := dlPairs(f.d), []string{"b:1", "b:2", "b:3"}; !slices.Equal(got, want) {
				t.Errorf("DeadLetters() after DiscardIf = %q, want %q", got, want)
			}
		})
	}
	t.Run("closed during match", func(t *testing.T) {
		f := newDLFixture(t)
		n, err := f.d.RedeliverIf(context.Background(), func(dispatcher.DeadLetter) bool {
			_ = f.d.Close()
			return true
		})
		if n != 0 || !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("RedeliverIf() closing in match = %d, %v, want 0, ErrClosed", n, err)
		}
		if got := dlPairs(f.d); !slices.Equal(got, dlAll) {
			t.Errorf("DeadLetters() = %q, want %q", got, dlAll)
		}
	})
}

// TestDeadLetterMatchMayCallTheDispatcher: match runs without the
// dispatcher's locks, so it may read the dead letters, Drain new ones in
// (evicting old ones past the limit) or discard some. Dead letters added
// meanwhile are not acted on; chosen ones that left meanwhile are skipped.
// Each call runs on its own goroutine, so that a deadlock fails the test.
func TestDeadLetterMatchMayCallTheDispatcher(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		op       dlOp
		inside   func(f *dlFixture) // on the first match call; reports with t.Errorf only
		wantN    int
		wantLeft []string
		wantDrop uint64 // Stats.Dropped: dead letters evicted
	}{
		{
			name: "RedeliverIf, match discards b",
			op:   redeliverIfOp,
			inside: func(f *dlFixture) {
				f.d.DiscardIf(func(dl dispatcher.DeadLetter) bool { return dl.Subscriber == "b" })
			},
			wantN: 3,
		},
		{
			name: "DiscardIf, match redelivers a",
			op:   discardIfOp,
			inside: func(f *dlFixture) {
				f.d.RedeliverIf(ctx, func(dl dispatcher.DeadLetter) bool { return dl.Subscriber == "a" })
			},
			wantN: 3,
		},
		{
			name:     "RedeliverIf, match drains new dead letters",
			op:       redeliverIfOp,
			inside:   dlFailTwoMore,
			wantN:    2, // a:3 and b:3; a:1 to b:2 were evicted
			wantLeft: []string{"a:4", "b:4", "a:5", "b:5"},
			wantDrop: 4,
		},
		{
			name:     "DiscardIf, match drains new dead letters",
			op:       discardIfOp,
			inside:   dlFailTwoMore,
			wantN:    2,
			wantLeft: []string{"a:4", "b:4", "a:5", "b:5"},
			wantDrop: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newDLFixture(t, dispatcher.WithDeadLetterLimit(6))
			type result struct {
				n   int
				err error
			}
			res := make(chan result, 1)
			go func() {
				calls := 0
				n, err := tt.op.run(ctx, f.d, func(dispatcher.DeadLetter) bool {
					calls++
					if calls == 1 {
						tt.inside(f)
					}
					_ = f.d.Stats()
					if got := len(f.d.DeadLetters()); got == 0 {
						t.Errorf("DeadLetters() in match is empty")
					}
					return true
				})
				res <- result{n, err}
			}()
			r := recv(t, res, tt.op.name+" to return")
			if r.n != tt.wantN || r.err != nil {
				t.Errorf("%s() = %d, %v, want %d, nil", tt.op.name, r.n, r.err, tt.wantN)
			}
			if got := dlPairs(f.d); !slices.Equal(got, tt.wantLeft) {
				t.Errorf("DeadLetters() = %q, want %q", got, tt.wantLeft)
			}
			if st := f.d.Stats(); st.Dropped != tt.wantDrop {
				t.Errorf("Stats().Dropped = %d, want %d", st.Dropped, tt.wantDrop)
			}
		})
	}
}

// dlFailTwoMore emits two events and drains them while f's subscribers
// still fail: four new dead letters, a:4 b:4 a:5 b:5.
func dlFailTwoMore(f *dlFixture) {
	ctx := context.Background()
	for range 2 {
		if err := f.d.Emit(ctx, "t", 0); err != nil {
			f.log.add("Emit error: %v", err) // fails the call check
		}
	}
	_, _ = f.d.Drain(ctx, 0)
}

// TestDeadLetterMatchPanics: a panic in match reaches the caller, and
// nothing is redelivered or discarded.
func TestDeadLetterMatchPanics(t *testing.T) {
	for _, op := range dlOps {
		t.Run(op.name, func(t *testing.T) {
			f := newDLFixture(t)
			calls := 0
			p := panicValue(func() {
				_, _ = op.run(context.Background(), f.d, func(dispatcher.DeadLetter) bool {
					if calls++; calls == 3 {
						panic("match broke")
					}
					return true
				})
			})
			if p != "match broke" {
				t.Errorf("%s with a panicking match panicked with %v, want %q", op.name, p, "match broke")
			}
			if got := dlPairs(f.d); !slices.Equal(got, dlAll) {
				t.Errorf("DeadLetters() = %q, want %q", got, dlAll)
			}
			if q := f.d.Stats().Queued; q != 0 {
				t.Errorf("Stats().Queued = %d, want 0", q)
			}
		})
	}
}

// TestDeadLetterNilArguments: a nil ctx or match panics with a message that
// names the method.
func TestDeadLetterNilArguments(t *testing.T) {
	d := newDispatcher(t)
	var nilCtx context.Context // nil: the misuse under test
	all := func(dispatcher.DeadLetter) bool { return true }
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"RedeliverIf nil ctx", func() { _, _ = d.RedeliverIf(nilCtx, all) }, "dispatcher: RedeliverIf with a nil Context"},
		{"RedeliverIf nil match", func() { _, _ = d.RedeliverIf(context.Background(), nil) }, "dispatcher: RedeliverIf with a nil match function"},
		{"DiscardIf nil match", func() { d.DiscardIf(nil) }, "dispatcher: DiscardIf with a nil match function"},
		{"Redeliver nil ctx", func() { _, _ = d.Redeliver(nilCtx) }, "dispatcher: Redeliver with a nil Context"},
	}
	for _, tt := range tests {
		if p := panicValue(tt.call); p != tt.want {
			t.Errorf("%s: panicked with %v, want %q", tt.name, p, tt.want)
		}
	}
}

// TestDeadLetterChoiceRacesDrain: RedeliverIf and DiscardIf, whose match
// functions read the dispatcher, race a Drain that adds dead letters and
// evicts old ones past a small limit. Every dead-lettering ends exactly
// once: kept, evicted (Dropped), discarded, or redelivered (and then
// failed again).
func TestDeadLetterChoiceRacesDrain(t *testing.T) {
	rounds := sizeFor(300, 50)
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithDeadLetterLimit(8), dispatcher.WithCapacity(64))
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errTransient })

	// The producer goes on until each chooser acted on a dead letter at
	// least once (or, should they never act, gives up); they go on until
	// it stops. How often they act is up to the scheduler.
	var redelivered, discarded atomic.Int64
	enough := func() bool { return redelivered.Load() > 0 && discarded.Load() > 0 }
	produced := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(produced)
		for i := 0; i < rounds || !enough() && i < 1000*rounds; i++ {
			for range 3 {
				if err := d.Emit(ctx, "t", i); err != nil {
					t.Errorf("Emit() error = %v", err)
					return
				}
			}
			if _, err := d.Drain(ctx, 0); !errors.Is(err, errTransient) {
				t.Errorf("Drain(0) error = %v, want only handler failures", err)
				return
			}
		}
	})
	untilProduced := func(f func()) {
		for {
			select {
			case <-produced:
				return
			default:
				f()
			}
		}
	}
	wg.Go(func() {
		untilProduced(func() {
			n, err := d.RedeliverIf(ctx, func(dl dispatcher.DeadLetter) bool {
				_ = d.DeadLetters()
				return dl.Event.ID%2 == 0
			})
			if err != nil {
				t.Errorf("RedeliverIf() error = %v", err)
			}
			redelivered.Add(int64(n))
		})
	})
	wg.Go(func() {
		untilProduced(func() {
			discarded.Add(int64(d.DiscardIf(func(dl dispatcher.DeadLetter) bool {
				_ = d.Stats()
				return dl.Event.ID%3 == 0
			})))
		})
	})
	wg.Wait()
	drainIgnoringFailures(t, d) // the last redeliveries

	if !enough() {
		t.Errorf("after %d rounds, %d redelivered and %d discarded, want at least 1 each", 1000*rounds, redelivered.Load(), discarded.Load())
	}
	st := d.Stats()
	kept := d.DeadLetters()
	ended := uint64(len(kept)) + st.Dropped + uint64(discarded.Load()) + uint64(redelivered.Load())
	if st.DeadLettered != ended {
		t.Errorf("DeadLettered %d != kept %d + evicted %d + discarded %d + redelivered %d",
			st.DeadLettered, len(kept), st.Dropped, discarded.Load(), redelivered.Load())
	}
	if calls := st.Emitted + uint64(redelivered.Load()); st.Failed != calls || st.DeadLettered != calls {
		t.Errorf("Stats() = %+v with %d redelivered: want Failed = DeadLettered = Emitted + redelivered", st, redelivered.Load())
	}
	if st.Queued != 0 || st.Retrying != 0 || st.DeadLetters != len(kept) {
		t.Errorf("Stats() = %+v, want nothing queued and DeadLetters %d", st, len(kept))
	}
	seen := map[uint64]bool{}
	for _, dl := range kept {
		if seen[dl.Event.ID] {
			t.Errorf("event %d is a dead letter twice: %+v", dl.Event.ID, kept)
		}
		seen[dl.Event.ID] = true
	}
	t.Logf("%d emitted: %d redelivered, %d discarded, %d evicted", st.Emitted, redelivered.Load(), discarded.Load(), st.Dropped)
}
