package dispatcher_test

// Delayed events (SPEC part three, point 1): After and At. Time runs on
// synctest's fake clock, so due times are checked to the nanosecond.

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// handledAt records each handled event's payload and the fake time it ran.
type handledAt struct {
	mu   sync.Mutex
	what []string
	when []time.Time
	ids  []uint64
}

func (h *handledAt) handler(_ context.Context, e dispatcher.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.what = append(h.what, e.Payload.(string))
	h.when = append(h.when, time.Now())
	h.ids = append(h.ids, e.ID)
	return nil
}

func (h *handledAt) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.what)
}

func emitDelayed(t testing.TB, d *dispatcher.Dispatcher, key, payload string, opt dispatcher.EmitOption) {
	t.Helper()
	if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later", Key: key, Payload: payload}, opt); err != nil {
		t.Fatalf("EmitEvent(%s) error = %v", payload, err)
	}
}

// TestAfterIsDueToTheNanosecond: a delayed event is accepted at once (ID,
// Emitted, Scheduled) and Tick and Drain take it in only when it is due.
func TestAfterIsDueToTheNanosecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t)
		var h handledAt
		subscribe(t, d, "later", h.handler)
		start := time.Now()
		emitDelayed(t, d, "", "e1", dispatcher.After(5*time.Minute))
		if st := d.Stats(); st.Emitted != 1 || st.Scheduled != 1 || st.Queued != 0 {
			t.Fatalf("after the emit: Emitted %d, Scheduled %d, Queued %d; want 1, 1, 0", st.Emitted, st.Scheduled, st.Queued)
		}
		if n, err := d.Tick(context.Background()); n != 0 || err != nil {
			t.Fatalf("Tick() = %d, %v before the due time; want 0, nil", n, err)
		}
		advanceClock(5*time.Minute - time.Nanosecond)
		if n := drain(t, d); n != 0 {
			t.Fatalf("Drain() = %d one nanosecond before the due time, want 0", n)
		}
		if st := d.Stats(); st.Scheduled != 1 || st.Queued != 0 {
			t.Errorf("waiting: Scheduled %d, Queued %d; want 1, 0", st.Scheduled, st.Queued)
		}
		advanceClock(time.Nanosecond)
		if n := drain(t, d); n != 1 {
			t.Fatalf("Drain() = %d at the due time, want 1", n)
		}
		if got := h.got(); !slices.Equal(got, []string{"e1"}) {
			t.Fatalf("handled %v, want [e1]", got)
		}
		if h.when[0].Sub(start) != 5*time.Minute || h.ids[0] != 1 {
			t.Errorf("handled at +%v with ID %d, want +5m0s and ID 1", h.when[0].Sub(start), h.ids[0])
		}
		if st := d.Stats(); st.Scheduled != 0 || st.Queued != 0 || st.Delivered != 1 {
			t.Errorf("after: %+v, want Scheduled 0, Queued 0, Delivered 1", st)
		}
	})
}

// TestAtInThePastIsNow: At a time that has passed (the zero time
// included), or After zero or less, is no delay.
func TestAtInThePastIsNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t)
		var h handledAt
		subscribe(t, d, "later", h.handler)
		emitDelayed(t, d, "", "past", dispatcher.At(time.Now().Add(-time.Hour)))
		emitDelayed(t, d, "", "now", dispatcher.At(time.Now()))
		emitDelayed(t, d, "", "zero-time", dispatcher.At(time.Time{}))
		emitDelayed(t, d, "", "zero", dispatcher.After(0))
		emitDelayed(t, d, "", "negative", dispatcher.After(-time.Second))
		want := []string{"past", "now", "zero-time", "zero", "negative"}
		if st := d.Stats(); st.Scheduled != 0 || st.Queued != len(want) {
			t.Fatalf("Scheduled %d, Queued %d; want 0, %d", st.Scheduled, st.Queued, len(want))
		}
		drain(t, d)
		if got := h.got(); !slices.Equal(got, want) {
			t.Errorf("handled %v, want %v", got, want)
		}
	})
}

// TestDelayedEventsComeByDueTime: delayed events are processed in due time
// order, each in its round, and at their due times, with Tick and Drain and
// under Run; under Run a keyed delayed event takes its place in its key's
// order when it comes due.
func TestDelayedEventsComeByDueTime(t *testing.T) {
	for _, mode := range []string{"Drain", "Run"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDispatcher(t, dispatcher.WithWorkers(2))
				var h handledAt
				subscribe(t, d, "later", h.handler)
				var wait func() error
				if mode == "Run" {
					wait = startRun(t, context.Background(), d)
				}
				start := time.Now()
				emitDelayed(t, d, "k", "3s", dispatcher.After(3*time.Second))
				emitDelayed(t, d, "k", "1s", dispatcher.At(start.Add(time.Second)))
				emitDelayed(t, d, "k", "2s", dispatcher.After(2*time.Second))
				emitDelayed(t, d, "k", "now", nil)
				emitDelayed(t, d, "", "1s-nokey", dispatcher.After(time.Second))
				for range 4 {
					if mode == "Drain" {
						drain(t, d)
					}
					synctest.Wait()
					advanceClock(time.Second)
				}
				if mode == "Run" {
					stopRun(t, context.Background(), d, wait)
				}
				want := []string{"now", "1s", "1s-nokey", "2s", "3s"}
				if got := h.got(); !slices.Equal(got, want) {
					t.Fatalf("handled %v, want %v", got, want)
				}
				wantAt := []time.Duration{0, time.Second, time.Second, 2 * time.Second, 3 * time.Second}
				for i, at := range h.when {
					if at.Sub(start) != wantAt[i] {
						t.Errorf("%s handled at +%v, want +%v", h.what[i], at.Sub(start), wantAt[i])
					}
				}
			})
		})
	}
}

// TestKeyedDelayedEventWaitsForItsKey: under Run, a keyed event that comes
// due while an earlier event of its key runs waits for it.
func TestKeyedDelayedEventWaitsForItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithWorkers(4))
		gate := make(chan struct{})
		var mu sync.Mutex
		var order []string
		subscribe(t, d, "later", func(_ context.Context, e dispatcher.Event) error {
			if e.Payload == "slow" {
				<-gate
			}
			mu.Lock()
			order = append(order, e.Payload.(string))
			mu.Unlock()
			return nil
		})
		wait := startRun(t, context.Background(), d)
		emitDelayed(t, d, "k", "later", dispatcher.After(time.Second))
		emitDelayed(t, d, "k", "slow", nil)
		advanceClock(time.Minute) // "later" is due while "slow" runs
		close(gate)
		stopRun(t, context.Background(), d, wait)
		if !slices.Equal(order, []string{"slow", "later"}) {
			t.Errorf("order %v, want [slow later]", order)
		}
	})
}

// TestShutdownWaitsForDelayedEvents: Shutdown processes delayed events when
// they come due, within its ctx; what its ctx leaves is dropped and
// counted, and OnDone told.
func TestShutdownWaitsForDelayedEvents(t *testing.T) {
	for _, mode := range []string{"without Run", "Run"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDispatcher(t)
				var h handledAt
				subscribe(t, d, "later", h.handler)
				var wait func() error
				if mode == "Run" {
					wait = startRun(t, context.Background(), d)
				}
				var r doneRecorder
				start := time.Now()
				emitWithDone(t, d, &r, "soon", dispatcher.Event{Topic: "later", Payload: "soon"})
				if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later", Payload: "1m"}, dispatcher.After(time.Minute), r.option("1m")); err != nil {
					t.Fatal(err)
				}
				if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later", Payload: "1h"}, dispatcher.After(time.Hour), r.option("1h")); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := d.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown() error = %v, want DeadlineExceeded", err)
				}
				if mode == "Run" {
					if err := wait(); err != nil {
						t.Errorf("Run() error = %v", err)
					}
				}
				if got := h.got(); !slices.Equal(got, []string{"soon", "1m"}) {
					t.Errorf("handled %v, want [soon 1m]", got)
				}
				if h.when[1].Sub(start) != time.Minute {
					t.Errorf("1m handled at +%v", h.when[1].Sub(start))
				}
				if err := r.once(t, "1h"); !errors.Is(err, dispatcher.ErrDropped) {
					t.Errorf("OnDone(1h) = %v, want ErrDropped", err)
				}
				if err := r.once(t, "1m"); err != nil {
					t.Errorf("OnDone(1m) = %v, want nil", err)
				}
				if st := d.Stats(); st.Dropped != 1 || st.Scheduled != 0 {
					t.Errorf("Dropped %d, Scheduled %d; want 1, 0", st.Dropped, st.Scheduled)
				}
			})
		})
	}
}

// TestCloseDropsDelayedEvents: Close discards delayed events, whether a
// consumer has seen them yet or not, and says so.
func TestCloseDropsDelayedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t)
		subscribe(t, d, "later", func(context.Context, dispatcher.Event) error { return nil })
		var r doneRecorder
		if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later"}, dispatcher.After(time.Minute), r.option("seen")); err != nil {
			t.Fatal(err)
		}
		drain(t, d) // a consumer has moved it to the waiting queue
		if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later"}, dispatcher.After(time.Minute), r.option("in ring")); err != nil {
			t.Fatal(err)
		}
		err := d.Close()
		if !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped", err)
		}
		for _, name := range []string{"seen", "in ring"} {
			if err := r.once(t, name); !errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("OnDone(%s) = %v, want ErrDropped", name, err)
			}
		}
		if st := d.Stats(); st.Dropped != 2 || st.Scheduled != 0 || st.Queued != 0 {
			t.Errorf("Stats %+v, want Dropped 2, Scheduled 0, Queued 0", st)
		}
	})
}

// TestDelayedEventsAreBounded: as many delayed events wait as the capacity
// allows; then the overflow policy decides.
func TestDelayedEventsAreBounded(t *testing.T) {
	const capacity = 4
	for _, policy := range []dispatcher.OverflowPolicy{dispatcher.Reject, dispatcher.DropNewest, dispatcher.DropOldest, dispatcher.Block} {
		t.Run(policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(policy))
				var h handledAt
				subscribe(t, d, "later", h.handler)
				var r doneRecorder
				for i := range capacity {
					name := string(rune('a' + i))
					if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later", Payload: name}, dispatcher.After(time.Duration(i+1)*time.Second), r.option(name)); err != nil {
						t.Fatalf("EmitEvent(%s) error = %v", name, err)
					}
				}
				drain(t, d) // into the waiting queue: the ring is free again
				if st := d.Stats(); st.Scheduled != capacity {
					t.Fatalf("Scheduled %d, want %d", st.Scheduled, capacity)
				}
				emitX := func(ctx context.Context) error {
					return d.EmitEvent(ctx, dispatcher.Event{Topic: "later", Payload: "x"}, dispatcher.After(10*time.Second), r.option("x"))
				}
				switch policy {
				case dispatcher.Reject:
					if err := emitX(context.Background()); !errors.Is(err, dispatcher.ErrFull) {
						t.Errorf("EmitEvent error = %v, want ErrFull", err)
					}
				case dispatcher.DropNewest:
					if err := emitX(context.Background()); !errors.Is(err, dispatcher.ErrDropped) {
						t.Errorf("EmitEvent error = %v, want ErrDropped", err)
					}
				case dispatcher.DropOldest:
					if err := emitX(context.Background()); err != nil {
						t.Errorf("EmitEvent error = %v, want nil", err)
					}
					if err := r.once(t, "a"); !errors.Is(err, dispatcher.ErrDropped) {
						t.Errorf("OnDone(a) = %v, want ErrDropped", err)
					}
				case dispatcher.Block:
					ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
					if err := emitX(ctx); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("EmitEvent with a short ctx error = %v, want DeadlineExceeded", err)
					}
					cancel()
					// From a handler it does not wait.
					var fromHandler error
					subscribe(t, d, "probe", func(ctx context.Context, _ dispatcher.Event) error {
						fromHandler = emitX(ctx)
						return nil
					})
					emit(t, d, "probe", "")
					drain(t, d)
					if !errors.Is(fromHandler, dispatcher.ErrFull) {
						t.Errorf("EmitEvent from a handler error = %v, want ErrFull", fromHandler)
					}
					done := make(chan error, 1)
					go func() { done <- emitX(context.Background()) }()
					synctest.Wait()
					select {
					case err := <-done:
						t.Fatalf("EmitEvent returned %v while the delayed events were full", err)
					default:
					}
					advanceClock(time.Second) // a is due
					drain(t, d)               // and leaves the waiting queue
					if err := recv(t, done, "the blocked EmitEvent"); err != nil {
						t.Errorf("blocked EmitEvent error = %v", err)
					}
				}
				advanceClock(time.Minute)
				drain(t, d)
				want := map[dispatcher.OverflowPolicy][]string{
					dispatcher.Reject:     {"a", "b", "c", "d"},
					dispatcher.DropNewest: {"a", "b", "c", "d"},
					dispatcher.DropOldest: {"b", "c", "d", "x"},
					dispatcher.Block:      {"a", "b", "c", "d", "x"},
				}[policy]
				if got := h.got(); !slices.Equal(got, want) {
					t.Errorf("handled %v, want %v", got, want)
				}
				if st := d.Stats(); st.Scheduled != 0 {
					t.Errorf("Scheduled %d at the end, want 0", st.Scheduled)
				}
			})
		})
	}
}

// TestDropOldestCancelsADelayedEventInTheRing: when every delayed event is
// still in the ring, DropOldest discards the one emitted first where it
// is: counted and told at once, skipped when a consumer comes to it.
func TestDropOldestCancelsADelayedEventInTheRing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithCapacity(8), dispatcher.WithOverflow(dispatcher.DropOldest))
		var h handledAt
		subscribe(t, d, "later", h.handler)
		var r doneRecorder
		for i := range 9 {
			name := string(rune('a' + i))
			if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later", Payload: name}, dispatcher.After(time.Second), r.option(name)); err != nil {
				t.Fatalf("EmitEvent(%s) error = %v", name, err)
			}
		}
		if err := r.once(t, "a"); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("OnDone(a) = %v, want ErrDropped", err)
		}
		if st := d.Stats(); st.Dropped != 1 || st.Scheduled != 8 || st.Queued != 0 || st.Emitted != 9 {
			t.Errorf("Stats %+v, want Dropped 1, Scheduled 8, Queued 0, Emitted 9", st)
		}
		advanceClock(time.Second)
		drain(t, d)
		if got := h.got(); !slices.Equal(got, []string{"b", "c", "d", "e", "f", "g", "h", "i"}) {
			t.Errorf("handled %v, want b to i", got)
		}
		if st := d.Stats(); st.Dropped != 1 || st.Scheduled != 0 || st.Queued != 0 {
			t.Errorf("Stats %+v at the end, want Dropped 1, Scheduled 0, Queued 0", st)
		}
		if n := dispatcher.Outstanding(d); n != 0 {
			t.Errorf("Flush's ledger counts %d jobs outside the ring, want 0", n)
		}
	})
}

// TestManyDelayedEventsCostMemoryNotGoroutines: delayed events spread over
// an hour wait in one queue under one timer: no goroutine each, a bounded
// number of bytes each, and every one is handled at its time. The stress
// build runs it with a million (TestStressMillionDelayedEvents).
func TestManyDelayedEventsCostMemoryNotGoroutines(t *testing.T) {
	checkManyDelayed(t, sizeFor(50_000, 10_000))
}

func checkManyDelayed(t *testing.T, n int) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithCapacity(n), dispatcher.WithWorkers(2))
		var handled atomic.Int64
		var late atomic.Int64
		subscribe(t, d, "later", func(_ context.Context, e dispatcher.Event) error {
			handled.Add(1)
			if due := e.Payload.(time.Time); time.Now().Before(due) {
				late.Add(1) // early, in fact: counted to fail the test
			}
			return nil
		})
		wait := startRun(t, context.Background(), d)
		synctest.Wait()
		goroutines := runtime.NumGoroutine()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		for i := range n {
			due := start.Add(time.Duration(i) * time.Hour / time.Duration(n)).Add(time.Second)
			if err := d.EmitEvent(context.Background(), dispatcher.Event{Topic: "later", Payload: due}, dispatcher.At(due)); err != nil {
				t.Fatalf("EmitEvent %d error = %v", i, err)
			}
		}
		synctest.Wait()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if st := d.Stats(); st.Scheduled != n {
			t.Fatalf("Scheduled %d, want %d", st.Scheduled, n)
		}
		// NumGoroutine counts the whole process: a goroutine of an earlier test
		// that has signalled its end but not yet exited may leave in between,
		// so only growth is a failure.
		if g := runtime.NumGoroutine(); g > goroutines {
			t.Errorf("%d goroutines with %d delayed events, %d before", g, n, goroutines)
		}
		perEvent := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(n)
		if perEvent > 512 {
			t.Errorf("%d bytes of heap per delayed event, want at most 512", perEvent)
		}
		t.Logf("%d delayed events: %d bytes of heap each", n, perEvent)
		advanceClock(time.Hour + time.Minute)
		synctest.Wait()
		if handled.Load() != int64(n) || late.Load() != 0 {
			t.Errorf("handled %d of %d, %d before their due time", handled.Load(), n, late.Load())
		}
		stopRun(t, context.Background(), d, wait)
	})
}

// gateProp is a Propagator whose Extract holds an emit whose ctx carries
// gateKey: it says so on arrived and waits for proceed. Extract runs after
// the emit's state check and before its event is queued, so the held emit
// goes on as one that began before a Close.
type gateProp struct{ arrived, proceed chan struct{} }

type gateKey struct{}

func (g gateProp) Extract(ctx context.Context) any {
	if ctx.Value(gateKey{}) != nil {
		g.arrived <- struct{}{}
		<-g.proceed
	}
	return nil
}

func (gateProp) Inject(ctx context.Context, _ any) context.Context { return ctx }

// TestCloseRacingADelayedEmitUnderDropOldest: Close has taken the waiting
// delayed events out of the time heap and is dropping what was pending,
// a due retry first, when a delayed emit that began before it finds every
// delayed place taken and, under DropOldest, discards the first delayed
// event, which still counts as waiting. That event must be dropped once,
// not looked for in the emptied heap (which panicked), and everything
// else accounted for exactly once.
func TestCloseRacingADelayedEmitUnderDropOldest(t *testing.T) {
	const capacity = 4
	synctest.Test(t, func(t *testing.T) {
		gate := gateProp{arrived: make(chan struct{}), proceed: make(chan struct{})}
		emitted := make(chan error, 1)
		var lateErr error
		var released sync.Once
		d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.DropOldest),
			dispatcher.WithPropagator(gate),
			dispatcher.WithObserver(dispatcher.Observer{Dropped: func(_ context.Context, dr dispatcher.Drop) {
				if dr.Subscriber == "" {
					return // an event's drop, not the retry's
				}
				// Close drops the due retry before the delayed events:
				// let the held emit go on now, and wait for it.
				released.Do(func() {
					gate.proceed <- struct{}{}
					lateErr = <-emitted
				})
			}}))
		subscribe(t, d, "job", func(context.Context, dispatcher.Event) error { return errors.New("fails") },
			dispatcher.WithName("failing"), dispatcher.WithRetry(3, nil))
		subscribe(t, d, "later", func(context.Context, dispatcher.Event) error { return nil })
		ctx := context.Background()
		emit(t, d, "job", nil)
		if _, err := d.Tick(ctx); err != nil { // the job fails: its retry is due at once
			t.Fatalf("Tick() error = %v", err)
		}
		var r doneRecorder
		names := []string{"a", "b", "c", "d"}
		for _, name := range names {
			if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "later"}, dispatcher.After(time.Hour), r.option(name)); err != nil {
				t.Fatalf("EmitEvent(%s) error = %v", name, err)
			}
		}
		if _, err := d.Tick(ctx); err != nil { // the retry fails, the next is due at once; the delayed events wait
			t.Fatalf("Tick() error = %v", err)
		}
		if st := d.Stats(); st.Scheduled != capacity || st.Retrying != 1 {
			t.Fatalf("Stats %+v, want Scheduled %d and Retrying 1", st, capacity)
		}
		go func() {
			emitted <- d.EmitEvent(context.WithValue(ctx, gateKey{}, true), dispatcher.Event{Topic: "later"}, dispatcher.After(time.Hour), r.option("late"))
		}()
		<-gate.arrived
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() error = %v, want ErrDropped", err)
		}
		if !errors.Is(lateErr, dispatcher.ErrClosed) {
			t.Errorf("the emit held across Close: %v, want ErrClosed", lateErr)
		}
		for _, name := range names {
			if err := r.once(t, name); !errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("OnDone(%s) = %v, want ErrDropped", name, err)
			}
		}
		if calls := r.calls("late"); len(calls) != 0 {
			t.Errorf("OnDone of the refused emit called: %v", calls)
		}
		if st := d.Stats(); st.Dropped != 1+capacity || st.Failed != 2 || st.Scheduled != 0 || st.Queued != 0 || st.Retrying != 0 {
			t.Errorf("Stats %+v, want Dropped %d and nothing pending", st, 1+capacity)
		}
	})
}

// TestStatsWhileADelayedEmitWaitsForRoom: under Block, a delayed emit
// that waits for room in a full ring is not accepted yet: Stats counts it
// neither as scheduled nor against the events queued. It reserves its
// delayed place and counts itself as in the ring (so that a consumer that
// pops it postpones it) before it waits, and Stats read a full ring of 4
// as Queued 3, Scheduled 1 for as long as it waited.
func TestStatsWhileADelayedEmitWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const capacity = 4
		d := newDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.Block))
		subscribe(t, d, "now", func(context.Context, dispatcher.Event) error { return nil })
		subscribe(t, d, "later", func(context.Context, dispatcher.Event) error { return nil })
		for range capacity {
			emit(t, d, "now", nil)
		}
		ctx := context.Background()
		emitted := make(chan error, 1)
		go func() {
			emitted <- d.EmitEvent(ctx, dispatcher.Event{Topic: "later"}, dispatcher.After(time.Hour))
		}()
		synctest.Wait() // the delayed emit waits for room
		if st := d.Stats(); st.Queued != capacity || st.Scheduled != 0 || st.Emitted != capacity {
			t.Errorf("Stats %+v while a delayed emit waits for room, want Queued %d, Scheduled 0, Emitted %d", st, capacity, capacity)
		}
		drain(t, d)
		if err := <-emitted; err != nil {
			t.Fatalf("EmitEvent error = %v", err)
		}
		if st := d.Stats(); st.Queued != 0 || st.Scheduled != 1 {
			t.Errorf("Stats %+v once accepted, want Queued 0, Scheduled 1", st)
		}
	})
}

// TestDrainLimitCountsOnlyProcessedEvents: Drain's limit counts the events
// it processes, not the delayed ones it moves to the time heap on the way:
// Drain(ctx, 1) with a delayed event ahead of a ready one processes the
// ready one. It returned 0 with the ready event still queued, so a caller
// draining one at a time until 0 stopped with work left.
func TestDrainLimitCountsOnlyProcessedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t)
		h := record(t, d, "now")
		subscribe(t, d, "later", func(context.Context, dispatcher.Event) error { return nil })
		ctx := context.Background()
		if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "later"}, dispatcher.After(time.Hour)); err != nil {
			t.Fatalf("EmitEvent error = %v", err)
		}
		emit(t, d, "now", nil)
		n, err := d.Drain(ctx, 1)
		if err != nil {
			t.Fatalf("Drain(1) error = %v", err)
		}
		if n != 1 || len(*h) != 1 {
			t.Errorf("Drain(1) = %d, handled %d, with a ready event queued behind a delayed one; want 1 and 1 (Stats %+v)", n, len(*h), d.Stats())
		}
	})
}
