package dispatcher

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Flush waits until every event accepted before the call has finished:
// every subscriber its topic matched has delivered it or dead-lettered it,
// retries and delayed events included, or it was dropped. It returns nil
// then, or ctx's error if ctx ends first. The dispatcher stays open: events
// emitted during the call are processed too, but not waited for.
//
// Under Run, Flush waits for the workers. Without Run it processes on the
// caller's goroutine, as Shutdown does (waiting for retries and delayed
// events that are not due yet), and returns an error wrapping ErrRunning
// when a Tick or Drain runs. Called from a handler it returns an error
// wrapping ErrRunning, since it would wait for itself. It returns ErrClosed
// after Shutdown or Close, and nil when Close discards what it waited for,
// once no handler call of an event it waits for runs any more: a handler
// that outlives a Shutdown whose ctx ended is waited for.
// Any number of goroutines may flush at once: they share the wait.
// A nil ctx panics.
func (d *Dispatcher) Flush(ctx context.Context) error {
	if ctx == nil {
		panic("dispatcher: Flush with a nil Context")
	}
	if d.fromHandler(ctx) {
		return fmt.Errorf("%w: Flush called from a handler would wait for itself", ErrRunning)
	}
	if d.state.Load() != stateOpen {
		return ErrClosed
	}
	want := d.ring.Pushed() // IDs up to want were accepted before the call
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.runWaits.Load() > 0 {
			// A Run waits for the queue this Flush just gave up: let it
			// take it, then wait for its workers.
			runtime.Gosched()
			continue
		}
		d.lifeMu.Lock()
		rs := d.rs
		d.lifeMu.Unlock()
		if rs != nil {
			g := d.joinGrace(want, true)
			select {
			case <-g.done:
				if g.end >= want {
					return nil
				}
			case <-rs.done: // Run ended first: go on without it
			case <-d.closed:
				return d.awaitCallsUpTo(ctx, rs, want)
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		d.lifeMu.Lock() // orders flushing with startRun's look at it
		err := d.ownStep("Flush")
		if err == nil {
			d.flushing.Store(true)
		}
		d.lifeMu.Unlock()
		switch {
		case err == nil:
			done, err := d.flushOnCaller(ctx, want)
			if done || err != nil {
				return err
			}
		case d.owner.Load() == ownerRun:
			// Run began meanwhile: wait for its workers.
		case d.state.Load() != stateOpen:
			// Shutdown or Close began meanwhile: they finish or drop
			// everything.
			select {
			case <-d.closed:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return err
		}
	}
}

// flushOnCaller is Flush without Run: the caller owns the queue and runs
// rounds until the grace period covering want ends. It reports false when
// Flush must start over: a grace period ended that did not cover want, or
// a Run waits for the queue (Run does not fail because a Flush happened
// to own the queue when it started).
func (d *Dispatcher) flushOnCaller(ctx context.Context, want uint64) (bool, error) {
	defer func() {
		d.flushing.Store(false)
		d.releaseStep()
	}()
	p := d.step
	p.bind(ctx)
	p.collect = false
	g := d.joinGrace(want, false)
	for {
		select {
		case <-g.done:
			return g.end >= want, nil
		default:
		}
		if d.runWaits.Load() > 0 {
			return false, nil
		}
		n, err := d.consume(ctx, 0, true)
		switch {
		case err == ErrClosed:
			// Close is dropping what is left, on its own goroutine:
			// its drop is over (every OnDone told) when it marks the
			// dispatcher closed.
			return true, d.awaitClosed(ctx)
		case err != nil:
			return true, err
		case n > 0:
			continue
		}
		// The caller is the only consumer and published all it took: if
		// an emitter's eviction (see emitSlow) was the last thing
		// the grace period waited for, nobody else ends it.
		d.checkGrace()
		// Nothing was due: wait for the next retry or delayed event.
		next := d.pend.nextDue()
		if next.IsZero() {
			// What the grace period waits for is still being pushed
			// into the ring, or just came due.
			runtime.Gosched()
			continue
		}
		switch err := d.awaitDue(ctx, next, g.done, d.flushLook); {
		case err == ErrClosed:
			return true, nil // Close dropped what we waited for
		case err != nil:
			return true, err
		}
	}
}

// askFlushToLook wakes a Flush without Run that waits for a due time, to
// look again (see flushLook). A wake-up already pending serves.
func (d *Dispatcher) askFlushToLook() {
	select {
	case d.flushLook <- struct{}{}:
	default:
	}
}

// awaitCallsUpTo waits, after Close, until no worker of rs is processing
// an event with an ID up to want, and returns nil, or ctx's error. Close
// discarded everything queued, but it did not wait for the handler calls
// in flight when Shutdown's ctx had ended or a handler called it; calls of
// later events are not waited for.
//
// A worker publishes its job's event ID with a release store, and at the
// end of its batch clears it with a sequentially consistent store before
// it broadcasts batchEnd; this wait registers with batchEnd before it
// looks: so either the look sees the ID cleared, or the broadcast sees the
// waiter and wakes it. A stale ID seen in the middle of a batch only makes
// the wait last until that batch ends.
func (d *Dispatcher) awaitCallsUpTo(ctx context.Context, rs *runState, want uint64) error {
	defer d.batchEnd.done()
	for {
		ended := d.batchEnd.wait() // before the look (see above)
		if !d.callsUpTo(want) {
			return nil
		}
		select {
		case <-ended:
		case <-rs.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
		d.batchEnd.done() // wait registers again
	}
}

// callsUpTo reports whether a worker processes an event with an ID up to
// want.
func (d *Dispatcher) callsUpTo(want uint64) bool {
	for _, p := range d.workers {
		if id := p.cur.Load(); id != 0 && id <= want {
			return true
		}
	}
	return false
}

// The ledger lets Flush know when every event accepted before it is
// finished, without a tracker per event and without polling.
//
// An event is finished when no job of it is left. A job is in the ring (a
// fresh event not yet popped) or outside it: taken by a consumer, in carry,
// ready, waiting, a key's backlog. The ledger counts the jobs outside the
// ring: a consumer adds what it pops, a job that spawns another (a retry, a
// share, a redelivery) adds it before anyone can see it, and a consumer
// subtracts the jobs it ended (processed or dropped) once per batch.
//
// Flush starts a grace period with end = the ring's push count: it waits
// for the events with IDs up to end. It ends once the ring's pops have
// passed end and no job with an ID up to end is left outside the ring: its
// old count starts from the ledger's count (every job outside the ring has
// an ID up to end then), and every later entry for such an ID is added to
// it too. To know whether an entry came after the start, the count and the
// grace period's generation share one atomic word: the start moves the
// generation, and an add learns from the word it changed which grace
// period it belongs to.
//
// Only consumers end a grace period, after their own entries: under Run
// they take and publish under takeMu, which Flush's start holds too, so a
// pop and the count of what it popped are seen together, and whether an
// entry came after a start is plain; the deterministic consumer runs alone
// or is the flusher itself. Spawns (see spawn) come from anywhere, so they
// learn it from the word; they are counted before they are visible and
// while their parent job still counts, so the old count does not reach
// zero early.
type ledger struct {
	word atomic.Uint64         // gen<<netBits | (jobs outside the ring + netBias)
	cur  atomic.Pointer[grace] // the latest grace period, nil before the first
	mu   sync.Mutex            // orders the starts and ends of grace periods
}

const (
	netBits = 40
	netBias = 1 << (netBits - 1)
	netMask = 1<<netBits - 1
	genMask = 1<<(64-netBits) - 1
)

// grace is one grace period of Flush.
type grace struct {
	gen  uint64        // the ledger word's generation while it runs
	end  uint64        // it waits for the events with IDs up to end
	old  atomic.Int64  // jobs outside the ring with IDs up to end
	over atomic.Bool   // ended: done is closed
	done chan struct{} // closed when it ends
}

// add adds delta to the jobs outside the ring and returns the running grace
// period if the add came after its start, else nil.
func (l *ledger) add(delta int64) *grace {
	w := l.word.Add(uint64(delta))
	g := l.cur.Load()
	if g == nil || g.over.Load() || g.gen != w>>netBits {
		return nil
	}
	return g
}

// spawn counts a new job for the event id before it becomes visible.
func (l *ledger) spawn(id uint64, n int) {
	if g := l.add(int64(n)); g != nil && id <= g.end {
		g.old.Add(int64(n))
	}
}

// outside returns the jobs outside the ring as published.
func (l *ledger) outside() int64 { return int64(l.word.Load()&netMask) - netBias }

// joinGrace returns a grace period that waits at least for the events with
// IDs up to want: the running one if it does, else (once the running one,
// if any, ended) a new one. A caller under Run that must wait for the
// running one first gets it (end < want) and calls again when it ended.
// Under Run (run true) the start holds takeMu (see ledger).
func (d *Dispatcher) joinGrace(want uint64, run bool) *grace {
	l := &d.ledger
	if run {
		d.pend.takeMu.Lock()
		defer d.pend.takeMu.Unlock()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.cur.Load(); g != nil && !g.over.Load() {
		return g // ends before a new one can start; covers want or not
	}
	end := d.ring.Pushed()
	var g *grace
	for {
		w := l.word.Load()
		g = &grace{gen: (w>>netBits + 1) & genMask, end: end, done: make(chan struct{})}
		g.old.Store(int64(w&netMask) - netBias)
		l.cur.Store(g) // before the generation moves: an add that sees it finds g
		if l.word.CompareAndSwap(w, g.gen<<netBits|w&netMask) {
			break
		}
	}
	d.endGraceLocked(g)
	return g
}

// checkGrace ends the running grace period if nothing it waits for is
// left. Only consumers call it, after publishing (see ledger).
func (d *Dispatcher) checkGrace() {
	g := d.ledger.cur.Load()
	if g == nil || g.over.Load() || g.old.Load() != 0 || d.ring.Popped() < g.end {
		return
	}
	d.ledger.mu.Lock()
	d.endGraceLocked(g)
	d.ledger.mu.Unlock()
}

func (d *Dispatcher) endGraceLocked(g *grace) {
	if !g.over.Load() && g.old.Load() == 0 && d.ring.Popped() >= g.end {
		g.over.Store(true)
		close(g.done)
	}
}

// ledgerBound returns the bound under which a consumer's batch counts its
// ended jobs without their IDs (see proc.ended): every job it took has an
// ID up to the ring's pop count, and when a grace period runs, the bound
// is at most its end, so that the count is within it.
func (d *Dispatcher) ledgerBound() uint64 {
	b := d.ring.Popped()
	if g := d.ledger.cur.Load(); g != nil && !g.over.Load() {
		b = min(b, g.end)
	}
	return b
}

// ended notes that p ended (processed or dropped) a job of the event id.
func (p *proc) ended(id uint64) {
	if id <= p.ledgerB {
		p.ledgerEnded++
	} else {
		p.ledgerLate = append(p.ledgerLate, id)
	}
}

// publish enters into the ledger the popped ring positions first,
// first+1, ... (IDs first+1, ...) and the jobs p ended since its last
// publication, and ends the running grace period if that was the last of
// it. Under Run the caller holds takeMu, which orders it with a grace
// period's start; the deterministic consumer runs alone or is the flusher.
func (p *proc) publish(popped int, first uint64) {
	if popped == 0 && p.ledgerEnded == 0 && len(p.ledgerLate) == 0 {
		return
	}
	l := &p.d.ledger
	if delta := int64(popped) - p.ledgerEnded - int64(len(p.ledgerLate)); delta != 0 {
		l.word.Add(uint64(delta))
	}
	if g := l.cur.Load(); g != nil && !g.over.Load() {
		old := -p.ledgerEnded // their IDs are up to ledgerB <= g.end
		for _, id := range p.ledgerLate {
			if id <= g.end {
				old--
			}
		}
		if popped > 0 && first < g.end {
			old += int64(min(uint64(popped), g.end-first))
		}
		if old != 0 {
			g.old.Add(old)
		}
		p.d.checkGrace()
	}
	p.ledgerEnded, p.ledgerLate = 0, p.ledgerLate[:0]
}

// settle publishes a worker's ended jobs before it parks or stops, so
// that a grace period does not wait for a sleeping worker.
func (d *Dispatcher) settle(p *proc) {
	if p.ledgerEnded == 0 && len(p.ledgerLate) == 0 {
		return
	}
	d.pend.takeMu.Lock()
	p.publish(0, 0)
	d.pend.takeMu.Unlock()
}
