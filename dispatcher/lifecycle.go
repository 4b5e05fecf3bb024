package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// runState is one call of Run.
type runState struct {
	ctx     context.Context    // the workers' ctx: they exit when it ends
	cancel  context.CancelFunc // cancels ctx: Close, Shutdown's end, or Run's own ctx
	done    chan struct{}      // closed when Run returns
	drained atomic.Bool        // Shutdown's drain finished: nothing is left
	live    atomic.Int32       // worker goroutines running
	exited  chan struct{}      // signalled when a worker goroutine exits; see awaitWorkers
}

// halt stops the workers: they exit at their next check of ctx. When
// Shutdown's drain is done no handler runs, so cancelling the handlers'
// ctx then cancels nothing in flight.
func (rs *runState) halt() { rs.cancel() }

// Run starts the worker pool (WithWorkers goroutines, in an errgroup) and
// blocks until it stops. It returns nil after Shutdown or Close, and ctx's
// error when ctx ends: in-flight handlers finish first (their ctx is
// cancelled), and events still queued stay queued for a later Run, Tick or
// Drain. When Run returns, none of its goroutines is left.
//
// A second Run while one runs, or Run while a Tick or Drain runs, returns
// an error wrapping ErrRunning; Run while a Flush processes on its
// caller's goroutine waits for that Flush to hand the queue over (at the
// end of its current round) and to wait for the workers instead; Run
// after Shutdown or Close returns ErrClosed. A nil ctx panics.
func (d *Dispatcher) Run(ctx context.Context) error {
	if ctx == nil {
		panic("dispatcher: Run with a nil Context")
	}
	waiting := false // counted in runWaits
	rs, err := d.startRun(ctx, &waiting)
	for err == errFlushing {
		err = d.awaitFlushStep(ctx)
		if err == nil {
			rs, err = d.startRun(ctx, &waiting)
		}
	}
	if waiting {
		d.runWaits.Add(-1)
	}
	if err != nil {
		return err
	}
	d.logRunStart(ctx)
	g := new(errgroup.Group)
	hctx := context.WithValue(rs.ctx, handlerKey{}, d)
	var start func(p *proc)
	start = func(p *proc) {
		rs.live.Add(1)
		g.Go(func() error {
			returned := false
			defer func() {
				if !returned {
					// A handler called runtime.Goexit and ended this
					// goroutine; the batch loop accounted for the call
					// and handed back the rest. Replace the worker (the
					// group still counts this goroutine, so Go is
					// allowed).
					start(p)
				}
				rs.live.Add(-1)
				select {
				case rs.exited <- struct{}{}:
				default:
				}
			}()
			p.goid.Store(goid())
			d.work(rs, p)
			returned = true
			return nil
		})
	}
	for _, p := range d.workers {
		p.ctx = hctx
		start(p)
	}
	g.Go(func() error {
		d.schedule(rs)
		return nil
	})
	_ = g.Wait() // the goroutines return nil
	rs.cancel()
	return d.logRunEnd(ctx, d.endRun(ctx, rs))
}

// startRun makes Run the owner of the queue.
func (d *Dispatcher) startRun(ctx context.Context, waiting *bool) (*runState, error) {
	d.lifeMu.Lock()
	defer d.lifeMu.Unlock()
	if d.state.Load() != stateOpen {
		return nil, ErrClosed
	}
	if !d.owner.CompareAndSwap(ownerNone, ownerRun) {
		if d.flushing.Load() {
			if !*waiting {
				// Before the unlock: Flush sees it before it owns the
				// queue again.
				d.runWaits.Add(1)
				*waiting = true
			}
			return nil, errFlushing
		}
		return nil, fmt.Errorf("%w: Run while a Tick, Drain or another Run owns the queue", ErrRunning)
	}
	if *waiting {
		// With d.rs, under lifeMu: a Flush that sees no Run waiting
		// sees this one running.
		d.runWaits.Add(-1)
		*waiting = false
	}
	runCtx, cancel := context.WithCancel(ctx)
	d.rs = &runState{
		ctx:    runCtx,
		cancel: cancel,
		done:   make(chan struct{}),
		exited: make(chan struct{}, 1),
	}
	return d.rs, nil
}

// errFlushing is startRun's answer when a Flush without Run owns the
// queue: Run waits for it to hand the queue over (see Flush).
var errFlushing = errors.New("dispatcher: a Flush owns the queue")

// awaitFlushStep waits until the Flush that owns the queue gives it up for
// Run (startRun counted Run in runWaits), or ctx ends.
func (d *Dispatcher) awaitFlushStep(ctx context.Context) error {
	freed := d.stepFree.wait()
	defer d.stepFree.done()
	if d.owner.Load() != ownerStep {
		return nil
	}
	d.askFlushToLook()
	select {
	case <-freed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// endRun settles the state once Run's goroutines are gone.
func (d *Dispatcher) endRun(ctx context.Context, rs *runState) error {
	d.pend.unkey()
	d.room.wakeAll() // emitters blocked on a ring that nobody takes from now
	d.lifeMu.Lock()
	var err error
	switch {
	case d.state.Load() == stateClosed:
		// Close ran: what handlers queued after its drop goes too.
		d.pend.clear(d)
	case rs.drained.Load():
		d.state.Store(stateClosed)
		d.markClosed()
	default:
		err = ctx.Err() // ctx ended Run; a Shutdown in progress goes on without it
	}
	d.rs = nil
	d.owner.Store(ownerNone)
	d.lifeMu.Unlock()
	d.stepFree.broadcast()
	close(rs.done)
	return err
}

// Shutdown stops the dispatcher gracefully. Emits from outside handlers get
// ErrClosed at once; emits from handlers are still accepted. Everything
// queued, every event handlers emit meanwhile, every pending retry and
// every delayed event is processed (retries and delayed events are waited
// for), then Run returns nil. Without Run,
// Shutdown does this work on the caller's goroutine.
//
// If ctx ends first, Shutdown closes the dispatcher as Close does (what is
// left is counted in Stats.Dropped) and returns ctx's error at once, even
// when a handler ignores its cancelled ctx: Run then returns, and its
// goroutines end, when that handler returns. Shutdown is safe to call more
// than once and from several goroutines; later calls wait for the first to
// finish. It must not be called from a handler: with a handler's ctx it
// returns an error wrapping ErrRunning, since it would wait for itself.
// A nil ctx panics.
func (d *Dispatcher) Shutdown(ctx context.Context) (err error) {
	if ctx == nil {
		panic("dispatcher: Shutdown with a nil Context")
	}
	if d.fromHandler(ctx) {
		return fmt.Errorf("%w: Shutdown called from a handler would wait for itself", ErrRunning)
	}
	defer d.logShutdown(ctx)(&err)
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
				d.close(false)
				return ctx.Err()
			}
		}
		freed := d.stepFree.wait()
		if d.ownStep("Shutdown") == nil {
			d.stepFree.done()
			return d.drainForShutdown(ctx)
		}
		// A Tick, Drain or another Shutdown owns the queue: wait for it.
		select {
		case <-freed:
		case <-d.closed:
		case <-ctx.Done():
			d.stepFree.done()
			d.close(false)
			return ctx.Err()
		}
		d.stepFree.done()
	}
}

// drainForShutdown is Shutdown without Run: the caller owns the queue.
func (d *Dispatcher) drainForShutdown(ctx context.Context) error {
	defer d.releaseStep()
	d.step.bind(ctx)
	d.step.collect = false // a Drain ended by runtime.Goexit may have left it set
	for {
		_, err := d.consume(ctx, 0, false)
		switch {
		case err == ErrClosed:
			// Close finishes the job, on its own goroutine: Shutdown
			// returns once its drop is over, as Close does.
			return d.awaitClosed(ctx)
		case err != nil:
			d.close(false)
			return err
		}
		if next := d.pend.nextDue(); !next.IsZero() {
			switch err := d.awaitDue(ctx, next, nil, nil); {
			case err == ErrClosed:
				return nil // Close dropped what we waited for
			case err != nil:
				d.close(false)
				return err
			}
			continue
		}
		// Nothing left: close the ring, then catch emits that won the
		// race with it. If one did, the ring opens again for the
		// handlers that process it, which may emit.
		d.pend.ring.Close()
		d.room.wakeAll()
		if d.pend.empty() {
			break
		}
		d.pend.ring.Reopen()
	}
	d.lifeMu.Lock()
	if d.state.Load() == stateClosed {
		// Close ran meanwhile (its drop may have emptied what we
		// found empty): it marks the dispatcher closed once its drop
		// is over.
		d.lifeMu.Unlock()
		return d.awaitClosed(ctx)
	}
	d.state.Store(stateClosed)
	d.markClosed()
	d.lifeMu.Unlock()
	return nil
}

// Close stops the dispatcher now: emits get ErrClosed, in-flight handler
// calls finish (under Run their ctx is cancelled), and whatever is still
// queued, waiting behind a key or waiting to be retried is discarded and
// counted in Stats.Dropped. When it discarded anything it returns an error
// wrapping ErrDropped that says how much. Under Run it waits for the
// workers to finish their calls and exit, except the worker it is called
// from, when a handler calls it: that worker exits once the handler
// returns. It is safe to call more than once and from several goroutines;
// later calls wait for the first to finish (but not from a handler) and
// return nil.
func (d *Dispatcher) Close() error { return d.close(true) }

// close is Close; wait false does not wait for Run's workers (Shutdown
// whose ctx ended).
func (d *Dispatcher) close(wait bool) error {
	d.lifeMu.Lock()
	prev := d.state.Swap(stateClosed)
	rs := d.rs
	d.lifeMu.Unlock()
	if prev == stateClosed {
		if wait && (rs == nil || !rs.onWorker(d)) {
			<-d.closed
		}
		return nil
	}
	before := d.dropped.Load()
	d.pend.ring.Close()
	d.room.wakeAll() // blocked emitters see the closed ring
	if rs != nil {
		rs.halt()
		if wait {
			d.awaitWorkers(rs)
		}
	}
	d.pend.clear(d)
	// A Tick or Drain still running (Close may come from one of its
	// handlers) drops what it holds when it sees the closed state.
	n := int(d.dropped.Load()-before) + int(d.step.held.Load())
	d.logClosed(n)
	d.markClosed()
	if n > 0 {
		return fmt.Errorf("%w: Close discarded %d queued events and retries", ErrDropped, n)
	}
	return nil
}

// awaitWorkers waits until Run's goroutines are gone, or, when the caller
// is one of the workers (a handler called Close), until every other worker
// has exited.
func (d *Dispatcher) awaitWorkers(rs *runState) {
	if !rs.onWorker(d) {
		<-rs.done
		return
	}
	for rs.live.Load() > 1 {
		select {
		case <-rs.exited:
		case <-rs.done:
			return
		}
	}
}

// onWorker reports whether the calling goroutine is one of Run's workers.
func (rs *runState) onWorker(d *Dispatcher) bool {
	id := goid()
	for _, p := range d.workers {
		if p.goid.Load() == id {
			return true
		}
	}
	return false
}

// goid returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 42 [running]:"), the only portable way Go offers.
// It costs a stack trace, so it is asked only when a worker starts and
// when Close runs under Run.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic("dispatcher: cannot read the goroutine id from " + strconv.Quote(string(buf[:])))
	}
	return id
}

func (d *Dispatcher) markClosed() { d.once.Do(func() { close(d.closed) }) }

// awaitClosed waits until Close has finished its drop (see close), or ctx
// ends.
func (d *Dispatcher) awaitClosed(ctx context.Context) error {
	select {
	case <-d.closed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// signal is a broadcast that waiters re-arm: wait returns the channel the
// next broadcast closes. The waiter re-checks its condition after wait and
// calls done when it stops waiting.
type signal struct {
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.waiters.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) done() { s.waiters.Add(-1) }

// broadcast wakes every waiter. A waiter registers before its re-check, so
// either this load sees it, or its re-check sees what changed before.
func (s *signal) broadcast() {
	if s.waiters.Load() == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
