package dispatcher

import (
	"context"
	"errors"
	"reflect"
	"runtime/debug"
	"time"
	"unsafe"

	"github.com/ringbus/ringbus/internal/atomicx"
)

// job is one unit of work: an event to fan out to every matching
// subscriber (sub == nil), or a retry or redelivery for one subscriber.
type job struct {
	ev  Event
	sub *subscriber
}

// proc is one consumer's private state: a worker's, or the deterministic
// consumer's. Only its own goroutine touches it.
type proc struct {
	d            *Dispatcher
	ctx          context.Context // given to handlers: carries handlerKey
	parent       context.Context // deterministic mode: the ctx hctx derives from
	hctx         context.Context
	st           *counters
	scratch      []*subscriber // reused by index.match
	fan          []*subscriber // the fan-out in progress, for goexit
	fanAt        int           // index in fan of the call in progress
	delivered    uint64        // successful calls not yet added to st
	batch        []entry       // reused by ring pops
	wokeEmitters bool          // the last take woke blocked emitters (see runBatch)
	jobs         []job         // reused by carry pops

	// match's last answer: the subscribers of the topic whose bytes are
	// at lastTopic (lastLen of them) under lastIndex.
	lastIndex *index
	lastTopic *byte
	lastLen   int
	lastSubs  []*subscriber

	// Deterministic mode only: the failures dead-lettered during the call.
	collect bool
	errs    []error
}

func (d *Dispatcher) newProc(st *counters) *proc {
	return &proc{
		d:       d,
		st:      st,
		scratch: make([]*subscriber, 0, 8),
		batch:   make([]entry, popBatch),
		jobs:    make([]job, 0, popBatch),
	}
}

// flush publishes the counts kept in p to its counters: one atomic add per
// batch instead of one per handler call.
func (p *proc) flush() {
	if p.delivered > 0 {
		p.st.delivered.Add(p.delivered)
		p.delivered = 0
	}
}

// bind sets the ctx given to handlers: ctx, marked as a handler's. A Drain
// loop passes the same ctx again and again, so the derived ctx of the last
// parent is kept and reused instead of allocated per call.
func (p *proc) bind(ctx context.Context) {
	if p.parent == nil || !sameContext(p.parent, ctx) {
		p.parent, p.hctx = ctx, context.WithValue(ctx, handlerKey{}, p.d)
	}
	p.ctx = p.hctx
}

// sameContext reports whether a and b are the same ctx, without the panic
// that == raises on two values of one non-comparable type.
func sameContext(a, b context.Context) bool {
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// setHeld publishes how many jobs p has taken and not begun, which Stats
// counts as queued. Only p's goroutine writes it, once per job, so a
// release store does: it costs a plain store on amd64, where an atomic
// add or store would wait for the store buffer to drain.
func (p *proc) setHeld(n int) { atomicx.StoreRelease64(&p.st.held, uint64(n)) }

// popBatch is the most events a consumer takes from the ring in one claim.
// Under Run a worker takes an even share of what is ready (see takeJobs).
// In BenchmarkThroughput (two workers, a full ring of 1024), batches of 32
// took 20 to 40% more time per event than batches of 128, and 256 was no
// better than 128.
const popBatch = 128

// process delivers one job.
func (p *proc) process(j *job) {
	if j.sub != nil {
		if !j.sub.active.Load() {
			p.d.dropped.Add(1) // a retry for a subscriber that left
			return
		}
		if j.ev.Attempt > 1 {
			p.st.retried.Add(1)
		}
		p.fan = nil
		p.call(j.sub, &j.ev)
		return
	}
	j.ev.Attempt = 1
	p.fanOut(&j.ev)
}

// fanOut delivers ev, a fresh event, to every subscriber whose pattern
// matches its topic, in subscription order.
func (p *proc) fanOut(ev *Event) {
	subs := p.match(ev.Topic)
	p.fan = subs
	for i, s := range subs {
		if s.active.Load() {
			p.fanAt = i
			p.call(s, ev)
		}
	}
	p.fan = nil
}

// forgetStaleMatch drops match's last answer if the index it came from was
// replaced, so that a consumer that goes idle keeps no unsubscribed handler
// reachable. An answer from the current index holds nothing the dispatcher
// does not hold anyway, and keeping it spares the next Drain a lookup.
func (p *proc) forgetStaleMatch() {
	if p.lastIndex != nil && p.lastIndex != p.d.index.Load() {
		p.lastIndex, p.lastTopic, p.lastLen, p.lastSubs = nil, nil, 0, nil
	}
}

// match returns the subscribers of topic under the current index. It
// remembers its last answer: producers tend to emit runs of events on one
// topic, often the same string each time, and the same bytes at the same
// address under the same index have the same subscribers, which saves
// hashing the topic again. The answer lives in the index or in p.scratch,
// which only match writes, so it stays valid until the next match.
func (p *proc) match(topic string) []*subscriber {
	ix := p.d.index.Load()
	if ix == p.lastIndex && len(topic) == p.lastLen && unsafe.StringData(topic) == p.lastTopic {
		return p.lastSubs
	}
	subs := ix.match(topic, p.scratch[:0])
	if cap(subs) > cap(p.scratch) {
		p.scratch = make([]*subscriber, 0, cap(subs)) // match outgrew scratch: keep the larger size
		p.lastIndex = nil                             // subs is no longer in scratch: do not keep it
		return subs
	}
	p.lastIndex, p.lastTopic, p.lastLen, p.lastSubs = ix, unsafe.StringData(topic), len(topic), subs
	return subs
}

// call runs one handler call and accounts for its outcome.
func (p *proc) call(s *subscriber, ev *Event) {
	err := p.invoke(s, ev)
	if err == nil {
		p.delivered++ // published by flush, once per batch
		return
	}
	p.fail(s, ev, err)
}

// fail accounts for a failed call: a retry if the budget allows and the
// retry queue has room, else a dead letter.
func (p *proc) fail(s *subscriber, ev *Event, err error) {
	p.st.failed.Add(1)
	d := p.d
	if ev.Attempt < d.cfg.attempts {
		var delay time.Duration
		if d.cfg.backoff != nil {
			delay = d.cfg.backoff(ev.Attempt)
		}
		next := *ev
		next.Attempt++
		j := job{ev: next, sub: s}
		if delay <= 0 && d.owner.Load() == ownerRun {
			// Due at once: straight to the ready queue, which workers
			// take from before the ring. (Tick and Drain take retries
			// only at the start of a round, from the waiting heap.)
			if d.retries.addReady(j) {
				return
			}
		} else if d.retries.add(j, time.Now().Add(delay)) {
			d.retryScheduled()
			return
		}
		// The retry queue is full: the pair becomes a dead letter now.
	}
	herr := &HandlerError{Subscriber: s.name, EventID: ev.ID, Topic: ev.Topic, Attempt: ev.Attempt, Err: err}
	p.st.deadLettered.Add(1)
	if d.dead.add(DeadLetter{Event: *ev, Err: err, Subscriber: s.name, Attempts: ev.Attempt, sub: s}) {
		d.dropped.Add(1) // the oldest dead letter was evicted
	}
	if p.collect {
		p.errs = append(p.errs, herr)
	}
}

// invoke calls s's handler and turns a panic into a *PanicError. A handler
// that calls runtime.Goexit (t.FailNow does) ends the goroutine running it;
// invoke cannot stop that, but accounts for the call as the goroutine
// unwinds (see goexit).
func (p *proc) invoke(s *subscriber, ev *Event) (err error) {
	returned := false
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
			return
		}
		if !returned {
			p.goexit(s, ev)
		}
	}()
	err = s.h(p.ctx, *ev)
	returned = true
	return err
}

// goexit accounts for a handler call that ended its goroutine with
// runtime.Goexit: the call failed with ErrGoexit, and the subscribers after
// it in the event's fan-out, which did not see the event, get it queued for
// each of them alone. The caller's deferred cleanups put back the rest of
// its batch.
func (p *proc) goexit(s *subscriber, ev *Event) {
	p.fail(s, ev, ErrGoexit)
	if p.fan == nil {
		return
	}
	rest := p.fan[p.fanAt+1:]
	p.fan = nil
	for _, t := range rest {
		if !t.active.Load() {
			continue
		}
		e := *ev
		e.Attempt = 1
		if !p.d.retries.addReady(job{ev: e, sub: t}) {
			p.d.dropped.Add(1)
		}
	}
}

// takeErr returns the failures collected since the last call, joined, and
// resets the collection.
func (p *proc) takeErr(extra error) error {
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
