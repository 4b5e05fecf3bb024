package dispatcher_test

// Handle and HandleEvent: handlers of a typed payload.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

type runFinished struct {
	Tenant string
	Rows   int
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

// ptrStringer implements fmt.Stringer with a pointer receiver only.
type ptrStringer struct{ s string }

func (s *ptrStringer) String() string { return s.s }

// adapters are the two ways of making a typed handler. Each test of a
// typed payload runs against both: they share the conversion, and must
// behave alike.
var adapters = []struct {
	name string
	// wrap makes a Handler of fn with the adapter at T = runFinished.
	wrap func(fn func(p runFinished) error) dispatcher.Handler
	// wrapPtr is wrap at T = *runFinished.
	wrapPtr func(fn func(p *runFinished) error) dispatcher.Handler
}{
	{
		"Handle",
		func(fn func(runFinished) error) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p runFinished) error { return fn(p) })
		},
		func(fn func(*runFinished) error) dispatcher.Handler {
			return dispatcher.Handle(func(_ context.Context, p *runFinished) error { return fn(p) })
		},
	},
	{
		"HandleEvent",
		func(fn func(runFinished) error) dispatcher.Handler {
			return dispatcher.HandleEvent(func(_ context.Context, _ dispatcher.Event, p runFinished) error { return fn(p) })
		},
		func(fn func(*runFinished) error) dispatcher.Handler {
			return dispatcher.HandleEvent(func(_ context.Context, _ dispatcher.Event, p *runFinished) error { return fn(p) })
		},
	},
}

func TestHandleTypedPayloads(t *testing.T) {
	for _, a := range adapters {
		t.Run(a.name+"/value", func(t *testing.T) {
			d := newDispatcher(t)
			var got []runFinished
			subscribe(t, d, "t", a.wrap(func(r runFinished) error {
				got = append(got, r)
				r.Rows++ // a copy: neither the emitter nor the next handler sees it
				return nil
			}))
			subscribe(t, d, "t", a.wrap(func(r runFinished) error {
				got = append(got, r)
				return nil
			}))
			v := runFinished{"t1", 3}
			emit(t, d, "t", v)
			v.Rows = 99 // after Emit: the queued copy keeps 3
			drain(t, d)
			if want := []runFinished{{"t1", 3}, {"t1", 3}}; !slices.Equal(got, want) {
				t.Errorf("%s[runFinished] got %+v, want %+v", a.name, got, want)
			}
		})

		t.Run(a.name+"/pointer", func(t *testing.T) {
			d := newDispatcher(t)
			var got []*runFinished
			subscribe(t, d, "t", a.wrapPtr(func(r *runFinished) error {
				got = append(got, r)
				r.Rows++ // shared: the emitter and the next handler see it
				return nil
			}))
			var seen int
			subscribe(t, d, "t", a.wrapPtr(func(r *runFinished) error {
				seen = r.Rows
				return nil
			}))
			p := &runFinished{"t1", 3}
			emit(t, d, "t", p)
			drain(t, d)
			if len(got) != 1 || got[0] != p || p.Rows != 4 || seen != 4 {
				t.Errorf("%s[*runFinished] got %v (Rows now %d, second handler saw %d), want [%p] (Rows 4, seen 4)",
					a.name, got, p.Rows, seen, p)
			}
		})
	}

	t.Run("interface", func(t *testing.T) {
		d := newDispatcher(t)
		var got []string
		subscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, s fmt.Stringer) error {
			got = append(got, s.String())
			return nil
		}))
		subscribe(t, d, "t", dispatcher.HandleEvent(func(_ context.Context, _ dispatcher.Event, s fmt.Stringer) error {
			got = append(got, s.String())
			return nil
		}))
		emit(t, d, "t", stringer{"value"})
		emit(t, d, "t", &ptrStringer{"pointer"})
		drain(t, d)
		if want := []string{"value", "value", "pointer", "pointer"}; !slices.Equal(got, want) {
			t.Errorf("Handle[fmt.Stringer] and HandleEvent got %q, want %q", got, want)
		}
	})
}

func TestHandleWrongPayloadType(t *testing.T) {
	noop := func(runFinished) error { return nil }
	noopPtr := func(*runFinished) error { return nil }
	tests := []struct {
		name       string
		h          func(adapter int) dispatcher.Handler // adapters[adapter] at runFinished or *runFinished
		handleOnly bool                                 // h ignores adapter: run it once
		give       any
		wantMsg    string // the message after the sentinel's, with %s for the adapter's name
	}{
		{
			name:    "value wanted, pointer given",
			h:       func(a int) dispatcher.Handler { return adapters[a].wrap(noop) },
			give:    &runFinished{},
			wantMsg: "event 1 (orders.placed) has payload *dispatcher_test.runFinished, handler wants dispatcher_test.runFinished: emit a value or use %s[*dispatcher_test.runFinished]",
		},
		{
			name:    "pointer wanted, value given",
			h:       func(a int) dispatcher.Handler { return adapters[a].wrapPtr(noopPtr) },
			give:    runFinished{},
			wantMsg: "event 1 (orders.placed) has payload dispatcher_test.runFinished, handler wants *dispatcher_test.runFinished: emit a pointer or use %s[dispatcher_test.runFinished]",
		},
		{
			name:    "struct wanted, int given",
			h:       func(a int) dispatcher.Handler { return adapters[a].wrap(noop) },
			give:    7,
			wantMsg: "event 1 (orders.placed) has payload int, handler wants dispatcher_test.runFinished",
		},
		{
			name:    "pointer wanted, pointer to another type given",
			h:       func(a int) dispatcher.Handler { return adapters[a].wrapPtr(noopPtr) },
			give:    &stringer{},
			wantMsg: "event 1 (orders.placed) has payload *dispatcher_test.stringer, handler wants *dispatcher_test.runFinished",
		},
		{
			name:    "struct wanted, nil given",
			h:       func(a int) dispatcher.Handler { return adapters[a].wrap(noop) },
			give:    nil,
			wantMsg: "event 1 (orders.placed) has a nil payload, handler wants dispatcher_test.runFinished: a nil payload is only the zero value of a pointer, interface, map, slice, channel or function type",
		},
		{
			name:       "int wanted, int64 given",
			handleOnly: true,
			h: func(int) dispatcher.Handler {
				return dispatcher.Handle(func(context.Context, int) error { return nil })
			},
			give:    int64(7),
			wantMsg: "event 1 (orders.placed) has payload int64, handler wants int",
		},
		{
			name:       "Stringer wanted, value with a pointer method given",
			handleOnly: true,
			h: func(int) dispatcher.Handler {
				return dispatcher.Handle(func(context.Context, fmt.Stringer) error { return nil })
			},
			give:    ptrStringer{},
			wantMsg: "event 1 (orders.placed) has payload dispatcher_test.ptrStringer, handler wants fmt.Stringer: *dispatcher_test.ptrStringer implements it, dispatcher_test.ptrStringer does not: emit a pointer",
		},
		{
			name:       "Stringer wanted, int given",
			handleOnly: true,
			h: func(int) dispatcher.Handler {
				return dispatcher.Handle(func(context.Context, fmt.Stringer) error { return nil })
			},
			give:    7,
			wantMsg: "event 1 (orders.placed) has payload int, handler wants fmt.Stringer",
		},
	}
	for _, tt := range tests {
		for ai, a := range adapters {
			if ai > 0 && tt.handleOnly {
				continue
			}
			t.Run(a.name+"/"+tt.name, func(t *testing.T) {
				// A retry budget, to check that a mismatch is never retried.
				d := newDispatcher(t, dispatcher.WithRetry(3, nil))
				var l callLog
				subscribe(t, d, "orders.placed", tt.h(ai), dispatcher.WithName("typed"))
				subscribe(t, d, "orders.placed", l.handler("untyped", nil))
				emit(t, d, "orders.placed", tt.give)
				_, err := d.Drain(context.Background(), 0)
				if !errors.Is(err, dispatcher.ErrPayloadType) {
					t.Fatalf("Drain(0) error = %v, want ErrPayloadType", err)
				}
				want := dispatcher.ErrPayloadType.Error() + ": " + tt.wantMsg
				if strings.Contains(want, "%s") {
					want = fmt.Sprintf(want, a.name)
				}
				dls := d.DeadLetters()
				if len(dls) != 1 || dls[0].Subscriber != "typed" || dls[0].Attempts != 1 {
					t.Fatalf("DeadLetters() = %+v, want one of typed after 1 attempt", dls)
				}
				if got := dls[0].Err.Error(); got != want {
					t.Errorf("dead letter's error:\n got %s\nwant %s", got, want)
				}
				if st := d.Stats(); st.Failed != 1 || st.Retried != 0 || st.DeadLettered != 1 {
					t.Errorf("Stats() = %+v, want Failed 1, Retried 0, DeadLettered 1: a mismatch is never retried", st)
				}
				checkCalls(t, "the other handler still runs", &l, "untyped:1")
			})
		}
	}
}

func TestHandleNilPayloadIsZeroValueForNilableTypes(t *testing.T) {
	tests := []struct {
		name string
		h    func(event bool, gotNil *bool) dispatcher.Handler
	}{
		{"pointer", nilCase(func(p *runFinished) bool { return p == nil })},
		{"interface", nilCase(func(p fmt.Stringer) bool { return p == nil })},
		{"any", nilCase(func(p any) bool { return p == nil })},
		{"error", nilCase(func(p error) bool { return p == nil })},
		{"slice", nilCase(func(p []int) bool { return p == nil })},
		{"map", nilCase(func(p map[string]int) bool { return p == nil })},
		{"func", nilCase(func(p func()) bool { return p == nil })},
		{"chan", nilCase(func(p chan int) bool { return p == nil })},
	}
	for _, tt := range tests {
		for _, event := range []bool{false, true} {
			name := "Handle/" + tt.name
			if event {
				name = "HandleEvent/" + tt.name
			}
			t.Run(name, func(t *testing.T) {
				d := newDispatcher(t)
				var gotNil bool
				subscribe(t, d, "t", tt.h(event, &gotNil))
				emit(t, d, "t", nil)
				if n, err := d.Drain(context.Background(), 0); n != 1 || err != nil {
					t.Errorf("Drain(0) = %d, %v, want 1, nil", n, err)
				}
				if !gotNil {
					t.Errorf("%s with a nil payload did not get the zero value", name)
				}
			})
		}
	}
}

// nilCase makes, for TestHandleNilPayloadIsZeroValueForNilableTypes, a
// Handle[T] or HandleEvent[T] handler that records isNil of its payload.
func nilCase[T any](isNil func(p T) bool) func(event bool, gotNil *bool) dispatcher.Handler {
	return func(event bool, gotNil *bool) dispatcher.Handler {
		if event {
			return dispatcher.HandleEvent(func(_ context.Context, _ dispatcher.Event, p T) error {
				*gotNil = isNil(p)
				return nil
			})
		}
		return dispatcher.Handle(func(_ context.Context, p T) error {
			*gotNil = isNil(p)
			return nil
		})
	}
}

func TestHandleEventGetsTheEvent(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithRetry(2, nil))
	type call struct {
		ID      uint64
		Topic   string
		Key     string
		Attempt int
		Payload any
		P       runFinished
	}
	var got []call
	subscribe(t, d, "orders.*", dispatcher.HandleEvent(func(_ context.Context, e dispatcher.Event, p runFinished) error {
		got = append(got, call{e.ID, e.Topic, e.Key, e.Attempt, e.Payload, p})
		if e.Attempt == 1 && e.Key == "k" {
			return errors.New("first call fails")
		}
		return nil
	}))
	emit(t, d, "orders.placed", runFinished{"t1", 1})
	if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "orders.paid", Key: "k", Payload: runFinished{"t2", 2}}); err != nil {
		t.Fatalf("EmitEvent() error = %v", err)
	}
	if n := drain(t, d); n != 3 {
		t.Errorf("Drain(0) = %d, want 3 (two events and one retry)", n)
	}
	want := []call{
		{1, "orders.placed", "", 1, runFinished{"t1", 1}, runFinished{"t1", 1}},
		{2, "orders.paid", "k", 1, runFinished{"t2", 2}, runFinished{"t2", 2}},
		{2, "orders.paid", "k", 2, runFinished{"t2", 2}, runFinished{"t2", 2}},
	}
	if !slices.Equal(got, want) {
		t.Errorf("HandleEvent calls:\n got %+v\nwant %+v", got, want)
	}
}

// TestHandleDoesNotAllocate: the typed adapters cost a type assertion, not
// an allocation, when the payload has the right type.
func TestHandleDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	var boxed any = runFinished{"t1", 3} // boxed once, as an emitter that reuses it
	tests := []struct {
		name string
		h    dispatcher.Handler
		e    dispatcher.Event
	}{
		{"Handle/value", adapters[0].wrap(func(runFinished) error { return nil }), dispatcher.Event{ID: 1, Topic: "t", Payload: boxed}},
		{"HandleEvent/value", adapters[1].wrap(func(runFinished) error { return nil }), dispatcher.Event{ID: 1, Topic: "t", Payload: boxed}},
		{"Handle/pointer", adapters[0].wrapPtr(func(*runFinished) error { return nil }), dispatcher.Event{ID: 1, Topic: "t", Payload: &runFinished{}}},
		{"HandleEvent/pointer", adapters[1].wrapPtr(func(*runFinished) error { return nil }), dispatcher.Event{ID: 1, Topic: "t", Payload: &runFinished{}}},
		{"Handle/nil", dispatcher.Handle(func(context.Context, *runFinished) error { return nil }), dispatcher.Event{ID: 1, Topic: "t"}},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, func() { _ = tt.h(ctx, tt.e) }); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tt.name, n)
		}
	}
}
