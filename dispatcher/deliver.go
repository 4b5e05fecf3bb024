package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/internal/atomicx"
)

// proc is one consumer: a worker of Run, or the deterministic consumer of
// Tick, Drain, Shutdown's drain and Flush without Run. Only the goroutine running it touches
// its unexported state; other goroutines read only its atomics (held, goid
// and the counters).
type proc struct {
	d   *Dispatcher
	ctx context.Context // given to handlers: it carries handlerKey

	// held is how many jobs the consumer took and has not begun; Stats
	// counts them as queued. Written only by the consumer, with
	// atomicx.StoreRelease, when it changes (see setHeld).
	held atomic.Uint64
	// cur is the ID of the event whose job a worker is processing, 0
	// between batches (and always 0 for the deterministic consumer). Only
	// the worker writes it; Flush reads it after Close (see
	// Dispatcher.awaitCallsUpTo).
	cur atomic.Uint64
	// goid is the id of the goroutine running a worker (0 for the
	// deterministic consumer), so that Close can tell when it is called
	// by one of the workers' handlers (see Close).
	goid atomic.Uint64

	c counters

	buf   []entry // ring pops land here; cleared after each take
	jobs  []job   // the batch in progress; cleared after each batch
	parts int     // the ring share a worker takes (see bounds.parts)

	worker bool // one of Run's workers, not the deterministic consumer

	// The batch in progress (see runBatch): its jobs, the index of the
	// job in progress, and how many jobs it began.
	batch  []job
	at     int
	batchN int

	// The call in progress, for the batch loop's recovery from a panic
	// (see afterPanic) and for an unwinding goroutine (see unwind).
	calling   bool
	callErr   error
	callStart time.Time     // when it began, under WithHandlerTiming
	fan       []*subscriber // the fan-out in progress, nil for a one-subscriber job
	fanAt     int           // index in fan of the call in progress

	// resume is set after a panic (see afterPanic): process goes on with
	// the job at p.at after the call that panicked, at fan[fanAt+1:], or
	// ends the job when fan is nil (a one-subscriber job).
	resume bool

	// match's last answer: the subscribers of lastTopic under lastIndex.
	scratch   []*subscriber
	lastIndex *subIndex
	lastTopic string
	lastSubs  []*subscriber

	delivered uint64 // successful calls not yet added to c.delivered
	tally     tally  // the same, per subscriber (see countDelivered)
	idx       int    // 0 for the deterministic consumer, 1+i for workers[i]

	// Flush's ledger entries not yet published (see ledger): how many
	// jobs p ended with IDs up to ledgerB, and the IDs of those above.
	ledgerB     uint64
	ledgerEnded int64
	ledgerLate  []uint64

	// The deterministic consumer only: the ctx handlers derive from, its
	// derived handler ctx, and the failures dead-lettered during the call.
	parent           context.Context
	parentComparable bool // parent can be compared with == (see bind)
	collect          bool
	errs             []error
}

// counters are one consumer's event counters. A proc is allocated on its
// own, so the counters of two consumers do not share a cache line in
// practice; the padding keeps the next allocation off their line.
type counters struct {
	delivered    atomic.Uint64
	failed       atomic.Uint64
	retried      atomic.Uint64
	deadLettered atomic.Uint64
	_            [cacheLinePad - 32]byte
}

// cacheLinePad separates fields that different cores write. 128 bytes
// because some CPUs fetch lines in pairs.
const cacheLinePad = 128

func newProc(d *Dispatcher, parts int, worker bool) *proc {
	return &proc{
		d:       d,
		worker:  worker,
		parts:   parts,
		buf:     make([]entry, popBatch),
		jobs:    make([]job, 0, maxBatch), // room for the keys' next jobs too (see runBatch)
		scratch: make([]*subscriber, 0, 8),
	}
}

// setHeld publishes how many jobs p has taken and not begun. Only p's
// goroutine writes held, so a release store is enough, and it is cheaper
// than a sequentially consistent one on amd64 (internal/ring/BENCHMARKS.md);
// and only when the value changes.
func (p *proc) setHeld(n int) {
	if uint64(n) != p.held.Load() { // only p writes it: the load is its own value
		atomicx.StoreRelease(&p.held, uint64(n))
	}
}

// popBatch is the most jobs a consumer takes at once.
const popBatch = 128

// flush publishes the successful calls counted in p once per batch
// instead of once per call. Only p's goroutine writes p.c.delivered, so a
// release store of the sum does what an atomic add would, without the
// read-modify-write.
func (p *proc) flush() {
	if p.delivered > 0 {
		atomicx.StoreRelease(&p.c.delivered, p.c.delivered.Load()+p.delivered)
		p.delivered = 0
		p.flushTally()
	}
}

// bind sets the ctx handlers get from the deterministic consumer: ctx,
// marked as a handler's. A Drain loop passes the same ctx again and again,
// so the derived ctx of the last parent is kept and reused.
func (p *proc) bind(ctx context.Context) {
	if p.parentComparable && p.parent == ctx {
		return
	}
	p.parent, p.ctx = ctx, context.WithValue(ctx, handlerKey{}, p.d)
	p.parentComparable = selfComparable(ctx, ctx)
}

// selfComparable reports whether a == b, called with the same ctx twice,
// runs without a panic. Comparing two interfaces panics when they hold the
// same uncomparable type (a struct with a map field, say), also inside a
// comparable one (an interface field holding a map). When a ctx compares
// with itself, every interface inside it holds a comparable type, so
// comparing it with any other ctx cannot panic either: bind compares the
// last parent with the next only then, without a deferred recover on the
// path of every Drain.
func selfComparable(a, b context.Context) (ok bool) {
	defer func() { _ = recover() }()
	return a == b
}

// process delivers one job: to its one subscriber, or as a fresh event to
// every subscriber whose pattern matches its topic, and then releases the
// job's reference to its event's tracker. It reports false when the stop
// of Run cut a call short (see call): the job's remaining shares were
// handed back, with its key if keyed.
func (p *proc) process(j *job, keyed bool) bool {
	var subs []*subscriber
	from := 0
	if p.resume {
		p.resume = false
		if p.fan == nil {
			p.ended(j.ev.ID) // its one call panicked
			j.tr.release()
			return true
		}
		subs, from = p.fan, p.fanAt+1
	} else {
		if j.tr.zombie() {
			p.ended(j.ev.ID) // DropOldest discarded it while it was in the ring
			p.d.observeZombie(j)
			return true
		}
		if s := j.sub; s != nil {
			if !s.active.Load() {
				p.d.dropJobs(p, []job{*j}) // a retry or redelivery for a subscriber that left
				return true
			}
			if j.ev.Attempt > 1 {
				p.c.retried.Add(1)
				s.c.retried.Add(1)
			}
			if p.call(s, j) {
				p.cutShort(j, []*subscriber{s}, keyed)
				return false
			}
			p.ended(j.ev.ID)
			j.tr.release()
			return true
		}
		subs = p.match(j.ev.Topic) // a fresh job's Attempt is 1 (see entry.fill)
	}
	p.fan = subs
	for i := from; i < len(subs); i++ {
		s := subs[i]
		if !s.active.Load() {
			continue
		}
		p.fanAt = i
		if p.call(s, j) {
			p.fan = nil
			p.cutShort(j, subs[i:], keyed)
			return false
		}
	}
	p.fan = nil
	p.ended(j.ev.ID)
	j.tr.release()
	return true
}

// cutShort hands back a share of j's event for each active subscriber of
// subs: the one whose call the stop of Run cut short, and those not called
// yet. They stay queued in order for the next Run, Tick or Drain, or are
// dropped when the dispatcher closed.
func (p *proc) cutShort(j *job, subs []*subscriber, keyed bool) {
	shares := make([]job, 0, len(subs))
	for i, s := range subs {
		switch {
		case s.active.Load():
			p.d.ledger.spawn(j.ev.ID, 1)
			j.tr.hold()
			shares = append(shares, job{ev: j.ev, sub: s, tr: j.tr})
		case i == 0:
			// The cut call's subscriber left meanwhile: its share is
			// dropped, as a retry for a subscriber that left is.
			p.d.dropped.Add(1)
			p.d.observeDrop(j.tr.carriedValue(), Drop{Event: j.ev, Subscriber: s.name, Reason: DroppedUnsubscribed})
			j.tr.fail(errEventDropped)
		}
	}
	p.ended(j.ev.ID)
	j.tr.release()
	p.handBack(shares, keyed, p.d.state.Load() == stateClosed)
}

// match returns the subscribers of topic under the current index. It
// remembers its last answer, because producers tend to emit runs of events
// on one topic. The answer lives in the index or in p.scratch, which only
// match writes and which is sized to the index, so it stays valid until
// the next match and matching never allocates.
func (p *proc) match(topic string) []*subscriber {
	ix := p.d.subs.Load()
	if ix == p.lastIndex && topic == p.lastTopic {
		return p.lastSubs
	}
	// The new answer may be built where the tally's fan-out is: publish
	// its counts first (see tally).
	p.flushFan()
	if ix != p.lastIndex && cap(p.scratch) < ix.Len() {
		p.scratch = make([]*subscriber, 0, ix.Len())
	}
	subs := ix.Match(topic, p.scratch[:0])
	p.lastIndex, p.lastTopic, p.lastSubs = ix, topic, subs
	return subs
}

// forgetStaleMatch drops match's last answer if its index was replaced, so
// that an idle consumer keeps no unsubscribed handler reachable.
func (p *proc) forgetStaleMatch() {
	if p.lastIndex != nil && p.lastIndex != p.d.subs.Load() {
		p.forgetMatch()
	}
}

// forgetMatch drops match's last answer and what scratch holds, and the
// tally's subscribers.
func (p *proc) forgetMatch() {
	p.forgetTally()
	p.lastIndex, p.lastTopic, p.lastSubs = nil, "", nil
	clear(p.scratch[:cap(p.scratch)])
}

// call runs one handler call for j's event and accounts for its outcome.
// It reports true when the call returned an error after the stop of Run
// (its ctx, Shutdown's ctx or Close) cancelled the worker's ctx: such a
// call is not a failure, and the caller hands the pair back (see
// cutShort). A panic is a failure whenever it happens: the batch loop
// recovers it (see runJobs) and accounts for it (see afterPanic).
func (p *proc) call(s *subscriber, j *job) (cut bool) {
	p.calling = true
	var err error
	if s.hist == nil {
		err = p.invoke(s, &j.ev, j.tr)
	} else {
		err = p.timedInvoke(s, j)
	}
	p.calling = false
	if err == nil {
		p.countDelivered(s) // published by flush, once per batch
		return false
	}
	if p.worker && p.ctx.Err() != nil {
		if _, panicked := err.(*PanicError); !panicked { // one the handler returned
			return true
		}
	}
	p.fail(s, &j.ev, j.tr, err)
	return false
}

// invoke calls s's handler. It has no deferred recover: one in the batch
// loop catches a panic for every call of the batch (see runJobs).
func (p *proc) invoke(s *subscriber, ev *Event, tr *tracker) error {
	ctx := p.ctx
	if tr != nil && tr.carried != nil {
		ctx = p.d.injectCarried(ctx, tr.carried)
	}
	if s.timeout > 0 {
		return invokeTimeout(ctx, s, ev)
	}
	return s.h(ctx, *ev)
}

// invokeTimeout calls s's handler with a ctx that ends after s.timeout.
func invokeTimeout(ctx context.Context, s *subscriber, ev *Event) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.h(ctx, *ev)
}

// fail accounts for a failed call: a retry if the budget allows and the
// retry queue has room, else a dead letter.
func (p *proc) fail(s *subscriber, ev *Event, tr *tracker, err error) {
	p.c.failed.Add(1)
	s.c.failed.Add(1)
	d := p.d
	if ev.Attempt < s.attempts && !isPermanent(err) {
		due, berr := d.retryDue(s, ev.Attempt)
		if berr == nil {
			next := job{ev: *ev, sub: s, tr: tr}
			next.ev.Attempt++
			// Counted before the retry is visible: it may end before we
			// return.
			d.ledger.spawn(ev.ID, 1)
			tr.hold()
			if d.pend.retry(next, due) {
				if due.IsZero() {
					d.notify()
				} else {
					d.retryScheduled()
				}
				d.observeFailure(p, s, ev, tr, err, nil)
				return
			}
			tr.unhold()
			d.ledger.spawn(ev.ID, -1)
			// The retry queue is full: the pair becomes a dead letter now.
		} else {
			err = errors.Join(err, berr)
		}
	}
	p.c.deadLettered.Add(1)
	s.c.deadLettered.Add(1)
	dl := DeadLetter{Event: *ev, Err: err, Subscriber: s.name, Attempts: ev.Attempt, sub: s, carried: tr.carriedValue()}
	if old, evicted := d.dead.add(dl); evicted {
		d.dropped.Add(1) // the oldest dead letter was evicted
		d.observeDrop(old.carried, Drop{Event: old.Event, Subscriber: old.Subscriber, Reason: DroppedDeadLetterLimit})
	}
	d.observeFailure(p, s, ev, tr, err, &dl)
	if p.collect || (tr != nil && tr.done != nil) { // somebody reads it
		herr := &HandlerError{Subscriber: s.name, EventID: ev.ID, Topic: ev.Topic, Attempt: ev.Attempt, Err: err}
		tr.fail(herr)
		if p.collect {
			p.errs = append(p.errs, herr)
		}
	}
}

// retryDue returns when the retry after call number attempt is due: zero
// for "ready now" (no backoff, or a backoff of zero or less under Run),
// else the time. A panicking backoff function is reported as an error.
func (d *Dispatcher) retryDue(s *subscriber, attempt int) (due time.Time, err error) {
	var delay time.Duration
	if s.backoff != nil {
		delay, err = callBackoff(s.backoff, attempt)
		if err != nil {
			return due, err
		}
	}
	if delay <= 0 && d.owner.Load() == ownerRun {
		return due, nil // straight to the ready queue
	}
	// Tick and Drain take retries in at the start of a round only, from
	// the waiting heap; a delay of zero is due at once.
	return time.Now().Add(max(delay, 0)), nil
}

// callBackoff calls the user's backoff function, isolating a panic.
func callBackoff(backoff func(int) time.Duration, attempt int) (delay time.Duration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("dispatcher: backoff(%d) panicked: %w", attempt, &PanicError{Value: r, Stack: debug.Stack()})
		}
	}()
	return backoff(attempt), nil
}

// takeErr returns the failures collected since the last call, joined with
// extra, and resets the collection.
func (p *proc) takeErr(extra error) error {
	if len(p.errs) == 0 {
		return extra // the usual Drain: nothing to join
	}
	errs := p.errs
	if extra != nil {
		errs = append(errs, extra)
	}
	p.errs = nil
	if len(errs) == 1 {
		return errs[0] // ctx's error alone comes back unchanged
	}
	return errors.Join(errs...)
}
