package dispatcher

import (
	"context"
	"fmt"
	"time"
)

// After delays an event: it is accepted at once (it counts in Emitted and
// gets its ID then) and processed no earlier than d from now, by the time
// package's clock (testing/synctest's fake clock in tests). A d of zero or
// less is no delay.
//
// Delayed events wait in the queue of retries, by due time: Tick and Drain
// take in the ones that are due, Run's workers get them when they come
// due, and under Run a keyed delayed event takes its place in its key's
// order then. They are bounded by the capacity (WithCapacity), apart from
// the ring: when as many wait as the capacity allows, the emit applies the
// overflow policy (Block waits for one to come due; DropOldest discards
// the delayed event emitted first). Stats.Scheduled counts them. Shutdown
// waits for them, within its ctx; Close discards them (counted in Dropped,
// OnDone told). Each costs one allocation, at emit; the time-ordered heap
// adds none (TestEmitOptionAllocations).
func After(d time.Duration) EmitOption { return delayOption{after: d} }

// At delays an event until t, as After does; a t that has passed is no
// delay.
func At(t time.Time) EmitOption { return delayOption{at: t} }

// delayOption is After's (after) or At's (at, not zero). At with the zero
// time is a time long past: no delay, as After(0) is.
type delayOption struct {
	after time.Duration
	at    time.Time
}

func (o delayOption) applyEmit(c emitConfig) emitConfig {
	if !o.at.IsZero() {
		c.due = o.at
	} else {
		c.due = time.Now().Add(o.after)
	}
	return c
}

// emitDelayed queues e, whose tracker holds its due time and which emit
// checked, after reserving its place among the delayed events.
func (d *Dispatcher) emitDelayed(ctx context.Context, e entry) error {
	if err := d.reserve(ctx, e); err != nil {
		return err
	}
	p := d.pend
	e.tr.sched.Store(schedWaiting)
	p.schedInRing.Add(1)
	p.schedPushing.Add(1)
	err := d.emitSlow(ctx, e) // it pushes at once when there is room
	p.schedPushing.Add(-1)
	if err != nil {
		// Refused: nobody saw it (DropOldest can cancel only what is in
		// schedOrder), so it is neither counted nor told.
		p.schedInRing.Add(-1)
		e.tr.sched.Store(schedNone)
		p.unreserve()
		return err
	}
	if d.cfg.overflow == DropOldest {
		// Only once accepted: a cancel must drop an event that Emit
		// accepted, never one whose Emit returns an error. A consumer may
		// have taken it already; cancelFirstScheduled skips it then if it
		// came due (its state is no longer schedWaiting).
		p.schedMu.Lock()
		p.schedOrder.Push(e.tr)
		p.schedMu.Unlock()
	}
	return nil
}

// reserve takes one of the capacity's places for a delayed event, applying
// the overflow policy when there is none.
func (d *Dispatcher) reserve(ctx context.Context, e entry) error {
	p := d.pend
	for {
		if p.tryReserve() {
			return nil
		}
		switch d.cfg.overflow {
		case Reject:
			return fmt.Errorf("%w: as many delayed events wait as the capacity allows", ErrFull)
		case DropNewest:
			d.dropped.Add(1)
			d.observeRefused(ctx, &e)
			return ErrDropped
		case DropOldest:
			d.cancelFirstScheduled()
			continue
		}
		// Block: wait until a delayed event comes due or is dropped.
		if d.fromHandler(ctx) {
			return fmt.Errorf("%w: an emit from a handler does not wait for room among delayed events", ErrFull)
		}
		freed := p.schedFree.wait()
		if p.tryReserve() {
			p.schedFree.done()
			return nil
		}
		select {
		case <-freed:
		case <-d.closed:
		case <-ctx.Done():
		}
		p.schedFree.done()
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.state.Load() == stateClosed {
			return ErrClosed
		}
	}
}

// tryReserve takes a place for a delayed event if one is free.
func (p *pending) tryReserve() bool {
	for {
		n := p.scheduled.Load()
		if n >= int64(p.limit) {
			return false
		}
		if p.scheduled.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// unreserve gives a delayed event's place back.
func (p *pending) unreserve() {
	p.scheduled.Add(-1)
	p.schedFree.broadcast()
}

// unschedule is called for a job that stops waiting for its due time: it
// came due, or it is dropped. A delayed event that still waited gives its
// place back. It reports whether the job is a zombie (see
// tracker.zombie): one DropOldest cancelled, which must not be processed
// or counted again.
func (p *pending) unschedule(t *tracker) (zombie bool) {
	if t == nil {
		return false
	}
	if t.sched.CompareAndSwap(schedWaiting, schedNone) {
		p.unreserve()
		return false
	}
	return t.sched.Load() == schedCancelled
}

// popped is called for each event taken out of the ring: a delayed one no
// longer counts as in the ring. It reports whether e is delayed.
func (p *pending) popped(e *entry) (delayed bool) {
	if e.tr != nil && !e.tr.due.IsZero() {
		p.schedInRing.Add(-1)
		return true
	}
	return false
}

// postpone moves the jobs of jobs[from:] whose event waits for a due time
// after now into the waiting heap, and returns the others, in order. A
// zombie stays with the others: the consumer ends it (see proc.process).
func (p *pending) postpone(jobs []job, from int) []job {
	now := time.Now()
	out := jobs[:from]
	moved := 0
	p.mu.Lock() // DropOldest cancels under it: the state read here holds
	for _, j := range jobs[from:] {
		if t := j.tr; t != nil && t.sched.Load() == schedWaiting {
			if now.Before(t.due) {
				p.seq++
				p.waiting.push(retryItem{job: j, due: t.due, seq: p.seq})
				moved++
				continue
			}
			p.unschedule(t)
		}
		out = append(out, j)
	}
	if moved > 0 {
		p.updateLocked()
	}
	p.mu.Unlock()
	clear(jobs[len(out):]) // keep no payload reachable twice
	if moved > 0 {
		select {
		case p.schedWake <- struct{}{}: // Run's scheduler: a new due time
		default:
		}
	}
	return out
}

// cancelFirstScheduled discards the delayed event emitted first of those
// that wait, for DropOldest: counted in Dropped, OnDone told. One in the
// waiting heap leaves it; one still in the ring stays there as a zombie
// until a consumer comes across it. Delayed events that no longer wait
// leave schedOrder as it is scanned, and it is compacted when they make
// up most of it, so that it stays proportional to what waits.
func (d *Dispatcher) cancelFirstScheduled() {
	p := d.pend
	p.schedMu.Lock()
	var t *tracker
	for p.schedOrder.Len() > 0 {
		c := p.schedOrder.Pop()
		p.mu.Lock()
		if c.sched.CompareAndSwap(schedWaiting, schedCancelled) {
			t = c
			break // with p.mu held
		}
		p.mu.Unlock()
	}
	if n := p.schedOrder.Len(); n > 64 && int64(n) > 2*p.scheduled.Load() {
		items := p.schedOrder.Items()
		keep := items[:0]
		for _, c := range items {
			if c.sched.Load() == schedWaiting {
				keep = append(keep, c)
			}
		}
		clear(items[len(keep):])
		p.schedOrder.Reset()
		for _, c := range keep {
			p.schedOrder.Push(c)
		}
	}
	p.schedMu.Unlock()
	if t == nil {
		return // every reserved place is taken by an emit still pushing: look again
	}
	var j job
	inHeap := t.hidx >= 0
	if inHeap {
		j = p.waiting.remove(t.hidx).job
		p.updateLocked()
	}
	p.mu.Unlock()
	p.unreserve()
	d.dropped.Add(1)
	if inHeap {
		d.observeDrop(t.carriedValue(), Drop{Event: j.ev, Reason: DroppedOldest})
	} // else observed when it is come across (see observeZombie)
	t.drop()
	if inHeap {
		// A consumer took the job out of the ring and counted it in
		// Flush's ledger; nobody will come across it again. It leaves
		// the ledger after its OnDone, so that no Flush returns before.
		// The delayed event whose emit cancelled it comes next, and the
		// consumer that takes it ends a grace period this one completes.
		// A Flush without Run is that consumer, and may be waiting for
		// the cancelled event's due time: it looks again now.
		d.ledger.spawn(j.ev.ID, -1)
		if d.flushing.Load() {
			d.askFlushToLook()
		}
	}
}

// observeZombie reports the drop of a delayed event that DropOldest
// cancelled while it was in the ring (see cancelFirstScheduled), once its
// job is come across: it was counted then.
func (d *Dispatcher) observeZombie(j *job) {
	d.observeDrop(j.tr.carriedValue(), Drop{Event: j.ev, Reason: DroppedOldest})
}
