package dispatcher_test

// Benchmarks of the dispatcher against the obvious hand-written alternative:
// a buffered channel of (topic, payload) messages and a map of handlers by
// topic. Every comparison is a set of sub-benchmarks of one benchmark, named
// key=value so that benchstat can put the implementations side by side:
//
//	GOMAXPROCS=2 go test -run '^$' -bench 'Emit|Throughput|Latency' -benchmem -count 10 ./dispatcher > bench.txt
//	benchstat -col /impl bench.txt
//	benchstat -filter '.name:EmitDrain /impl:ringbus' -col /sub bench.txt  # wildcard vs exact
//
// The baseline lives here rather than in benchmarks/ because it is not a
// competitor's package: it is a few lines of the standard library and adds
// no dependency to go.mod.
//
// Every payload is a pre-allocated pointer, so that converting it to any
// does not allocate and allocs/op counts the dispatcher alone.

import (
	"context"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/internal/shardcount"
)

// benchTopic is the topic every benchmark emits on.
const benchTopic = "run.finished"

// benchPayload is the payload of every benchmark event.
type benchPayload struct {
	emitted time.Time     // BenchmarkLatency: set by the producer just before the emit
	latency time.Duration // BenchmarkLatency: set by the handler
	handled atomic.Bool   // BenchmarkLatency: set by the handler after latency
}

// BenchmarkEmit measures what a producer pays for one Emit.
//
// queue=drained is the fast path, which is what an emit costs while the
// consumers keep up: the queue (capacity 1<<16, Reject, no subscriber) is
// drained every 4096 emits with the timer stopped, so it is never full, every
// timed Emit finds room, and Reject would turn a mistake into a failure
// instead of a silent change of path. The drain is not timed because it is
// the consumer's work, not the producer's. It does warm the ring's cache
// lines on this goroutine, which a consumer on another core would not:
// BenchmarkThroughput shows the cost with real sharing. impl=baseline is a
// send on a buffered channel, drained the same way.
//
// queue=full-dropoldest is the overflow path, measured separately rather
// than mixed in: DropOldest with no consumer, so after the first 1024 emits
// every Emit fails its push, evicts the oldest event and pushes again.
func BenchmarkEmit(b *testing.B) {
	const (
		capacity   = 1 << 16
		drainEvery = 4096
	)
	ctx := context.Background()
	p := new(benchPayload)

	b.Run("queue=drained/impl=ringbus", func(b *testing.B) {
		d := newDispatcher(b, dispatcher.WithCapacity(capacity), dispatcher.WithOverflow(dispatcher.Reject))
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			if err := d.Emit(ctx, benchTopic, p); err != nil {
				b.Fatalf("Emit: %v", err)
			}
			if n++; n == drainEvery {
				n = 0
				b.StopTimer()
				benchDrain(b, d, drainEvery)
				b.StartTimer()
			}
		}
		benchDrain(b, d, n)
	})

	b.Run("queue=drained/impl=baseline", func(b *testing.B) {
		c := newBenchChanBus(capacity)
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			c.Emit(ctx, benchTopic, p) //nolint:errcheck // a plain send: always nil
			if n++; n == drainEvery {
				n = 0
				b.StopTimer()
				c.drain(ctx)
				b.StartTimer()
			}
		}
		c.drain(ctx)
	})

	b.Run("queue=full-dropoldest/impl=ringbus", func(b *testing.B) {
		d := newDispatcher(b, dispatcher.WithCapacity(1024), dispatcher.WithOverflow(dispatcher.DropOldest))
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Emit(ctx, benchTopic, p); err != nil {
				b.Fatalf("Emit: %v", err)
			}
		}
		if st := d.Stats(); st.Queued != min(b.N, 1024) {
			b.Fatalf("Stats().Queued = %d, want %d", st.Queued, min(b.N, 1024))
		}
	})
}

// BenchmarkEmitDrain measures the deterministic path, with no goroutine:
// one op is one event emitted and delivered to one subscriber by Drain(ctx,
// 0) on the same goroutine. batch=1 drains after every emit, so each event
// also pays a whole Drain; batch=64 emits 64 events per Drain, and b.N still
// counts events. The subscriber's pattern is the topic itself (sub=exact),
// "run.*" (sub=wildcard) or "run.>" (sub=wildcard-gt). The baseline matches
// exact topics only: its emit is a channel send, its drain receives what is
// buffered and calls the handlers found in the map.
func BenchmarkEmitDrain(b *testing.B) {
	subs := []struct{ name, pattern string }{
		{"exact", benchTopic},
		{"wildcard", "run.*"},
		{"wildcard-gt", "run.>"},
	}
	for _, batch := range []int{1, 64} {
		for _, sub := range subs {
			b.Run(fmt.Sprintf("batch=%d/impl=ringbus/sub=%s", batch, sub.name), func(b *testing.B) {
				benchEmitDrainRingbus(b, batch, sub.pattern)
			})
		}
		b.Run(fmt.Sprintf("batch=%d/impl=baseline/sub=exact", batch), func(b *testing.B) {
			benchEmitDrainBaseline(b, batch)
		})
	}
}

func benchEmitDrainRingbus(b *testing.B, batch int, pattern string) {
	ctx := context.Background()
	p := new(benchPayload)
	d := newDispatcher(b)
	calls := 0
	subscribe(b, d, pattern, func(context.Context, dispatcher.Event) error {
		calls++ // Drain runs handlers on this goroutine
		return nil
	})
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := d.Emit(ctx, benchTopic, p); err != nil {
			b.Fatalf("Emit: %v", err)
		}
		if n++; n == batch {
			benchDrain(b, d, batch)
			n = 0
		}
	}
	benchDrain(b, d, n)
	if calls != b.N {
		b.Fatalf("handler calls = %d, want %d", calls, b.N)
	}
}

func benchEmitDrainBaseline(b *testing.B, batch int) {
	ctx := context.Background()
	p := new(benchPayload)
	c := newBenchChanBus(dispatcher.DefaultCapacity)
	calls := 0
	c.on(benchTopic, func(context.Context, dispatcher.Event) error {
		calls++
		return nil
	})
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c.Emit(ctx, benchTopic, p) //nolint:errcheck // a plain send: always nil
		if n++; n == batch {
			if got := c.drain(ctx); got != batch {
				b.Fatalf("drain() = %d, want %d", got, batch)
			}
			n = 0
		}
	}
	c.drain(ctx)
	if calls != b.N {
		b.Fatalf("handler calls = %d, want %d", calls, b.N)
	}
}

// BenchmarkThroughput measures events per second end to end, with two
// worker goroutines and a queue of 1024 that blocks emitters when full:
// ringbus under Run, and the baseline with two goroutines receiving from
// the channel and looking the handlers up under a sync.RWMutex (RLock per
// event). One op is one event, emitted by one of the producers (they split
// b.N) and counted by the single subscriber; the clock stops when the
// handler has seen b.N events.
//
// It loops to b.N instead of using b.Loop or b.RunParallel: the producers
// must know their share and the handler the total before the first emit,
// which b.Loop only tells after the loop, and RunParallel ties the number
// of producers to GOMAXPROCS (producers=1 is impossible with 2 procs).
func BenchmarkThroughput(b *testing.B) {
	for _, producers := range []int{1, 4} {
		for _, impl := range benchImpls {
			b.Run(fmt.Sprintf("producers=%d/impl=%s", producers, impl.name), func(b *testing.B) {
				benchThroughput(b, impl.start, producers, 1)
			})
		}
	}
}

// benchThroughput runs b.N events from producers through start's bus with
// subs subscribers, and stops the clock when every handler call ran.
func benchThroughput(b *testing.B, start benchStarter, producers, subs int) {
	benchThroughputCtx(b, context.Background(), start, producers, subs)
}

// benchThroughputCtx is benchThroughput with the producers emitting with
// ctx.
func benchThroughputCtx(b *testing.B, ctx context.Context, start benchStarter, producers, subs int) {
	p := new(benchPayload)
	var handled shardcount.Counter // one atomic per handler call, not shared: see the package
	bus := start(b, func(context.Context, dispatcher.Event) error {
		handled.Add()
		return nil
	}, subs)

	produce := benchProducers(b, producers, func(_, n int) error {
		for range n {
			if err := bus.Emit(ctx, benchTopic, p); err != nil {
				return err
			}
		}
		return nil
	})
	benchRun(b, bus.stop, produce, handled.Load, int64(b.N)*int64(subs))
}

// benchRun times produce (see benchProducers) and then waits until
// handled reports want handler calls (at most a queue's worth of events is
// left by then), stops the clock and the bus (stop), and reports
// events/s.
func benchRun(b *testing.B, stop func(*testing.B), produce func() error, handled func() int64, want int64) {
	b.ReportAllocs()
	b.ResetTimer()
	if err := produce(); err != nil {
		benchFail(b, stop, "emit", err)
	}
	benchEnd(b, stop, handled, want)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// benchEnd waits until handled reports want handler calls, then stops the
// clock and the bus (stop).
func benchEnd(b *testing.B, stop func(*testing.B), handled func() int64, want int64) {
	for handled() < want {
		runtime.Gosched()
	}
	b.StopTimer()
	stop(b)
}

// benchFail stops the clock and the bus (stop) and fails b: what failed
// with err.
func benchFail(b *testing.B, stop func(*testing.B), what string, err error) {
	b.Helper()
	b.StopTimer()
	stop(b)
	b.Fatalf("%s: %v", what, err)
}

// benchProducers starts producers goroutines that wait for a gate, and
// returns the function that opens it and joins them: it returns when every
// producer returned, with the first error of one. Producer i calls
// emit(i, n) once, n its share of b.N; the shares add up to b.N.
func benchProducers(b *testing.B, producers int, emit func(i, n int) error) func() error {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	errc := make(chan error, producers)
	for i := range producers {
		share := b.N / producers
		if i < b.N%producers {
			share++
		}
		wg.Go(func() {
			<-gate
			if err := emit(i, share); err != nil {
				errc <- err
			}
		})
	}
	return func() error {
		close(gate)
		wg.Wait()
		select {
		case err := <-errc:
			return err
		default:
			return nil
		}
	}
}

// BenchmarkLatency measures the time from just before an Emit to the start
// of the handler, under Run with two workers and one producer, and reports
// its median and 99th percentile. ns/op is the producer's time per event,
// pauses included; the latencies are the result.
//
//   - load=pingpong emits one event, waits until the handler ran, and emits
//     the next at once. The workers may still be spinning (they yield a few
//     microseconds before they park), so this is the latency of a worker
//     that has just finished.
//   - load=paced then works 50µs (a busy loop on the clock) before the next
//     emit, long enough for the idle workers to park: the latency of waking
//     a parked worker. It spins rather than sleeps because a sleep under
//     1ms takes a whole millisecond when every goroutine is idle (the
//     runtime's netpoller waits in milliseconds), and a producer usually
//     has work of its own between two events.
//   - load=burst emits back to back: the queue fills, and the latency is
//     mostly the time spent queued behind up to 1024 events.
//
// It loops to b.N for the reasons BenchmarkThroughput gives.
func BenchmarkLatency(b *testing.B) {
	for _, load := range []string{"pingpong", "paced", "burst"} {
		for _, impl := range benchImpls {
			b.Run(fmt.Sprintf("load=%s/impl=%s", load, impl.name), func(b *testing.B) {
				benchLatency(b, impl.start, load)
			})
		}
	}
}

func benchLatency(b *testing.B, start benchStarter, load string) {
	const pause = 50 * time.Microsecond // load=paced
	// The payloads are reused in a ring, so that memory does not grow with
	// b.N. It is larger than the events that can be in flight (a full queue
	// plus the batches the workers hold), so the producer practically never
	// waits for a payload to be handled before reusing it; it checks anyway.
	const pool = 4096

	ctx := context.Background()
	paced := load != "burst"
	want := int64(b.N)
	var handled atomic.Int64
	done := make(chan struct{})
	ran := make(chan struct{}, 1) // load=pingpong and paced: one event in flight at most
	bus := start(b, func(_ context.Context, e dispatcher.Event) error {
		p := e.Payload.(*benchPayload)
		p.latency = time.Since(p.emitted)
		p.handled.Store(true)
		if handled.Add(1) == want {
			close(done)
		}
		if paced {
			ran <- struct{}{}
		}
		return nil
	}, 1)
	payloads := make([]benchPayload, min(b.N, pool))
	var hist benchHist

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p := &payloads[i%len(payloads)]
		if i >= len(payloads) {
			for !p.handled.Load() {
				runtime.Gosched()
			}
			hist.add(p.latency)
			p.handled.Store(false)
		}
		p.emitted = time.Now()
		if err := bus.Emit(ctx, benchTopic, p); err != nil {
			b.StopTimer()
			bus.stop(b)
			b.Fatalf("Emit: %v", err)
		}
		if paced {
			<-ran
			if load == "paced" {
				for t := time.Now(); time.Since(t) < pause; {
				}
			}
		}
	}
	<-done
	b.StopTimer()
	bus.stop(b)
	for i := max(b.N-len(payloads), 0); i < b.N; i++ {
		hist.add(payloads[i%len(payloads)].latency)
	}
	b.ReportMetric(float64(hist.quantile(0.50)), "p50-ns")
	b.ReportMetric(float64(hist.quantile(0.99)), "p99-ns")
}

// benchBus is what BenchmarkThroughput and BenchmarkLatency drive: a
// running implementation with one subscriber to benchTopic.
type benchBus interface {
	Emit(ctx context.Context, topic string, payload any) error
	// stop stops the implementation and joins its goroutines.
	stop(b *testing.B)
}

// benchStarter starts an implementation with two workers, a queue of 1024
// that blocks emitters when full, and h subscribed subs times to
// benchTopic.
type benchStarter func(b *testing.B, h dispatcher.Handler, subs int) benchBus

var benchImpls = []struct {
	name  string
	start benchStarter
}{
	{"ringbus", startBenchRunning},
	{"baseline", startBenchChanBus},
}

// benchRunning is a dispatcher under Run.
type benchRunning struct {
	*dispatcher.Dispatcher
	errc chan error // Run's result
}

func startBenchRunning(b *testing.B, h dispatcher.Handler, subs int) benchBus {
	return startBenchDispatcher(b, h, subs)
}

func startBenchDispatcher(b *testing.B, h dispatcher.Handler, subs int, opts ...dispatcher.Option) *benchRunning {
	d := newDispatcher(b, append([]dispatcher.Option{dispatcher.WithWorkers(2), dispatcher.WithCapacity(1024)}, opts...)...)
	for range subs {
		subscribe(b, d, benchTopic, h)
	}
	r := &benchRunning{Dispatcher: d, errc: make(chan error, 1)}
	go func() { r.errc <- d.Run(context.Background()) }()
	return r
}

// startBenchRunningWith starts a dispatcher as startBenchRunning does,
// with opts too.
func startBenchRunningWith(opts ...dispatcher.Option) benchStarter {
	return func(b *testing.B, h dispatcher.Handler, subs int) benchBus {
		return startBenchDispatcher(b, h, subs, opts...)
	}
}

func (r *benchRunning) stop(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.Shutdown(ctx)
	if rerr := <-r.errc; rerr != nil { // joined even if Shutdown failed: it closes then
		b.Errorf("Run: %v", rerr)
	}
	if err != nil {
		b.Fatalf("Shutdown: %v", err)
	}
}

// benchChanBus is the baseline: the obvious hand-written dispatcher, a
// buffered channel of messages and a map from topic to handlers. Emit is a
// channel send (blocking when full, like the dispatcher's default policy).
// drain receives what is buffered, on the caller's goroutine, without
// locking; started, workers receive and look the handlers up under mu.
type benchChanBus struct {
	ch       chan benchMsg
	mu       sync.RWMutex // guards handlers for the workers
	handlers map[string][]dispatcher.Handler
	wg       sync.WaitGroup // the workers
}

type benchMsg struct {
	topic   string
	payload any
}

func newBenchChanBus(capacity int) *benchChanBus {
	return &benchChanBus{ch: make(chan benchMsg, capacity), handlers: make(map[string][]dispatcher.Handler)}
}

func startBenchChanBus(_ *testing.B, h dispatcher.Handler, subs int) benchBus {
	c := newBenchChanBus(1024)
	for range subs {
		c.on(benchTopic, h)
	}
	ctx := context.Background()
	for range 2 {
		c.wg.Go(func() {
			for m := range c.ch {
				c.mu.RLock()
				hs := c.handlers[m.topic]
				c.mu.RUnlock()
				c.dispatch(ctx, hs, m)
			}
		})
	}
	return c
}

func (c *benchChanBus) on(topic string, h dispatcher.Handler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handlers[topic] = append(c.handlers[topic], h)
}

func (c *benchChanBus) Emit(_ context.Context, topic string, payload any) error {
	c.ch <- benchMsg{topic: topic, payload: payload}
	return nil
}

// drain receives and dispatches until the channel is empty and returns how
// many messages it received. Only one goroutine may drain.
func (c *benchChanBus) drain(ctx context.Context) int {
	n := 0
	for {
		select {
		case m := <-c.ch:
			c.dispatch(ctx, c.handlers[m.topic], m)
			n++
		default:
			return n
		}
	}
}

func (c *benchChanBus) dispatch(ctx context.Context, hs []dispatcher.Handler, m benchMsg) {
	for _, h := range hs {
		_ = h(ctx, dispatcher.Event{Topic: m.topic, Payload: m.payload}) // the benchmark handlers do not fail
	}
}

func (c *benchChanBus) stop(*testing.B) {
	close(c.ch)
	c.wg.Wait()
}

// benchDrain drains d and fails b unless it processed want events.
func benchDrain(b *testing.B, d *dispatcher.Dispatcher, want int) {
	if got, err := d.Drain(context.Background(), 0); got != want || err != nil {
		b.Fatalf("Drain(0) = %d, %v, want %d, nil", got, err, want)
	}
}

// benchHist is a histogram of durations with 32 buckets per power of two
// (1/32 = 3% wide, exact below 64ns), so that percentiles of any number of
// events take constant memory.
type benchHist struct {
	counts [60 * benchHistSub]uint64 // up to 2^64 ns
	n      uint64
}

const benchHistSub = 32 // buckets per power of two

func (h *benchHist) add(d time.Duration) {
	v := uint64(max(d, 0))
	i := int(v)
	if v >= 2*benchHistSub {
		e := bits.Len64(v) - 6 // v>>e is in [32, 64)
		i = e*benchHistSub + int(v>>e)
	}
	h.counts[i]++
	h.n++
}

// quantile returns the middle of the bucket that holds the q-quantile.
func (h *benchHist) quantile(q float64) time.Duration {
	rank := uint64(q * float64(h.n))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			if i < 2*benchHistSub {
				return time.Duration(i)
			}
			e := i/benchHistSub - 1
			m := uint64(i%benchHistSub + benchHistSub)
			return time.Duration(m<<e + (uint64(1)<<e)/2)
		}
	}
	return 0
}

// BenchmarkEmitEventOptions: Emit and Drain of batches of 64 events, per
// event, through EmitEvent without options and with OnDone: what the
// completion hook costs end to end (its tracker is one allocation per
// event), against the same path without it.
func BenchmarkEmitEventOptions(b *testing.B) {
	const batch = 64
	ctx := context.Background()
	p := new(benchPayload)
	var finished atomic.Int64
	done := dispatcher.OnDone(func(error) { finished.Add(1) })
	for _, tt := range []struct {
		name string
		opts []dispatcher.EmitOption
	}{
		{"opts=none", nil},
		{"opts=ondone", []dispatcher.EmitOption{done}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			d := newDispatcher(b, dispatcher.WithCapacity(batch))
			subscribe(b, d, benchTopic, func(context.Context, dispatcher.Event) error { return nil })
			ev := dispatcher.Event{Topic: benchTopic, Payload: p}
			benchEmitDrainBatches(b, d, batch, func() error { return d.EmitEvent(ctx, ev, tt.opts...) })
		})
	}
}

// BenchmarkPolicy: Emit and Drain of batches of 64 events, per event, for
// a subscription without middleware or timeout, with one middleware, and
// with a timeout (a ctx with a deadline per call).
func BenchmarkPolicy(b *testing.B) {
	const batch = 64
	ctx := context.Background()
	p := new(benchPayload)
	pass := func(next dispatcher.Handler) dispatcher.Handler {
		return func(ctx context.Context, e dispatcher.Event) error { return next(ctx, e) }
	}
	for _, tt := range []struct {
		name string
		opts []dispatcher.SubscribeOption
	}{
		{"policy=none", nil},
		{"policy=middleware", []dispatcher.SubscribeOption{dispatcher.WithMiddleware(pass)}},
		{"policy=timeout", []dispatcher.SubscribeOption{dispatcher.WithTimeout(time.Minute)}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			d := newDispatcher(b, dispatcher.WithCapacity(batch))
			subscribe(b, d, benchTopic, func(context.Context, dispatcher.Event) error { return nil }, tt.opts...)
			benchEmitDrainBatches(b, d, batch, func() error { return d.Emit(ctx, benchTopic, p) })
		})
	}
}

// benchEmitDrainBatches times emit, one event per op, with a Drain of d
// after every batch events, timed too: the per-event cost of both.
func benchEmitDrainBatches(b *testing.B, d *dispatcher.Dispatcher, batch int, emit func() error) {
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := emit(); err != nil {
			b.Fatalf("emit: %v", err)
		}
		if n++; n == batch {
			n = 0
			benchDrain(b, d, batch)
		}
	}
	benchDrain(b, d, n)
}
