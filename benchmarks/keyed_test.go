package benchmarks

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// The benchmarks of issue 13's features, each against what one writes by
// hand: keyed events against per-worker channel shards (BenchmarkKeyed),
// fan-out to 1, 10 and 100 subscribers against the channel bus
// (BenchmarkFanout), and one event per Drain against a channel and a
// handler map (BenchmarkEmitDrainOne). The dispatcher package has the same
// shapes, and BenchmarkHotKey, with a latency histogram.

// keys are the ordering keys of BenchmarkKeyed: 64, emitted in turn.
var keys = func() []string {
	ks := make([]string, 64)
	for i := range ks {
		ks[i] = fmt.Sprintf("key-%02d", i)
	}
	return ks
}()

// keyedBus is a running bus with per-key order.
type keyedBus interface {
	publishKeyed(key string, p *item)
	close() error
}

var keyedImpls = []struct {
	name  string
	new   func(t *tally) (keyedBus, error)
	keyed bool // publishes with the keys; false: with no key
}{
	{"ringbus", newRingbusKeyed, true},
	{"ringbus-unkeyed", newRingbusKeyed, false},
	{"shards", newShardBus, true},
}

// BenchmarkKeyed: one op is one event with one of 64 keys, published by
// one of the producers and counted by the one handler, 2 workers.
func BenchmarkKeyed(b *testing.B) {
	for _, producers := range []int{1, 2, 4} {
		for _, impl := range keyedImpls {
			b.Run(fmt.Sprintf("keys=64/producers=%d/impl=%s", producers, impl.name), func(b *testing.B) {
				b.ReportAllocs()
				t := newTally(int64(b.N))
				kb, err := impl.new(t)
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				publishKeyed(kb, producers, b.N, impl.keyed)
				t.wait()
				b.StopTimer()
				if err := kb.close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// publishKeyed publishes n events from producers goroutines, each going
// through the keys in turn from its own starting key (no key unless
// keyed), and returns when they are all published.
func publishKeyed(kb keyedBus, producers, n int, keyed bool) {
	var wg sync.WaitGroup
	for i := range producers {
		count := share(n, producers, i)
		wg.Go(func() {
			k := i * len(keys) / producers
			for range count {
				key := ""
				if keyed {
					key = keys[k%len(keys)]
				}
				k++
				kb.publishKeyed(key, &items[0])
			}
		})
	}
	wg.Wait()
}

func newRingbusKeyed(t *tally) (keyedBus, error) {
	bs, err := newRingbusBus(1, t)
	if err != nil {
		return nil, err
	}
	return bs.(*ringbusBus), nil
}

func (r *ringbusBus) publishKeyed(key string, p *item) {
	if err := r.d.EmitEvent(context.Background(), dispatcher.Event{Topic: benchTopic, Key: key, Payload: p}); err != nil {
		panic(err) // Block never fails before Shutdown
	}
}

// shardBus is per-key order by hand: one buffered channel per worker
// (dispatchCap/dispatchWorkers each), the FNV-1a hash of the key picking
// it, so that one goroutine handles a key's events in order.
type shardBus struct {
	shards []chan keyedEvent
	wg     sync.WaitGroup
}

type keyedEvent struct {
	topic, key string
	payload    *item
}

func newShardBus(t *tally) (keyedBus, error) {
	sb := &shardBus{}
	h := func(*item) { t.Add() }
	for range dispatchWorkers {
		ch := make(chan keyedEvent, dispatchCap/dispatchWorkers)
		sb.shards = append(sb.shards, ch)
		sb.wg.Go(func() {
			for ev := range ch {
				h(ev.payload)
			}
		})
	}
	return sb, nil
}

func (sb *shardBus) publishKeyed(key string, p *item) {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	sb.shards[h%uint32(len(sb.shards))] <- keyedEvent{topic: benchTopic, key: key, payload: p}
}

func (sb *shardBus) close() error {
	for _, ch := range sb.shards {
		close(ch)
	}
	sb.wg.Wait()
	return nil
}

// BenchmarkFanout is BenchmarkDispatch's one-producer shape for ringbus
// and the hand-written bus, with 1, 10 and 100 subscribers: one op is one
// event, delivered to every subscriber.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 10, 100} {
		for _, impl := range busImpls {
			if impl.name != "ringbus" && impl.name != "baseline" {
				continue
			}
			b.Run(fmt.Sprintf("subs=%d/impl=%s", subs, impl.name), func(b *testing.B) {
				benchDispatch(b, impl.new, subs, 1)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(subs), "ns/delivery")
			})
		}
	}
}

// BenchmarkEmitDrainOne is the deterministic path with one event per
// Drain: ringbus emits one event and drains it; chanmap sends it on a
// buffered channel, receives it and calls the handlers the topic maps to.
func BenchmarkEmitDrainOne(b *testing.B) {
	b.Run("impl=ringbus", func(b *testing.B) {
		b.ReportAllocs()
		var calls int
		d, err := emitDrainDispatcher(1, &calls)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for b.Loop() {
			if err := d.Emit(ctx, benchTopic, &items[0]); err != nil {
				b.Fatal(err)
			}
			if got, err := d.Drain(ctx, 0); got != 1 || err != nil {
				b.Fatalf("Drain(0) = %d, %v, want 1, nil", got, err)
			}
		}
		if calls != b.N {
			b.Fatalf("handlers ran %d times, want %d", calls, b.N)
		}
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("impl=chanmap", func(b *testing.B) {
		b.ReportAllocs()
		var calls int
		ch := make(chan baselineEvent, dispatchCap)
		handlers := map[string][]dispatcher.Handler{benchTopic: {countingHandler(&calls)}}
		ctx := context.Background()
		for b.Loop() {
			ch <- baselineEvent{topic: benchTopic, payload: &items[0]}
			ev := <-ch
			for _, h := range handlers[ev.topic] {
				if err := h(ctx, dispatcher.Event{Topic: ev.topic, Payload: ev.payload}); err != nil {
					b.Fatal(err)
				}
			}
		}
		if calls != b.N {
			b.Fatalf("handlers ran %d times, want %d", calls, b.N)
		}
	})
}

// TestKeyedBuses checks every keyed adapter: each event is handled once,
// and close leaves no goroutine behind (goleak, in TestMain).
func TestKeyedBuses(t *testing.T) {
	const n = 300
	for _, producers := range []int{1, 4} {
		for _, impl := range keyedImpls {
			tl := newTally(n)
			kb, err := impl.new(tl)
			if err != nil {
				t.Fatalf("%s: %v", impl.name, err)
			}
			publishKeyed(kb, producers, n, impl.keyed)
			if !tl.waitUntil(time.Now().Add(30 * time.Second)) {
				t.Errorf("producers=%d/impl=%s: %d handler calls after 30s, want %d", producers, impl.name, tl.Load(), n)
			}
			if err := kb.close(); err != nil {
				t.Errorf("producers=%d/impl=%s: close() = %v", producers, impl.name, err)
			}
		}
	}
}
