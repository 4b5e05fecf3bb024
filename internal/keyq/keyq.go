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
//   - keys[k].owned is true exactly while one goroutine (or one hand-off
//     in flight between goroutines) owns k; a key that is not owned may
//     keep its entry (idle), so that owning it again costs no map insert
//     and no delete: at most idleKeys entries are idle;
//   - keys[k] holds the items of k admitted while k was owned and not yet
//     returned by Release or Abandon, oldest first; an idle entry holds
//     none;
//   - n is the sum of the backlogs' lengths, nOwned the owned entries,
//     idle the others;
//   - big counts the backlogs (in keys or spare) whose storage outgrew
//     spareCap and was kept: at most maxBig.
package keyq

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ringbus/ringbus/internal/fifo"
)

// Queue is the per-key ordering table. Its backlogs together are bounded
// by the limit given to New: Full reports when they reach it, and the
// caller is expected to stop admitting items until owners catch up (AdmitRounds
// itself never refuses an item: the caller already holds it). A Queue must
// not be copied after first use; its methods are safe for concurrent use.
type Queue[T any] struct {
	mu     sync.Mutex
	keys   map[string]*backlog[T] // key -> backlog: owned keys, and idle ones
	spare  []*backlog[T]          // backlogs without a key, reused
	nOwned int
	idle   int
	big    int          // backlogs that keep storage above spareCap, at most maxBig
	n      atomic.Int64 // items in all backlogs
	limit  int64

	// AdmitRounds's state and scratch, used under mu only: calls numbers
	// the calls, so that a backlog tells whether this call acquired its
	// key; rounds and counts order the kept items (see AdmitRounds), tmp
	// holds them meanwhile and is cleared after each call.
	calls  uint64
	rounds []int32
	logs   []*backlog[T] // the kept items' backlogs, nil for unkeyed ones
	counts []int
	tmp    []T
}

// backlog is the entry of a key: whether it is owned, and the queue of
// its waiting items. call and runs are AdmitRounds's: the call that
// acquired the key, and how many of the key's items that call kept.
type backlog[T any] struct {
	fifo.Queue[T]
	owned bool
	big   bool // keeps storage above spareCap, counted in Queue.big
	call  uint64
	runs  int32
}

// idleKeys bounds the entries kept for keys that are not owned, so that a
// stream of ever new keys does not grow the table. The entries kept are
// those of the first keys released while there was room, not of the most
// recent ones: a working set of keys among them is owned and released
// again and again without a map insert and delete each time, and a key
// outside them pays both at each release.
const idleKeys = 1024

// New returns an empty Queue whose backlogs are Full at limit items. A
// limit below 1 is a programming error and panics.
func New[T any](limit int) *Queue[T] {
	if limit < 1 {
		panic("keyq: limit below 1")
	}
	return &Queue[T]{keys: make(map[string]*backlog[T]), limit: int64(limit)}
}

// Len returns the number of items waiting in backlogs.
func (q *Queue[T]) Len() int { return int(q.n.Load()) }

// Full reports whether the backlogs hold the limit or more.
func (q *Queue[T]) Full() bool { return q.n.Load() >= q.limit }

// Owned returns the number of keys owned now.
func (q *Queue[T]) Owned() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.nOwned
}

// own makes k, which is not owned, owned, and returns its entry: b, the
// idle entry of k, or a new one if b is nil. q.mu is held.
func (q *Queue[T]) own(k string, b *backlog[T]) *backlog[T] {
	if b != nil {
		q.idle--
	} else if n := len(q.spare); n > 0 {
		b, q.spare = q.spare[n-1], q.spare[:n-1]
		q.keys[k] = b
	} else {
		b = new(backlog[T])
		q.keys[k] = b
	}
	b.owned = true
	q.nOwned++
	return b
}

// disown makes k, owned with the empty backlog b, not owned: its entry
// stays, idle, while fewer than idleKeys are. q.mu is held.
func (q *Queue[T]) disown(k string, b *backlog[T]) {
	b.owned = false
	q.nOwned--
	if !b.big && cap(b.Items()) > spareCap {
		// A burst must not pin its backlog's storage, but a hot key's
		// backlog, released and owned again and again, would regrow it
		// at every burst: the first few large ones keep theirs.
		if q.big < maxBig {
			b.big = true
			q.big++
		} else {
			b.Reset()
		}
	}
	if q.idle < idleKeys {
		q.idle++
		return
	}
	delete(q.keys, k)
	q.spare = append(q.spare, b)
}

// AdmitRounds admits items, in order, for a caller that processes what it
// keeps in order, on one goroutine. An item without a key stays in the
// result. An item whose key is free makes the caller its owner and stays
// in the result, and so do the later items of that key in this call; the
// caller releases such a key once, after the last of them. The result is
// in rounds: first every kept key's first item, in their original order,
// then every kept key's second item, and so on, so that the items of one
// key keep their order and a key with many items does not delay the first
// item of another (as Release's backlog order would not). Items whose key
// was owned already, by anyone, go to the end of its backlog. last is
// called, under the lock, on each key's last kept item (with the item in
// the result): the caller releases the key after that item, and only
// then.
func (q *Queue[T]) AdmitRounds(items []T, key func(*T) string, last func(*T)) []T {
	kept := items[:0]
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls++
	rounds, logs := q.rounds[:0], q.logs[:0]
	top := int32(0) // the highest round
	backlogged := 0 // added to q.n once, after the loop
	for i := range items {
		k := key(&items[i])
		r := int32(0)
		var b *backlog[T]
		if k != "" {
			b = q.keys[k]
			switch {
			case b == nil || !b.owned:
				b = q.own(k, b)
				b.call, b.runs = q.calls, 1
			case b.call == q.calls:
				r = b.runs
				b.runs++
				top = max(top, r)
			default:
				b.Push(items[i])
				backlogged++
				continue
			}
		}
		kept = append(kept, items[i])
		rounds = append(rounds, r)
		logs = append(logs, b)
	}
	if backlogged > 0 {
		q.n.Add(int64(backlogged))
	}
	clear(items[len(kept):])
	for i, b := range logs {
		if b != nil && b.runs == rounds[i]+1 {
			last(&kept[i])
		}
	}
	if top > 0 {
		q.order(kept, rounds, int(top))
	}
	clear(logs)
	q.rounds, q.logs = rounds[:0], logs[:0]
	return kept
}

// order sorts kept by round (rounds[i] is kept[i]'s, top the highest),
// keeping the original order within a round: a counting sort through
// q.tmp. q.mu is held.
func (q *Queue[T]) order(kept []T, rounds []int32, top int) {
	counts := slices.Grow(q.counts[:0], top+1)[:top+1]
	clear(counts)
	for _, r := range rounds {
		counts[r]++
	}
	at := 0 // counts[r] becomes where round r starts
	for r, c := range counts {
		counts[r] = at
		at += c
	}
	tmp := append(q.tmp[:0], kept...)
	for i := range tmp {
		kept[counts[rounds[i]]] = tmp[i]
		counts[rounds[i]]++
	}
	clear(tmp)
	q.tmp, q.counts = tmp[:0], counts[:0]
}

// Release is called by the owner of k when it has finished an item of k.
// If k's backlog has an item, Release removes it and returns it with true:
// the caller still owns k and must process that item, or hand it on with
// the ownership. Otherwise k becomes free and Release returns false.
// Releasing a key that is not owned is a bug in the caller and panics.
func (q *Queue[T]) Release(k string) (next T, ok bool) {
	var one [1]T
	if got, ok := q.ReleaseN(k, one[:0], 1); ok {
		return got[0], true
	}
	return next, false
}

// ReleaseN is Release for up to n items: the owner of k, having finished
// an item of k, takes up to n (n >= 1) of k's oldest backlogged items,
// appended to dst, and keeps k if there was any (it must process them in
// order, or hand on the first with the ownership and give the others
// back by Abandon); otherwise k becomes free and ReleaseN returns dst and
// false. One lock and one lookup serve n items.
func (q *Queue[T]) ReleaseN(k string, dst []T, n int) ([]T, bool) {
	q.mu.Lock() // not deferred: this is on the path of every keyed event
	b := q.keys[k]
	if b == nil || !b.owned {
		q.mu.Unlock()
		panic("keyq: Release of a key that is not owned: " + k)
	}
	m := min(n, b.Len())
	if m == 0 {
		q.disown(k, b)
		q.mu.Unlock()
		return dst, false
	}
	for range m {
		dst = append(dst, b.Pop())
	}
	q.n.Add(int64(-m))
	q.mu.Unlock()
	return dst, true
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
	b := q.keys[k]
	if b == nil || !b.owned {
		return dst
	}
	q.n.Add(int64(-b.Len()))
	dst = append(dst, b.Items()...)
	q.release(b)
	q.disown(k, b)
	return dst
}

// release empties b and drops its storage. q.mu is held.
func (q *Queue[T]) release(b *backlog[T]) {
	b.Reset()
	if b.big {
		b.big = false
		q.big--
	}
}

// spareCap is the largest backlog storage kept for reuse, but for maxBig
// backlogs: a burst on one key must not pin its backlog's slice for the
// Queue's life. The maxBig may each hold up to the Queue's limit.
const (
	spareCap = 256
	maxBig   = 4
)

// TakeBacklogs removes every backlogged item, appending them to dst (the
// backlogs one after the other, each oldest first), and returns dst. The
// keys stay owned: their owners, still at work, release them as usual and
// find nothing more. It is for dropping what waits while owners may still
// be processing.
func (q *Queue[T]) TakeBacklogs(dst []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, b := range q.keys {
		q.n.Add(int64(-b.Len()))
		dst = append(dst, b.Items()...)
		q.release(b)
	}
	return dst
}

// Reset abandons every key, appending every backlog to dst (the backlogs
// one after the other, each oldest first), and returns dst. It is for a
// consumer pool that stopped: nobody owns anything afterwards.
func (q *Queue[T]) Reset(dst []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k := range q.keys {
		dst = q.abandon(k, dst)
	}
	clear(q.keys)
	q.spare, q.idle, q.big = nil, 0, 0
	return dst
}
