package dispatcher

import (
	"context"
	"time"
)

// Tick processes one round on the caller's goroutine: the retries that are
// due move into the queue, then exactly the events queued at that moment
// are processed, in FIFO order, each delivered to its handlers in
// subscription order. Events that handlers emit meanwhile wait for the next
// round. It returns how many events it took from the queue (a retry or a
// redelivery counts as one) and the handler failures it dead-lettered,
// joined (errors.Is and errors.As reach each), plus
// ctx's error if ctx ended the round early; unprocessed events stay queued.
//
// Only one Tick or Drain runs at a time: a concurrent or nested call, or a
// call while Run owns the queue, returns ErrRunning. After Shutdown or Close
// it returns ErrClosed.
func (d *Dispatcher) Tick(ctx context.Context) (int, error) {
	return d.consumeOwned(ctx, 0, true)
}

// Drain runs rounds like Tick until the queue is empty, so cascades of
// events emitted by handlers are followed, or until limit events were
// processed (limit <= 0: no limit). Retries that are not due yet do not
// keep it going: with backoff, advance the clock (testing/synctest's fake
// clock in tests) and Drain again. Its results and errors are Tick's.
func (d *Dispatcher) Drain(ctx context.Context, limit int) (int, error) {
	return d.consumeOwned(ctx, limit, false)
}

func (d *Dispatcher) consumeOwned(ctx context.Context, limit int, once bool) (int, error) {
	if d.state.Load() != stateOpen {
		return 0, ErrClosed
	}
	if !d.owner.CompareAndSwap(ownerNone, ownerTick) {
		return 0, ErrRunning
	}
	defer d.releaseTick()
	if d.state.Load() != stateOpen { // Shutdown or Close won the race
		return 0, ErrClosed
	}
	p := d.tick
	p.bind(ctx)
	p.collect, p.errs = true, nil // a Drain ended by runtime.Goexit left its errors here
	n, err := d.consume(p, ctx, limit, once)
	p.collect = false
	p.forgetStaleMatch()
	return n, p.takeErr(err)
}

func (d *Dispatcher) releaseTick() {
	if d.state.Load() == stateClosed {
		// Close ran while we processed (maybe from one of our handlers):
		// what our handlers queued after its drop (retries, carried
		// events) is dropped and counted here.
		d.dropQueued()
	}
	d.owner.Store(ownerNone)
	d.ownerFree.broadcast()
}

// consume runs rounds on the caller's goroutine, which owns the queue. It
// stops when a round finds nothing to do, after one round if once, at
// limit events if limit > 0, when ctx ends (returning its error) or when
// Close is called (returning ErrClosed).
func (d *Dispatcher) consume(p *proc, ctx context.Context, limit int, once bool) (int, error) {
	done := ctx.Done()
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if d.state.Load() == stateClosed {
			return n, ErrClosed
		}
		if _, waiting := d.retries.counts(); waiting > 0 {
			d.retries.moveDue(time.Now()) // time.Now only when a retry waits
		}
		// The round: exactly what is queued now, oldest first. Carried
		// events came from the ring before anything still in it; due
		// retries moved in last.
		carried, queued := d.carry.len(), d.q.Len()
		ready, _ := d.retries.counts()
		budget := carried + queued + ready
		if budget == 0 {
			return n, nil
		}
		if limit > 0 {
			budget = min(budget, limit-n)
		}
		end := d.q.Pushed() // events pushed from here on belong to the next round
		k, err := d.round(p, done, min(carried, budget), min(queued, budget-min(carried, budget)), budget, end)
		n += k
		if err != nil {
			if err != ErrClosed {
				err = ctx.Err()
			}
			return n, err
		}
		if once || (limit > 0 && n >= limit) {
			return n, nil
		}
	}
}

// round processes up to carried events from the carry list, then up to
// queued from the ring, then due retries, budget in all. Ring events at
// position end or later were emitted during the round (DropOldest evictions
// can bring them within reach): they go to the carry list for the next
// round. It returns early, leaving the rest queued, when done closes or the
// dispatcher closes.
func (d *Dispatcher) round(p *proc, done <-chan struct{}, carried, queued, budget int, end uint64) (int, error) {
	n := 0
	// run processes jobs until it is interrupted; it puts back the rest.
	run := func(jobs []job) error {
		p.setHeld(len(jobs))
		cur, finished := -1, false
		defer func() {
			p.setHeld(0)
			p.flush()
			if !finished { // a handler called runtime.Goexit: keep the rest queued
				d.putBack(jobs[cur+1:], nil)
			}
		}()
		for i := range jobs {
			if err := d.interrupted(done); err != nil {
				d.putBack(jobs[i:], err)
				finished = true
				return err
			}
			p.setHeld(len(jobs) - i - 1) // in progress now, no longer waiting
			cur = i
			p.process(&jobs[i])
			n++
		}
		finished = true
		return nil
	}
	for carried > 0 {
		jobs := d.carry.take(p.jobs[:0], min(carried, popBatch))
		if len(jobs) == 0 {
			break
		}
		carried -= len(jobs)
		if err := run(jobs); err != nil {
			return n, err
		}
	}
	for queued > 0 {
		jobs := d.popJobs(p, min(queued, popBatch))
		if len(jobs) == 0 {
			break // DropOldest emitters took the rest
		}
		queued -= len(jobs)
		if last := jobs[len(jobs)-1].ev.ID; last > end { // IDs are positions + 1
			keep := len(jobs) - int(last-end)
			d.carry.put(jobs[keep:])
			jobs, queued = jobs[:keep], 0
		}
		if err := run(jobs); err != nil {
			return n, err
		}
	}
	for n < budget {
		jobs := d.retries.takeReady(p.jobs[:0], min(budget-n, popBatch))
		if len(jobs) == 0 {
			break
		}
		if err := run(jobs); err != nil {
			return n, err
		}
	}
	return n, nil
}

// popJobs takes up to max events from the ring as fresh jobs in p.jobs.
func (d *Dispatcher) popJobs(p *proc, max int) []job {
	k, first := d.q.TryPopN(p.batch[:max])
	if k > 0 {
		d.space.broadcast()
	}
	return p.toJobs(p.batch[:k], first)
}

// toJobs turns es, popped from the ring with the first at position first,
// into fresh jobs in p.jobs, and clears es so that it keeps no payload
// alive.
func (p *proc) toJobs(es []entry, first uint64) []job {
	jobs := p.jobs[:0]
	for i := range es {
		jobs = append(jobs, es[i].job(first+uint64(i)))
	}
	clear(es)
	return jobs
}

// job returns the fresh job of e, popped at position pos.
func (e *entry) job(pos uint64) job {
	return job{ev: Event{ID: pos + 1, Topic: e.topic, Key: e.key, Payload: e.payload}}
}

// interrupted reports why a consumer must stop between two events: Close
// (ErrClosed) or its ctx (the ctx's error).
func (d *Dispatcher) interrupted(done <-chan struct{}) error {
	if d.state.Load() == stateClosed {
		return ErrClosed
	}
	select {
	case <-done:
		return context.Canceled // the caller reports ctx.Err() itself
	default:
		return nil
	}
}

// putBack returns jobs a consumer took but will not process: after Close
// they are dropped (counted); otherwise fresh events go back to the carry
// list and retries to the retry queue, so nothing is lost.
func (d *Dispatcher) putBack(jobs []job, why error) {
	if why == ErrClosed {
		d.dropped.Add(uint64(len(jobs)))
		return
	}
	fresh := jobs[:0:0]
	for _, j := range jobs {
		if j.sub == nil {
			fresh = append(fresh, j)
		} else if !d.retries.addReady(j) {
			d.dropped.Add(1)
		}
	}
	d.carry.put(fresh)
}
