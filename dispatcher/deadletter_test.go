package dispatcher_test

// Failing and panicking handlers, dead letters and Redeliver.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

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

func TestRedeliverGivesAFreshRetryBudget(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithRetry(2, nil))
	var l callLog
	subscribe(t, d, "t", l.handler("bad", errors.New("fail")))
	emitTopics(t, d, "t")
	drainIgnoringFailures(t, d)
	if n, err := d.Redeliver(ctx); n != 1 || err != nil {
		t.Fatalf("Redeliver() = %d, %v, want 1, nil", n, err)
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
}

func TestRedeliverKeepsDeadLettersOfUnsubscribedSubscribers(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	fail := errors.New("fail")
	a := subscribe(t, d, "t", l.handler("a", fail), dispatcher.WithName("a"))
	subscribe(t, d, "t", l.handler("b", fail), dispatcher.WithName("b"))
	emitTopics(t, d, "t")
	drainIgnoringFailures(t, d)
	a.Unsubscribe()

	if n, err := d.Redeliver(context.Background()); n != 1 || err != nil {
		t.Errorf("Redeliver() = %d, %v, want 1, nil", n, err)
	}
	dls := d.DeadLetters()
	if len(dls) != 1 || dls[0].Subscriber != "a" {
		t.Errorf("DeadLetters() = %+v, want a's only", dls)
	}
	drainIgnoringFailures(t, d)
	checkCalls(t, "after Redeliver", &l, "a:1", "b:1", "b:1")
}

func TestRedeliverIsBoundedByCapacity(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithCapacity(2))
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
	for range 3 {
		emitTopics(t, d, "t")
		drainIgnoringFailures(t, d)
	}
	if n, err := d.Redeliver(context.Background()); n != 2 || err != nil {
		t.Errorf("Redeliver() with 3 dead letters and capacity 2 = %d, %v, want 2, nil", n, err)
	}
	dls := d.DeadLetters()
	if len(dls) != 1 || dls[0].Event.ID != 3 {
		t.Errorf("DeadLetters() = %+v, want the newest (event 3) left", dls)
	}
	if n := drainIgnoringFailures(t, d); n != 2 {
		t.Errorf("Drain(0) = %d, want 2", n)
	}
}

func TestRedeliverErrors(t *testing.T) {
	t.Run("cancelled ctx", func(t *testing.T) {
		d := newDispatcher(t)
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		emitTopics(t, d, "t")
		drainIgnoringFailures(t, d)
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
			d := newDispatcher(t)
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
			emitTopics(t, d, "t")
			drainIgnoringFailures(t, d)
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
