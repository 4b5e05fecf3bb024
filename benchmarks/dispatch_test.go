package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/alitto/pond/v2"
	"github.com/cskr/pubsub/v2"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/internal/shardcount"
)

// The dispatch benchmarks publish events on one topic that subs handlers
// subscribe to, from producers goroutines, and stop the clock when every
// handler call has run. One op is one published event: ns/op is ns per
// event, from publish to its last handler call, with subs handler calls in
// it. The handler counts its call (tally.Add) and nothing else, so what is
// measured is the bus; the clock stops when the count reaches b.N × subs.
//
// Every bus holds at most about dispatchCap events in flight: the ones
// with a bound of their own are given that bound, and watermill's
// gochannel, which has none (Publish starts a goroutine per event and
// subscriber and returns), is held to it by the producers (see window).

// dispatchCap is every bus's queue bound: the dispatcher's default.
const dispatchCap = 1024

// dispatchWorkers is how many goroutines run handlers where the bus lets
// the user choose: GOMAXPROCS on the machine of the published results.
const dispatchWorkers = 2

const benchTopic = "bench.event"

// tally counts handler calls (shardcount.Counter: a shard per goroutine,
// so counting costs every bus the same uncontended atomic add per handler
// call; a single shared counter took more than half of ringbus's CPU time
// with 10 subscribers, its two workers fighting over one cache line, and
// measured the harness instead of the bus) and knows how many to wait for.
type tally struct {
	shardcount.Counter
	want int64
}

func newTally(want int64) *tally { return &tally{want: want} }

// wait returns when want calls were counted, yielding the processor
// between looks. It runs after the producers returned, when at most
// dispatchCap events are left to handle.
func (t *tally) wait() { t.waitUntil(time.Time{}) }

// waitUntil is wait that gives up at deadline, unless deadline is zero. It
// reports whether want calls were counted.
func (t *tally) waitUntil(deadline time.Time) bool {
	for t.Load() < t.want {
		if !deadline.IsZero() && time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
	}
	return true
}

// bus adapts one event bus to the benchmark: subs handlers, each calling
// t.Add, subscribed to benchTopic.
type bus interface {
	// publish publishes one event with payload p on benchTopic, waiting
	// while the bus is full.
	publish(p *item)
	// close stops the bus and joins every goroutine it started.
	close() error
}

// busImpls lists the buses in the order of the result tables: ringbus
// first, so benchstat compares every other column with it.
var busImpls = []struct {
	name string
	new  func(subs int, t *tally) (bus, error)
}{
	{"ringbus", newRingbusBus},
	{"watermill", newWatermillBus},
	{"cskr", newCskrBus},
	{"pond", newPondBus},
	{"baseline", newBaselineBus},
}

func BenchmarkDispatch(b *testing.B) {
	for _, subs := range []int{1, 10} {
		for _, producers := range []int{1, 4} {
			for _, impl := range busImpls {
				name := fmt.Sprintf("subs=%d/producers=%d/impl=%s", subs, producers, impl.name)
				b.Run(name, func(b *testing.B) { benchDispatch(b, impl.new, subs, producers) })
			}
		}
	}
}

// benchDispatch publishes b.N events from producers goroutines through the
// bus newBus makes with subs handlers, and stops the clock when every
// handler call ran.
func benchDispatch(b *testing.B, newBus func(subs int, t *tally) (bus, error), subs, producers int) {
	b.ReportAllocs()
	t := newTally(int64(b.N) * int64(subs))
	bs, err := newBus(subs, t)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	publishAll(bs, producers, b.N)
	t.wait()
	b.StopTimer()
	if err := bs.close(); err != nil {
		b.Fatal(err)
	}
}

// publishAll publishes n events on bs from producers goroutines, each
// publishing its share, and returns when they all returned.
func publishAll(bs bus, producers, n int) {
	var wg sync.WaitGroup
	for i := range producers {
		k := share(n, producers, i)
		wg.Go(func() {
			for range k {
				bs.publish(&items[0])
			}
		})
	}
	wg.Wait()
}

// ringbusBus is the dispatcher under Run with dispatchWorkers workers and
// the default capacity (1024) and overflow policy (Block).
type ringbusBus struct {
	d   *dispatcher.Dispatcher
	run chan error
}

func newRingbusBus(subs int, t *tally) (bus, error) {
	d, err := dispatcher.New(dispatcher.WithWorkers(dispatchWorkers), dispatcher.WithCapacity(dispatchCap))
	if err != nil {
		return nil, err
	}
	for range subs {
		if _, err := d.On(benchTopic, func(context.Context, dispatcher.Event) error {
			t.Add()
			return nil
		}); err != nil {
			return nil, err
		}
	}
	r := &ringbusBus{d: d, run: make(chan error, 1)}
	go func() { r.run <- d.Run(context.Background()) }()
	return r, nil
}

func (r *ringbusBus) publish(p *item) {
	if err := r.d.Emit(context.Background(), benchTopic, p); err != nil {
		panic(err) // Block never fails before Shutdown
	}
}

func (r *ringbusBus) close() error {
	err := r.d.Shutdown(context.Background())
	if rerr := <-r.run; !errors.Is(rerr, dispatcher.ErrClosed) { // ErrClosed: Shutdown won the race with Run's start
		err = errors.Join(err, rerr)
	}
	return err
}

// watermillBus is watermill's in-memory Pub/Sub, pubsub/gochannel: one
// Subscribe per subscriber, each read by its own goroutine that runs the
// handler and acks the message (gochannel sends a subscriber its next
// message only after the ack).
//
// gochannel's Publish does not wait: it starts a goroutine per message and
// subscriber and returns. Nothing bounds how many wait, so the producers
// bound it themselves (window), at dispatchCap events in flight like the
// other buses; without it a run would measure memory growth. The message
// UUID is a constant: generating one (watermill.NewUUID) would add its cost
// to watermill's.
type watermillBus struct {
	g      *gochannel.GoChannel
	t      *tally
	subs   int64
	issued atomic.Int64
	wg     sync.WaitGroup
}

var watermillPayload = message.Payload("event")

func newWatermillBus(subs int, t *tally) (bus, error) {
	g := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: dispatchCap}, watermill.NopLogger{})
	w := &watermillBus{g: g, t: t, subs: int64(subs)}
	for range subs {
		msgs, err := g.Subscribe(context.Background(), benchTopic)
		if err != nil {
			return nil, errors.Join(err, g.Close())
		}
		w.wg.Go(func() {
			for msg := range msgs { // closed by g.Close
				t.Add()
				msg.Ack()
			}
		})
	}
	return w, nil
}

func (w *watermillBus) publish(*item) {
	w.window()
	if err := w.g.Publish(benchTopic, message.NewMessage("bench", watermillPayload)); err != nil {
		panic(err) // closed: never before close
	}
}

// window waits while more than dispatchCap events are in flight:
// published, and not yet handled by every subscriber. It looks at the
// count every windowStep events only, as summing the shards is not free.
func (w *watermillBus) window() {
	n := w.issued.Add(1)
	if n%windowStep != 0 {
		return
	}
	for (n-dispatchCap)*w.subs > w.t.Load() {
		runtime.Gosched()
	}
}

const windowStep = 64

func (w *watermillBus) close() error {
	err := w.g.Close() // closes every subscription's channel
	w.wg.Wait()
	return err
}

// cskrBus is cskr/pubsub: one goroutine owns the topic table and sends
// each published message to every subscriber's channel (capacity
// dispatchCap), each read by its own goroutine that runs the handler.
type cskrBus struct {
	ps *pubsub.PubSub[string, *item]
	wg sync.WaitGroup
}

func newCskrBus(subs int, t *tally) (bus, error) {
	c := &cskrBus{ps: pubsub.New[string, *item](dispatchCap)}
	for range subs {
		ch := c.ps.Sub(benchTopic)
		c.wg.Go(func() {
			for range ch { // closed by Shutdown
				t.Add()
			}
		})
	}
	return c, nil
}

func (c *cskrBus) publish(p *item) { c.ps.Pub(p, benchTopic) }

func (c *cskrBus) close() error {
	c.ps.Shutdown()
	c.wg.Wait()
	return nil
}

// pondBus is a pond worker pool (at most dispatchWorkers workers, a queue
// of dispatchCap tasks, blocking submit) with the same topic table as the
// baseline: publish looks up the topic's handlers and submits one task per
// handler call. pond is a worker pool, not a bus: this is what a user
// builds on it.
type pondBus struct {
	pool pond.Pool
	mu   sync.RWMutex
	subs map[string][]func(*item)
}

func newPondBus(subs int, t *tally) (bus, error) {
	pb := &pondBus{
		pool: pond.NewPool(dispatchWorkers, pond.WithQueueSize(dispatchCap)),
		subs: make(map[string][]func(*item)),
	}
	for range subs {
		pb.subs[benchTopic] = append(pb.subs[benchTopic], func(*item) { t.Add() })
	}
	return pb, nil
}

func (pb *pondBus) publish(p *item) {
	pb.mu.RLock()
	hs := pb.subs[benchTopic]
	pb.mu.RUnlock()
	for _, h := range hs {
		if err := pb.pool.Go(func() { h(p) }); err != nil {
			panic(err) // stopped: never before close
		}
	}
}

func (pb *pondBus) close() error {
	pb.pool.StopAndWait()
	return nil
}

// baselineBus is the bus one writes by hand: a buffered channel of events
// (capacity dispatchCap) read by dispatchWorkers goroutines, each looking up
// the topic's handlers in a map behind a sync.RWMutex and calling them.
type baselineBus struct {
	ch   chan baselineEvent
	mu   sync.RWMutex
	subs map[string][]func(*item)
	wg   sync.WaitGroup
}

type baselineEvent struct {
	topic   string
	payload *item
}

func newBaselineBus(subs int, t *tally) (bus, error) {
	bb := &baselineBus{
		ch:   make(chan baselineEvent, dispatchCap),
		subs: make(map[string][]func(*item)),
	}
	for range subs {
		bb.subs[benchTopic] = append(bb.subs[benchTopic], func(*item) { t.Add() })
	}
	for range dispatchWorkers {
		bb.wg.Go(func() {
			for ev := range bb.ch {
				bb.mu.RLock()
				hs := bb.subs[ev.topic]
				bb.mu.RUnlock()
				for _, h := range hs {
					h(ev.payload)
				}
			}
		})
	}
	return bb, nil
}

func (bb *baselineBus) publish(p *item) { bb.ch <- baselineEvent{topic: benchTopic, payload: p} }

func (bb *baselineBus) close() error {
	close(bb.ch)
	bb.wg.Wait()
	return nil
}

// emitDrainBatch is how many events BenchmarkEmitDrain emits before each
// Drain.
const emitDrainBatch = 64

// BenchmarkEmitDrain is the deterministic path, on one goroutine: ringbus
// emits emitDrainBatch events, then Drain runs their handlers; direct calls
// the same handlers with the same events, with no queue at all. The
// difference is what the queue, the topic match and the handler isolation
// cost per event.
func BenchmarkEmitDrain(b *testing.B) {
	for _, subs := range []int{1, 10} {
		b.Run(fmt.Sprintf("subs=%d/impl=ringbus", subs), func(b *testing.B) {
			b.ReportAllocs()
			var calls int
			d, err := emitDrainDispatcher(subs, &calls)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			err = emitDrain(d, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if calls != b.N*subs {
				b.Fatalf("handlers ran %d times, want %d", calls, b.N*subs)
			}
			if err := d.Close(); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(fmt.Sprintf("subs=%d/impl=direct", subs), func(b *testing.B) {
			b.ReportAllocs()
			var calls int
			hs := make([]dispatcher.Handler, subs)
			for i := range hs {
				hs[i] = countingHandler(&calls)
			}
			b.ResetTimer()
			err := callDirect(hs, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if calls != b.N*subs {
				b.Fatalf("handlers ran %d times, want %d", calls, b.N*subs)
			}
		})
	}
}

func countingHandler(calls *int) dispatcher.Handler {
	return func(context.Context, dispatcher.Event) error {
		*calls++
		return nil
	}
}

func emitDrainDispatcher(subs int, calls *int) (*dispatcher.Dispatcher, error) {
	d, err := dispatcher.New()
	if err != nil {
		return nil, err
	}
	for range subs {
		if _, err := d.On(benchTopic, countingHandler(calls)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// emitDrain emits n events on d, emitDrainBatch at a time, each batch
// followed by a Drain.
func emitDrain(d *dispatcher.Dispatcher, n int) error {
	ctx := context.Background()
	for n > 0 {
		k := min(n, emitDrainBatch)
		for range k {
			if err := d.Emit(ctx, benchTopic, &items[0]); err != nil {
				return err
			}
		}
		if got, err := d.Drain(ctx, 0); got != k || err != nil {
			return fmt.Errorf("Drain(0) = %d, %v, want %d, nil", got, err, k)
		}
		n -= k
	}
	return nil
}

// callDirect calls every handler with each of n events, as Drain would.
func callDirect(hs []dispatcher.Handler, n int) error {
	ctx := context.Background()
	for i := range n {
		ev := dispatcher.Event{ID: uint64(i) + 1, Topic: benchTopic, Payload: &items[0], Attempt: 1}
		for _, h := range hs {
			if err := h(ctx, ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestBuses checks every adapter in every dispatch shape: each handler
// runs once per event, and close leaves no goroutine behind (goleak, in
// TestMain).
func TestBuses(t *testing.T) {
	const n = 300 // small under -race, and still several worker batches
	for _, subs := range []int{1, 10} {
		for _, producers := range []int{1, 4} {
			for _, impl := range busImpls {
				name := fmt.Sprintf("subs=%d/producers=%d/impl=%s", subs, producers, impl.name)
				tl := newTally(int64(n * subs))
				bs, err := impl.new(subs, tl)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				publishAll(bs, producers, n)
				if !tl.waitUntil(time.Now().Add(30 * time.Second)) { // a hung bus fails, not the whole run
					t.Errorf("%s: %d handler calls after 30s, want %d", name, tl.Load(), n*subs)
				}
				if err := bs.close(); err != nil {
					t.Errorf("%s: close() = %v", name, err)
				}
				if got := tl.Load(); got != int64(n*subs) {
					t.Errorf("%s: %d handler calls, want %d", name, got, n*subs)
				}
			}
		}
	}
}

func TestEmitDrain(t *testing.T) {
	const n = 200 // three full batches and a partial one
	for _, subs := range []int{1, 10} {
		var calls int
		d, err := emitDrainDispatcher(subs, &calls)
		if err != nil {
			t.Fatal(err)
		}
		if err := emitDrain(d, n); err != nil {
			t.Errorf("subs=%d: emitDrain: %v", subs, err)
		}
		if calls != n*subs {
			t.Errorf("subs=%d: Drain ran %d handler calls, want %d", subs, calls, n*subs)
		}
		if err := d.Close(); err != nil {
			t.Errorf("subs=%d: Close() = %v", subs, err)
		}
		calls = 0
		hs := make([]dispatcher.Handler, subs)
		for i := range hs {
			hs[i] = countingHandler(&calls)
		}
		if err := callDirect(hs, n); err != nil || calls != n*subs {
			t.Errorf("subs=%d: callDirect: %v, %d handler calls, want nil, %d", subs, err, calls, n*subs)
		}
	}
}
