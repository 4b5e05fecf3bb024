package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/internal/ring"
)

// entry is what the queue holds for one emitted event. Its ID is not stored:
// it is the event's position in the ring plus one, known when it is popped.
//
// It is padded so that a ring slot (entry and an 8-byte sequence number) is
// one 64-byte cache line: a producer filling one slot and a consumer
// emptying the next never share a line, and a slot costs one line
// transfer, not two. In BenchmarkThroughput that took about 5% less time
// per event than the unpadded 56-byte slot (three interleaved A/B runs).
type entry struct {
	topic   string
	key     string
	payload any
	_       [8]byte
}

// Lifecycle states, in the only order they move.
const (
	stateOpen     int32 = iota
	stateShutdown       // Shutdown called: outside emits get ErrClosed
	stateClosed         // Close called, or Shutdown finished
)

// Queue owners: who may pop events.
const (
	ownerNone int32 = iota
	ownerTick       // a Tick, Drain or the draining Shutdown
	ownerRun        // Run's workers
)

// Dispatcher queues emitted events and delivers them to the handlers
// subscribed to their topics: on the caller's goroutine with Tick and Drain,
// or on a pool of workers with Run. All methods are safe for concurrent use.
//
// A Dispatcher must not be copied after first use.
type Dispatcher struct {
	// Read by every emit and every worker, written rarely: the fields
	// before the first pad. Fields that workers or emitters write often
	// are kept at least cacheLinePad bytes away from them and from each
	// other, whatever alignment the allocator gives the Dispatcher, so
	// that a write by one core does not invalidate a line the others
	// read at every event. (No measurable change on this machine's
	// throughput benchmark; it removes a layout-dependent risk.)
	cfg   config
	q     *ring.Ring[entry]
	state atomic.Int32 // stateOpen, stateShutdown, stateClosed
	owner atomic.Int32 // ownerNone, ownerTick, ownerRun
	index atomic.Pointer[index]
	wake  chan struct{} // idle workers wait on it; see sleepers
	tick  *proc         // the deterministic consumer, reused
	_     cacheLinePad

	keys keyTable // per-key ordering under Run; its mutex is taken at every batch
	_    cacheLinePad

	// Emitters send on wake only when sleepers > 0: every emit reads it,
	// workers write it when they park.
	sleepers atomic.Int32
	_        cacheLinePad

	space   signal    // wakes emitters blocked on a full ring
	recheck sync.Pool // *time.Timer: blocked emitters' blockedRecheck timers
	_       cacheLinePad

	// Subscriptions: readers load the immutable index; On and Unsubscribe
	// rebuild it under subMu.
	subMu   sync.Mutex
	subs    []*subscriber
	nextSub uint64

	retries retryQueue // retries and redeliveries, bounded by capacity
	carry   carryList  // events taken from the ring and not processed when Run stopped
	dead    deadLetters

	// ownerFree wakes a Shutdown waiting for a Tick or Drain to end;
	// retryWake tells Run's scheduler that a retry was scheduled.
	ownerFree signal
	retryWake chan struct{}

	dropped      atomic.Uint64
	tickCounters counters   // counters of Tick, Drain and Shutdown's drain
	runCounters  []counters // one per worker

	lifeMu sync.Mutex
	rs     *runState     // non-nil while Run runs; guarded by lifeMu
	closed chan struct{} // closed when the state becomes stateClosed
	once   sync.Once     // closes closed
}

// cacheLinePad separates fields that different cores write; see
// Dispatcher. 128 bytes because some CPUs fetch lines in pairs.
type cacheLinePad [128]byte

// New returns a dispatcher configured by opts. It starts no goroutine: call
// Run for the worker pool, or Tick and Drain to process events on your own
// goroutine.
func New(opts ...Option) (*Dispatcher, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg:         cfg,
		q:           ring.New[entry](cfg.capacity),
		wake:        make(chan struct{}, cfg.workers),
		runCounters: make([]counters, cfg.workers),
		closed:      make(chan struct{}),
		retryWake:   make(chan struct{}, 1),
	}
	d.retries.init(d.q.Cap())
	d.keys.init(d.q.Cap(), func() { d.wakeWorkers(d.cfg.workers) })
	d.dead.limit = cfg.deadLetterLimit
	d.index.Store(buildIndex(nil))
	d.tick = d.newProc(&d.tickCounters)
	return d, nil
}

// Subscription is the handle On returns.
type Subscription struct {
	d *Dispatcher
	s *subscriber
}

// Name returns the subscription's name (WithName, or the generated one).
func (s *Subscription) Name() string { return s.s.name }

// Unsubscribe removes the subscription: events processed after it returns
// are not delivered to its handler, and its pending retries are discarded
// when they come due (counted in Stats.Dropped then). A call already in
// progress finishes. It is
// safe to call more than once, and from a handler.
func (s *Subscription) Unsubscribe() {
	d := s.d
	d.subMu.Lock()
	defer d.subMu.Unlock()
	if !s.s.active.Swap(false) {
		return
	}
	for i, x := range d.subs {
		if x == s.s {
			d.subs = append(d.subs[:i:i], d.subs[i+1:]...) // copy: the old slice may back the index
			break
		}
	}
	d.index.Store(buildIndex(d.subs))
}

// On subscribes h to every topic that pattern matches: a topic, or a
// pattern with "*" for exactly one token and ">" as the last token for one
// or more. For each event, handlers run in subscription order (under Run,
// for one event, too). A pattern that does not parse gets ErrBadTopic; a nil
// handler ErrInvalidOption.
func (d *Dispatcher) On(pattern string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	p, err := parsePattern(pattern)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: On(%q): nil handler", ErrInvalidOption, pattern)
	}
	var sc subConfig
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil SubscribeOption", ErrInvalidOption)
		}
		if err := o(&sc); err != nil {
			return nil, err
		}
	}
	d.subMu.Lock()
	defer d.subMu.Unlock()
	d.nextSub++
	s := &subscriber{name: sc.name, seq: d.nextSub, pat: p, h: h}
	if s.name == "" {
		s.name = fmt.Sprintf("%s#%d", pattern, s.seq)
	}
	s.active.Store(true)
	d.subs = append(d.subs[:len(d.subs):len(d.subs)], s) // copy: the old slice may back the index
	d.index.Store(buildIndex(d.subs))
	return &Subscription{d: d, s: s}, nil
}

// Emit queues an event on topic with payload and returns without running
// any handler. What it does when the queue is full is the overflow policy's
// (WithOverflow). After Shutdown or Close it returns ErrClosed. A handler
// that emits passes the ctx it was given.
func (d *Dispatcher) Emit(ctx context.Context, topic string, payload any) error {
	return d.emit(ctx, entry{topic: topic, payload: payload})
}

// EmitEvent is Emit with an ordering key: it queues e's Topic, Key and
// Payload. The dispatcher assigns the ID and the Attempt.
func (d *Dispatcher) EmitEvent(ctx context.Context, e Event) error {
	return d.emit(ctx, entry{topic: e.Topic, key: e.Key, payload: e.Payload})
}

func (d *Dispatcher) emit(ctx context.Context, e entry) error {
	if err := checkTopic(e.topic); err != nil {
		return err
	}
	if s := d.state.Load(); s != stateOpen {
		// While Shutdown drains, handlers may still emit.
		if s == stateClosed || !d.fromHandler(ctx) {
			return ErrClosed
		}
	}
	// Fast path: room in the ring. The push is the whole cost, plus one
	// atomic load to see whether a worker sleeps.
	if d.q.TryPush(e) {
		d.notify()
		return nil
	}
	return d.emitFull(ctx, e)
}

// blockedRecheck is the longest an emitter blocked on a full ring sleeps
// before it looks for room again on its own. Workers wake blocked emitters
// only once they have emptied the ring to half (see roomMade), which saves
// a wake-up per batch; but a ring that stops draining above half, because
// every worker is inside a handler waiting for something a blocked emitter
// will do once its Emit returns, must not keep that emitter blocked for
// ever. It then waits at most this long.
const blockedRecheck = time.Millisecond

// emitFull applies the overflow policy to an emit that found the ring full.
func (d *Dispatcher) emitFull(ctx context.Context, e entry) error {
	for {
		if d.q.Closed() {
			return ErrClosed
		}
		switch d.cfg.overflow {
		case Reject:
			return ErrFull
		case DropNewest:
			d.dropped.Add(1)
			return ErrDropped
		case DropOldest:
			if _, ok := d.q.TryPop(); ok {
				d.dropped.Add(1)
			}
		case Block:
			if d.fromHandler(ctx) {
				// The caller is a handler: waiting could wait for
				// itself (every worker may be inside a handler).
				return fmt.Errorf("%w: an emit from a handler does not wait for room", ErrFull)
			}
			ch := d.space.wait()
			if d.q.TryPush(e) {
				d.space.done()
				d.notify()
				return nil
			}
			if d.q.Closed() {
				d.space.done()
				return ErrClosed
			}
			err := d.awaitRoom(ctx, ch)
			d.space.done()
			if err != nil {
				return err
			}
		}
		if d.q.TryPush(e) {
			d.notify()
			return nil
		}
	}
}

// awaitRoom waits until ch (from d.space.wait) closes, blockedRecheck
// passes, or ctx ends, and returns ctx's error in the last case. The timers
// are pooled, so that blocking does not allocate.
func (d *Dispatcher) awaitRoom(ctx context.Context, ch <-chan struct{}) error {
	t, _ := d.recheck.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(blockedRecheck)
	} else {
		t.Reset(blockedRecheck)
	}
	defer d.recheck.Put(t)
	defer t.Stop() // runs first; since Go 1.23 no stale tick is left to receive
	select {
	case <-ch:
		return nil
	case <-t.C: // look again: see blockedRecheck
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// notify wakes a parked worker, if any. In the steady state under load no
// worker sleeps and this is one atomic load.
func (d *Dispatcher) notify() {
	if d.sleepers.Load() > 0 {
		select {
		case d.wake <- struct{}{}:
		default: // enough wake-ups are pending already
		}
	}
}

// handlerKey marks a ctx given to a handler by this dispatcher.
type handlerKey struct{}

// fromHandler reports whether ctx was given to a handler by d (or derives
// from one). It is only asked on slow paths.
func (d *Dispatcher) fromHandler(ctx context.Context) bool {
	if ctx == nil {
		return false
	}
	v, _ := ctx.Value(handlerKey{}).(*Dispatcher)
	return v == d
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
	DeadLetters  int    // dead letters kept now
}

// Stats returns a snapshot of the counters. Under concurrent use the fields
// are read one by one, not at one instant, and a consumer adds its
// Delivered count once per batch (up to 128 events), so a handler that reads
// Stats does not yet see the calls of its own batch counted there.
func (d *Dispatcher) Stats() Stats {
	st := Stats{
		Emitted:     d.q.Pushed(),
		Dropped:     d.dropped.Load(),
		DeadLetters: d.dead.len(),
	}
	held := 0
	add := func(c *counters) {
		held += int(atomic.LoadUint64(&c.held))
		st.Delivered += c.delivered.Load()
		st.Failed += c.failed.Load()
		st.Retried += c.retried.Load()
		st.DeadLettered += c.deadLettered.Load()
	}
	add(&d.tickCounters)
	for i := range d.runCounters {
		add(&d.runCounters[i])
	}
	ready, waiting := d.retries.counts()
	st.Queued = d.q.Len() + d.carry.len() + d.keys.backlogLen() + ready + held
	st.Retrying = ready + waiting
	return st
}

// DeadLetters returns a copy of the dead letters, oldest first.
func (d *Dispatcher) DeadLetters() []DeadLetter { return d.dead.snapshot() }

// Redeliver queues every dead letter again, for its own subscriber only,
// with a fresh retry budget (its first call has Attempt 1), and returns how
// many it queued. Dead letters that do not fit (the retry queue holds as
// many as the capacity) or whose subscriber unsubscribed stay dead letters.
// The events are processed by the next Tick or Drain, or by Run's workers.
// After Shutdown or Close began it returns ErrClosed.
func (d *Dispatcher) Redeliver(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Under lifeMu, Shutdown and Close cannot begin between the check and
	// the queueing: what Redeliver queues is drained or dropped by them.
	d.lifeMu.Lock()
	defer d.lifeMu.Unlock()
	if d.state.Load() != stateOpen {
		return 0, ErrClosed
	}
	n := d.dead.redeliver(func(dl *DeadLetter, s *subscriber) bool {
		ev := dl.Event
		ev.Attempt = 1
		return d.retries.addReady(job{ev: ev, sub: s})
	})
	d.wakeWorkers(n)
	return n, nil
}

// wakeWorkers wakes up to n parked workers.
func (d *Dispatcher) wakeWorkers(n int) {
	for ; n > 0 && d.sleepers.Load() > 0; n-- {
		select {
		case d.wake <- struct{}{}:
		default:
			return
		}
	}
}

// counters are one consumer's event counters, on a cache line of their own
// so that workers never write a shared line per event.
type counters struct {
	delivered    atomic.Uint64
	failed       atomic.Uint64
	retried      atomic.Uint64
	deadLettered atomic.Uint64
	held         uint64 // jobs taken and not begun yet; see proc.setHeld
	_            [128 - 40]byte
}

// signal lets emitters wait for room in the ring. A consumer pays one
// atomic load per batch when nobody waits.
type signal struct {
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{}
}

// wait registers a waiter and returns the channel that the next broadcast
// closes. The caller must re-check its condition after wait and call done.
func (s *signal) wait() <-chan struct{} {
	s.waiters.Add(1)
	s.mu.Lock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	ch := s.ch
	s.mu.Unlock()
	return ch
}

func (s *signal) done() { s.waiters.Add(-1) }

// broadcast wakes every waiter. A waiter registered before its re-check, so
// either this load sees it, or its re-check sees the room made before.
func (s *signal) broadcast() {
	if s.waiters.Load() == 0 {
		return
	}
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}
