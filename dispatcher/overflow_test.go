package dispatcher_test

// Overflow policies at the queue's boundary, Block's waiting, and emits
// from handlers on a full queue.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

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
			d := newDispatcher(t, dispatcher.WithCapacity(2), dispatcher.WithOverflow(tt.give))
			got := record(t, d, ">")
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
			if n := drain(t, d); n != 2 {
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
			drain(t, d)
			if ids := eventIDs(*got); !slices.Equal(ids, []uint64{tt.wantNextID}) {
				t.Errorf("%v: next event's ID = %v, want %d", tt.give, ids, tt.wantNextID)
			}
		})
	}
}

func TestDropOldestKeepsTheNewestWindow(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithCapacity(4), dispatcher.WithOverflow(dispatcher.DropOldest))
	got := record(t, d, ">")
	for p := 1; p <= 10; p++ {
		if err := d.Emit(context.Background(), "t", p); err != nil {
			t.Fatalf("Emit #%d error = %v", p, err)
		}
	}
	if st := d.Stats(); st.Dropped != 6 || st.Queued != 4 || st.Emitted != 10 {
		t.Errorf("Stats() = %+v, want Dropped 6, Queued 4, Emitted 10", st)
	}
	drain(t, d)
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
	d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.DropOldest))
	var firsts, follows []uint64
	subscribe(t, d, "first", func(ctx context.Context, e dispatcher.Event) error {
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
	subscribe(t, d, "follow", func(_ context.Context, e dispatcher.Event) error {
		follows = append(follows, e.ID)
		return nil
	})
	for range capacity {
		emitTopics(t, d, "first")
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
		d := newDispatcher(t, dispatcher.WithCapacity(2)) // Block is the default
		emitTopics(t, d, "t", "t")
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
	d := newDispatcher(t, dispatcher.WithCapacity(2))
	emitTopics(t, d, "t", "t")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Emit(ctx, "t", 3); err != context.Canceled {
		t.Errorf("Emit on a full queue with a cancelled ctx error = %v, want context.Canceled", err)
	}
	// A cancelled ctx does not matter while there is room.
	drain(t, d)
	if err := d.Emit(ctx, "t", 4); err != nil {
		t.Errorf("Emit with room and a cancelled ctx error = %v, want nil", err)
	}
}

func TestBlockEmitUnblocksWhenDrainMakesRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithCapacity(2))
		got := record(t, d, ">")
		emitTopics(t, d, "t", "t")

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
		total := r.n + drain(t, d)
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
		d := newDispatcher(t, dispatcher.WithCapacity(2))
		emitTopics(t, d, "t", "t")
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

// TestCloseUnblocksBlockedEmitters: emitters waiting for room under Block
// get ErrClosed as soon as Close begins, before the in-flight handler ends.
func TestCloseUnblocksBlockedEmitters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queued = 2
		b, wait := startBlockedFirst(t, context.Background(), queued, false, dispatcher.WithCapacity(queued))
		d := b.d
		const emitters = 3
		results := make(chan error, emitters)
		for i := range emitters {
			go func() { results <- d.Emit(context.Background(), "x", 100+i) }()
		}
		synctest.Wait() // the emitters wait for room
		if len(results) != 0 {
			t.Fatalf("an Emit on a full ring returned under Block: %v", <-results)
		}
		closed := make(chan error, 1)
		go func() { closed <- d.Close() }()
		synctest.Wait() // Close waits for the handler; the emitters must be free
		for range emitters {
			select {
			case err := <-results:
				if !errors.Is(err, dispatcher.ErrClosed) {
					t.Errorf("blocked Emit after Close = %v, want ErrClosed", err)
				}
			default:
				t.Errorf("an emitter is still blocked while Close waits for the handler")
			}
		}
		close(b.release)
		if err := recv(t, closed, "Close"); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped", err)
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v", err)
		}
		want := dispatcher.Stats{Emitted: queued + 1, Delivered: 1, Dropped: queued}
		if got := d.Stats(); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
	})
}

func TestEmitFromHandlerOnFullQueueNeverBlocks(t *testing.T) {
	// Under synctest a deadlock fails the test at once instead of hanging.
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithCapacity(2)) // Block
		var errs []error
		subscribe(t, d, "a", func(ctx context.Context, e dispatcher.Event) error {
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
		subscribe(t, d, "b", func(_ context.Context, e dispatcher.Event) error {
			bs = append(bs, e.Payload)
			return nil
		})
		emitTopics(t, d, "a")

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

// TestRunHandlerEmitOnFullRingNoDeadlock: under Run and Block, handlers
// that emit on a full ring never deadlock, even with every worker inside a
// handler (workers=4: the ring is filled while they wait at a gate): each
// follow-up is delivered or its Emit returned ErrFull.
func TestRunHandlerEmitOnFullRingNoDeadlock(t *testing.T) {
	const fanout = 10
	tests := []struct {
		name     string
		workers  int
		triggers int
		fillRing bool // hold every worker in a trigger handler and fill the ring first
	}{
		{name: "workers=1", workers: 1, triggers: 20},
		{name: "workers=4", workers: 4, triggers: 4, fillRing: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				d := newDispatcher(t, dispatcher.WithCapacity(2), dispatcher.WithWorkers(tt.workers), dispatcher.WithOverflow(dispatcher.Block))
				gate := make(chan struct{})
				if !tt.fillRing {
					close(gate)
				}
				started := make(chan struct{}, tt.triggers)
				var accepted, errored, other, delivered, fillers atomic.Int64
				subscribe(t, d, "trigger", func(hctx context.Context, e dispatcher.Event) error {
					started <- struct{}{}
					<-gate
					for i := range fanout {
						switch err := d.Emit(hctx, "follow", i); {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, dispatcher.ErrFull):
							errored.Add(1)
						default:
							errored.Add(1)
							other.Add(1)
						}
					}
					return nil
				})
				subscribe(t, d, "follow", func(context.Context, dispatcher.Event) error {
					delivered.Add(1)
					return nil
				})
				subscribe(t, d, "filler", func(context.Context, dispatcher.Event) error {
					fillers.Add(1)
					return nil
				})
				wait := startRun(t, ctx, d)
				wantFillers := int64(0)
				if tt.fillRing {
					for i := range tt.triggers {
						emit(t, d, "trigger", i)
						recv(t, started, "a worker to enter the trigger handler")
					}
					// Every worker is inside a handler: fill the ring.
					emit(t, d, "filler", 0)
					emit(t, d, "filler", 1)
					wantFillers = 2
					if got := d.Stats().Queued; got != 2 {
						t.Fatalf("Stats().Queued = %d with every worker in a handler, want 2 (a full ring)", got)
					}
					close(gate)
				} else {
					for i := range tt.triggers {
						emit(t, d, "trigger", i) // Block: waits for the worker
					}
				}
				stopRun(t, ctx, d, wait)
				if got := delivered.Load() + errored.Load(); got != int64(fanout*tt.triggers) {
					t.Errorf("delivered %d + errored %d = %d, want %d", delivered.Load(), errored.Load(), got, fanout*tt.triggers)
				}
				if accepted.Load() != delivered.Load() {
					t.Errorf("accepted %d follow-ups, delivered %d", accepted.Load(), delivered.Load())
				}
				if other.Load() != 0 {
					t.Errorf("%d emits failed with an error other than ErrFull", other.Load())
				}
				if errored.Load() == 0 {
					t.Errorf("no emit found the ring full: the test did not test anything")
				}
				if got := fillers.Load(); got != wantFillers {
					t.Errorf("fillers delivered %d, want %d", got, wantFillers)
				}
				t.Logf("follow-ups: %d delivered, %d refused with ErrFull", delivered.Load(), errored.Load())
			})
		})
	}
}

// TestRunBlockedEmitterLooksForRoomItself: workers wake emitters blocked on
// a full ring at once only when the ring is half empty. Here the only
// worker takes a batch that leaves the ring above half, and the batch's
// first handler waits for something the blocked emitter does after its
// Emit returns. The emitter must be given the room within RoomLook of the
// take; if it slept until a half-empty ring, nothing would move again and
// synctest would report the deadlock.
func TestRunBlockedEmitterLooksForRoomItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const capacity = 512 // one batch (at most 128 events) leaves it above half
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithWorkers(1), dispatcher.WithOverflow(dispatcher.Block))
		released := make(chan struct{})
		var delivered atomic.Int64
		subscribe(t, d, "ev", func(_ context.Context, e dispatcher.Event) error {
			if e.ID == 1 {
				<-released
			}
			delivered.Add(1)
			return nil
		})
		for i := range capacity {
			emit(t, d, "ev", i) // fills the ring; nothing consumes yet
		}
		emitted := make(chan error, 1)
		go func() {
			err := d.Emit(ctx, "ev", capacity) // blocks: the ring is full
			close(released)                    // what handler 1 waits for
			emitted <- err
		}()
		synctest.Wait() // the emitter is blocked

		start := time.Now() // synctest's fake clock: it moves only when all wait
		wait := startRun(t, ctx, d)
		if err := <-emitted; err != nil {
			t.Errorf("blocked Emit = %v, want nil", err)
		}
		if waited := time.Since(start); waited > dispatcher.RoomLook {
			t.Errorf("the blocked Emit returned after %v, want at most RoomLook (%v)", waited, dispatcher.RoomLook)
		}
		stopRun(t, ctx, d, wait)
		if got := delivered.Load(); got != capacity+1 {
			t.Errorf("delivered %d events, want %d", got, capacity+1)
		}
	})
}

// TestDropOldestDrainCascadeCountsAddUp: under DropOldest, a handler emits more
// events than the queue holds while Drain or Shutdown (without Run)
// processes a full queue, so the emits evict events that the round in
// progress counted on processing. Neither may panic, and every accepted event is
// accounted for: delivered (one subscriber, so one handler call each),
// dropped or still queued.
func TestDropOldestDrainCascadeCountsAddUp(t *testing.T) {
	for _, stop := range []string{"Drain", "Shutdown"} {
		t.Run(stop, func(t *testing.T) {
			const capacity, cascade = 256, 300
			ctx := context.Background()
			d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.DropOldest))
			calls := 0 // handlers run on this goroutine: no Run
			var emitErrs []error
			subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
				calls++
				if e.ID == 1 {
					for i := range cascade {
						if err := d.Emit(ctx, "t", i); err != nil {
							emitErrs = append(emitErrs, err)
						}
					}
				}
				return nil
			})
			for i := range capacity {
				emit(t, d, "t", i)
			}
			var err error
			if p := panicValue(func() {
				if stop == "Drain" {
					_, err = d.Drain(ctx, 0)
				} else {
					err = d.Shutdown(ctx)
				}
			}); p != nil {
				t.Errorf("%s() panicked: %v", stop, p)
			} else if err != nil {
				t.Errorf("%s() error = %v, want nil", stop, err)
			}
			if len(emitErrs) > 0 {
				t.Errorf("DropOldest emits from the handler failed: %v", errors.Join(emitErrs...))
			}
			st := d.Stats()
			if st.Emitted != capacity+cascade {
				t.Errorf("Stats().Emitted = %d, want %d", st.Emitted, capacity+cascade)
			}
			if sum := uint64(calls) + st.Dropped + uint64(st.Queued); sum != st.Emitted {
				t.Errorf("%d handler calls + Dropped %d + Queued %d = %d, want Emitted %d",
					calls, st.Dropped, st.Queued, sum, st.Emitted)
			}
			if st.Queued != 0 {
				t.Errorf("Stats().Queued = %d after %s, want 0", st.Queued, stop)
			}
			_ = d.Close()
		})
	}
}

// countingCtx counts the calls of its ctx methods: an emitter blocked on
// a full ring that uses its ctx while nothing happens is polling.
type countingCtx struct {
	context.Context
	calls *atomic.Int64
}

func (c countingCtx) Deadline() (time.Time, bool) { c.calls.Add(1); return c.Context.Deadline() }
func (c countingCtx) Done() <-chan struct{}       { c.calls.Add(1); return c.Context.Done() }
func (c countingCtx) Err() error                  { c.calls.Add(1); return c.Context.Err() }
func (c countingCtx) Value(k any) any             { c.calls.Add(1); return c.Context.Value(k) }

// TestBlockedEmittersDoNotPoll: emitters blocked under Block on a
// full ring, with the only worker stuck in a handler, sleep until
// something happens: room, their ctx's end (its error comes back), or
// Close (ErrClosed). A dispatcher that makes them look for room on a timer
// (every millisecond) wakes each of them 1,000 times in the test's idle
// second of fake time; an hour would be 36 million wake-ups. The test sees the polling
// through the ctx the emitters were given: a sleeping emitter does not use
// it. (An internal wake-up counter, exported to tests by an
// export_test.go, would be a more direct probe.)
func TestBlockedEmittersDoNotPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const emitters = 10
		// Fake time is kept short: it is slow where emitters poll.
		const idle = time.Second
		const deadline = idle + time.Second // emitter 0's ctx
		base := context.Background()
		d := newDispatcher(t, dispatcher.WithWorkers(1), dispatcher.WithCapacity(1)) // Block is the default
		entered := make(chan struct{})
		subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
			if e.ID == 1 {
				close(entered)
				<-ctx.Done() // until Close cancels it
			}
			return nil
		})
		wait := startRun(t, base, d)
		emit(t, d, "t", nil)
		recvOK(t, entered, "call of the handler")
		emit(t, d, "t", nil) // the ring (capacity 1) is full now

		expiry := time.Now().Add(deadline)
		dctx, cancelD := context.WithDeadline(base, expiry)
		defer cancelD()
		cctx, cancelC := context.WithCancel(base)
		defer cancelC()
		var calls atomic.Int64
		errs := make([]error, emitters)
		done := make([]chan struct{}, emitters)
		for i := range emitters {
			ctx := base
			switch i {
			case 0:
				ctx = dctx
			case 1:
				ctx = cctx
			}
			done[i] = make(chan struct{})
			go func() {
				defer close(done[i])
				errs[i] = d.Emit(countingCtx{ctx, &calls}, "t", nil)
			}()
		}
		blocked := func(i int) bool {
			select {
			case <-done[i]:
				return false
			default:
				return true
			}
		}
		synctest.Wait() // every emitter is blocked
		before, st := calls.Load(), d.Stats()
		advanceClock(idle)
		synctest.Wait()
		if n := calls.Load() - before; n != 0 {
			t.Errorf("blocked emitters used their ctx %d times in %v of fake time in which nothing happened: they poll", n, idle)
		}
		if now := d.Stats(); now != st {
			t.Errorf("Stats() changed while nothing happened: %+v, then %+v", st, now)
		}
		for i := range emitters {
			if !blocked(i) {
				t.Errorf("emitter %d returned %v while the ring stayed full", i, errs[i])
			}
		}

		cancelC()
		synctest.Wait()
		if blocked(1) {
			t.Errorf("emitter 1 still blocked after its ctx was cancelled")
		} else if !errors.Is(errs[1], context.Canceled) {
			t.Errorf("emitter 1: Emit() error = %v after its ctx was cancelled, want context.Canceled", errs[1])
		}
		advanceClock(time.Until(expiry))
		synctest.Wait()
		if blocked(0) {
			t.Errorf("emitter 0 still blocked after its ctx's deadline")
		} else if !errors.Is(errs[0], context.DeadlineExceeded) {
			t.Errorf("emitter 0: Emit() error = %v at its ctx's deadline, want context.DeadlineExceeded", errs[0])
		}

		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped (one event queued)", err)
		}
		for i := 2; i < emitters; i++ {
			if _, ok := recvOK(t, done[i], fmt.Sprintf("return of blocked emitter %d after Close", i)); !ok {
				continue
			}
			if !errors.Is(errs[i], dispatcher.ErrClosed) {
				t.Errorf("emitter %d: Emit() error = %v after Close, want ErrClosed", i, errs[i])
			}
		}
		if err := wait(); err != nil {
			t.Errorf("Run() error = %v, want nil", err)
		}
	})
}

// TestBlockFairness: producers blocked under Block are served in
// turn: none is starved while the others keep getting room. Four
// producers emit 50 events each into a queue of 4 that one worker empties
// one event per step of the test; the event IDs give the order in which
// the events were accepted. With emitters served first come, first served,
// a waiting producer gets room before any producer that queued after it,
// so between two of its accepted events come at most the three other
// producers' (one each), plus whatever got in without waiting while there
// was room. The bound allows far more: every producer that has events left
// has one accepted in every window of 2*capacity*producers = 32 accepted
// events. A dispatcher that lets woken or newly arrived emitters race for
// the freed slots (barging) can starve one producer for longer.
func TestBlockFairness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const producers, each, capacity = 4, 50, 4
		const window = 2 * capacity * producers
		ctx := context.Background()
		d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithWorkers(1)) // Block is the default
		step := make(chan struct{})
		byID := make([]int, producers*each+1) // event ID -> producer; written by the one worker
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			<-step
			byID[e.ID] = e.Payload.(int)
			return nil
		})
		wait := startRun(t, ctx, d)
		var wg sync.WaitGroup
		emitErrs := make([]error, producers)
		for p := range producers {
			wg.Go(func() {
				for range each {
					if err := d.Emit(ctx, "t", p); err != nil {
						emitErrs[p] = err
						return
					}
				}
			})
		}
		for i := range producers * each {
			synctest.Wait() // the emitters that can get room have it
			select {
			case step <- struct{}{}:
			case <-time.After(waitTimeout):
				t.Errorf("the worker took no event %d within %v of fake time", i+1, waitTimeout)
			}
			if t.Failed() {
				break
			}
		}
		close(step) // lets the handler run through whatever is left
		wg.Wait()
		stopRun(t, ctx, d, wait)
		for p, err := range emitErrs {
			if err != nil {
				t.Errorf("producer %d: Emit() error = %v", p, err)
			}
		}
		if t.Failed() {
			return
		}
		for p := range producers {
			last, worst, at := uint64(0), uint64(0), uint64(0)
			for id := uint64(1); id < uint64(len(byID)); id++ {
				if byID[id] != p {
					continue
				}
				if gap := id - last; gap > worst {
					worst, at = gap, id
				}
				last = id
			}
			if worst > window {
				t.Errorf("producer %d had no event accepted among %d in a row (up to event %d), want at most %d",
					p, worst-1, at, window-1)
			}
		}
	})
}
