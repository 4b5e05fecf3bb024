package dispatcher

import (
	"context"
	"fmt"
	"time"
)

// Tick processes one round on the caller's goroutine: the retries that are
// due move into the queue, then exactly the events queued at that moment
// are processed, in FIFO order, each delivered to its handlers in
// subscription order. Events that handlers emit meanwhile wait for the next
// round. It returns how many events it took from the queue (a retry or a
// redelivery counts as one) and the handler failures it dead-lettered,
// joined (errors.Is and errors.As reach each), plus ctx's error if ctx
// ended the round early; unprocessed events stay queued.
//
// Only one Tick or Drain runs at a time: a concurrent or nested call, or a
// call while Run owns the queue, returns an error wrapping ErrRunning.
// After Shutdown or Close it returns ErrClosed. A nil ctx panics.
func (d *Dispatcher) Tick(ctx context.Context) (int, error) {
	return d.stepCall(ctx, "Tick", 0, true)
}

// Drain runs rounds like Tick until the queue is empty, so cascades of
// events emitted by handlers are followed, or until limit events were
// processed (limit <= 0: no limit). Retries that are not due yet do not
// keep it going: with backoff, advance the clock (testing/synctest's fake
// clock in tests) and Drain again. Its results and errors are Tick's.
func (d *Dispatcher) Drain(ctx context.Context, limit int) (int, error) {
	return d.stepCall(ctx, "Drain", limit, false)
}

func (d *Dispatcher) stepCall(ctx context.Context, name string, limit int, once bool) (int, error) {
	if ctx == nil {
		panic("dispatcher: " + name + " with a nil Context")
	}
	if err := d.ownStep(name); err != nil {
		return 0, err
	}
	defer d.releaseStep()
	p := d.step
	p.bind(ctx)
	p.collect, p.errs = true, nil // a Drain ended by runtime.Goexit left its errors here
	n, err := d.consume(ctx, limit, once)
	p.collect = false
	p.forgetStaleMatch()
	return n, p.takeErr(err)
}

// ownStep makes the caller the owner of the queue for a Tick, Drain,
// Shutdown's drain or Flush without Run, or says why it cannot be.
func (d *Dispatcher) ownStep(name string) error {
	if d.state.Load() != stateOpen && name != "Shutdown" {
		return ErrClosed
	}
	if !d.owner.CompareAndSwap(ownerNone, ownerStep) {
		if name != "Shutdown" && d.state.Load() != stateOpen {
			return ErrClosed // Shutdown or Close began meanwhile
		}
		if d.owner.Load() == ownerRun {
			return fmt.Errorf("%w: %s while Run's workers own the queue: stop Run first (Shutdown, Close or Run's ctx)", ErrRunning, name)
		}
		return fmt.Errorf("%w: %s while a Tick, Drain or Shutdown runs (a concurrent call, or a nested one from a handler)", ErrRunning, name)
	}
	if d.state.Load() == stateClosed || (name != "Shutdown" && d.state.Load() != stateOpen) {
		d.releaseStep() // Shutdown or Close won the race
		return ErrClosed
	}
	return nil
}

func (d *Dispatcher) releaseStep() {
	if d.state.Load() == stateClosed {
		// Close ran while we processed (maybe from one of our handlers):
		// what our handlers queued after its drop is dropped here.
		d.pend.clear(d)
	}
	d.owner.Store(ownerNone)
	d.stepFree.broadcast()
}

// consume runs rounds on the caller's goroutine, which owns the queue,
// through the batch loop. It stops when a round finds nothing to do, after
// one round if once, at limit events if limit > 0, when ctx ends
// (returning its error) or when Close is called (returning ErrClosed).
func (d *Dispatcher) consume(ctx context.Context, limit int, once bool) (int, error) {
	p := d.step
	n := 0
	var b bounds
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if d.state.Load() == stateClosed {
			return n, ErrClosed
		}
		if d.pend.nWaiting.Load() > 0 {
			d.pend.moveDue(time.Now())
		}
		d.pend.round(&b, limit-n)
		if b.empty() {
			return n, nil
		}
		took := 0
		for !b.empty() {
			jobs, popped, first := d.pend.take(p.jobs[:0], p.buf, popBatch, &b, false)
			if popped > 0 {
				d.roomMade(false)
			}
			if len(jobs) == 0 {
				p.publish(popped, first)
				if popped > 0 {
					continue // delayed events, not due yet
				}
				break // DropOldest evictions took the rest
			}
			p.ledgerB = d.ledgerBound()
			k, err := p.runBatch(jobs, ctx, false)
			p.publish(popped, first) // the deterministic consumer runs alone: no one ends its jobs
			n += k
			took += k
			if err == errStopped {
				return n, ctx.Err()
			}
			if err != nil {
				return n, err
			}
		}
		if took == 0 || once || (limit > 0 && n >= limit) {
			return n, nil
		}
		if d.pend.ring.Pushed() == b.ringEnd && !d.pend.hasFront() && d.pend.nWaiting.Load() == 0 {
			return n, nil // no handler emitted, retried or handed anything back: no next round
		}
	}
}

// awaitDue is how a consumer on its caller's goroutine (Shutdown's drain,
// Flush) waits for the next retry or delayed event, due at next: it
// returns nil once next has come or wake1 or wake2 (nil: never) fired,
// ErrClosed when Close ran, or ctx's error.
func (d *Dispatcher) awaitDue(ctx context.Context, next time.Time, wake1, wake2 <-chan struct{}) error {
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake1:
	case <-wake2:
	case <-d.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
