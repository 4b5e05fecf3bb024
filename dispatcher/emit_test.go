package dispatcher_test

// Emit and EmitEvent: the topics they accept, that they run no handler,
// and the events they queue.

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"
	"weak"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestEmitRejectsBadTopics(t *testing.T) {
	for _, give := range []string{"", "a..b", "run.*", "run.>", "a*b", "*", ">", ".a", "a.", "a>b"} {
		t.Run(give, func(t *testing.T) {
			d := newDispatcher(t)
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

func TestEmitNeverRunsHandlers(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	subscribe(t, d, "t", l.handler("exact", nil))
	subscribe(t, d, ">", l.handler("all", nil))
	emitTopics(t, d, "t", "t", "t")
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

func TestEventIDsFollowEmitOrder(t *testing.T) {
	d := newDispatcher(t)
	var got []dispatcher.Event
	subscribe(t, d, ">", func(_ context.Context, e dispatcher.Event) error {
		got = append(got, e)
		return nil
	})
	ctx := context.Background()
	emitTopics(t, d, "a", "b.c", "a")
	if err := d.EmitEvent(ctx, dispatcher.Event{ID: 99, Topic: "k", Key: "key", Payload: "p", Attempt: 7}); err != nil {
		t.Fatalf("EmitEvent() error = %v", err)
	}
	emitTopics(t, d, "z")
	drain(t, d)

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

// trackedPayload is big enough to get an allocation of its own (no tiny-block
// neighbour keeps it alive).
type trackedPayload struct{ _ [256]byte }

// emitTracked emits n events on topic with fresh *trackedPayload payloads and
// returns weak pointers to them; it keeps no strong reference.
//
//go:noinline
func emitTracked(t *testing.T, d *dispatcher.Dispatcher, topic string, n int) []weak.Pointer[trackedPayload] {
	t.Helper()
	ws := make([]weak.Pointer[trackedPayload], n)
	for i := range ws {
		p := new(trackedPayload)
		ws[i] = weak.Make(p)
		emit(t, d, topic, p)
	}
	return ws
}

// aliveAfterGC runs the garbage collector until every payload of ws is
// collected, at most a few cycles, and returns how many are still alive.
func aliveAfterGC(ws []weak.Pointer[trackedPayload]) int {
	alive := len(ws)
	for range 5 {
		runtime.GC()
		alive = 0
		for _, w := range ws {
			if w.Value() != nil {
				alive++
			}
		}
		if alive == 0 {
			break
		}
	}
	return alive
}

// TestPayloadsNotKeptAlive: the dispatcher keeps no reference to a
// payload it is done with: after Drain delivered the events, and after
// Close dropped the retries of failed ones, the payloads can be collected
// while the dispatcher itself is still reachable.
func TestPayloadsNotKeptAlive(t *testing.T) {
	ctx := context.Background()
	t.Run("delivered by Drain", func(t *testing.T) {
		d := newDispatcher(t)
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
		ws := emitTracked(t, d, "t", 3)
		if n, err := d.Drain(ctx, 0); n != 3 || err != nil {
			t.Fatalf("Drain(0) = %d, %v, want 3, nil", n, err)
		}
		if alive := aliveAfterGC(ws); alive != 0 {
			t.Errorf("%d of %d payloads still reachable after Drain returned", alive, len(ws))
		}
		runtime.KeepAlive(d)
	})
	t.Run("retries dropped by Close", func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithRetry(3, func(int) time.Duration { return time.Hour }))
		subscribe(t, d, "fail", func(context.Context, dispatcher.Event) error { return errors.New("failing") })
		subscribe(t, d, "ok", func(context.Context, dispatcher.Event) error { return nil })
		ws := emitTracked(t, d, "fail", 3)
		if n, err := d.Drain(ctx, 0); n != 3 || err != nil {
			t.Fatalf("Drain(0) = %d, %v, want 3, nil (the failures wait for their retries)", n, err)
		}
		// Three more events, with other payloads, take the tracked ones'
		// place in whatever the consumer reuses between calls: what is
		// left to keep them is the retries.
		for range 3 {
			emit(t, d, "ok", 0)
		}
		if n, err := d.Drain(ctx, 0); n != 3 || err != nil {
			t.Fatalf("second Drain(0) = %d, %v, want 3, nil", n, err)
		}
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped (3 retries)", err)
		}
		if alive := aliveAfterGC(ws); alive != 0 {
			t.Errorf("%d of %d payloads of dropped retries still reachable after Close", alive, len(ws))
		}
		runtime.KeepAlive(d)
	})
}
