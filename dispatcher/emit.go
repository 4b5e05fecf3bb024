package dispatcher

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/internal/ring"
	"github.com/ringbus/ringbus/internal/topic"
)

// Emit queues an event on topic with payload and returns without running
// any handler. What it does when the queue is full is the overflow policy's
// (WithOverflow). After Shutdown or Close it returns ErrClosed. A handler
// that emits passes the ctx it was given. A nil ctx panics.
func (d *Dispatcher) Emit(ctx context.Context, topic string, payload any) error {
	return d.emit(ctx, entry{topic: topic, payload: payload})
}

// EmitEvent is Emit with an ordering key and options: it queues e's Topic,
// Key and Payload (the dispatcher assigns the ID and the Attempt), OnDone
// asks to be told when the event is finished, and After or At delay it.
func (d *Dispatcher) EmitEvent(ctx context.Context, e Event, opts ...EmitOption) error {
	en := entry{topic: e.Topic, key: e.Key, payload: e.Payload}
	if len(opts) > 0 {
		var c emitConfig
		for _, o := range opts {
			if o != nil {
				c = o.applyEmit(c)
			}
		}
		delayed := !c.due.IsZero() && time.Now().Before(c.due)
		if c.done != nil || delayed {
			en.tr = newTracker(c.done)
		}
		if delayed {
			en.tr.due = c.due // emit sends it to emitDelayed
		}
	}
	return d.emit(ctx, en)
}

func (d *Dispatcher) emit(ctx context.Context, e entry) error {
	if ctx == nil {
		panic("dispatcher: Emit with a nil Context")
	}
	if err := topic.Check(e.topic); err != nil {
		return badTopic(err)
	}
	if s := d.state.Load(); s != stateOpen {
		// While Shutdown drains, handlers may still emit.
		if s == stateClosed || !d.fromHandler(ctx) {
			return ErrClosed
		}
	}
	if d.cfg.obs != nil && d.cfg.obs.prop != nil {
		d.carry(ctx, &e)
	}
	if e.tr != nil && !e.tr.due.IsZero() {
		return d.emitDelayed(ctx, e)
	}
	// Fast path: nobody waits for room, and there is room. Emitters that
	// find others waiting queue behind them instead (see room).
	if d.room.waiters.Load() == 0 && d.ring.TryPush(e) {
		d.notify()
		return nil
	}
	return d.emitSlow(ctx, e)
}

// emitSlow applies the overflow policy to an emit that found the ring full
// or emitters waiting for room.
func (d *Dispatcher) emitSlow(ctx context.Context, e entry) error {
	r := d.ring
	for {
		if d.room.mayPass(r) && r.TryPush(e) {
			d.notify()
			return nil
		}
		if r.Closed() {
			if d.state.Load() == stateShutdown && d.fromHandler(ctx) {
				// Shutdown's drain closes the ring for a moment to
				// catch late outside emits, and opens it again when
				// one got in (see park, drainForShutdown). A handler
				// runs only then: its emit waits for the reopen.
				runtime.Gosched()
				continue
			}
			return ErrClosed
		}
		switch d.cfg.overflow {
		case Reject:
			return ErrFull
		case DropNewest:
			d.dropped.Add(1)
			d.observeRefused(ctx, &e)
			return ErrDropped
		case DropOldest:
			var buf [1]entry
			// Between its pop and its drop the evicted event is in no
			// part of pending: it counts in Flush's ledger meanwhile, in
			// the running grace period whatever its ID turns out to be
			// (as ID 0, at most any period's end), so that no Flush
			// returns before its drop. A grace period that starts in
			// between counts it from the ledger's word and cannot end
			// before the count is taken back. Consumers end grace
			// periods; the event pushed next wakes one.
			d.ledger.spawn(0, 1)
			if n, pos := r.TryPopN(buf[:]); n == 1 {
				d.dropEntry(&buf[0], pos, DroppedOldest)
			}
			d.ledger.spawn(0, -1)
			if r.TryPush(e) {
				d.notify()
				return nil
			}
			continue
		}
		// Block.
		if d.fromHandler(ctx) {
			// The caller is a handler: waiting could wait for itself
			// (every worker may be inside a handler).
			return fmt.Errorf("%w: an emit from a handler does not wait for room", ErrFull)
		}
		return d.room.await(ctx, d, e)
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

// handlerKey marks a ctx given to a handler by this dispatcher.
type handlerKey struct{}

// fromHandler reports whether ctx was given to a handler by d (or derives
// from one). It is only asked on slow paths.
func (d *Dispatcher) fromHandler(ctx context.Context) bool {
	v, _ := ctx.Value(handlerKey{}).(*Dispatcher)
	return v == d
}

// room is where emitters wait for space in the ring under Block, first come
// first served while room is scarce. An emitter that finds others waiting
// queues behind them instead of pushing, unless the free room exceeds
// their number (see mayPass), and only the oldest
// waiter may take free room by itself, when nobody woken is still on the
// way to the room it was given; a woken emitter that loses its slot anyway
// goes back to the front.
//
// Consumers call wake after taking events from the ring; it wakes as many
// waiters as there are free slots. Under Run, workers wake them only once
// they have emptied the ring to half, so that a woken emitter finds room
// for many events instead of one; when a take leaves the ring fuller than
// that, the worker asks Run's scheduler to look again shortly (see
// Dispatcher.schedule), because workers that wait inside handlers for
// something a blocked emitter will do after its Emit returns would
// otherwise never empty the ring to half. Nothing polls while no consumer
// takes events: a blocked emitter sleeps until it is given room, its ctx
// ends or the dispatcher closes.
//
// No wake-up is lost: a waiter queues itself and then, under mu, looks for
// room; a consumer frees room and then, under mu, wakes the queue. Either
// the waiter sees the room, or the consumer sees the waiter.
type room struct {
	waiters atomic.Int32 // emitters in await
	mu      sync.Mutex
	queue   []*waiter // waiting, in arrival order
	woken   int       // woken and not yet back from their push
	spare   []*waiter // reused, so that blocking does not allocate
}

// mayPass reports whether an emitter may push without queueing behind the
// waiters: nobody waits, or the free room exceeds the number of waiters, so
// that the slot it takes is not one a waiter needs. When room is scarce
// that keeps the order first come, first served; when it is plentiful, a
// queue of waiters does not turn every later emit into a park and a
// wake-up.
func (r *room) mayPass(ring *ring.Ring[entry]) bool {
	n := r.waiters.Load()
	return n == 0 || ring.Cap()-ring.Len() > int(n)
}

// waiter is one blocked emitter. ready has room for one signal, so that a
// waker never blocks.
type waiter struct{ ready chan struct{} }

// await blocks until e is pushed, ctx ends or the ring closes.
func (r *room) await(ctx context.Context, d *Dispatcher, e entry) error {
	ring := d.pend.ring
	r.waiters.Add(1)
	defer r.waiters.Add(-1)
	r.mu.Lock()
	w := r.getLocked()
	r.mu.Unlock()
	front := false
	for {
		r.mu.Lock()
		if front {
			r.queue = slices.Insert(r.queue, 0, w)
		} else {
			r.queue = append(r.queue, w)
		}
		self := r.queue[0] == w && r.woken == 0 && ring.Len() < ring.Cap()
		if self {
			r.queue = slices.Delete(r.queue, 0, 1)
			r.woken++ // like a woken waiter: the room is ours to take
		}
		r.mu.Unlock()
		if !self {
			select {
			case <-w.ready: // wake counted us in woken
			case <-ctx.Done():
				r.leave(w, ring)
				return ctx.Err()
			}
		}
		pushed := ring.TryPush(e)
		r.mu.Lock()
		r.woken--
		r.passOnLocked(ring)
		if pushed || ring.Closed() {
			r.spare = append(r.spare, w)
		}
		r.mu.Unlock()
		if pushed {
			d.notify()
			return nil
		}
		if ring.Closed() {
			return ErrClosed
		}
		front = true // woken, but the slot went to someone else
	}
}

func (r *room) getLocked() *waiter {
	if n := len(r.spare); n > 0 {
		w := r.spare[n-1]
		r.spare = r.spare[:n-1]
		return w
	}
	return &waiter{ready: make(chan struct{}, 1)}
}

// leave takes w, whose ctx ended, out of the queue. If a waker took it out
// first, w was woken: the wake-up passes on to the next waiter.
func (r *room) leave(w *waiter, ring *ring.Ring[entry]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.queue, w); i >= 0 {
		r.queue = slices.Delete(r.queue, i, i+1)
		r.spare = append(r.spare, w)
		return
	}
	<-w.ready
	r.woken--
	r.passOnLocked(ring)
	r.spare = append(r.spare, w)
}

// passOnLocked wakes waiters for the room that is free, once no woken
// waiter is still on its way to it. r.mu is held.
func (r *room) passOnLocked(ring *ring.Ring[entry]) {
	if r.woken == 0 {
		r.wakeLocked(ring.Cap() - ring.Len())
	}
}

// wake wakes up to n waiters, oldest first, and returns how many.
func (r *room) wake(n int) int {
	if n <= 0 || r.waiters.Load() == 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wakeLocked(n)
}

func (r *room) wakeLocked(n int) int {
	k := min(max(n, 0), len(r.queue))
	for _, w := range r.queue[:k] {
		w.ready <- struct{}{}
	}
	r.woken += k
	m := copy(r.queue, r.queue[k:])
	clear(r.queue[m:])
	r.queue = r.queue[:m]
	return k
}

// wakeAll wakes every waiter: the ring closed, or its consumers stopped.
func (r *room) wakeAll() { r.wake(maxInt) }

// roomMade is called by a consumer that freed slots in the ring. Under Run
// (halfway true) it wakes waiters only once the ring is at most half full,
// and otherwise asks the scheduler to look again (see room). It reports
// whether it woke anyone.
func (d *Dispatcher) roomMade(halfway bool) bool {
	if d.room.waiters.Load() == 0 {
		return false
	}
	r := d.pend.ring
	free := r.Cap() - r.Len()
	if !halfway || free >= r.Cap()/2 {
		return d.room.wake(free) > 0
	}
	// One request per look: a worker takes many times while emitters
	// wait for half the ring, and waking the scheduler at every take for
	// a look it has already planned costs a goroutine switch each time.
	if !d.roomAsked.Load() && d.roomAsked.CompareAndSwap(false, true) {
		select {
		case d.roomWake <- struct{}{}:
		default:
		}
	}
	return false
}
