package dispatcher_test

// Delivery order: FIFO across topics and subscription order under Tick and
// Drain, per-key order under Run.

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestGlobalFIFOAcrossTopics(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	for _, p := range []string{"a", "b", "c.d", "c.*"} {
		subscribe(t, d, p, l.handler(p, nil))
	}
	ctx := context.Background()
	topics := []string{"b", "a", "c.d", "a", "b", "c.e", "c.d"}
	for i, topic := range topics {
		if i%2 == 0 {
			emitTopics(t, d, topic)
			continue
		}
		if err := d.EmitEvent(ctx, dispatcher.Event{Topic: topic, Key: "k"}); err != nil {
			t.Fatalf("EmitEvent(%q) error = %v", topic, err)
		}
	}
	if n := drain(t, d); n != len(topics) {
		t.Errorf("Drain(0) = %d, want %d", n, len(topics))
	}
	checkCalls(t, "global FIFO", &l,
		"b:1", "a:2", "c.d:3", "c.*:3", "a:4", "b:5", "c.*:6", "c.d:7", "c.*:7")
}

func TestHandlersRunInSubscriptionOrder(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	// Exact and wildcard subscriptions, interleaved.
	for i, p := range []string{"run.finished", "run.*", ">", "run.finished", "run.>", "*.finished", "other", "*.*"} {
		name := fmt.Sprintf("%d(%s)", i+1, p)
		subscribe(t, d, p, l.handler(name, nil))
	}
	tests := []struct {
		give string
		want []string
	}{
		{"run.finished", []string{"1(run.finished)", "2(run.*)", "3(>)", "4(run.finished)", "5(run.>)", "6(*.finished)", "8(*.*)"}},
		{"run.started", []string{"2(run.*)", "3(>)", "5(run.>)", "8(*.*)"}},
		{"run.a.b", []string{"3(>)", "5(run.>)"}},
		{"job.finished", []string{"3(>)", "6(*.finished)", "8(*.*)"}},
		{"other", []string{"3(>)", "7(other)"}},
		{"run", []string{"3(>)"}},
	}
	for i, tt := range tests {
		emitTopics(t, d, tt.give)
		drain(t, d)
		var got []string
		suffix := fmt.Sprintf(":%d", i+1)
		for _, c := range l.get() {
			if s, ok := strings.CutSuffix(c, suffix); ok {
				got = append(got, s)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("handlers for %q = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestSubscriptionOrderAfterUnsubscribeAndResubscribe(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	a := subscribe(t, d, "t", l.handler("a", nil))
	subscribe(t, d, "*", l.handler("b", nil))
	a.Unsubscribe()
	subscribe(t, d, "t", l.handler("a2", nil))
	subscribe(t, d, ">", l.handler("c", nil))
	emitTopics(t, d, "t")
	drain(t, d)
	checkCalls(t, "order", &l, "b:1", "a2:1", "c:1")
}

// orderPayload is what the ordering tests emit: a keyed event carries its
// key's index and its sequence number within the key (0, 1, 2, ...); an
// unkeyed event has key -1 and a unique seq.
type orderPayload struct {
	key int
	seq int
}

// orderConfig sizes one ordering run.
type orderConfig struct {
	workers  int
	capacity int
	keys     int // keys, spread over the producers: key k belongs to producer k%producers
	perKey   int // events per key
	unkeyed  int // unkeyed events per producer per round (a round emits one event of each owned key)
}

// runOrder runs cfg under Run with 4 producers and 2 subscribers, and checks
// that each subscriber sees each key's events in emit order and never two
// of one key at once, and gets every unkeyed event exactly once.
func runOrder(t *testing.T, cfg orderConfig) {
	t.Helper()
	const producers, subs = 4, 2
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithWorkers(cfg.workers), dispatcher.WithCapacity(cfg.capacity))

	keyNames := make([]string, cfg.keys)
	for k := range keyNames {
		keyNames[k] = fmt.Sprintf("key-%d", k)
	}
	type keyState struct {
		inflight atomic.Int32 // calls of this subscriber for this key running now
		last     atomic.Int64 // the last seq seen
		_        [64 - 12]byte
	}
	unkeyedTotal := producers * cfg.perKey * cfg.unkeyed
	state := make([][]keyState, subs)
	unkeyed := make([][]atomic.Int32, subs)
	var (
		orderErrs, concErrs, keyErrs atomic.Int64
		msgMu                        sync.Mutex
		msgs                         []string // the first few violations
	)
	report := func(format string, args ...any) {
		msgMu.Lock()
		if len(msgs) < 10 {
			msgs = append(msgs, fmt.Sprintf(format, args...))
		}
		msgMu.Unlock()
	}
	for s := range subs {
		state[s] = make([]keyState, cfg.keys)
		for k := range state[s] {
			state[s][k].last.Store(-1)
		}
		unkeyed[s] = make([]atomic.Int32, unkeyedTotal)
		subscribe(t, d, "order.>", func(hctx context.Context, e dispatcher.Event) error {
			p := e.Payload.(orderPayload)
			if p.key < 0 {
				unkeyed[s][p.seq].Add(1)
				return nil
			}
			if e.Key != keyNames[p.key] {
				keyErrs.Add(1)
				report("sub%d: event %d has Key %q, want %q", s, e.ID, e.Key, keyNames[p.key])
			}
			ks := &state[s][p.key]
			if n := ks.inflight.Add(1); n != 1 {
				concErrs.Add(1)
				report("sub%d, %s: %d calls at once (seq %d)", s, keyNames[p.key], n, p.seq)
			}
			if p.seq%8 == 0 {
				runtime.Gosched() // widen the window for a second call of the key
			}
			if prev := ks.last.Swap(int64(p.seq)); prev != int64(p.seq)-1 {
				orderErrs.Add(1)
				report("sub%d, %s: seq %d after %d", s, keyNames[p.key], p.seq, prev)
			}
			ks.inflight.Add(-1)
			return nil
		}, dispatcher.WithName(fmt.Sprintf("sub%d", s)))
	}

	wait := startRun(t, ctx, d)
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for pr := range producers {
		wg.Go(func() {
			next := pr * cfg.perKey * cfg.unkeyed // this producer's unkeyed seqs
			for r := range cfg.perKey {
				for k := pr; k < cfg.keys; k += producers {
					e := dispatcher.Event{Topic: "order.keyed", Key: keyNames[k], Payload: orderPayload{key: k, seq: r}}
					if err := d.EmitEvent(ctx, e); err != nil {
						errs[pr] = fmt.Errorf("EmitEvent(key %d, seq %d): %w", k, r, err)
						return
					}
				}
				for range cfg.unkeyed {
					if err := d.Emit(ctx, "order.free", orderPayload{key: -1, seq: next}); err != nil {
						errs[pr] = fmt.Errorf("Emit(unkeyed %d): %w", next, err)
						return
					}
					next++
				}
			}
		})
	}
	wg.Wait()
	shutdownAfterProducers(t, ctx, d, wait, errs)

	if n := orderErrs.Load() + concErrs.Load() + keyErrs.Load(); n > 0 {
		t.Errorf("%d order violations, %d concurrent calls for one key, %d wrong keys; first: %q",
			orderErrs.Load(), concErrs.Load(), keyErrs.Load(), msgs)
	}
	for s := range subs {
		for k := range cfg.keys {
			if got := state[s][k].last.Load(); got != int64(cfg.perKey-1) {
				t.Errorf("sub%d, %s: last seq %d, want %d", s, keyNames[k], got, cfg.perKey-1)
			}
		}
		missing := 0
		for i := range unkeyed[s] {
			if unkeyed[s][i].Load() != 1 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("sub%d: %d of %d unkeyed events not delivered exactly once", s, missing, unkeyedTotal)
		}
	}
	total := uint64(cfg.keys*cfg.perKey + unkeyedTotal)
	st := d.Stats()
	if st.Emitted != total || st.Delivered != subs*total || st.Failed != 0 || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("Stats() = %+v, want Emitted %d, Delivered %d, nothing failed, dropped or queued", st, total, subs*total)
	}
}

// TestOrderPerKeyUnderRun: under Run, events of one key reach each
// subscriber in emit order and one at a time, with 1 to 8 workers, several
// producers, and unkeyed events in between; with a small capacity the key
// backlogs hit their bound too.
func TestOrderPerKeyUnderRun(t *testing.T) {
	orderPerKey(t, sizeFor(1000, 100))
}

// TestOrderHotKeys: few keys and many workers, so most takes find the key
// owned and queue behind it.
func TestOrderHotKeys(t *testing.T) {
	orderHotKeys(t, []int{4, 8}, sizeFor(5000, 500))
}

// orderPerKey is TestOrderPerKeyUnderRun with perKey events for each of 50
// keys.
func orderPerKey(t *testing.T, perKey int) {
	for _, workers := range []int{1, 2, 4, 8} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			for _, capacity := range []int{8, 1024} {
				t.Run(fmt.Sprintf("cap=%d", capacity), func(t *testing.T) {
					runOrder(t, orderConfig{workers: workers, capacity: capacity, keys: 50, perKey: perKey, unkeyed: 2})
				})
			}
		})
	}
}

// orderHotKeys is TestOrderHotKeys with perKey events for each of 4 keys,
// for each number of workers.
func orderHotKeys(t *testing.T, workers []int, perKey int) {
	for _, w := range workers {
		t.Run(fmt.Sprintf("workers=%d", w), func(t *testing.T) {
			runOrder(t, orderConfig{workers: w, capacity: 64, keys: 4, perKey: perKey, unkeyed: 1})
		})
	}
}

// TestHotKeyDoesNotBlockOtherKeys: under Run, a key whose handler is
// slow delays its own events only. Two cases, two workers, a hot key whose
// handler blocks on each call until the test releases it:
//   - cold queued behind hot: hot1..hot4, cold, hot5..hot8 are queued
//     before Run. The worker that takes hot1 may take cold in the same
//     batch; once hot1 returns, cold must run without waiting for hot2..hot8
//     (the next hot event is handed to the other worker, not run first).
//   - cold emitted while hot blocks: the other worker is idle and runs it.
func TestHotKeyDoesNotBlockOtherKeys(t *testing.T) {
	for _, when := range []string{"queued behind hot", "emitted while hot blocks"} {
		t.Run(when, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const hot = 8
				ctx := context.Background()
				d := newDispatcher(t, dispatcher.WithWorkers(2))
				entered := make(chan struct{}, hot)
				release := make(chan struct{})
				cold := make(chan struct{}, 1)
				subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
					switch e.Key {
					case "hot":
						entered <- struct{}{}
						<-release // ignores ctx, as a stuck handler does
					case "cold":
						cold <- struct{}{}
					}
					return nil
				})
				var wait func() error
				if when == "queued behind hot" {
					for i := range hot {
						if i == hot/2 {
							emitKeyed(t, d, "t", "cold", nil)
						}
						emitKeyed(t, d, "t", "hot", nil)
					}
					wait = startRun(t, ctx, d)
					recvOK(t, entered, "call of the hot handler")
					release <- struct{}{} // hot1 returns; hot2 may start and block
				} else {
					wait = startRun(t, ctx, d)
					for range hot {
						emitKeyed(t, d, "t", "hot", nil)
					}
					if _, ok := recvOK(t, entered, "call of the hot handler"); ok {
						emitKeyed(t, d, "t", "cold", nil)
					}
				}
				recvOK(t, cold, "call of the cold handler while the hot handler blocks (head-of-line blocking across keys)")
				close(release)
				stopRun(t, ctx, d, wait)
				if st := d.Stats(); st.Delivered != hot+1 {
					t.Errorf("Stats().Delivered = %d, want %d", st.Delivered, hot+1)
				}
			})
		})
	}
}
