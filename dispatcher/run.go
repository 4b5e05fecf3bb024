package dispatcher

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// runState is one call of Run.
type runState struct {
	cancel   context.CancelFunc // cancels the workers' and handlers' ctx
	stop     chan struct{}      // closed when the workers must exit
	stopOnce sync.Once
	done     chan struct{} // closed when Run returns
	drained  atomic.Bool   // Shutdown's drain finished: nothing is left
}

func (rs *runState) halt() { rs.stopOnce.Do(func() { close(rs.stop) }) }

// spinRounds is how many times an idle worker yields, re-checking for work,
// before it parks. A few microseconds of yielding saves a park and a wake-up
// when events arrive in quick bursts.
const spinRounds = 64

// Run starts the worker pool (WithWorkers goroutines, in an errgroup) and
// blocks until it stops. It returns nil after Shutdown or Close, and ctx's
// error when ctx ends: in-flight handlers finish first (their ctx is
// cancelled), and events still queued stay queued for a later Run, Tick or
// Drain. When Run returns, none of its goroutines is left.
//
// A second Run while one runs, or Run while a Tick or Drain runs, returns
// ErrRunning; Run after Shutdown or Close returns ErrClosed.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.lifeMu.Lock()
	if d.state.Load() != stateOpen {
		d.lifeMu.Unlock()
		return ErrClosed
	}
	if !d.owner.CompareAndSwap(ownerNone, ownerRun) {
		d.lifeMu.Unlock()
		return ErrRunning
	}
	runCtx, cancel := context.WithCancel(ctx)
	rs := &runState{cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	d.rs = rs
	d.lifeMu.Unlock()

	g, gctx := errgroup.WithContext(runCtx)
	hctx := context.WithValue(gctx, handlerKey{}, d)
	var start func(p *proc)
	start = func(p *proc) {
		g.Go(func() error {
			returned := false
			defer func() {
				if !returned {
					// A handler called runtime.Goexit and ended this
					// goroutine; it accounted for its call and put
					// its batch back. Replace the worker. (The group
					// still counts this goroutine, so Go is allowed.)
					start(p)
				}
			}()
			d.work(gctx, rs, p)
			returned = true
			return nil
		})
	}
	for i := range d.cfg.workers {
		p := d.newProc(&d.runCounters[i])
		p.ctx = hctx
		start(p)
	}
	g.Go(func() error {
		d.schedule(gctx, rs)
		return nil
	})
	_ = g.Wait() // the goroutines return nil
	cancel()
	d.space.broadcast() // see roomMade: emitters blocked on a ring that no longer drains

	d.lifeMu.Lock()
	var err error
	switch {
	case d.state.Load() == stateClosed:
	case rs.drained.Load():
		d.state.Store(stateClosed)
		d.markClosed()
	default:
		err = ctx.Err() // ctx ended Run; stateShutdown stays and Shutdown finishes the job
	}
	d.rs = nil
	d.owner.Store(ownerNone)
	d.lifeMu.Unlock()
	d.ownerFree.broadcast()
	close(rs.done)
	return err
}

// Shutdown stops the dispatcher gracefully. Emits from outside handlers get
// ErrClosed at once; emits from handlers are still accepted. Everything
// queued, every event handlers emit meanwhile and every pending retry is
// processed (retries are waited for), then Run returns nil. Without Run,
// Shutdown does this work on the caller's goroutine.
//
// If ctx ends first, Shutdown closes the dispatcher as Close does (what is
// left is counted in Stats.Dropped) and returns ctx's error. It is safe to
// call more than once and from several goroutines; later calls wait for the
// first to finish. It must not be called from a handler: with a handler's
// ctx it returns ErrRunning, since it would wait for itself.
//
// Shutdown finishes by closing the queue once it finds nothing left. An
// outside Emit that passed its check just before Shutdown began and pushes
// in that instant is still processed, but what its handlers emit then gets
// ErrClosed.
func (d *Dispatcher) Shutdown(ctx context.Context) error {
	if d.fromHandler(ctx) {
		return fmt.Errorf("%w: Shutdown called from a handler would wait for itself", ErrRunning)
	}
	for {
		d.lifeMu.Lock()
		d.state.CompareAndSwap(stateOpen, stateShutdown)
		state, rs := d.state.Load(), d.rs
		d.lifeMu.Unlock()
		if state == stateClosed {
			select {
			case <-d.closed:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if rs != nil {
			// Wake every parked worker: the last to park again sees
			// the dispatcher drained and stops the pool.
			d.wakeWorkers(d.cfg.workers)
			select {
			case <-rs.done:
				continue // Run returned: closed, or its ctx ended first
			case <-ctx.Done():
				d.Close() //nolint:errcheck // what it drops is counted
				return ctx.Err()
			}
		}
		freed := d.ownerFree.wait()
		if d.owner.CompareAndSwap(ownerNone, ownerTick) {
			d.ownerFree.done()
			return d.drainForShutdown(ctx)
		}
		// A Tick, Drain or another Shutdown owns the queue: wait for it.
		select {
		case <-freed:
			d.ownerFree.done()
		case <-d.closed:
			d.ownerFree.done()
		case <-ctx.Done():
			d.ownerFree.done()
			d.Close() //nolint:errcheck // what it drops is counted
			return ctx.Err()
		}
	}
}

// drainForShutdown is Shutdown without Run: the caller owns the queue.
func (d *Dispatcher) drainForShutdown(ctx context.Context) error {
	defer d.releaseTick()
	p := d.tick
	p.bind(ctx)
	for {
		_, err := d.consume(p, ctx, 0, false)
		switch {
		case err == ErrClosed:
			return nil // Close finished the job
		case err != nil:
			d.Close() //nolint:errcheck // what it drops is counted
			return err
		}
		if _, next := d.retries.moveDue(time.Now()); !next.IsZero() {
			t := time.NewTimer(time.Until(next))
			select {
			case <-t.C:
				continue
			case <-d.closed: // Close dropped the retries we waited for
				t.Stop()
				return nil
			case <-ctx.Done():
				t.Stop()
				d.Close() //nolint:errcheck // what it drops is counted
				return ctx.Err()
			}
		}
		// Nothing left: close the ring, then catch emits that won the
		// race with it.
		d.q.Close()
		d.space.broadcast()
		if d.q.Len() == 0 && d.carry.len() == 0 && d.retries.empty() {
			break
		}
	}
	d.lifeMu.Lock()
	d.state.Store(stateClosed)
	d.markClosed()
	d.lifeMu.Unlock()
	return nil
}

// Close stops the dispatcher now: emits get ErrClosed, in-flight handler
// calls finish (under Run their ctx is cancelled), and whatever is still
// queued, waiting behind a key or waiting to be retried is discarded and
// counted in Stats.Dropped. When it discarded anything it returns an error
// wrapping ErrDropped that says how much. Under Run it waits for Run to
// return. It is safe to call more than once and from several goroutines;
// later calls return nil. It must not be called from a handler under Run:
// it would wait for its own worker.
func (d *Dispatcher) Close() error {
	d.lifeMu.Lock()
	prev := d.state.Swap(stateClosed)
	rs := d.rs
	d.lifeMu.Unlock()
	if prev == stateClosed {
		return nil
	}
	before := d.dropped.Load()
	d.q.Close()
	d.space.broadcast() // blocked emitters see the closed ring
	if rs != nil {
		rs.cancel()
		rs.halt()
		<-rs.done // the workers dropped what they held
	}
	d.dropQueued()
	// A Tick or Drain still running (Close may come from one of its
	// handlers) drops what it holds when it sees the closed state.
	n := int(d.dropped.Load()-before) + int(atomic.LoadUint64(&d.tickCounters.held))
	d.markClosed()
	if n > 0 {
		return fmt.Errorf("%w: Close discarded %d queued events and retries", ErrDropped, n)
	}
	return nil
}

// dropQueued discards everything queued and returns how much it discarded.
func (d *Dispatcher) dropQueued() int {
	n := 0
	var buf [popBatch]entry
	for d.q.Len() > 0 {
		k, _ := d.q.TryPopN(buf[:])
		clear(buf[:k])
		n += k
	}
	n += d.carry.clear() + d.retries.clear() + d.keys.clear()
	d.dropped.Add(uint64(n))
	return n
}

func (d *Dispatcher) markClosed() { d.once.Do(func() { close(d.closed) }) }

// retryScheduled tells Run's scheduler that a retry was added.
func (d *Dispatcher) retryScheduled() {
	select {
	case d.retryWake <- struct{}{}:
	default:
	}
}

// schedule moves retries into the ready queue when they are due and wakes
// workers for them.
func (d *Dispatcher) schedule(ctx context.Context, rs *runState) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		moved, next := d.retries.moveDue(time.Now())
		d.wakeWorkers(moved)
		if next.IsZero() {
			t.Stop()
		} else {
			t.Reset(time.Until(next))
		}
		select {
		case <-t.C:
		case <-d.retryWake:
		case <-ctx.Done():
			return
		case <-rs.stop:
			return
		}
	}
}

// work is one worker's loop: take a batch, process it, park when idle.
func (d *Dispatcher) work(ctx context.Context, rs *runState, p *proc) {
	done := ctx.Done()
	for {
		select {
		case <-done:
			return
		case <-rs.stop:
			return
		default:
		}
		if d.runBatch(p, done) {
			continue
		}
		p.forgetStaleMatch() // idle: keep no replaced index alive
		if !d.park(rs, done) {
			return
		}
	}
}

// runBatch takes a batch (carried events first, then due retries, then the
// ring) and processes it, following each key's backlog. It reports whether
// it found any work.
func (d *Dispatcher) runBatch(p *proc, done <-chan struct{}) bool {
	jobs, es, first := d.takeJobs(p)
	if p.wokeEmitters {
		// The emitters we woke are queued to run on this P next (a woken
		// goroutine waits in the waker's run-next slot), and would wait
		// there until this worker blocks, by which time the ring may have
		// run dry: let them run now. (In a trace of BenchmarkThroughput
		// the producer spent half its time blocked without this.)
		p.wokeEmitters = false
		runtime.Gosched()
	}
	if es != nil {
		d.runEntries(p, es, first, done)
		return true
	}
	if len(jobs) == 0 {
		return false
	}
	cur, finished := -1, false // takeJobs set held to len(jobs)
	defer func() {
		p.setHeld(0)
		p.flush()
		if !finished && cur >= 0 {
			// A handler called runtime.Goexit: this goroutine is ending.
			// Keep the rest of the batch queued and give up the key
			// of the job in progress with its backlog.
			d.surrender(jobs[cur+1:], jobs[cur].ev.Key)
		}
	}()
	for i := range jobs {
		if d.interrupted(done) != nil {
			d.surrender(jobs[i:], "")
			finished = true
			return true
		}
		j := &jobs[i]
		p.setHeld(len(jobs) - i - 1) // j is in progress now, no longer waiting
		cur = i
		p.process(j)
		if j.ev.Key == "" {
			continue
		}
		// We own j's key: run what queued up behind it, in order.
		for {
			next, ok := d.keys.release(j.ev.Key)
			if !ok {
				break
			}
			if d.interrupted(done) != nil {
				d.surrender(append(jobs[i+1:len(jobs):len(jobs)], next), "")
				finished = true
				return true
			}
			p.process(&next)
		}
	}
	finished = true
	return true
}

// runEntries processes events popped from the ring that have no key, the
// common case, straight from the pop buffer: they need no key registration
// and no conversion to jobs. first is the position of es[0].
func (d *Dispatcher) runEntries(p *proc, es []entry, first uint64, done <-chan struct{}) {
	i, finished := 0, false // takeJobs set held to len(es)
	defer func() {
		p.setHeld(0)
		p.flush()
		if !finished {
			// A handler called runtime.Goexit (see runBatch); es[i] is
			// accounted for by the call's goexit.
			d.surrender(p.toJobs(es[i+1:], first+uint64(i+1)), "")
		}
		clear(es)
	}()
	// Set field by field: built as a composite literal, the event is
	// written to a temporary with 8-byte stores and copied with 16-byte
	// loads, which stall on store forwarding (about 6 ns per event in a CPU
	// profile).
	var ev Event
	ev.Attempt = 1
	for ; i < len(es); i++ {
		if d.interrupted(done) != nil {
			d.surrender(p.toJobs(es[i:], first+uint64(i)), "")
			break
		}
		p.setHeld(len(es) - i - 1)
		e := &es[i]
		ev.ID, ev.Topic, ev.Payload = first+uint64(i)+1, e.topic, e.payload
		p.fanOut(&ev)
	}
	finished = true
}

// takeJobs claims the next batch under the key table's lock, so that the
// order in which workers claim batches is the order in which they register
// keys: a keyed event is registered after every earlier event of its key.
// Jobs whose key another worker owns join that key's backlog and are not
// returned. Ring events without any key come back as entries (es, with
// first the position of es[0]) instead of jobs. The lock also makes the
// workers take turns at the ring's head: measured with two workers,
// popping without it is slower (more CAS failures and cache-line traffic
// on head), not faster.
func (d *Dispatcher) takeJobs(p *proc) (jobs []job, es []entry, first uint64) {
	k := &d.keys
	if !k.mu.TryLock() {
		// Another worker is taking its batch. Waiting for the mutex
		// would park this goroutine and cost a wake-up at every batch;
		// the caller polls again instead (see park).
		return nil, nil, 0
	}
	defer k.mu.Unlock()
	if k.full() {
		return nil, nil, 0 // the key owners will wake us when their backlogs shrink
	}
	jobs = d.carry.take(p.jobs[:0], popBatch)
	if len(jobs) == 0 {
		jobs = d.retries.takeReady(jobs, popBatch)
	}
	if len(jobs) == 0 {
		var n int
		// An even share of what is ready, so that a few slow events
		// spread over the workers instead of queueing behind one.
		n, first = d.q.TryPopShare(p.batch, d.cfg.workers)
		if n == 0 {
			return nil, nil, 0
		}
		p.setHeld(n) // at once, so that Stats does not lose them meanwhile
		p.wokeEmitters = d.roomMade()
		es = p.batch[:n]
		keyed := false
		for i := range es {
			if es[i].key != "" {
				keyed = true
				break
			}
		}
		if !keyed {
			return nil, es, first
		}
		jobs = p.toJobs(es, first)
	}
	for i := range jobs {
		if jobs[i].ev.Key != "" {
			jobs = k.register(jobs, i)
			break
		}
	}
	p.setHeld(len(jobs)) // the backlogged ones count in the key table's backlog
	return jobs, nil, 0
}

// roomMade wakes emitters blocked on a full ring once workers have emptied
// it to half its capacity, not at every pop: woken at every pop, blocked
// emitters fill the few freed slots and block again, paying a park and a
// wake-up for every few events. A ring that stops draining above half
// still wakes them: Run wakes them all when its workers stop. It reports
// whether it woke anyone.
func (d *Dispatcher) roomMade() bool {
	if d.space.waiters.Load() > 0 && d.q.Len() <= d.q.Cap()/2 {
		d.space.broadcast()
		return true
	}
	return false
}

// register acquires the keys of jobs[from:] (jobs[:from] have none) and
// returns the jobs the caller owns: backlogged ones are removed. k.mu is
// held.
func (k *keyTable) register(jobs []job, from int) []job {
	owned := jobs[:from]
	for _, j := range jobs[from:] {
		if j.ev.Key == "" || k.acquire(j) {
			owned = append(owned, j)
		}
	}
	clear(jobs[len(owned):])
	return owned
}

// surrender hands back jobs a stopping worker took but did not process,
// with the backlogs of the keys it owns (theirs, and owned if not empty), so
// that they stay queued in order.
func (d *Dispatcher) surrender(jobs []job, owned string) {
	var back []job
	d.keys.mu.Lock()
	if owned != "" {
		back = d.keys.abandon(owned, back)
	}
	for _, j := range jobs {
		back = append(back, j)
		if j.ev.Key != "" {
			back = d.keys.abandon(j.ev.Key, back)
		}
	}
	d.keys.mu.Unlock()
	d.putBack(back, nil)
}

// hasWork reports whether a worker would find something to take. Unless
// exact, it is a hint that may miss an event still being pushed, cheap to
// poll: it looks at the ring's head slot, not at the tail, whose cache line
// every push takes over (workers polling the tail slowed a single
// producer down to a third of its speed, and the ring then stayed empty).
func (d *Dispatcher) hasWork(exact bool) bool {
	if d.keys.full() {
		return false
	}
	if ready, _ := d.retries.counts(); ready > 0 || d.carry.len() > 0 {
		return true
	}
	if exact {
		return d.q.Len() > 0
	}
	return d.q.Ready()
}

// park spins a little, then sleeps until an emitter, the scheduler, a key
// owner or Shutdown wakes it. It reports whether the worker should go on.
//
// The protocol with emitters: a worker increments sleepers, then re-checks
// the queue's tail (the exact hasWork); an emitter claims its position by
// moving the tail, then loads sleepers. The increment and the tail's CAS
// are sequentially consistent, so either the emitter sees the sleeper and
// sends a wake-up, or the worker's re-check sees the event.
func (d *Dispatcher) park(rs *runState, done <-chan struct{}) bool {
	for range spinRounds {
		if d.hasWork(false) {
			return true
		}
		runtime.Gosched()
	}
	n := d.sleepers.Add(1)
	defer d.sleepers.Add(-1)
	if d.hasWork(true) {
		return true
	}
	if n == int32(d.cfg.workers) && d.state.Load() == stateShutdown && d.quiescent() {
		// Every worker sleeps, so no handler runs and no handler can
		// emit: Shutdown's work is done. Close the ring, then make sure
		// no outside emit got in before it closed.
		d.q.Close()
		d.space.broadcast()
		if d.quiescent() {
			rs.drained.Store(true)
			rs.halt()
			return false
		}
		return true
	}
	select {
	case <-d.wake:
	case <-done:
	case <-rs.stop:
	}
	return true
}

// quiescent reports whether nothing is queued, carried, backlogged or
// waiting to be retried.
func (d *Dispatcher) quiescent() bool {
	return d.q.Len() == 0 && d.carry.len() == 0 && d.retries.empty() && d.keys.backlogLen() == 0
}

// keyTable gives per-key ordering under Run: a worker that takes a keyed
// event owns its key until it has processed it and everything that queued
// up behind it; another worker that takes an event of an owned key appends
// it to the key's backlog instead of processing it.
type keyTable struct {
	mu      sync.Mutex
	owned   map[string]*fifo[job] // key -> backlog; present while owned
	free    []*fifo[job]          // spare backlogs, reused
	backlog atomic.Int32          // jobs in all backlogs
	limit   int
	wake    func()
}

func (k *keyTable) init(limit int, wake func()) {
	k.owned = make(map[string]*fifo[job])
	k.limit = limit
	k.wake = wake
}

func (k *keyTable) backlogLen() int { return int(k.backlog.Load()) }

// full reports whether the backlogs hold limit jobs: workers then take no
// more until key owners catch up, so memory stays bounded.
func (k *keyTable) full() bool { return int(k.backlog.Load()) >= k.limit }

// acquire makes the caller the owner of j's key and reports true, or
// appends j to the key's backlog and reports false. k.mu is held.
func (k *keyTable) acquire(j job) bool {
	if q, ok := k.owned[j.ev.Key]; ok {
		q.push(j)
		k.backlog.Add(1)
		return false
	}
	var q *fifo[job]
	if n := len(k.free); n > 0 {
		q, k.free = k.free[n-1], k.free[:n-1]
	} else {
		q = new(fifo[job])
	}
	k.owned[j.ev.Key] = q
	return true
}

// release is called by the owner of key after processing an event of it:
// it returns the next backlogged job, which the owner must process, or
// gives the key up and reports false.
func (k *keyTable) release(key string) (job, bool) {
	k.mu.Lock()
	q := k.owned[key]
	if q.len() > 0 {
		j := q.pop()
		wasFull := k.full()
		k.backlog.Add(-1)
		k.mu.Unlock()
		if wasFull {
			k.wake() // workers stopped taking while the backlogs were full
		}
		return j, true
	}
	delete(k.owned, key)
	k.free = append(k.free, q)
	k.mu.Unlock()
	return job{}, false
}

// abandon gives up key, appending its backlog to dst. k.mu is held.
func (k *keyTable) abandon(key string, dst []job) []job {
	q, ok := k.owned[key]
	if !ok {
		return dst
	}
	for q.len() > 0 {
		dst = append(dst, q.pop())
		k.backlog.Add(-1)
	}
	delete(k.owned, key)
	k.free = append(k.free, q)
	return dst
}

// clear discards every backlog and returns how many jobs they held.
func (k *keyTable) clear() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for key := range k.owned {
		n += len(k.abandon(key, nil))
	}
	return n
}
