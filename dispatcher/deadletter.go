package dispatcher

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ringbus/ringbus/internal/fifo"
)

// DeadLetter is an (event, subscriber) pair whose retry budget ran out.
type DeadLetter struct {
	Event      Event  // the event, with the Attempt of the last call
	Err        error  // the handler's last error as it returned it; a panic is a *PanicError
	Subscriber string // the name of the subscription that failed
	Attempts   int    // handler calls made for this pair

	sub     *subscriber
	seq     uint64 // its identity in the dispatcher's list (see deadLetters)
	carried any    // WithPropagator's value for the event, or nil
}

// DeadLetters returns a copy of the dead letters, oldest first.
func (d *Dispatcher) DeadLetters() []DeadLetter { return d.dead.snapshot() }

// Redeliver queues every dead letter again, for its own subscriber only,
// with a fresh retry budget, and returns how many it queued; those that do
// not fit, or whose subscription ended, stay dead letters. It is
// RedeliverIf with a match that chooses every dead letter: see there for
// ctx, ErrClosed and concurrent use.
func (d *Dispatcher) Redeliver(ctx context.Context) (int, error) {
	if ctx == nil {
		panic("dispatcher: Redeliver with a nil Context")
	}
	return d.redeliverIf(ctx, func(DeadLetter) bool { return true })
}

// RedeliverIf queues again each dead letter for which match reports true,
// oldest first, for its own subscriber only and with a fresh retry budget
// (its first call has Attempt 1), and returns how many it queued. The
// events are processed by the next Tick or Drain, or by Run's workers.
// Chosen dead letters that do not fit (the retries and redeliveries
// pending are bounded by the capacity) and those whose subscription ended
// (a new subscription with the same name is another subscriber) stay dead
// letters, as do the ones match did not choose, in their order.
//
// match is called on the caller's goroutine with no lock held, once for
// each dead letter kept when RedeliverIf began, oldest first, so it may
// call the dispatcher (DeadLetters, Stats, Drain, ...). The chosen ones are
// queued after its last call. A dead letter added meanwhile is not
// considered; a chosen one that left meanwhile (evicted by the
// WithDeadLetterLimit bound, or taken by a concurrent RedeliverIf or
// DiscardIf) is skipped. If match panics, nothing is queued.
//
// ctx is checked before each call of match. If it is done when RedeliverIf
// begins, RedeliverIf returns ctx's error and changes nothing; if it ends
// during the calls, match is not called again, the dead letters chosen so
// far are queued, and RedeliverIf returns their number and ctx's error.
// After Shutdown or Close began it queues nothing and returns ErrClosed.
// A nil ctx or a nil match panics.
func (d *Dispatcher) RedeliverIf(ctx context.Context, match func(DeadLetter) bool) (int, error) {
	if ctx == nil {
		panic("dispatcher: RedeliverIf with a nil Context")
	}
	if match == nil {
		panic("dispatcher: RedeliverIf with a nil match function")
	}
	return d.redeliverIf(ctx, match)
}

func (d *Dispatcher) redeliverIf(ctx context.Context, match func(DeadLetter) bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if d.state.Load() != stateOpen {
		return 0, ErrClosed
	}
	chosen, ctxErr := d.dead.choose(ctx, match)
	if len(chosen) == 0 {
		return 0, ctxErr
	}
	// Under lifeMu, Shutdown and Close cannot begin between the check and
	// the queueing: what is queued here is drained or dropped by them.
	d.lifeMu.Lock()
	defer d.lifeMu.Unlock()
	if d.state.Load() != stateOpen {
		return 0, ErrClosed
	}
	n := d.dead.remove(chosen, func(dl *DeadLetter) bool {
		if !dl.sub.active.Load() {
			return false
		}
		j := job{ev: dl.Event, sub: dl.sub, tr: carriedTracker(dl.carried)} // no OnDone: it was told when it was dead-lettered
		j.ev.Attempt = 1
		d.ledger.spawn(j.ev.ID, 1) // before it is visible
		if d.pend.retry(j, zeroTime) {
			return true
		}
		d.ledger.spawn(j.ev.ID, -1)
		return false
	})
	d.wakeWorkers(n)
	return n, ctxErr
}

// DiscardIf removes each dead letter for which match reports true and
// returns how many it removed. match is called as by RedeliverIf: with no
// lock held, once for each dead letter kept when DiscardIf began, oldest
// first; if it panics, nothing is removed. The others keep their order.
//
// Discarded dead letters are gone. They are not counted in Stats.Dropped,
// which counts what the dispatcher discards on its own: they were counted
// in Stats.DeadLettered when they failed (their events' OnDone was told
// then), and Stats.DeadLetters no longer counts them. DiscardIf works after
// Shutdown and Close too. A nil match panics.
func (d *Dispatcher) DiscardIf(match func(DeadLetter) bool) int {
	if match == nil {
		panic("dispatcher: DiscardIf with a nil match function")
	}
	chosen, _ := d.dead.choose(context.Background(), match)
	return d.dead.remove(chosen, func(*DeadLetter) bool { return true })
}

// deadLetters keeps the newest limit dead letters, oldest first.
//
// Each dead letter gets a sequence number when it is added, its identity:
// they increase along the list. RedeliverIf and DiscardIf let the user's
// match choose from a snapshot without the lock (choose), then take the
// lock and remove the chosen ones by identity (remove). So a dead letter
// that left the list meanwhile is not acted on twice, and one added
// meanwhile (even an equal one: the same pair failing again after a
// redelivery) is not acted on at all.
type deadLetters struct {
	mu    sync.Mutex
	limit int
	list  fifo.Queue[DeadLetter]
	seq   uint64       // the last sequence number given
	n     atomic.Int32 // list.Len(), for Stats without the lock
}

// add appends dl and returns the oldest, if it was evicted to make room.
func (l *deadLetters) add(dl DeadLetter) (old DeadLetter, evicted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.list.Len() >= l.limit {
		old = l.list.Pop()
		evicted = true
	}
	l.seq++
	dl.seq = l.seq
	l.list.Push(dl)
	l.n.Store(int32(l.list.Len()))
	return old, evicted
}

func (l *deadLetters) len() int { return int(l.n.Load()) }

func (l *deadLetters) snapshot() []DeadLetter {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list.Items())
}

// choose calls match, without the lock, for each dead letter of a snapshot,
// oldest first, as long as ctx is not done. It returns the sequence numbers
// of those match chose, ascending, and ctx's error if ctx stopped it.
func (l *deadLetters) choose(ctx context.Context, match func(DeadLetter) bool) (chosen []uint64, err error) {
	if l.len() == 0 {
		return nil, nil
	}
	for _, dl := range l.snapshot() {
		if err = ctx.Err(); err != nil {
			break
		}
		if match(dl) {
			chosen = append(chosen, dl.seq)
		}
	}
	return chosen, err
}

// remove offers take, oldest first, each dead letter still in the list
// whose sequence number is in chosen (ascending), removes those it takes,
// and returns how many. The others keep their order.
func (l *deadLetters) remove(chosen []uint64, take func(*DeadLetter) bool) int {
	if len(chosen) == 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var kept fifo.Queue[DeadLetter]
	n := 0
	for l.list.Len() > 0 {
		dl := l.list.Pop()
		for len(chosen) > 0 && chosen[0] < dl.seq {
			chosen = chosen[1:] // left the list meanwhile
		}
		if len(chosen) > 0 && chosen[0] == dl.seq {
			chosen = chosen[1:]
			if take(&dl) {
				n++
				continue
			}
		}
		kept.Push(dl)
	}
	l.list = kept
	l.n.Store(int32(l.list.Len()))
	return n
}
