package dispatcher_test

// Benchmarks of what a hand-written channel bus does not give for free:
// per-key order (BenchmarkKeyed, BenchmarkHotKey) and fan-out
// (BenchmarkFanout). Each has its hand-written baseline in the same
// benchmark, named key=value for benchstat:
//
//	GOMAXPROCS=2 go test -run '^$' -bench 'Keyed|HotKey|Fanout' -benchmem -count 10 ./dispatcher > keyed.txt
//	benchstat -col /impl keyed.txt
//
// The one-event Drain is BenchmarkEmitDrain's batch=1 (bench_test.go).

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/internal/shardcount"
)

// benchKeys are the ordering keys of the keyed benchmarks.
var benchKeys = func() []string {
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%02d", i)
	}
	return keys
}()

// keyedBus is a running implementation with per-key order: events with one
// key are handled one at a time, in emit order.
type keyedBus interface {
	emitKeyed(ctx context.Context, key string, payload any) error
	stop(b *testing.B)
}

// keyedStarter starts an implementation with two workers, room for 1024
// queued events (emitters block when it is full) and h subscribed to
// benchTopic.
type keyedStarter func(b *testing.B, h dispatcher.Handler) keyedBus

var keyedImpls = []struct {
	name  string
	start keyedStarter
	keyed bool // emits with the keys; false: without any key
}{
	{"ringbus", startKeyedRunning, true},
	{"ringbus-unkeyed", startKeyedRunning, false},
	{"shards", startBenchShardBus, true},
}

func startKeyedRunning(b *testing.B, h dispatcher.Handler) keyedBus {
	return startBenchDispatcher(b, h, 1)
}

func (r *benchRunning) emitKeyed(ctx context.Context, key string, payload any) error {
	return r.EmitEvent(ctx, dispatcher.Event{Topic: benchTopic, Key: key, Payload: payload})
}

// BenchmarkKeyed measures keyed throughput as BenchmarkThroughput measures
// unkeyed: one op is one event, emitted with one of 64 keys in turn by one
// of the producers and counted by the single subscriber. impl=shards is
// what one writes by hand for per-key order: a buffered channel per worker
// (512 each), the key hashed to pick it. impl=ringbus-unkeyed is the same
// dispatcher and emit call with an empty key, the cost that keys add to.
func BenchmarkKeyed(b *testing.B) {
	for _, producers := range []int{1, 2, 4} {
		for _, impl := range keyedImpls {
			b.Run(fmt.Sprintf("keys=64/producers=%d/impl=%s", producers, impl.name), func(b *testing.B) {
				benchKeyed(b, impl.start, producers, impl.keyed)
			})
		}
	}
}

func benchKeyed(b *testing.B, start keyedStarter, producers int, keyed bool) {
	ctx := context.Background()
	p := new(benchPayload)
	var handled shardcount.Counter
	bus := start(b, func(context.Context, dispatcher.Event) error {
		handled.Add()
		return nil
	})
	produce := benchProducers(b, producers, func(i, n int) error {
		k := i * len(benchKeys) / producers // producers start on different keys
		for range n {
			key := ""
			if keyed {
				key = benchKeys[k%len(benchKeys)]
			}
			k++
			if err := bus.emitKeyed(ctx, key, p); err != nil {
				return err
			}
		}
		return nil
	})
	benchRun(b, bus.stop, produce, handled.Load, int64(b.N))
}

// BenchmarkHotKey measures whether a hot key holds up the others. One
// producer emits back to back, and one event in hotKeyEvery goes to one
// of 63 cold keys in turn, its latency (from just before its emit to the
// start of its handler) measured; the other events go to key-00 with
// hot=90pct, and to the 64 keys in turn with hot=none. cold-p50-ns and
// cold-p99-ns are the measured events' latencies; ns/op is the producer's
// time per event. The queue is full most of the time, so a latency is
// mostly time spent queued; what matters is the ratio of hot=90pct to
// hot=none within an implementation.
func BenchmarkHotKey(b *testing.B) {
	for _, hot := range []bool{false, true} {
		for _, impl := range keyedImpls {
			if !impl.keyed {
				continue
			}
			name := "hot=none"
			if hot {
				name = "hot=90pct"
			}
			b.Run(fmt.Sprintf("%s/impl=%s", name, impl.name), func(b *testing.B) {
				benchHotKey(b, impl.start, hot)
			})
		}
	}
}

// hotKeyEvery: one event in hotKeyEvery is a measured cold-key event.
const hotKeyEvery = 10

func benchHotKey(b *testing.B, start keyedStarter, hot bool) {
	const pool = 4096 // measured payloads, reused in turn (see benchLatency)
	ctx := context.Background()
	shared := new(benchPayload) // the unmeasured events' payload
	var handled atomic.Int64
	bus := start(b, func(_ context.Context, e dispatcher.Event) error {
		if p := e.Payload.(*benchPayload); p != shared {
			p.latency = time.Since(p.emitted)
			p.handled.Store(true)
		}
		handled.Add(1)
		return nil
	})
	measured := (b.N + hotKeyEvery - 1) / hotKeyEvery
	payloads := make([]benchPayload, min(measured, pool))
	var hist benchHist

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		key, p := benchKeys[i%len(benchKeys)], shared
		if hot {
			key = benchKeys[0]
		}
		if i%hotKeyEvery == 0 {
			m := i / hotKeyEvery
			p = &payloads[m%len(payloads)]
			if m >= len(payloads) {
				for !p.handled.Load() {
					runtime.Gosched()
				}
				hist.add(p.latency)
				p.handled.Store(false)
			}
			key = benchKeys[1+m%(len(benchKeys)-1)]
			p.emitted = time.Now()
		}
		if err := bus.emitKeyed(ctx, key, p); err != nil {
			benchFail(b, bus.stop, "emit", err)
		}
	}
	benchEnd(b, bus.stop, handled.Load, int64(b.N))
	for m := max(measured-len(payloads), 0); m < measured; m++ {
		hist.add(payloads[m%len(payloads)].latency)
	}
	b.ReportMetric(float64(hist.quantile(0.50)), "cold-p50-ns")
	b.ReportMetric(float64(hist.quantile(0.99)), "cold-p99-ns")
}

// BenchmarkFanout measures fan-out under Run as BenchmarkThroughput
// measures one subscriber (one producer): one op is one event, delivered to
// each of subs subscribers of its topic, and ns/delivery is the time per
// handler call. impl=direct calls the same handler subs times per event on
// one goroutine, with no bus: the handler's own cost.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 10, 100} {
		for _, impl := range benchImpls {
			b.Run(fmt.Sprintf("subs=%d/impl=%s", subs, impl.name), func(b *testing.B) {
				benchThroughput(b, impl.start, 1, subs)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/delivery")
			})
		}
		b.Run(fmt.Sprintf("subs=%d/impl=direct", subs), func(b *testing.B) {
			var handled shardcount.Counter
			h := dispatcher.Handler(func(context.Context, dispatcher.Event) error {
				handled.Add()
				return nil
			})
			hs := make([]dispatcher.Handler, subs)
			for i := range hs {
				hs[i] = h
			}
			ctx := context.Background()
			p := new(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				for _, h := range hs {
					_ = h(ctx, dispatcher.Event{Topic: benchTopic, Payload: p}) // never fails
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/delivery")
		})
	}
}

// benchShardBus is the hand-written bus with per-key order: one buffered
// channel per worker, the key's hash picking the channel, so that the
// events of a key are handled by one goroutine in order. Handlers are looked
// up as benchChanBus's workers do.
type benchShardBus struct {
	shards   []chan benchKeyedMsg
	mu       sync.RWMutex
	handlers map[string][]dispatcher.Handler
	wg       sync.WaitGroup
}

type benchKeyedMsg struct {
	topic, key string
	payload    any
}

func startBenchShardBus(_ *testing.B, h dispatcher.Handler) keyedBus {
	const workers, capacity = 2, 1024
	s := &benchShardBus{handlers: map[string][]dispatcher.Handler{benchTopic: {h}}}
	ctx := context.Background()
	for range workers {
		ch := make(chan benchKeyedMsg, capacity/workers)
		s.shards = append(s.shards, ch)
		s.wg.Go(func() {
			for m := range ch {
				s.mu.RLock()
				hs := s.handlers[m.topic]
				s.mu.RUnlock()
				for _, h := range hs {
					_ = h(ctx, dispatcher.Event{Topic: m.topic, Key: m.key, Payload: m.payload}) // never fails
				}
			}
		})
	}
	return s
}

func (s *benchShardBus) emitKeyed(_ context.Context, key string, payload any) error {
	// FNV-1a of the key picks the shard.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	s.shards[h%uint32(len(s.shards))] <- benchKeyedMsg{topic: benchTopic, key: key, payload: payload}
	return nil
}

func (s *benchShardBus) stop(*testing.B) {
	for _, ch := range s.shards {
		close(ch)
	}
	s.wg.Wait()
}
