package dispatchertest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

// on is d.On that fails the test on error.
func on(t *testing.T, d *dispatcher.Dispatcher, pattern string, h dispatcher.Handler, opts ...dispatcher.SubscribeOption) {
	t.Helper()
	if _, err := d.On(pattern, h, opts...); err != nil {
		t.Fatalf("On(%q) error = %v", pattern, err)
	}
}

// emit is d.Emit that fails the test on error.
func emit(t *testing.T, d *dispatcher.Dispatcher, topic string, payload any) {
	t.Helper()
	if err := d.Emit(t.Context(), topic, payload); err != nil {
		t.Fatalf("Emit(%q) error = %v", topic, err)
	}
}

// ids returns the IDs of events.
func ids(events []dispatcher.Event) []uint64 {
	out := make([]uint64, 0, len(events))
	for _, e := range events {
		out = append(out, e.ID)
	}
	return out
}

func TestRecorderByTopic(t *testing.T) {
	d := dispatchertest.New(t)
	var rec dispatchertest.Recorder
	on(t, d, ">", rec.Handle)
	for _, topic := range []string{"order.placed", "order.paid", "order.placed", "audit"} {
		emit(t, d, topic, topic)
	}
	if n, err := dispatchertest.Settle(t, d); n != 4 || err != nil {
		t.Fatalf("Settle() = %d, %v, want 4, nil", n, err)
	}

	if got, want := ids(rec.Events("order.placed")), []uint64{1, 3}; !slices.Equal(got, want) {
		t.Errorf("Events(order.placed) IDs = %v, want %v", got, want)
	}
	if got := rec.Events("order.*"); len(got) != 0 {
		t.Errorf("Events(order.*) = %v, want none: Events takes a topic, not a pattern", got)
	}
	if got, want := ids(rec.All()), []uint64{1, 2, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("All() IDs = %v, want %v", got, want)
	}
	if got, want := rec.Topics(), []string{"audit", "order.paid", "order.placed"}; !slices.Equal(got, want) {
		t.Errorf("Topics() = %q, want %q", got, want)
	}
	if got := rec.Len("order.paid"); got != 1 {
		t.Errorf("Len(order.paid) = %d, want 1", got)
	}
	rec.Reset()
	if got := rec.All(); len(got) != 0 {
		t.Errorf("All() after Reset = %v, want none", got)
	}
	if got := rec.Topics(); len(got) != 0 {
		t.Errorf("Topics() after Reset = %q, want none", got)
	}
}

func TestRecorderWrapRecordsWhatTheHandlerHandled(t *testing.T) {
	d := dispatchertest.New(t, dispatcher.WithRetry(3, nil))
	var rec dispatchertest.Recorder
	on(t, d, "job", rec.Wrap(func(_ context.Context, e dispatcher.Event) error {
		if e.Payload == "flaky" && e.Attempt < 2 {
			return errors.New("not yet")
		}
		if e.Payload == "broken" {
			return dispatcher.Permanent(errors.New("broken"))
		}
		return nil
	}))
	emit(t, d, "job", "flaky")
	emit(t, d, "job", "fine")
	emit(t, d, "job", "broken")
	dispatchertest.Settle(t, d)

	var got []string
	for _, e := range rec.Events("job") {
		got = append(got, fmt.Sprintf("%v#%d", e.Payload, e.Attempt))
	}
	if want := []string{"fine#1", "flaky#2"}; !slices.Equal(got, want) {
		t.Errorf("recorded %q, want %q: each handled event once, failed calls left out", got, want)
	}
}

func TestRecorderUnderRun(t *testing.T) {
	// Producers and workers record concurrently; -race checks the
	// Recorder, Wait returns once every event is in.
	const producers, each = 4, 250
	d := dispatchertest.New(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(64))
	var rec dispatchertest.Recorder
	on(t, d, "tick", rec.Handle)
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(context.WithoutCancel(t.Context())) }()
	var wg sync.WaitGroup
	for range producers {
		wg.Go(func() {
			for i := range each {
				if err := d.Emit(t.Context(), "tick", i); err != nil {
					t.Errorf("Emit() error = %v", err)
					return
				}
			}
		})
	}
	waitErr := rec.Wait(t.Context(), "tick", producers*each)
	wg.Wait()
	if err := d.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown() error = %v", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run() error = %v", err)
	}
	if waitErr != nil {
		t.Fatalf("Wait(tick, %d) error = %v", producers*each, waitErr)
	}
	got := ids(rec.Events("tick"))
	slices.Sort(got)
	if len(got) != producers*each || len(slices.Compact(got)) != producers*each {
		t.Errorf("recorded %d events, %d distinct, want %d of each", len(rec.Events("tick")), len(got), producers*each)
	}
}

func TestRecorderWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec dispatchertest.Recorder
		done := make(chan error, 1)
		go func() { done <- rec.Wait(t.Context(), "a", 2) }()
		_ = rec.Handle(t.Context(), dispatcher.Event{ID: 1, Topic: "a"})
		_ = rec.Handle(t.Context(), dispatcher.Event{ID: 2, Topic: "b"})
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Wait(a, 2) returned %v with one event on a", err)
		default:
		}
		_ = rec.Handle(t.Context(), dispatcher.Event{ID: 3, Topic: "a"})
		if err := <-done; err != nil {
			t.Errorf("Wait(a, 2) error = %v, want nil", err)
		}

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := rec.Wait(ctx, "a", 3)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "2 recorded") {
			t.Errorf("Wait(a, 3) with a cancelled ctx error = %v, want context.Canceled and the count", err)
		}
	})
}

type order struct{ ID string }

func TestPayloads(t *testing.T) {
	var rec dispatchertest.Recorder
	ctx := t.Context()
	_ = rec.Handle(ctx, dispatcher.Event{ID: 1, Topic: "order", Payload: order{"o-1"}})
	_ = rec.Handle(ctx, dispatcher.Event{ID: 2, Topic: "order", Payload: &order{"o-2"}}) // the wrong type
	_ = rec.Handle(ctx, dispatcher.Event{ID: 3, Topic: "order", Payload: order{"o-3"}})
	_ = rec.Handle(ctx, dispatcher.Event{ID: 4, Topic: "ptr", Payload: nil})

	fake := dispatchertest.NewFakeTB(ctx)
	got := dispatchertest.Payloads[order](fake, &rec, "order")
	if want := []order{{"o-1"}, {"o-3"}}; !slices.Equal(got, want) {
		t.Errorf("Payloads[order] = %v, want %v", got, want)
	}
	errs := fake.Errors()
	if len(errs) != 1 || !strings.Contains(errs[0], "event 2") || !strings.Contains(errs[0], "*dispatchertest_test.order") {
		t.Errorf("Payloads[order] reported %q, want one failure naming event 2 and its type", errs)
	}

	fake = dispatchertest.NewFakeTB(ctx)
	if got := dispatchertest.Payloads[*order](fake, &rec, "ptr"); len(got) != 1 || got[0] != nil || len(fake.Errors()) != 0 {
		t.Errorf("Payloads[*order] of a nil payload = %v, failures %q; want [nil], none", got, fake.Errors())
	}
	fake = dispatchertest.NewFakeTB(ctx)
	if got := dispatchertest.Payloads[order](fake, &rec, "ptr"); len(got) != 0 || len(fake.Errors()) != 1 {
		t.Errorf("Payloads[order] of a nil payload = %v, failures %q; want none, one", got, fake.Errors())
	}
}
