package dispatcher

import (
	"sync"
	"sync/atomic"

	"github.com/ringbus/ringbus/internal/ring"
)

// Lifecycle states, in the only order they move.
const (
	stateOpen     int32 = iota
	stateShutdown       // Shutdown called: outside emits get ErrClosed
	stateClosed         // Close called, or Shutdown finished
)

// Queue owners: who may take pending work.
const (
	ownerNone int32 = iota
	ownerStep       // a Tick, Drain or Shutdown's drain, on the caller's goroutine
	ownerRun        // Run's workers
)

// Dispatcher queues emitted events and delivers them to the handlers
// subscribed to their topics: on the caller's goroutine with Tick and Drain,
// or on a pool of workers with Run. All methods are safe for concurrent use.
//
// A Dispatcher must not be copied after first use.
type Dispatcher struct {
	// Read at every emit and by every worker, written rarely. The fields
	// that emitters or workers write often sit at least cacheLinePad
	// bytes away from these and from each other, so that a write by one
	// core does not take a line the others read at every event.
	cfg   config
	ring  *ring.Ring[entry] // pend.ring, one load nearer for Emit
	pend  *pending
	state atomic.Int32 // stateOpen, stateShutdown, stateClosed
	owner atomic.Int32 // ownerNone, ownerStep, ownerRun
	subs  atomic.Pointer[subIndex]
	wake  chan struct{} // parked workers wait on it; see sleepers
	_     [cacheLinePad]byte

	// Emitters send on wake only when sleepers > 0: every emit reads it,
	// workers write it when they park.
	sleepers atomic.Int32
	_        [cacheLinePad]byte

	room room // emitters blocked on a full ring
	_    [cacheLinePad]byte

	// Consumers write it once per batch, under takeMu under Run.
	ledger ledger // what Flush waits for
	_      [cacheLinePad]byte

	step    *proc   // the deterministic consumer
	workers []*proc // Run's consumers, reused by every Run

	subMu   sync.Mutex // guards subList and nextSub; On and Unsubscribe swap subs under it
	subList []*subscriber
	nextSub uint64

	dead    deadLetters
	dropped atomic.Uint64

	// retryWake tells Run's scheduler that a retry waits for its backoff,
	// roomWake that blocked emitters need a look (see room); stepFree
	// wakes a Shutdown waiting for a Tick or Drain to end.
	retryWake chan struct{}
	roomWake  chan struct{}
	stepFree  signal
	// roomAsked is set while a look that roomWake asked for is pending:
	// the workers' later takes do not wake the scheduler again for it.
	roomAsked atomic.Bool

	// A Flush without Run owns the queue (flushing, set under lifeMu);
	// runWaits counts the Runs waiting for it to give the queue up.
	// flushLook tells it to look again while it waits for a due time: a
	// Run waits, or DropOldest cancelled a delayed event it may wait for.
	flushing  atomic.Bool
	runWaits  atomic.Int32
	flushLook chan struct{}

	// batchEnd is broadcast when a worker ends a batch, for a Flush that
	// waits for the handler calls Close did not wait for (see
	// awaitCallsUpTo). With nobody waiting it costs one atomic load.
	batchEnd signal

	lifeMu sync.Mutex
	rs     *runState     // non-nil while Run runs; guarded by lifeMu
	closed chan struct{} // closed when the state becomes stateClosed and Close or Shutdown finished
	once   sync.Once     // closes closed
}

// New returns a dispatcher configured by opts. It starts no goroutine: call
// Run for the worker pool, or Tick and Drain to process events on your own
// goroutine.
func New(opts ...Option) (*Dispatcher, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	retryWake := make(chan struct{}, 1)
	d := &Dispatcher{
		cfg:       cfg,
		pend:      newPending(cfg.capacity, retryWake),
		wake:      make(chan struct{}, cfg.workers),
		closed:    make(chan struct{}),
		retryWake: retryWake,
		roomWake:  make(chan struct{}, 1),
		flushLook: make(chan struct{}, 1),
	}
	d.ring = d.pend.ring
	d.ledger.word.Store(netBias) // no job outside the ring
	d.dead.limit = cfg.deadLetterLimit
	d.subs.Store(newSubIndex(nil))
	d.step = newProc(d, 1, false)
	d.pend.held = append(d.pend.held, &d.step.held)
	d.workers = make([]*proc, cfg.workers)
	for i := range d.workers {
		d.workers[i] = newProc(d, cfg.workers, true)
		d.workers[i].idx = 1 + i // the deterministic consumer is 0
		d.pend.held = append(d.pend.held, &d.workers[i].held)
	}
	return d, nil
}

// eachProc calls f for every consumer, the deterministic one first.
func (d *Dispatcher) eachProc(f func(p *proc)) {
	f(d.step)
	for _, p := range d.workers {
		f(p)
	}
}

// Stats is a snapshot of the dispatcher's counters.
type Stats struct {
	Emitted      uint64 // events accepted into the queue
	Delivered    uint64 // handler calls that returned nil
	Failed       uint64 // handler calls that returned an error or panicked
	Retried      uint64 // retry calls made (a redelivery's first call is no retry)
	DeadLettered uint64 // (event, subscriber) pairs that became dead letters
	Dropped      uint64 // events discarded by an overflow policy, Close, Shutdown's ctx, the dead-letter bound or Unsubscribe
	Queued       int    // events waiting to be processed, retries that are due included
	Retrying     int    // retries and redeliveries waiting, due or not
	Scheduled    int    // delayed events (After, At) not yet due
	DeadLetters  int    // dead letters kept now
}

// Stats returns a snapshot of the counters. Under concurrent use the fields
// are read one by one, not at one instant, and a consumer adds its
// Delivered count once per batch (up to 128 events), so a handler that reads
// Stats does not yet see the calls of its own batch counted there.
func (d *Dispatcher) Stats() Stats {
	st := Stats{
		Emitted:     d.pend.ring.Pushed(),
		Dropped:     d.dropped.Load(),
		DeadLetters: d.dead.len(),
	}
	d.eachProc(func(p *proc) {
		st.Delivered += p.c.delivered.Load()
		st.Failed += p.c.failed.Load()
		st.Retried += p.c.retried.Load()
		st.DeadLettered += p.c.deadLettered.Load()
	})
	st.Queued, st.Retrying = d.pend.sizes()
	// A delayed event still in the ring counts as scheduled, not queued;
	// one whose emit has not pushed it yet counts as neither.
	pushing := d.pend.schedPushing.Load()
	sched, inRing := d.pend.scheduled.Load(), d.pend.schedInRing.Load()
	st.Queued = max(st.Queued-int(inRing-pushing), 0)
	st.Scheduled = int(max(sched-pushing, 0))
	return st
}
