package benchmarks

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/Workiva/go-datastructures/queue"
	"github.com/puzpuzpuz/xsync/v4"

	"github.com/ringbus/ringbus/internal/ring"
)

// The queue benchmarks move pointers through bounded FIFO queues of
// queueCap slots. One op is one item pushed and popped: ns/op is ns per
// item, whatever the number of goroutines.
//
// Every non-blocking queue waits the same way when it finds itself full or
// empty: runtime.Gosched and try again (xsync's own benchmarks do the
// same). The channel blocks, as channels are used.

// queueCap is every queue's capacity: the dispatcher's default.
const queueCap = 1024

// popBatch is how many items the ringbus consumer claims at once. (The
// dispatcher's workers claim up to 128: an even share of what is ready.)
const popBatch = 32

// item is the element every queue carries: a pointer, as an event queue
// holds.
type item struct{ n int64 }

// items is what producers push: &items[i%queueCap] for their i-th push.
// Consumers add up the n they pop, which both touches each item, as a real
// consumer would, and lets every run check that nothing was lost.
var items = func() *[queueCap]item {
	var a [queueCap]item
	for i := range a {
		a[i].n = int64(i)
	}
	return &a
}()

// wantSum is the sum of the n of the first count items a producer pushes.
func wantSum(count int) int64 {
	full, rest := int64(count/queueCap), int64(count%queueCap)
	return full*(queueCap-1)*queueCap/2 + rest*(rest-1)/2
}

// queueImpl adapts one queue to the shapes. Each method runs a whole loop,
// so the interface is crossed once per goroutine and the queue's own calls
// inside the loop are direct.
type queueImpl interface {
	// produce pushes &items[i%queueCap] for i in [0, n), waiting while
	// the queue is full.
	produce(n int)
	// consume pops n items, waiting while the queue is empty, and returns
	// the sum of their n.
	consume(n int) int64
	// pingPong pushes one item and pops it, n times, on the caller's
	// goroutine, and returns the sum of what it popped.
	pingPong(n int) int64
}

// queueImpls lists the queues in the order of the result tables: ringbus
// first, so benchstat compares every other column with it. spsc says that
// the shape has one producer and one consumer, for queues that have a
// variant specialised for it.
var queueImpls = []struct {
	name string
	new  func(spsc bool) queueImpl
}{
	{"ringbus", func(bool) queueImpl { return ringQueue{ring.New[*item](queueCap)} }},
	{"chan", func(bool) queueImpl { return chanQueue(make(chan *item, queueCap)) }},
	{"xsync", func(spsc bool) queueImpl {
		if spsc {
			return xsyncSPSC{xsync.NewSPSCQueue[*item](queueCap)}
		}
		return xsyncMPMC{xsync.NewMPMCQueue[*item](queueCap)}
	}},
	{"workiva", func(bool) queueImpl { return workivaQueue{queue.NewRingBuffer(queueCap)} }},
}

var queueShapes = []struct {
	name                 string
	producers, consumers int
}{
	{"uncontended", 1, 1}, // one goroutine pushes and pops
	{"SPSC", 1, 1},
	{"MPSC", 4, 1},
	{"MPMC", 4, 4},
}

func BenchmarkQueue(b *testing.B) {
	for _, s := range queueShapes {
		for _, impl := range queueImpls {
			name := fmt.Sprintf("shape=%s/producers=%d/consumers=%d/impl=%s", s.name, s.producers, s.consumers, impl.name)
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				q := impl.new(s.name == "SPSC")
				var got int64
				b.ResetTimer()
				if s.name == "uncontended" {
					got = q.pingPong(b.N)
				} else {
					got = transfer(q, s.producers, s.consumers, b.N)
				}
				b.StopTimer()
				if want := sumOfShares(b.N, s.producers); got != want {
					b.Fatalf("consumers popped a sum of %d, want %d", got, want)
				}
			})
		}
	}
}

// transfer moves n items from producers goroutines to consumers goroutines
// through q, each taking its share, and returns the sum the consumers
// popped.
func transfer(q queueImpl, producers, consumers, n int) int64 {
	var wg sync.WaitGroup
	sums := make([]int64, consumers)
	for i := range producers {
		wg.Go(func() { q.produce(share(n, producers, i)) })
	}
	for i := range consumers {
		wg.Go(func() { sums[i] = q.consume(share(n, consumers, i)) })
	}
	wg.Wait()
	var sum int64
	for _, s := range sums {
		sum += s
	}
	return sum
}

// share is worker i's part of n among k: n/k, one more for the first n%k.
func share(n, k, i int) int {
	s := n / k
	if i < n%k {
		s++
	}
	return s
}

// sumOfShares is the sum consumers pop when n items come from producers
// producers, each pushing its share.
func sumOfShares(n, producers int) int64 {
	var sum int64
	for i := range producers {
		sum += wantSum(share(n, producers, i))
	}
	return sum
}

// ringQueue is ringbus's ring (internal/ring, after Vyukov), the one the
// dispatcher uses. Its consumer claims up to popBatch items at once with
// TryPopN, as the dispatcher's workers claim batches.
type ringQueue struct{ r *ring.Ring[*item] }

func (q ringQueue) produce(n int) {
	for i := range n {
		for !q.r.TryPush(&items[i%queueCap]) {
			runtime.Gosched()
		}
	}
}

func (q ringQueue) consume(n int) int64 {
	var buf [popBatch]*item
	var sum int64
	for n > 0 {
		k, _ := q.r.TryPopN(buf[:min(n, popBatch)])
		if k == 0 {
			runtime.Gosched()
			continue
		}
		for _, it := range buf[:k] {
			sum += it.n
		}
		n -= k
	}
	return sum
}

func (q ringQueue) pingPong(n int) int64 {
	var sum int64
	for i := range n {
		q.r.TryPush(&items[i%queueCap])
		it, _ := q.r.TryPop()
		sum += it.n
	}
	return sum
}

// chanQueue is a buffered channel, used as channels are: send and receive
// block.
type chanQueue chan *item

func (q chanQueue) produce(n int) {
	for i := range n {
		q <- &items[i%queueCap]
	}
}

func (q chanQueue) consume(n int) int64 {
	var sum int64
	for range n {
		sum += (<-q).n
	}
	return sum
}

func (q chanQueue) pingPong(n int) int64 {
	var sum int64
	for i := range n {
		q <- &items[i%queueCap]
		sum += (<-q).n
	}
	return sum
}

// xsyncMPMC is xsync's MPMCQueue (rigtorp's algorithm; the MPMCQueueOf of
// older versions, now a deprecated alias).
type xsyncMPMC struct{ q *xsync.MPMCQueue[*item] }

func (q xsyncMPMC) produce(n int) {
	for i := range n {
		for !q.q.TryEnqueue(&items[i%queueCap]) {
			runtime.Gosched()
		}
	}
}

func (q xsyncMPMC) consume(n int) int64 {
	var sum int64
	for range n {
		for {
			it, ok := q.q.TryDequeue()
			if ok {
				sum += it.n
				break
			}
			runtime.Gosched()
		}
	}
	return sum
}

func (q xsyncMPMC) pingPong(n int) int64 {
	var sum int64
	for i := range n {
		q.q.TryEnqueue(&items[i%queueCap])
		it, _ := q.q.TryDequeue()
		sum += it.n
	}
	return sum
}

// xsyncSPSC is xsync's SPSCQueue (rigtorp's ring buffer with cached
// indices: no CAS at all), used where the shape allows it.
type xsyncSPSC struct{ q *xsync.SPSCQueue[*item] }

func (q xsyncSPSC) produce(n int) {
	for i := range n {
		for !q.q.TryEnqueue(&items[i%queueCap]) {
			runtime.Gosched()
		}
	}
}

func (q xsyncSPSC) consume(n int) int64 {
	var sum int64
	for range n {
		for {
			it, ok := q.q.TryDequeue()
			if ok {
				sum += it.n
				break
			}
			runtime.Gosched()
		}
	}
	return sum
}

func (q xsyncSPSC) pingPong(n int) int64 {
	var sum int64
	for i := range n {
		q.q.TryEnqueue(&items[i%queueCap])
		it, _ := q.q.TryDequeue()
		sum += it.n
	}
	return sum
}

// workivaQueue is Workiva's queue.RingBuffer (Vyukov's bounded MPMC queue,
// elements as interface{}). Offer is its non-blocking push. It has no
// non-blocking pop: Get waits for an item itself, and waits the way every
// other queue here does (runtime.Gosched between attempts), so it is used
// as it is.
type workivaQueue struct{ q *queue.RingBuffer }

func (q workivaQueue) produce(n int) {
	for i := range n {
		for {
			ok, err := q.q.Offer(&items[i%queueCap])
			if err != nil {
				panic(err) // disposed: never, here
			}
			if ok {
				break
			}
			runtime.Gosched()
		}
	}
}

func (q workivaQueue) consume(n int) int64 {
	var sum int64
	for range n {
		v, err := q.q.Get()
		if err != nil {
			panic(err) // disposed: never, here
		}
		sum += v.(*item).n
	}
	return sum
}

func (q workivaQueue) pingPong(n int) int64 {
	var sum int64
	for i := range n {
		if _, err := q.q.Offer(&items[i%queueCap]); err != nil {
			panic(err)
		}
		v, err := q.q.Get()
		if err != nil {
			panic(err)
		}
		sum += v.(*item).n
	}
	return sum
}

// TestQueues checks every adapter in every shape: what the consumers pop
// adds up to what the producers pushed.
func TestQueues(t *testing.T) {
	const n = 5000 // a few laps of the ring
	for _, s := range queueShapes {
		for _, impl := range queueImpls {
			q := impl.new(s.name == "SPSC")
			var got int64
			if s.name == "uncontended" {
				got = q.pingPong(n)
			} else {
				got = transfer(q, s.producers, s.consumers, n)
			}
			if want := sumOfShares(n, s.producers); got != want {
				t.Errorf("%s/%s: consumers popped a sum of %d, want %d", s.name, impl.name, got, want)
			}
		}
	}
}
