package dispatcher

import (
	"runtime"
	"time"
)

// spinRounds is how many times an idle worker yields, looking for work,
// before it parks: a few microseconds of yielding save a park and a
// wake-up when events arrive in quick bursts.
const spinRounds = 64

// roomLook is how long after a take that left blocked emitters waiting
// Run's scheduler looks at the ring again (see room).
const roomLook = time.Millisecond

// work is one worker's loop: take a batch, run it through the batch loop,
// park when there is nothing to take.
func (d *Dispatcher) work(rs *runState, p *proc) {
	defer d.settle(p) // Flush may go on without Run
	done := rs.ctx.Done()
	b := unbounded(d.cfg.workers)
	for {
		select {
		case <-done:
			return
		default:
		}
		if jobs := d.takeJobs(p, &b); len(jobs) > 0 {
			p.runBatch(jobs, rs.ctx, true) //nolint:errcheck // the loop's top sees why it stopped
			continue
		}
		if !d.park(rs, p) {
			return
		}
	}
}

// takeJobs takes p's next batch under takeMu (see pending.takeMu). A worker
// that finds another one taking does not wait for the mutex, which would
// park it and cost a wake-up per batch: it yields, returns nothing and
// polls again.
func (d *Dispatcher) takeJobs(p *proc, b *bounds) []job {
	if !d.pend.takeMu.TryLock() {
		// Yield, or a worker spinning here can keep the holder, preempted
		// inside its take, off the CPU for a whole time slice.
		runtime.Gosched()
		return nil
	}
	jobs, popped, first := d.pend.take(p.jobs[:0], p.buf, popBatch, b, true)
	p.setHeld(len(jobs)) // before the unlock: Stats never misses them
	// Before the unlock too: another worker may end a job of a key
	// admitted here (see ledger).
	p.publish(popped, first)
	p.ledgerB = d.ledgerBound()
	d.pend.takeMu.Unlock()
	if popped > 0 {
		d.roomMade(true)
	}
	return jobs
}

// hasWork reports whether a worker would find something to take. It is a
// hint that may miss a push still finishing, cheap to poll: it looks at the
// ring's head slot, not at the tail, whose cache line every push takes
// over.
func (d *Dispatcher) hasWork() bool {
	return d.pend.hasFront() || (!d.pend.keys.Full() && d.pend.ring.Ready())
}

// park spins a little, then sleeps until an emitter, the scheduler, a
// hand-off or Shutdown wakes it. It reports whether the worker should go on.
//
// The protocol with emitters: a worker increments sleepers, then re-checks
// the ring's tail (Len); an emitter claims its position by moving the tail,
// then loads sleepers. The increment and the tail's CAS are sequentially
// consistent, so either the emitter sees the sleeper and sends a wake-up,
// or the worker's re-check sees the event. Jobs put in front of the ring
// (retries, hand-offs, redeliveries) are followed by the same kind of
// wake-up (notify or wakeWorkers) after their counter is stored.
func (d *Dispatcher) park(rs *runState, p *proc) bool {
	for range spinRounds {
		if d.hasWork() {
			return true
		}
		runtime.Gosched()
	}
	// Asleep, the worker keeps no subscriber reachable (Unsubscribe may
	// come while it sleeps), and has told Flush what it finished.
	p.forgetMatch()
	d.settle(p)
	n := d.sleepers.Add(1)
	defer d.sleepers.Add(-1)
	if d.pend.hasFront() || (!d.pend.keys.Full() && d.pend.ring.Len() > 0) {
		return true
	}
	if int(n) == d.cfg.workers && d.state.Load() == stateShutdown && d.pend.empty() {
		// Every worker sleeps, so no handler runs and none can emit:
		// Shutdown's work is done. Close the ring, then make sure no
		// outside emit got in before it closed.
		d.pend.ring.Close()
		d.room.wakeAll()
		if d.pend.empty() {
			rs.drained.Store(true)
			rs.halt()
			return false
		}
		// An emit got in: its handlers may emit, so the ring opens
		// again (a handler's emit that meets it closed meanwhile waits
		// for this, see emitSlow).
		d.pend.ring.Reopen()
		return true
	}
	select {
	case <-d.wake:
	case <-rs.ctx.Done():
	}
	return true
}

// retryScheduled tells Run's scheduler that a retry waits for its backoff.
func (d *Dispatcher) retryScheduled() {
	select {
	case d.retryWake <- struct{}{}:
	default:
	}
}

// schedule is Run's scheduler: it makes retries and delayed events ready
// when they are due and wakes workers for them, and looks at the ring for blocked emitters
// roomLook after a worker asked it to (see roomMade).
func (d *Dispatcher) schedule(rs *runState) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var lookAt time.Time     // when to look for room; zero: not asked
	d.roomAsked.Store(false) // a request left by an earlier Run is void
	for {
		now := time.Now()
		moved, next := d.pend.moveDue(now)
		d.wakeWorkers(moved)
		if !lookAt.IsZero() && !now.Before(lookAt) {
			// Only once per request: a ring that nobody takes from is
			// not looked at again until a worker takes and asks.
			lookAt = time.Time{}
			d.roomAsked.Store(false) // before the look: a later take asks again
			r := d.pend.ring
			d.room.wake(r.Cap() - r.Len())
		}
		if next.IsZero() || (!lookAt.IsZero() && lookAt.Before(next)) {
			next = lookAt
		}
		if next.IsZero() {
			t.Stop()
		} else {
			t.Reset(next.Sub(now))
		}
		select {
		case <-t.C:
		case <-d.retryWake:
		case <-d.roomWake:
			if lookAt.IsZero() {
				lookAt = time.Now().Add(roomLook)
			}
		case <-rs.ctx.Done():
			return
		}
	}
}
