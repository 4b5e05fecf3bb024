package dispatcher

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// An EmitOption configures one EmitEvent call.
type EmitOption interface {
	applyEmit(c emitConfig) emitConfig // by value: a pointer would make the config escape
}

type emitConfig struct {
	done func(err error)
	due  time.Time // After and At: when the event becomes deliverable; zero: no delay
}

type onDone func(err error)

func (f onDone) applyEmit(c emitConfig) emitConfig {
	c.done = f
	return c
}

// OnDone asks for done to be called exactly once when the event is
// finished: every subscriber its topic matched when it was processed has
// delivered it or dead-lettered it, retries included, or it was discarded.
// It is never called when EmitEvent returns an error.
//
// done gets nil when every call eventually succeeded (or no subscriber
// matched); an error joining the dead letters' errors when at least one
// subscriber dead-lettered it (errors.Is and errors.As reach each); an
// error wrapping ErrDropped when the event, or one subscriber's share of
// it, was discarded (DropOldest, Close, Shutdown's ctx, Unsubscribe with a
// retry pending). It runs on the goroutine that finished the event (a
// worker, the caller of Drain, or of Close) and must not block. Bridges to
// external queues acknowledge with it. It costs one allocation per event.
func OnDone(done func(err error)) EmitOption { return onDone(done) }

// errEventDropped is what a tracker records for a job that was discarded.
var errEventDropped = fmt.Errorf("%w: discarded before every subscriber finished with it", ErrDropped)

// tracker follows one event that has an OnDone callback until it is
// finished. Every job of the event (the fresh event, each retry or share
// for one subscriber) holds one reference: a job that ends (processed,
// dropped) releases its reference after taking the references of the jobs
// it leaves behind (retries, shares), so the count reaches zero exactly
// once, when nothing of the event is left.
type tracker struct {
	refs atomic.Int32
	mu   sync.Mutex
	errs []error
	done func(err error) // nil for a delayed event without OnDone

	// A delayed event's due time (zero for any other), set before it is
	// queued and never changed; sched says whether it still waits for it
	// (see schedWaiting); hidx is its index in pending.waiting while it
	// waits there, else -1, guarded by pending.mu. Before it is due, the
	// event has one job only.
	due   time.Time
	sched atomic.Int32
	hidx  int

	carried any // WithPropagator's value for the event, or nil (see carry)
}

// The states of a delayed event (tracker.sched).
const (
	schedNone      int32 = iota // not delayed, or due: an event like any other
	schedWaiting                // waiting for its due time; counts in Scheduled
	schedCancelled              // discarded by DropOldest while in the ring: a zombie
)

func newTracker(done func(error)) *tracker {
	t := &tracker{done: done, hidx: -1}
	t.refs.Store(1) // the fresh event's job
	return t
}

// zombie reports whether t's event was discarded (counted, OnDone told)
// while its job was in the ring: whoever comes across the job ends it
// without a trace.
func (t *tracker) zombie() bool { return t != nil && t.sched.Load() == schedCancelled }

// hold adds a reference for a new job of the event.
func (t *tracker) hold() {
	if t != nil {
		t.refs.Add(1)
	}
}

// unhold takes back a hold whose job was not queued after all. The
// caller's own job still holds a reference, so the count stays above zero.
func (t *tracker) unhold() {
	if t != nil {
		t.refs.Add(-1)
	}
}

// fail records why one subscriber's share ended badly.
func (t *tracker) fail(err error) {
	if t == nil || t.done == nil {
		return
	}
	t.mu.Lock()
	t.errs = append(t.errs, err)
	t.mu.Unlock()
}

// release drops one job's reference and calls done when it was the last.
// It is small enough to be inlined at every job's end; finish is not.
func (t *tracker) release() {
	if t != nil && t.refs.Add(-1) == 0 {
		t.finish()
	}
}

// finish tells done, if any, the event's outcome: its last job ended.
func (t *tracker) finish() {
	if t.done == nil {
		return
	}
	t.mu.Lock()
	errs := t.errs
	t.errs = nil
	t.mu.Unlock()
	t.done(errors.Join(errs...))
}

// drop ends a job that is discarded.
func (t *tracker) drop() {
	if t != nil {
		t.fail(errEventDropped)
		t.release()
	}
}

// dropEntry discards e, popped from the ring at position pos: counted in
// Stats.Dropped, observed with reason and its OnDone told; a zombie, which
// was counted and told when DropOldest cancelled it, is only observed.
func (d *Dispatcher) dropEntry(e *entry, pos uint64, reason DropReason) {
	d.pend.popped(e)
	if d.pend.unschedule(e.tr) {
		d.observeDropEntry(e, pos, DroppedOldest)
		return
	}
	d.dropped.Add(1)
	d.observeDropEntry(e, pos, reason)
	e.tr.drop()
}

// dropJobs discards jobs: counted in Stats.Dropped, their events' OnDone
// told, and ended in p's ledger entries when a consumer drops them (p is
// nil when Close drops everything: no Flush waits then).
func (d *Dispatcher) dropJobs(p *proc, jobs []job) {
	for i := range jobs {
		if p != nil {
			p.ended(jobs[i].ev.ID)
		}
		if d.pend.unschedule(jobs[i].tr) {
			d.observeZombie(&jobs[i]) // counted when DropOldest cancelled it
			continue
		}
		d.dropped.Add(1)
		d.observeDropJobs(jobs[i : i+1])
		jobs[i].tr.drop()
	}
}
