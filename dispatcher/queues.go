package dispatcher

import (
	"container/heap"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// retryQueue holds retries waiting for their backoff (waiting, a heap by due
// time) and retries and redeliveries that are due (ready, FIFO). Together
// they hold at most limit jobs; add and addReady report false beyond that.
type retryQueue struct {
	mu      sync.Mutex
	limit   int
	waiting retryHeap
	ready   fifo[job]
	seq     uint64 // ties in due time keep FIFO order

	nReady   atomic.Int32 // len(ready), for checks without the lock
	nWaiting atomic.Int32 // len(waiting)
}

func (r *retryQueue) init(limit int) { r.limit = limit }

func (r *retryQueue) full() bool { return r.waiting.Len()+r.ready.len() >= r.limit }

// add schedules j to become ready at due.
func (r *retryQueue) add(j job, due time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full() {
		return false
	}
	r.seq++
	heap.Push(&r.waiting, retryItem{job: j, due: due, seq: r.seq})
	r.nWaiting.Store(int32(r.waiting.Len()))
	return true
}

// addReady queues j as due now.
func (r *retryQueue) addReady(j job) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.full() {
		return false
	}
	r.ready.push(j)
	r.nReady.Store(int32(r.ready.len()))
	return true
}

// moveDue moves the retries due at now (now >= due) to ready, and returns
// how many it moved and the due time of the next waiting one (zero if none).
func (r *retryQueue) moveDue(now time.Time) (moved int, next time.Time) {
	if r.nWaiting.Load() == 0 {
		return 0, time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.waiting.Len() > 0 {
		it := r.waiting[0]
		if now.Before(it.due) {
			next = it.due
			break
		}
		heap.Pop(&r.waiting)
		r.ready.push(it.job)
		moved++
	}
	r.nWaiting.Store(int32(r.waiting.Len()))
	r.nReady.Store(int32(r.ready.len()))
	return moved, next
}

// takeReady appends up to max ready jobs to dst.
func (r *retryQueue) takeReady(dst []job, max int) []job {
	if r.nReady.Load() == 0 {
		return dst
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ; max > 0 && r.ready.len() > 0; max-- {
		dst = append(dst, r.ready.pop())
	}
	r.nReady.Store(int32(r.ready.len()))
	return dst
}

func (r *retryQueue) counts() (ready, waiting int) {
	return int(r.nReady.Load()), int(r.nWaiting.Load())
}

func (r *retryQueue) empty() bool { return r.nReady.Load() == 0 && r.nWaiting.Load() == 0 }

// clear discards every job and returns how many there were.
func (r *retryQueue) clear() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.waiting.Len() + r.ready.len()
	r.waiting = r.waiting[:0]
	r.ready = fifo[job]{}
	r.nWaiting.Store(0)
	r.nReady.Store(0)
	return n
}

type retryItem struct {
	job
	due time.Time
	seq uint64
}

// retryHeap is a min-heap of retries by due time, then scheduling order.
type retryHeap []retryItem

func (h retryHeap) Len() int { return len(h) }
func (h retryHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h retryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)   { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = retryItem{}
	*h = old[:len(old)-1]
	return it
}

// fifo is a slice-backed FIFO queue that reuses its storage.
type fifo[T any] struct {
	buf  []T
	head int
}

func (q *fifo[T]) len() int { return len(q.buf) - q.head }

func (q *fifo[T]) push(v T) {
	if q.head > 0 && len(q.buf) == cap(q.buf) {
		// Slide the live part to the front instead of growing.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, v)
}

func (q *fifo[T]) pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return v
}

// DeadLetter is an (event, subscriber) pair whose retry budget ran out.
type DeadLetter struct {
	Event      Event  // the event, with the Attempt of the last call
	Err        error  // the last failure; a panic is a *PanicError
	Subscriber string // the name of the subscription that failed
	Attempts   int    // handler calls made for this pair

	sub *subscriber
}

// deadLetters keeps the newest limit dead letters, oldest first.
type deadLetters struct {
	mu    sync.Mutex
	limit int
	list  fifo[DeadLetter]
	n     atomic.Int32
}

// add appends dl and reports whether the oldest was evicted to make room.
func (l *deadLetters) add(dl DeadLetter) (evicted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.list.len() >= l.limit {
		l.list.pop()
		evicted = true
	}
	l.list.push(dl)
	l.n.Store(int32(l.list.len()))
	return evicted
}

func (l *deadLetters) len() int { return int(l.n.Load()) }

func (l *deadLetters) snapshot() []DeadLetter {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list.buf[l.list.head:])
}

// redeliver offers each dead letter, oldest first, to queue; those it
// takes are removed. Dead letters of unsubscribed subscribers stay.
func (l *deadLetters) redeliver(queue func(*DeadLetter, *subscriber) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var kept fifo[DeadLetter]
	n := 0
	for l.list.len() > 0 {
		dl := l.list.pop()
		if dl.sub.active.Load() && queue(&dl, dl.sub) {
			n++
			continue
		}
		kept.push(dl)
	}
	l.list = kept
	l.n.Store(int32(l.list.len()))
	return n
}

// carryList holds fresh events that Run's workers had taken from the ring
// but not processed when Run stopped, sorted by ID. Consumers take from it
// before the ring, so emit order holds.
type carryList struct {
	mu   sync.Mutex
	jobs fifo[job]
	n    atomic.Int32
}

func (c *carryList) len() int { return int(c.n.Load()) }

// put adds jobs and keeps the list sorted by event ID.
func (c *carryList) put(jobs []job) {
	if len(jobs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range jobs {
		c.jobs.push(j)
	}
	live := c.jobs.buf[c.jobs.head:]
	slices.SortFunc(live, func(a, b job) int {
		switch {
		case a.ev.ID < b.ev.ID:
			return -1
		case a.ev.ID > b.ev.ID:
			return 1
		}
		return 0
	})
	c.n.Store(int32(c.jobs.len()))
}

// take appends up to max jobs to dst, oldest first. The caller holds
// whatever lock orders its takes (keyTable.mu under Run).
func (c *carryList) take(dst []job, max int) []job {
	if c.n.Load() == 0 {
		return dst
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; max > 0 && c.jobs.len() > 0; max-- {
		dst = append(dst, c.jobs.pop())
	}
	c.n.Store(int32(c.jobs.len()))
	return dst
}

func (c *carryList) clear() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.jobs.len()
	c.jobs = fifo[job]{}
	c.n.Store(0)
	return n
}
