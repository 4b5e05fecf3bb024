package ring

import (
	"fmt"
	"sync"
)

// queue is the method set that Ring and refRing share, so that every test,
// hammer and fuzz target runs against both.
type queue[T any] interface {
	TryPush(v T) bool
	TryPop() (T, bool)
	TryPopN(dst []T) (n int, first uint64)
	TryPopShare(dst []T, parts int) (n int, first uint64)
	Ready() bool
	Len() int
	Cap() int
	Pushed() uint64
	Close()
	Reopen()
	Closed() bool
}

var (
	_ queue[int] = (*Ring[int])(nil)
	_ queue[int] = (*refRing[int])(nil)
)

// impls names the implementations under test; newQueue builds one.
var impls = []string{"ring", "ref"}

func newQueue[T any](impl string, capacity int) queue[T] {
	switch impl {
	case "ring":
		return New[T](capacity)
	case "ref":
		return newRef[T](capacity)
	}
	panic("unknown impl " + impl)
}

// refRing is the obviously correct model of Ring: the same bounded FIFO
// behind one mutex. Positions count pushes from zero, as in Ring.
type refRing[T any] struct {
	mu     sync.Mutex
	buf    []T
	head   uint64 // next pop position
	tail   uint64 // next push position
	closed bool
}

// newRef mirrors New: capacity rounds up to a power of two and a capacity
// below 1 or above MaxCapacity panics.
func newRef[T any](capacity int) *refRing[T] {
	if capacity < 1 || capacity > MaxCapacity {
		panic(fmt.Sprintf("ring: capacity %d is out of range", capacity))
	}
	n := 1
	for n < capacity {
		n <<= 1
	}
	return &refRing[T]{buf: make([]T, n)}
}

func (q *refRing[T]) TryPush(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.tail-q.head == uint64(len(q.buf)) {
		return false
	}
	q.buf[q.tail%uint64(len(q.buf))] = v
	q.tail++
	return true
}

func (q *refRing[T]) TryPop() (T, bool) {
	var dst [1]T
	n, _ := q.TryPopN(dst[:])
	return dst[0], n == 1
}

func (q *refRing[T]) TryPopN(dst []T) (int, uint64) {
	return q.TryPopShare(dst, 1)
}

func (q *refRing[T]) TryPopShare(dst []T, parts int) (int, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := min(uint64(len(dst)), q.tail-q.head)
	parts = max(parts, 1)
	dst = dst[:(k+uint64(parts)-1)/uint64(parts)]
	first := q.head
	n := 0
	var zero T
	for n < len(dst) && q.head < q.tail {
		i := q.head % uint64(len(q.buf))
		dst[n] = q.buf[i]
		q.buf[i] = zero
		q.head++
		n++
	}
	return n, first
}

func (q *refRing[T]) Ready() bool { return q.Len() > 0 }

func (q *refRing[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return int(q.tail - q.head)
}

func (q *refRing[T]) Cap() int { return len(q.buf) }

func (q *refRing[T]) Pushed() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.tail
}

func (q *refRing[T]) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
}

func (q *refRing[T]) Reopen() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = false
}

func (q *refRing[T]) Closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}
