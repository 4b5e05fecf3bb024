package dispatcher

import (
	"cmp"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/internal/fifo"
	"github.com/ringbus/ringbus/internal/keyq"
	"github.com/ringbus/ringbus/internal/ring"
)

// entry is what the ring holds for one emitted event. Its ID is not stored:
// it is the event's position in the ring plus one, known when it is popped.
//
// With its 8-byte sequence number, a ring slot is one 64-byte cache line on
// 64-bit platforms: a producer filling one slot and a consumer emptying the
// next never share a line.
type entry struct {
	topic   string
	key     string
	payload any
	tr      *tracker // OnDone's, or nil
}

// job is one unit of work: an event to fan out to every matching
// subscriber (sub == nil), or a retry or redelivery for one subscriber.
// owns marks a keyed job handed from one worker to another together with
// the ownership of its key (see keyq): it must not be admitted again. last
// marks, under Run, the job after which its consumer releases its key.
type job struct {
	ev   Event
	sub  *subscriber
	tr   *tracker // the event's OnDone tracker, or nil; the job holds one reference
	owns bool
	last bool
}

// pending holds every piece of work that is accepted and not finished, in
// one place, so that Stats, the quiescence check, Shutdown's drain and
// Close's drop all see the same thing:
//
//	ring     fresh events, in emit order
//	carry    fresh events (or one subscriber's share of one) that a consumer
//	         took and handed back unprocessed; sorted by ID, they come
//	         before everything in the ring
//	ready    retries and redeliveries that are due, and keyed jobs handed
//	         on with their key's ownership
//	waiting  retries whose backoff has not passed, and delayed events
//	         (After, At) that are not due, by due time
//	keys     under Run, keyed jobs waiting behind an earlier job of their key
//	held     per consumer: jobs it took and has not begun
//
// Consumers take in that order: carry, ready, ring. The ring is the only
// part on the emit path; the others are guarded by mu and are touched once
// per batch at most, so mu is not contended on the hot path.
type pending struct {
	ring *ring.Ring[entry]
	keys *keyq.Queue[job]

	// takeMu orders Run's workers' takes: a worker takes its batch and
	// admits its keyed jobs to keys under it, so that the jobs of a key
	// are admitted in emit order; a worker that hands back keyed jobs
	// holds it too (see proc.handBack).
	takeMu sync.Mutex

	mu      sync.Mutex
	carry   fifo.Queue[job]
	ready   fifo.Queue[job]
	waiting retryHeap
	seq     uint64 // orders retries with equal due times
	retries int    // retries and redeliveries in ready and waiting, bounded by limit
	limit   int

	// Lock-free views of the sizes above, for polling and for Stats.
	front    atomic.Int64 // carry.Len() + ready.Len()
	nWaiting atomic.Int64 // waiting.Len()
	nRetries atomic.Int64 // retries

	held []*atomic.Uint64 // one per consumer (see proc.held); fixed after New

	// Delayed events (see After): scheduled counts the ones not yet due,
	// in the ring or in waiting, bounded by limit; schedInRing the ones
	// of those still in the ring. schedFree wakes emitters that wait for
	// a place under Block, schedWake Run's scheduler for a new due time.
	scheduled   atomic.Int64
	schedInRing atomic.Int64
	// schedPushing counts the delayed emits that reserved their place and
	// count in schedInRing (so that a consumer that pops them postpones
	// them) but have not pushed yet: under Block one waits for room for
	// as long as the ring stays full. Stats counts them as neither
	// scheduled nor in the ring.
	schedPushing atomic.Int64
	schedFree    signal
	schedWake    chan<- struct{}
	// Under DropOldest only: the trackers of delayed events in emit order
	// (see Dispatcher.cancelFirstScheduled).
	schedMu    sync.Mutex
	schedOrder fifo.Queue[*tracker]
}

func newPending(capacity int, schedWake chan<- struct{}) *pending {
	r := ring.New[entry](capacity)
	return &pending{ring: r, keys: keyq.New[job](r.Cap()), limit: r.Cap(), schedWake: schedWake}
}

// updateLocked refreshes the lock-free sizes. p.mu is held.
func (p *pending) updateLocked() {
	p.front.Store(int64(p.carry.Len() + p.ready.Len()))
	p.nWaiting.Store(int64(p.waiting.Len()))
	p.nRetries.Store(int64(p.retries))
}

// sizes returns how many events wait to be processed (queued: the ring,
// carry, ready, key backlogs and what consumers hold, due retries
// included) and how many retries and redeliveries are pending, due or not
// (retrying). Under concurrent use the parts are read one by one.
func (p *pending) sizes() (queued, retrying int) {
	queued = p.ring.Len() + int(p.front.Load()) + p.keys.Len()
	for _, h := range p.held {
		queued += int(h.Load())
	}
	return queued, int(p.nRetries.Load())
}

// empty reports whether nothing at all is pending, waiting retries
// included.
func (p *pending) empty() bool {
	q, _ := p.sizes()
	return q == 0 && p.nWaiting.Load() == 0
}

// hasFront reports whether carry or ready has a job, without the lock.
func (p *pending) hasFront() bool { return p.front.Load() > 0 }

// zeroTime is the due time of a job that is ready at once.
var zeroTime time.Time

// retry queues j after a failure: at due, or ready now if due is zero. It
// reports false when the retries already pending reach the limit.
func (p *pending) retry(j job, due time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retries >= p.limit {
		return false
	}
	p.retries++
	if due.IsZero() {
		p.ready.Push(j)
	} else {
		p.seq++
		p.waiting.push(retryItem{job: j, due: due, seq: p.seq})
	}
	p.updateLocked()
	return true
}

// handOn queues j, a keyed job whose key ownership comes with it, for the
// next consumer. It never fails: there is at most one such job per owned
// key, and they are bounded by the key backlogs they come from.
func (p *pending) handOn(j job) {
	j.owns, j.last = true, true
	p.mu.Lock()
	p.ready.Push(j)
	p.updateLocked()
	p.mu.Unlock()
}

// putBack hands back jobs a consumer took and will not process, so that
// they are taken again before anything still in the ring, in ID order.
func (p *pending) putBack(jobs []job) {
	if len(jobs) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range jobs {
		j.owns, j.last = false, false // whoever takes it admits it again
		p.carry.Push(j)
	}
	// Stable: one event's shares for several subscribers keep their order.
	slices.SortStableFunc(p.carry.Items(), func(a, b job) int { return cmp.Compare(a.ev.ID, b.ev.ID) })
	p.updateLocked()
}

// moveDue makes the retries due at now (now >= due) ready, and returns how
// many it moved and the due time of the next waiting one (zero if none).
func (p *pending) moveDue(now time.Time) (moved int, next time.Time) {
	if p.nWaiting.Load() == 0 {
		return 0, time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.waiting.Len() > 0 {
		it := &p.waiting[0]
		if now.Before(it.due) {
			next = it.due
			break
		}
		j := p.waiting.pop().job
		if j.tr != nil {
			p.unschedule(j.tr) // a delayed event: no zombie waits here
		}
		p.ready.Push(j)
		moved++
	}
	p.updateLocked()
	return moved, next
}

// nextDue returns the due time of the earliest waiting retry, or zero.
func (p *pending) nextDue() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting.Len() == 0 {
		return time.Time{}
	}
	return p.waiting[0].due
}

// bounds limits what one take may take. A consumer under Run takes
// without bounds (all fields maxed); a deterministic round takes only what
// was pending when it began.
type bounds struct {
	carry, ready int    // how many more jobs from carry and from ready
	ring         int    // how many more events from the ring
	ringEnd      uint64 // ring positions below ringEnd only
	max          int    // how many jobs in all; 0: no more
	parts        int    // take 1/parts of the ready ring events (see ring.TryPopShare)
}

// unbounded returns the bounds of one of n consumers under Run.
func unbounded(n int) bounds {
	return bounds{carry: maxInt, ready: maxInt, ring: maxInt, ringEnd: ^uint64(0), max: maxInt, parts: n}
}

const maxInt = int(^uint(0) >> 1)

// round sets *b to the bounds of a deterministic round: what is pending
// now, at most max jobs (max <= 0: no limit). It writes b field by field,
// in place: a bounds returned by value is stored narrow and copied wide,
// and the copy stalls on the stores (store forwarding), once per Drain.
func (p *pending) round(b *bounds, max int) {
	b.carry, b.ready = 0, 0
	if p.front.Load() > 0 {
		p.mu.Lock()
		b.carry, b.ready = p.carry.Len(), p.ready.Len()
		p.mu.Unlock()
	}
	b.ringEnd = p.ring.Pushed()
	b.ring = p.ring.Len()
	b.max, b.parts = maxInt, 1
	if max > 0 {
		b.max = max
	}
}

// empty reports whether the bounds of a round allow nothing more. (Under
// Run the bounds are never empty, and the sum would overflow: not for
// them.)
func (b *bounds) empty() bool { return b.max <= 0 || b.carry+b.ready+b.ring == 0 }

// take appends to dst up to n jobs within b, from carry, then ready, then
// the ring, and charges them to b. Ring events are popped into buf
// (len(buf) >= n), which take clears again. Events popped at or beyond
// b.ringEnd (DropOldest evictions can bring them within reach of a round)
// are handed back to carry. When keys is set (under Run), keyed jobs are
// admitted to the key table and only the ones the caller owns are
// returned, and nothing is taken from the ring while the key backlogs are
// full. Delayed events that are not due go to waiting (see postpone).
// take reports how many slots it freed in the ring, from position first
// on.
func (p *pending) take(dst []job, buf []entry, n int, b *bounds, keys bool) (jobs []job, popped int, first uint64) {
	n = min(n, b.max)
	if n <= 0 {
		return dst, 0, 0
	}
	if p.front.Load() > 0 && (b.carry > 0 || b.ready > 0) {
		p.mu.Lock()
		for ; n > 0 && b.carry > 0 && p.carry.Len() > 0; n, b.carry, b.max = n-1, b.carry-1, b.max-1 {
			dst = append(dst, p.carry.Pop())
		}
		for ; n > 0 && b.ready > 0 && p.ready.Len() > 0; n, b.ready, b.max = n-1, b.ready-1, b.max-1 {
			j := p.ready.Pop()
			if j.sub != nil && !j.owns {
				p.retries--
			}
			dst = append(dst, j)
		}
		p.updateLocked()
		p.mu.Unlock()
	}
	n = min(n, b.ring)
	if n > 0 && (!keys || !p.keys.Full()) {
		// Under Run, an even share of what is ready, so that a few slow
		// events spread over the workers instead of queueing behind one.
		var k int
		k, first = p.ring.TryPopShare(buf[:n], b.parts)
		popped = k
		// Only a take that popped a delayed event postpones (a clock
		// read and a lock): a delayed push counts itself in schedInRing
		// first, so none is missed when it is 0.
		delayed := false
		if p.schedInRing.Load() > 0 {
			for i := range buf[:k] {
				if p.popped(&buf[i]) {
					delayed = true
				}
			}
		}
		if first+uint64(k) > b.ringEnd {
			k = int(max(b.ringEnd, first) - first)
		}
		m := len(dst)
		dst = slices.Grow(dst, k)[:m+k]
		for i := range buf[:k] {
			buf[i].fill(&dst[m+i], first+uint64(i))
		}
		b.ring -= popped
		if k < popped {
			beyond := make([]job, 0, popped-k)
			for i := k; i < popped; i++ {
				e := &buf[i]
				beyond = append(beyond, e.job(first+uint64(i)))
			}
			if delayed {
				beyond = p.postpone(beyond, 0)
			}
			p.putBack(beyond)
			b.ring = 0 // the round reached its end
		}
		if delayed {
			dst = p.postpone(dst, m)
		}
		// The limit counts what the caller processes: not the delayed
		// events that went to waiting.
		b.max -= len(dst) - m
		for i := range buf[:popped] {
			buf[i] = entry{} // per element: cheaper than clear's bulk barrier for the usual few
		}
	}
	if keys {
		dst = p.admit(dst)
	}
	return dst, popped, first
}

// job returns the fresh job of e, popped at ring position pos.
func (e *entry) job(pos uint64) job {
	var j job
	e.fill(&j, pos)
	return j
}

// fill makes *j the fresh job of e, popped at ring position pos, its event
// ready for its first calls (Attempt 1). It writes field by field: a
// composite literal is built in a temporary and copied, and the copy's
// wide loads stall on the narrow stores just made (store forwarding), a
// cost paid per event. For the same reason the Attempt is set here, long
// before the handler call copies the event, and not just before it.
func (e *entry) fill(j *job, pos uint64) {
	j.ev.ID = pos + 1
	j.ev.Topic = e.topic
	j.ev.Key = e.key
	j.ev.Payload = e.payload
	j.ev.Attempt = 1
	j.sub = nil
	j.tr = e.tr
	j.owns = false
}

// admit admits the keyed jobs of jobs to the key table and returns the ones
// the caller may process now, in keyq.AdmitRounds's order, each key's
// last one marked. Jobs handed on with their key's ownership are kept as
// they are (handOn marked them).
func (p *pending) admit(jobs []job) []job {
	for i := range jobs {
		if jobs[i].ev.Key != "" {
			return p.keys.AdmitRounds(jobs, (*job).admitKey, (*job).markLast)
		}
	}
	return jobs
}

func (j *job) markLast() { j.last = true }

// admitKey is the key under which keyq admits j: none for a job that
// already owns its key.
func (j *job) admitKey() string {
	if j.owns {
		return ""
	}
	return j.ev.Key
}

// clear discards everything pending but what consumers hold, counts it
// in dropped and tells the events' OnDone. Payloads become collectable.
// Keys stay owned by the consumers at work, which release them as usual;
// a key handed on with a dropped job stays owned until Run's end resets
// the table (unkey).
func (p *pending) clear(d *Dispatcher) {
	var buf [64]entry
	for p.ring.Len() > 0 {
		k, first := p.ring.TryPopN(buf[:])
		for i := range buf[:k] {
			d.dropEntry(&buf[i], first+uint64(i), DroppedClosed)
		}
		clear(buf[:k])
		if k == 0 {
			// A push claimed its slot and is still writing it. The ring
			// is closed when clear runs for Close, so no push claims
			// after it: wait for this one and drop it too.
			if !p.ring.Closed() {
				break // Run's end: the next consumer takes it
			}
			runtime.Gosched()
		}
	}
	dropped := p.keys.TakeBacklogs(nil)
	p.mu.Lock()
	dropped = append(dropped, p.carry.Items()...)
	dropped = append(dropped, p.ready.Items()...)
	dropped = p.waiting.takeAll(dropped)
	p.carry.Reset()
	p.ready.Reset()
	p.retries = 0
	p.updateLocked()
	p.mu.Unlock()
	d.dropJobs(nil, dropped)
}

// unkey is called when Run's workers have stopped: every key backlog, and
// every job handed on with its key, goes back to carry, so that a later
// Tick, Drain or Run takes them in ID order and nobody owns a key.
func (p *pending) unkey() {
	back := p.keys.Reset(nil)
	p.mu.Lock()
	var keep fifo.Queue[job]
	for p.ready.Len() > 0 {
		j := p.ready.Pop()
		if j.owns {
			back = append(back, j)
		} else {
			keep.Push(j)
		}
	}
	p.ready = keep
	p.updateLocked()
	p.mu.Unlock()
	p.putBack(back)
}

type retryItem struct {
	job
	due time.Time
	seq uint64
}

// retryHeap is a min-heap of retries by due time, then scheduling order.
// It is typed, not a container/heap.Interface, whose Push and Pop pass
// each item boxed in an interface: an allocation per retry.
type retryHeap []retryItem

func (h retryHeap) Len() int { return len(h) }

func (h retryHeap) less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}

func (h retryHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h.place(i)
	h.place(j)
}

// push adds it.
func (h *retryHeap) push(it retryItem) {
	*h = append(*h, it)
	n := len(*h) - 1
	h.place(n)
	h.up(n)
}

// pop removes and returns the earliest item. The heap is not empty.
func (h *retryHeap) pop() retryItem { return h.remove(0) }

// remove removes and returns the item at i, clearing its slot so that no
// payload stays reachable.
func (h *retryHeap) remove(i int) retryItem {
	s := *h
	n := len(s) - 1
	if i != n {
		s.swap(i, n)
		if !s[:n].down(i) {
			s[:n].up(i)
		}
	}
	it := s[n]
	s[n] = retryItem{}
	*h = s[:n]
	if it.tr != nil && it.tr.hidx >= 0 {
		it.tr.hidx = -1
	}
	return it
}

// takeAll empties the heap, appending its jobs to dst in heap order, and
// returns dst. Like remove, it leaves no delayed event's tracker recording
// an index: a DropOldest emit that cancels one of them before the caller
// has dropped it must not look for it in the heap (see
// cancelFirstScheduled).
func (h *retryHeap) takeAll(dst []job) []job {
	for i := range *h {
		it := &(*h)[i]
		if it.tr != nil && it.tr.hidx >= 0 {
			it.tr.hidx = -1
		}
		dst = append(dst, it.job)
	}
	clear(*h)
	*h = nil
	return dst
}

// up moves the item at j towards the root while it is earlier than its
// parent.
func (h retryHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			return
		}
		h.swap(i, j)
		j = i
	}
}

// down moves the item at i0 towards the leaves while a child is earlier,
// and reports whether it moved.
func (h retryHeap) down(i0 int) bool {
	i := i0
	for {
		j := 2*i + 1
		if j >= len(h) {
			break
		}
		if k := j + 1; k < len(h) && h.less(k, j) {
			j = k
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

// place records where the delayed event at i waits, for DropOldest (see
// tracker.hidx). A tracker that several retries share is no delayed event
// any more: it is left alone.
func (h retryHeap) place(i int) {
	if t := h[i].tr; t != nil && t.sched.Load() == schedWaiting {
		t.hidx = i
	}
}
