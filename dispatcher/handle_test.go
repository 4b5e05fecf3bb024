package dispatcher_test

// Handle: handlers of a typed payload.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

type runFinished struct {
	Tenant string
	Rows   int
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

func TestHandleTypedPayloads(t *testing.T) {
	ctx := context.Background()

	t.Run("struct", func(t *testing.T) {
		d := newDispatcher(t)
		var got []runFinished
		subscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, r runFinished) error {
			got = append(got, r)
			return nil
		}))
		if err := d.Emit(ctx, "t", runFinished{"t1", 3}); err != nil {
			t.Fatal(err)
		}
		drain(t, d)
		if want := []runFinished{{"t1", 3}}; !slices.Equal(got, want) {
			t.Errorf("Handle[runFinished] got %+v, want %+v", got, want)
		}
	})

	t.Run("pointer", func(t *testing.T) {
		d := newDispatcher(t)
		var got *runFinished
		subscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, r *runFinished) error {
			got = r
			r.Rows++ // the pointer is shared: the emitter sees it
			return nil
		}))
		p := &runFinished{"t1", 3}
		if err := d.Emit(ctx, "t", p); err != nil {
			t.Fatal(err)
		}
		drain(t, d)
		if got != p || p.Rows != 4 {
			t.Errorf("Handle[*runFinished] got %p (Rows now %d), want %p (Rows 4)", got, p.Rows, p)
		}
	})

	t.Run("interface", func(t *testing.T) {
		d := newDispatcher(t)
		var got []string
		subscribe(t, d, "t", dispatcher.Handle(func(_ context.Context, s fmt.Stringer) error {
			got = append(got, s.String())
			return nil
		}))
		if err := d.Emit(ctx, "t", stringer{"hello"}); err != nil {
			t.Fatal(err)
		}
		drain(t, d)
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
			d := newDispatcher(t)
			var l callLog
			subscribe(t, d, "t", tt.h, dispatcher.WithName("typed"))
			subscribe(t, d, "t", l.handler("untyped", nil))
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
			d := newDispatcher(t)
			var gotNil bool
			subscribe(t, d, "t", tt.h(&gotNil))
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
