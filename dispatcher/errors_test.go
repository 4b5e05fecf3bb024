package dispatcher_test

// Misuse of the API (a nil ctx, a duplicate name, a bad topic, a Drain
// under Run) gets a panic or an error that says what is wrong.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestNilContextPanics: a nil ctx is a programming error that Emit, Drain
// and Run report at once, with a panic whose message names the method and
// the nil Context, before they touch the dispatcher's state: after a
// recovered panic the dispatcher works.
func TestNilContextPanics(t *testing.T) {
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
		d := newDispatcher(t)
		check(t, "Emit", panicValue(func() { _ = d.Emit(nilCtx, "t", nil) }))
		if st := d.Stats(); st.Emitted != 0 {
			t.Errorf("Stats().Emitted = %d after Emit(nil ctx), want 0", st.Emitted)
		}
		_ = d.Close()
	})
	t.Run("Drain", func(t *testing.T) {
		d := newDispatcher(t)
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
		emit(t, d, "t", nil)
		check(t, "Drain", panicValue(func() { _, _ = d.Drain(nilCtx, 0) }))
		if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
			t.Errorf("Drain(0) after a Drain(nil ctx) panic = %d, %v, want 1, nil", n, err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	t.Run("Run", func(t *testing.T) {
		// Not newDispatcher: its cleanup calls Close, and a Run that
		// panicked half-way may hold a lock Close waits for.
		d, err := dispatcher.New()
		if err != nil {
			t.Fatalf("New() error = %v", err)
		}
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
		emit(t, d, "t", nil)
		check(t, "Run", panicValue(func() { _ = d.Run(nilCtx) }))
		n, err := d.Drain(ctx, 0)
		if n != 1 || err != nil {
			// Not calling Close: see above.
			t.Fatalf("Drain(0) after a Run(nil ctx) panic = %d, %v, want 1, nil", n, err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
}

// TestErrorsSayWhatIsWrong: misuse gets an error that says what is wrong.
func TestErrorsSayWhatIsWrong(t *testing.T) {
	ctx := context.Background()
	ok := func(context.Context, dispatcher.Event) error { return nil }
	t.Run("duplicate WithName", func(t *testing.T) {
		d := newDispatcher(t)
		subscribe(t, d, "a", ok, dispatcher.WithName("x"))
		if _, err := d.On("b", ok, dispatcher.WithName("x")); !errors.Is(err, dispatcher.ErrInvalidOption) {
			t.Errorf("second On with WithName(%q) error = %v, want ErrInvalidOption", "x", err)
		}
	})
	t.Run("bad topics", func(t *testing.T) {
		d := newDispatcher(t)
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
			d := newDispatcher(t)
			wait := startRun(t, ctx, d)
			synctest.Wait() // Run owns the queue and its workers are idle
			_, err := d.Drain(ctx, 0)
			if !errors.Is(err, dispatcher.ErrRunning) || !strings.Contains(fmt.Sprint(err), "Run") {
				t.Errorf("Drain(0) under Run error = %v, want ErrRunning with a message that mentions Run", err)
			}
			stopRun(t, ctx, d, wait)
		})
	})
}
