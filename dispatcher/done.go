package dispatcher

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// An EmitOption configures one EmitEvent call.
type EmitOption interface {
	applyEmit(c emitConfig) emitConfig // by value: a pointer would make the config escape
}

type emitConfig struct {
	done func(err error)
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
	done func(err error)

	carried any // WithPropagator's value for the event, or nil (see carry)
}

func newTracker(done func(error)) *tracker {
	t := &tracker{done: done}
	t.refs.Store(1) // the fresh event's job
	return t
}

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
	if t == nil {
		return
	}
	t.mu.Lock()
	t.errs = append(t.errs, err)
	t.mu.Unlock()
}

// release drops one job's reference and calls done when it was the last.
func (t *tracker) release() {
	if t == nil || t.refs.Add(-1) != 0 {
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

// dropJobs discards jobs: counted in Stats.Dropped, their events' OnDone
// told.
func (d *Dispatcher) dropJobs(jobs []job) {
	d.dropped.Add(uint64(len(jobs)))
	d.observeDropJobs(jobs)
	for i := range jobs {
		jobs[i].tr.drop()
	}
}
