package ring

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// The benchmarks compare Ring with a buffered channel of the same capacity,
// the queue it replaces. Every shape reports ns per item moved through the
// queue: b.N items in total, however many goroutines move them. Ring
// producers and consumers that find it full or empty yield with
// runtime.Gosched, which is what a goroutine parked on a channel costs its
// processor too. impl=ring-batch consumers pop with TryPopN, up to
// benchBatch values per call.
//
// The element is a pointer allocated once, so nothing allocates per item.

const (
	benchCap   = 1024
	benchBatch = 64
)

func BenchmarkUncontended(b *testing.B) {
	name := fmt.Sprintf("cap=%d", benchCap)
	b.Run(name+"/impl=ring", func(b *testing.B) {
		b.ReportAllocs()
		r := New[*int](benchCap)
		v := new(int)
		for b.Loop() {
			r.TryPush(v)
			r.TryPop()
		}
	})
	b.Run(name+"/impl=chan", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan *int, benchCap)
		v := new(int)
		for b.Loop() {
			ch <- v
			<-ch
		}
	})
}

func BenchmarkSPSC(b *testing.B) {
	benchShape(b, fmt.Sprintf("cap=%d", benchCap), 1, 1)
}

func BenchmarkMPSC(b *testing.B) {
	benchShape(b, fmt.Sprintf("producers=4/cap=%d", benchCap), 4, 1)
}

func BenchmarkMPMC(b *testing.B) {
	benchShape(b, fmt.Sprintf("producers=4/consumers=4/cap=%d", benchCap), 4, 4)
}

// benchShape runs producers goroutines pushing b.N items in total and
// consumers goroutines popping them, for each implementation.
func benchShape(b *testing.B, name string, producers, consumers int) {
	b.Run(name+"/impl=ring", func(b *testing.B) {
		r := New[*int](benchCap)
		runShape(b, producers, consumers,
			func(v *int, n int) {
				for range n {
					for !r.TryPush(v) {
						runtime.Gosched()
					}
				}
			},
			func(n int) {
				for range n {
					for {
						if _, ok := r.TryPop(); ok {
							break
						}
						runtime.Gosched()
					}
				}
			})
	})
	b.Run(name+"/impl=ring-batch", func(b *testing.B) {
		r := New[*int](benchCap)
		runShape(b, producers, consumers,
			func(v *int, n int) {
				for range n {
					for !r.TryPush(v) {
						runtime.Gosched()
					}
				}
			},
			func(n int) {
				var dst [benchBatch]*int
				for n > 0 {
					k, _ := r.TryPopN(dst[:min(n, benchBatch)])
					if k == 0 {
						runtime.Gosched()
					}
					n -= k
				}
			})
	})
	b.Run(name+"/impl=chan", func(b *testing.B) {
		ch := make(chan *int, benchCap)
		runShape(b, producers, consumers,
			func(v *int, n int) {
				for range n {
					ch <- v
				}
			},
			func(n int) {
				for range n {
					<-ch
				}
			})
	})
}

// runShape splits b.N items among producers and, separately, among
// consumers, runs them all, and joins them before it returns. Each consumer
// pops exactly its share; the shares add up to what was pushed, so every
// consumer finishes.
func runShape(b *testing.B, producers, consumers int, produce func(v *int, n int), consume func(n int)) {
	b.ReportAllocs()
	v := new(int)
	share := func(i, parts int) int {
		n := b.N / parts
		if i < b.N%parts {
			n++
		}
		return n
	}
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range producers {
		wg.Go(func() { produce(v, share(i, producers)) })
	}
	for i := range consumers {
		wg.Go(func() { consume(share(i, consumers)) })
	}
	wg.Wait()
}
