package dispatcher_test

// Overflow policies at the queue's boundary, Block's waiting, emits from
// handlers on a full queue, and Close/Shutdown without Run.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// deliveredLog subscribes to every topic and records the events.
func deliveredLog(t *testing.T, d *dispatcher.Dispatcher) *[]dispatcher.Event {
	t.Helper()
	var got []dispatcher.Event
	mustSubscribe(t, d, ">", func(_ context.Context, e dispatcher.Event) error {
		got = append(got, e)
		return nil
	})
	return &got
}

func eventIDs(evs []dispatcher.Event) []uint64 {
	ids := make([]uint64, 0, len(evs))
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	return ids
}

func eventPayloads(evs []dispatcher.Event) []any {
	ps := make([]any, 0, len(evs))
	for _, e := range evs {
		ps = append(ps, e.Payload)
	}
	return ps
}

func TestOverflowPoliciesAtCapacity(t *testing.T) {
	tests := []struct {
		give         dispatcher.OverflowPolicy
		wantErr      error // of the third Emit
		wantIDs      []uint64
		wantPayloads []any
		wantEmitted  uint64
		wantDropped  uint64
		wantNextID   uint64 // of the event emitted after the drain
	}{
		{
			give:    dispatcher.Reject,
			wantErr: dispatcher.ErrFull,
			wantIDs: []uint64{1, 2}, wantPayloads: []any{1, 2},
			wantEmitted: 2, wantDropped: 0, wantNextID: 3,
		},
		{
			give:    dispatcher.DropNewest,
			wantErr: dispatcher.ErrDropped,
			wantIDs: []uint64{1, 2}, wantPayloads: []any{1, 2},
			wantEmitted: 2, wantDropped: 1, wantNextID: 3,
		},
		{
			give:    dispatcher.DropOldest,
			wantErr: nil,
			wantIDs: []uint64{2, 3}, wantPayloads: []any{2, 3},
			wantEmitted: 3, wantDropped: 1, wantNextID: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.give.String(), func(t *testing.T) {
			ctx := context.Background()
			d := mustNewDispatcher(t, dispatcher.WithCapacity(2), dispatcher.WithOverflow(tt.give))
			got := deliveredLog(t, d)
			for p := 1; p <= 2; p++ {
				if err := d.Emit(ctx, "t", p); err != nil {
					t.Fatalf("%v: Emit #%d error = %v, want nil", tt.give, p, err)
				}
			}
			err := d.Emit(ctx, "t", 3)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%v: Emit #3 on a full queue error = %v, want %v", tt.give, err, tt.wantErr)
			}
			st := d.Stats()
			if st.Emitted != tt.wantEmitted || st.Dropped != tt.wantDropped || st.Queued != 2 {
				t.Errorf("%v: Stats() = %+v, want Emitted %d, Dropped %d, Queued 2",
					tt.give, st, tt.wantEmitted, tt.wantDropped)
			}
			if n := mustDrain(t, d); n != 2 {
				t.Errorf("%v: Drain(0) = %d, want 2", tt.give, n)
			}
			if ids := eventIDs(*got); !slices.Equal(ids, tt.wantIDs) {
				t.Errorf("%v: delivered IDs = %v, want %v", tt.give, ids, tt.wantIDs)
			}
			if ps := eventPayloads(*got); !slices.Equal(ps, tt.wantPayloads) {
				t.Errorf("%v: delivered payloads = %v, want %v", tt.give, ps, tt.wantPayloads)
			}
			// IDs stay unique and increasing among accepted events.
			*got = nil
			if err := d.Emit(ctx, "t", 4); err != nil {
				t.Fatalf("%v: Emit after Drain error = %v", tt.give, err)
			}
			mustDrain(t, d)
			if ids := eventIDs(*got); !slices.Equal(ids, []uint64{tt.wantNextID}) {
				t.Errorf("%v: next event's ID = %v, want %d", tt.give, ids, tt.wantNextID)
			}
		})
	}
}

func TestDropOldestKeepsTheNewestWindow(t *testing.T) {
	d := mustNewDispatcher(t, dispatcher.WithCapacity(4), dispatcher.WithOverflow(dispatcher.DropOldest))
	got := deliveredLog(t, d)
	for p := 1; p <= 10; p++ {
		if err := d.Emit(context.Background(), "t", p); err != nil {
			t.Fatalf("Emit #%d error = %v", p, err)
		}
	}
	if st := d.Stats(); st.Dropped != 6 || st.Queued != 4 || st.Emitted != 10 {
		t.Errorf("Stats() = %+v, want Dropped 6, Queued 4, Emitted 10", st)
	}
	mustDrain(t, d)
	if ids := eventIDs(*got); !slices.Equal(ids, []uint64{7, 8, 9, 10}) {
		t.Errorf("delivered IDs = %v, want [7 8 9 10]", ids)
	}
}

// TestDropOldestDuringTickDoesNotPullInFollowUps: a Tick processes exactly
// the events queued when it began. A handler that emits under DropOldest
// on a full queue evicts one of those events; the Tick must then process
// one event fewer, not the follow-up that took the evicted one's place.
// (The capacity is twice the consumer's batch, 128 events, so that the
// follow-ups land in the ring while the Tick still has original events in
// it, and one more follow-up than the batch freed evicts exactly one.)
func TestDropOldestDuringTickDoesNotPullInFollowUps(t *testing.T) {
	const capacity = 256
	const followUps = capacity/2 + 1
	ctx := context.Background()
	d := mustNewDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.DropOldest))
	var firsts, follows []uint64
	mustSubscribe(t, d, "first", func(ctx context.Context, e dispatcher.Event) error {
		firsts = append(firsts, e.ID)
		if e.ID == 1 {
			for range followUps {
				if err := d.Emit(ctx, "follow", nil); err != nil {
					t.Errorf("Emit(follow) from a handler error = %v", err)
				}
			}
		}
		return nil
	})
	mustSubscribe(t, d, "follow", func(_ context.Context, e dispatcher.Event) error {
		follows = append(follows, e.ID)
		return nil
	})
	for range capacity {
		mustEmit(t, d, "first")
	}

	n, err := d.Tick(ctx)
	if n != capacity-1 || err != nil {
		t.Errorf("Tick() = %d, %v, want %d, nil (one queued event was evicted)", n, err, capacity-1)
	}
	if len(follows) != 0 {
		t.Errorf("Tick() processed follow-ups %v emitted during it, want none before the next Tick", follows)
	}
	if dropped := d.Stats().Dropped; dropped != 1 {
		t.Errorf("Stats().Dropped = %d, want 1", dropped)
	}
	want := followUps - len(follows)
	n, err = d.Tick(ctx)
	if n != want || err != nil {
		t.Errorf("second Tick() = %d, %v, want %d, nil", n, err, want)
	}
}

func TestBlockEmitHonoursContextDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithCapacity(2)) // Block is the default
		mustEmit(t, d, "t", "t")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		err := d.Emit(ctx, "t", 3)
		if err != context.DeadlineExceeded {
			t.Errorf("Emit on a full queue with a 5s deadline error = %v, want context.DeadlineExceeded unchanged", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("Emit waited %v, want 5s", waited)
		}
		if st := d.Stats(); st.Emitted != 2 || st.Queued != 2 || st.Dropped != 0 {
			t.Errorf("Stats() = %+v, want Emitted 2, Queued 2, Dropped 0", st)
		}
	})
}

func TestBlockEmitWithCancelledContextReturnsAtOnce(t *testing.T) {
	d := mustNewDispatcher(t, dispatcher.WithCapacity(2))
	mustEmit(t, d, "t", "t")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Emit(ctx, "t", 3); err != context.Canceled {
		t.Errorf("Emit on a full queue with a cancelled ctx error = %v, want context.Canceled", err)
	}
	// A cancelled ctx does not matter while there is room.
	mustDrain(t, d)
	if err := d.Emit(ctx, "t", 4); err != nil {
		t.Errorf("Emit with room and a cancelled ctx error = %v, want nil", err)
	}
}

func TestBlockEmitUnblocksWhenDrainMakesRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := mustNewDispatcher(t, dispatcher.WithCapacity(2))
		got := deliveredLog(t, d)
		mustEmit(t, d, "t", "t")

		// Drain on another goroutine once this one blocks in Emit.
		type result struct {
			n   int
			err error
		}
		drained := make(chan result, 1)
		go func() {
			synctest.Wait() // the test goroutine is blocked in Emit
			n, err := d.Drain(ctx, 0)
			drained <- result{n, err}
		}()
		start := time.Now()
		if err := d.Emit(ctx, "t", 3); err != nil {
			t.Errorf("blocked Emit error = %v, want nil once Drain made room", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("blocked Emit waited %v of fake time, want 0", waited)
		}
		r := <-drained
		if r.err != nil {
			t.Errorf("Drain(0) error = %v", r.err)
		}
		// The third event may or may not have made the first Drain.
		total := r.n + mustDrain(t, d)
		if total != 3 {
			t.Errorf("Drain(0) calls processed %d events, want 3", total)
		}
		if ids := eventIDs(*got); !slices.Equal(ids, []uint64{1, 2, 3}) {
			t.Errorf("delivered IDs = %v, want [1 2 3]", ids)
		}
	})
}

func TestBlockedEmitReturnsErrClosedOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithCapacity(2))
		mustEmit(t, d, "t", "t")
		emitted := make(chan error, 1)
		go func() { emitted <- d.Emit(context.Background(), "t", 3) }()
		synctest.Wait()
		select {
		case err := <-emitted:
			t.Fatalf("Emit on a full queue returned %v before Close", err)
		default:
		}
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() with 2 queued error = %v, want ErrDropped", err)
		}
		if err := <-emitted; !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("blocked Emit after Close error = %v, want ErrClosed", err)
		}
		if st := d.Stats(); st.Dropped != 2 || st.Emitted != 2 {
			t.Errorf("Stats() = %+v, want Dropped 2, Emitted 2", st)
		}
	})
}

func TestEmitFromHandlerOnFullQueueNeverBlocks(t *testing.T) {
	// Under synctest a deadlock fails the test at once instead of hanging.
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithCapacity(2)) // Block
		var errs []error
		mustSubscribe(t, d, "a", func(ctx context.Context, e dispatcher.Event) error {
			if e.ID != 1 {
				return nil
			}
			for i := range 3 {
				errs = append(errs, d.Emit(ctx, "b", i))
			}
			// A ctx derived from the handler's still counts as the handler's.
			dctx, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			errs = append(errs, d.Emit(dctx, "b", 3))
			return nil
		})
		var bs []any
		mustSubscribe(t, d, "b", func(_ context.Context, e dispatcher.Event) error {
			bs = append(bs, e.Payload)
			return nil
		})
		mustEmit(t, d, "a")

		start := time.Now()
		n, err := d.Drain(context.Background(), 0)
		if n != 3 || err != nil {
			t.Errorf("Drain(0) = %d, %v, want 3, nil", n, err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Drain waited %v of fake time, want 0", waited)
		}
		if len(errs) != 4 || errs[0] != nil || errs[1] != nil {
			t.Fatalf("Emit errors from the handler = %v, want nil, nil, ErrFull, ErrFull", errs)
		}
		for i, err := range errs[2:] {
			if !errors.Is(err, dispatcher.ErrFull) {
				t.Errorf("Emit #%d from a handler on a full queue error = %v, want ErrFull", i+3, err)
			}
		}
		// Nothing lost silently: the accepted follow-ups were delivered.
		if !slices.Equal(bs, []any{0, 1}) {
			t.Errorf("follow-ups delivered = %v, want [0 1]", bs)
		}
		if st := d.Stats(); st.Emitted != 3 || st.Dropped != 0 {
			t.Errorf("Stats() = %+v, want Emitted 3, Dropped 0", st)
		}
	})
}

func TestEmitAfterStopReturnsErrClosed(t *testing.T) {
	stops := []struct {
		name string
		stop func(*dispatcher.Dispatcher) error
	}{
		{"Close", func(d *dispatcher.Dispatcher) error { return d.Close() }},
		{"Shutdown", func(d *dispatcher.Dispatcher) error { return d.Shutdown(context.Background()) }},
	}
	policies := []dispatcher.OverflowPolicy{dispatcher.Block, dispatcher.Reject, dispatcher.DropNewest, dispatcher.DropOldest}
	for _, s := range stops {
		for _, p := range policies {
			t.Run(fmt.Sprintf("%s/%v", s.name, p), func(t *testing.T) {
				d := mustNewDispatcher(t, dispatcher.WithOverflow(p))
				var l callLog
				mustSubscribe(t, d, "t", l.handler("h", nil))
				if err := s.stop(d); err != nil {
					t.Fatalf("%s() error = %v", s.name, err)
				}
				if err := d.Emit(context.Background(), "t", nil); !errors.Is(err, dispatcher.ErrClosed) {
					t.Errorf("Emit after %s error = %v, want ErrClosed", s.name, err)
				}
				if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "t", Key: "k"}); !errors.Is(err, dispatcher.ErrClosed) {
					t.Errorf("EmitEvent after %s error = %v, want ErrClosed", s.name, err)
				}
				if st := d.Stats(); st.Emitted != 0 || st.Queued != 0 || st.Dropped != 0 {
					t.Errorf("Stats() = %+v, want nothing emitted, queued or dropped", st)
				}
				checkCalls(t, "after "+s.name, &l)
			})
		}
	}
}

func TestCloseDropsQueuedEvents(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	mustSubscribe(t, d, "t", l.handler("h", nil))
	mustEmit(t, d, "t", "t", "t")

	err := d.Close()
	if !errors.Is(err, dispatcher.ErrDropped) {
		t.Errorf("Close() with 3 queued error = %v, want ErrDropped", err)
	}
	st := d.Stats()
	if st.Dropped != 3 || st.Queued != 0 || st.Emitted != 3 || st.Delivered != 0 {
		t.Errorf("Stats() after Close = %+v, want Dropped 3, Queued 0, Emitted 3, Delivered 0", st)
	}
	checkCalls(t, "after Close", &l)
	if err := d.Close(); err != nil {
		t.Errorf("second Close() error = %v, want nil", err)
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown() after Close error = %v, want nil", err)
	}
	if st := d.Stats(); st.Dropped != 3 {
		t.Errorf("Stats().Dropped after more stops = %d, want 3", st.Dropped)
	}
}

func TestCloseWithNothingQueuedReturnsNil(t *testing.T) {
	d := mustNewDispatcher(t)
	mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return nil })
	mustEmit(t, d, "t")
	mustDrain(t, d)
	if err := d.Close(); err != nil {
		t.Errorf("Close() with nothing queued error = %v, want nil", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close() error = %v, want nil", err)
	}
}

func TestCloseDropsPendingRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := mustNewDispatcher(t, dispatcher.WithRetry(2, func(int) time.Duration { return time.Hour }))
		mustSubscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return errors.New("fail") })
		mustEmit(t, d, "t")
		if n, err := d.Drain(context.Background(), 0); n != 1 || err != nil {
			t.Fatalf("Drain(0) = %d, %v, want 1, nil (a retry is pending, no dead letter yet)", n, err)
		}
		if r := d.Stats().Retrying; r != 1 {
			t.Fatalf("Stats().Retrying = %d, want 1", r)
		}
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() with a pending retry error = %v, want ErrDropped", err)
		}
		if st := d.Stats(); st.Dropped != 1 || st.Retrying != 0 || st.DeadLettered != 0 {
			t.Errorf("Stats() after Close = %+v, want Dropped 1, Retrying 0, DeadLettered 0", st)
		}
	})
}

func TestCloseFromHandlerStopsTheDrain(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	var closeErr error
	mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
		l.add("h:%d", e.ID)
		if e.ID == 1 {
			closeErr = d.Close()
		}
		return nil
	})
	mustEmit(t, d, "t", "t", "t")
	n, err := d.Drain(context.Background(), 0)
	if n != 1 || !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Drain(0) closed by a handler = %d, %v, want 1, ErrClosed", n, err)
	}
	checkCalls(t, "after Close from a handler", &l, "h:1")
	if st := d.Stats(); st.Dropped != 2 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Dropped 2 (events 2 and 3), Queued 0", st)
	}
	if !errors.Is(closeErr, dispatcher.ErrDropped) {
		t.Errorf("Close() from a handler with events 2 and 3 still to process error = %v, want ErrDropped", closeErr)
	}
}

func TestShutdownWithoutRunDrainsOnTheCaller(t *testing.T) {
	d := mustNewDispatcher(t)
	var l callLog
	cascade(t, d, &l) // a emits b, b emits c
	mustEmit(t, d, "a", "x")
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown() error = %v", err)
	}
	checkCalls(t, "after Shutdown", &l, "a:1", "x:2", "b:3", "c:4")
	if st := d.Stats(); st.Delivered != 4 || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Delivered 4, Dropped 0, Queued 0", st)
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown() error = %v, want nil", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close() after Shutdown error = %v, want nil", err)
	}
}

func TestShutdownFromHandlerReturnsErrRunning(t *testing.T) {
	d := mustNewDispatcher(t)
	var shutdownErr error
	mustSubscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		shutdownErr = d.Shutdown(ctx)
		return nil
	})
	mustEmit(t, d, "t")
	mustDrain(t, d)
	if !errors.Is(shutdownErr, dispatcher.ErrRunning) {
		t.Errorf("Shutdown(handler ctx) error = %v, want ErrRunning", shutdownErr)
	}
	// The dispatcher is still open.
	mustEmit(t, d, "t")
	if n := mustDrain(t, d); n != 1 {
		t.Errorf("Drain(0) after the refused Shutdown = %d, want 1", n)
	}
}

func TestShutdownWaitsForARunningDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := mustNewDispatcher(t)
		release := make(chan struct{})
		var l callLog
		mustSubscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			l.add("h:%d", e.ID)
			if e.ID == 1 {
				<-release
			}
			return nil
		})
		mustEmit(t, d, "t", "t")

		drained := make(chan error, 1)
		go func() {
			_, err := d.Drain(ctx, 0)
			drained <- err
		}()
		synctest.Wait() // the Drain is inside the handler
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(ctx) }()
		synctest.Wait() // Shutdown waits for the Drain
		select {
		case err := <-shut:
			t.Fatalf("Shutdown() returned %v while a Drain was inside a handler", err)
		default:
		}
		if err := d.Emit(ctx, "t", nil); !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Emit during Shutdown error = %v, want ErrClosed", err)
		}
		close(release)
		if err := <-shut; err != nil {
			t.Errorf("Shutdown() error = %v, want nil", err)
		}
		if err := <-drained; err != nil && !errors.Is(err, dispatcher.ErrClosed) {
			t.Errorf("Drain(0) error = %v, want nil or ErrClosed", err)
		}
		checkCalls(t, "after Shutdown", &l, "h:1", "h:2")
		if st := d.Stats(); st.Dropped != 0 || st.Queued != 0 {
			t.Errorf("Stats() = %+v, want nothing dropped or queued", st)
		}
	})
}
