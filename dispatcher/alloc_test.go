package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestEmitDrainDoesNotAllocate: one event emitted and drained, to 1 or 10
// subscribers, with a key or without, allocates nothing once the
// dispatcher is warm.
func TestEmitDrainDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	p := new(benchPayload)
	for _, subs := range []int{1, 10} {
		for _, key := range []string{"", "k"} {
			d := newDispatcher(t)
			calls := 0
			for range subs {
				subscribe(t, d, benchTopic, func(context.Context, dispatcher.Event) error {
					calls++
					return nil
				})
			}
			ev := dispatcher.Event{Topic: benchTopic, Key: key, Payload: p}
			n := testing.AllocsPerRun(100, func() {
				if err := d.EmitEvent(ctx, ev); err != nil {
					t.Fatalf("EmitEvent: %v", err)
				}
				if got, err := d.Drain(ctx, 0); got != 1 || err != nil {
					t.Fatalf("Drain(0) = %d, %v, want 1, nil", got, err)
				}
			})
			if n != 0 {
				t.Errorf("subs=%d key=%q: %v allocations per Emit and Drain, want 0", subs, key, n)
			}
			if calls != 101*subs { // AllocsPerRun warms up with one run
				t.Errorf("subs=%d key=%q: %d handler calls, want %d", subs, key, calls, 101*subs)
			}
		}
	}
}

// TestRunDoesNotAllocate: under Run, batches of events with 64 keys, with
// no key, and fanned out to 10 subscribers allocate nothing once the
// workers are warm: what the keyed, unkeyed and fan-out benchmarks report
// as 0 allocs/op, checked exactly.
func TestRunDoesNotAllocate(t *testing.T) {
	const batch = 256
	ctx := context.Background()
	p := new(benchPayload)
	for _, tt := range []struct {
		keys, subs int
	}{{64, 1}, {0, 1}, {0, 10}} {
		t.Run(fmt.Sprintf("keys=%d/subs=%d", tt.keys, tt.subs), func(t *testing.T) {
			d := newDispatcher(t, dispatcher.WithWorkers(2))
			var calls atomic.Int64
			for range tt.subs {
				subscribe(t, d, benchTopic, func(context.Context, dispatcher.Event) error {
					calls.Add(1)
					return nil
				})
			}
			wait := startRun(t, ctx, d)
			want := int64(0)
			n := testing.AllocsPerRun(20, func() {
				for i := range batch {
					ev := dispatcher.Event{Topic: benchTopic, Payload: p}
					if tt.keys > 0 {
						ev.Key = benchKeys[i%tt.keys]
					}
					if err := d.EmitEvent(ctx, ev); err != nil {
						t.Fatalf("EmitEvent: %v", err)
					}
				}
				want += batch * int64(tt.subs)
				waitFor(t, "the handlers", func() bool { return calls.Load() == want })
			})
			if n != 0 {
				t.Errorf("%v allocations per %d events, want 0", n, batch)
			}
			if err := d.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := wait(); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// TestEmitOptionAllocations backs what the docs of OnDone and After say
// they cost: OnDone its tracker, one allocation per
// event, emitted and drained; a delayed event its tracker at emit, and
// nothing more when a consumer puts it in the time-ordered heap. The
// options are made once, as a caller that emits in a loop would.
func TestEmitOptionAllocations(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithCapacity(1024))
	subscribe(t, d, benchTopic, func(context.Context, dispatcher.Event) error { return nil })
	ev := dispatcher.Event{Topic: benchTopic}
	after := dispatcher.After(time.Hour)
	for _, tt := range []struct {
		name    string
		opt     dispatcher.EmitOption
		drained int // -1: no Drain
	}{
		{"Emit with OnDone, then Drain", dispatcher.OnDone(func(error) {}), 1},
		{"Emit with After", after, -1},
		{"Emit with After, then a Drain that puts it in the heap", after, 0},
	} {
		n := testing.AllocsPerRun(100, func() {
			if err := d.EmitEvent(ctx, ev, tt.opt); err != nil {
				t.Fatalf("%s: EmitEvent: %v", tt.name, err)
			}
			if tt.drained < 0 {
				return
			}
			if got, err := d.Drain(ctx, 0); got != tt.drained || err != nil {
				t.Fatalf("%s: Drain(0) = %d, %v, want %d, nil", tt.name, got, err, tt.drained)
			}
		})
		if n != 1 {
			t.Errorf("%s: %v allocations, want 1", tt.name, n)
		}
	}
}

// TestRetryWithBackoffDoesNotAllocate: a failure retried after a backoff
// passes through the waiting retries' heap, which costs no allocation once
// the dispatcher is warm.
func TestRetryWithBackoffDoesNotAllocate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t)
		errOnce := errors.New("first call fails")
		calls := 0
		subscribe(t, d, benchTopic, func(context.Context, dispatcher.Event) error {
			if calls++; calls%2 == 1 {
				return errOnce
			}
			return nil
		}, dispatcher.WithRetry(2, dispatcher.ConstantBackoff(time.Second)))
		// One timer, reset each round: advanceClock's time.After would
		// allocate a timer and a channel here.
		clock := time.NewTimer(time.Hour)
		clock.Stop()
		n := testing.AllocsPerRun(100, func() {
			if err := d.Emit(ctx, benchTopic, nil); err != nil {
				t.Fatalf("Emit: %v", err)
			}
			if got, err := d.Drain(ctx, 0); got != 1 || err != nil {
				t.Fatalf("Drain(0) = %d, %v, want 1, nil (a retry waits)", got, err)
			}
			clock.Reset(time.Second) // the bubble's fake clock: the backoff passes
			<-clock.C
			if got, err := d.Drain(ctx, 0); got != 1 || err != nil {
				t.Fatalf("Drain(0) = %d, %v, want 1 retry, nil", got, err)
			}
		})
		if n != 0 {
			t.Errorf("Emit, a failure and its retry after a backoff: %v allocations, want 0", n)
		}
		if st := d.Stats(); st.Retried == 0 || st.Failed != st.Retried || st.DeadLettered != 0 {
			t.Errorf("Stats() = %+v, want every failure retried and none dead-lettered", st)
		}
	})
}
