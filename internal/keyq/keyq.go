// Package keyq serializes work per key: of the items that share a key, at
// most one is in progress at any time, and the others wait in that key's
// backlog in the order they arrived.
//
// A consumer that admits an item either becomes the owner of the item's
// key (it may process the item now) or leaves the item in the key's
// backlog. When the owner has finished an item it releases the key and
// gets the next backlogged item, which it must process or hand on to
// another consumer together with the ownership; when the backlog is empty
// the key becomes free. So the items of one key are processed one at a
// time in admission order, while items of other keys are not held up.
//
// Invariants, under Queue.mu:
//   - a key is in owned exactly while one goroutine (or one hand-off in
//     flight between goroutines) owns it;
//   - owned[k] holds the items of k admitted while k was owned and not yet
//     returned by Release or Abandon, oldest first;
//   - n is the sum of the backlogs' lengths.
package keyq

import (
	"sync"
	"sync/atomic"

	"github.com/ringbus/ringbus/internal/fifo"
)

// Queue is the per-key ordering table. Its backlogs together are bounded
// by the limit given to New: Full reports when they reach it, and the
// caller is expected to stop admitting items until owners catch up (Admit
// itself never refuses an item: the caller already holds it). A Queue must
// not be copied after first use; its methods are safe for concurrent use.
type Queue[T any] struct {
	mu    sync.Mutex
	owned map[string]*fifo.Queue[T] // key -> backlog; present while owned
	spare []*fifo.Queue[T]          // emptied backlogs, reused
	n     atomic.Int64              // items in all backlogs
	limit int64
}

// New returns an empty Queue whose backlogs are Full at limit items. A
// limit below 1 is a programming error and panics.
func New[T any](limit int) *Queue[T] {
	if limit < 1 {
		panic("keyq: limit below 1")
	}
	return &Queue[T]{owned: make(map[string]*fifo.Queue[T]), limit: int64(limit)}
}

// Len returns the number of items waiting in backlogs.
func (q *Queue[T]) Len() int { return int(q.n.Load()) }

// Full reports whether the backlogs hold the limit or more.
func (q *Queue[T]) Full() bool { return q.n.Load() >= q.limit }

// Owned returns the number of keys owned now.
func (q *Queue[T]) Owned() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.owned)
}

// Admit admits items in order. An item whose key (as key reports it) is
// empty, or free, stays in the result and its key, if any, is now owned by
// the caller; an item whose key is owned moves to the end of that key's
// backlog. It returns the items the caller may process now, in their
// original order, in items' own backing array; the vacated tail is zeroed.
//
// Admission order is the order in which keyed items are processed, so
// callers must admit the items of one key in the order they were emitted:
// the dispatcher takes a batch and admits it under one lock.
func (q *Queue[T]) Admit(items []T, key func(*T) string) []T {
	kept := items[:0]
	q.mu.Lock()
	for i := range items {
		k := key(&items[i])
		if k == "" || q.acquire(k, items[i]) {
			kept = append(kept, items[i])
		}
	}
	q.mu.Unlock()
	clear(items[len(kept):])
	return kept
}

// acquire makes the caller the owner of k and reports true, or queues v in
// k's backlog and reports false. q.mu is held.
func (q *Queue[T]) acquire(k string, v T) bool {
	if b, ok := q.owned[k]; ok {
		b.Push(v)
		q.n.Add(1)
		return false
	}
	var b *fifo.Queue[T]
	if n := len(q.spare); n > 0 {
		b, q.spare = q.spare[n-1], q.spare[:n-1]
	} else {
		b = new(fifo.Queue[T])
	}
	q.owned[k] = b
	return true
}

// Release is called by the owner of k when it has finished an item of k.
// If k's backlog has an item, Release removes it and returns it with true:
// the caller still owns k and must process that item, or hand it on with
// the ownership. Otherwise k becomes free and Release returns false.
// Releasing a key that is not owned is a bug in the caller and panics.
func (q *Queue[T]) Release(k string) (next T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.owned[k]
	if b == nil {
		panic("keyq: Release of a key that is not owned: " + k)
	}
	if b.Len() > 0 {
		q.n.Add(-1)
		return b.Pop(), true
	}
	delete(q.owned, k)
	q.recycle(b)
	return next, false
}

// Abandon gives up the ownership of k without processing the rest of its
// backlog: it appends the backlog to dst, oldest first, frees k and
// returns dst. A consumer that stops with items it cannot process uses it
// to hand them back in order. Abandoning a key that is not owned does
// nothing.
func (q *Queue[T]) Abandon(k string, dst []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.abandon(k, dst)
}

func (q *Queue[T]) abandon(k string, dst []T) []T {
	b, ok := q.owned[k]
	if !ok {
		return dst
	}
	q.n.Add(int64(-b.Len()))
	dst = append(dst, b.Items()...)
	b.Reset()
	delete(q.owned, k)
	q.recycle(b)
	return dst
}

// spareCap is the largest backlog storage kept for reuse: a burst on one
// key must not pin its backlog's slice for the Queue's life.
const spareCap = 256

// recycle keeps the empty backlog b for reuse, dropping storage that a
// burst made large. q.mu is held.
func (q *Queue[T]) recycle(b *fifo.Queue[T]) {
	if cap(b.Items()) > spareCap {
		b.Reset()
	}
	q.spare = append(q.spare, b)
}

// TakeBacklogs removes every backlogged item, appending them to dst (the
// backlogs one after the other, each oldest first), and returns dst. The
// keys stay owned: their owners, still at work, release them as usual and
// find nothing more. It is for dropping what waits while owners may still
// be processing.
func (q *Queue[T]) TakeBacklogs(dst []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, b := range q.owned {
		q.n.Add(int64(-b.Len()))
		dst = append(dst, b.Items()...)
		b.Reset()
	}
	return dst
}

// Reset abandons every key, appending every backlog to dst (the backlogs
// one after the other, each oldest first), and returns dst. It is for a
// consumer pool that stopped: nobody owns anything afterwards.
func (q *Queue[T]) Reset(dst []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k := range q.owned {
		dst = q.abandon(k, dst)
	}
	q.spare = nil
	return dst
}
