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

	sub *subscriber
}

// DeadLetters returns a copy of the dead letters, oldest first.
func (d *Dispatcher) DeadLetters() []DeadLetter { return d.dead.snapshot() }

// Redeliver queues every dead letter again, for its own subscriber only,
// with a fresh retry budget (its first call has Attempt 1), and returns how
// many it queued. Dead letters that do not fit (the retry queue holds as
// many as the capacity) or whose subscriber unsubscribed stay dead letters.
// The events are processed by the next Tick or Drain, or by Run's workers.
// After Shutdown or Close began it returns ErrClosed. A nil ctx panics.
func (d *Dispatcher) Redeliver(ctx context.Context) (int, error) {
	if ctx == nil {
		panic("dispatcher: Redeliver with a nil Context")
	}
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
	n := d.dead.redeliver(func(dl *DeadLetter) bool {
		j := job{ev: dl.Event, sub: dl.sub}
		j.ev.Attempt = 1
		return d.pend.retry(j, zeroTime)
	})
	d.wakeWorkers(n)
	return n, nil
}

// deadLetters keeps the newest limit dead letters, oldest first.
type deadLetters struct {
	mu    sync.Mutex
	limit int
	list  fifo.Queue[DeadLetter]
	n     atomic.Int32
}

// add appends dl and reports whether the oldest was evicted to make room.
func (l *deadLetters) add(dl DeadLetter) (evicted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.list.Len() >= l.limit {
		l.list.Pop()
		evicted = true
	}
	l.list.Push(dl)
	l.n.Store(int32(l.list.Len()))
	return evicted
}

func (l *deadLetters) len() int { return int(l.n.Load()) }

func (l *deadLetters) snapshot() []DeadLetter {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list.Items())
}

// redeliver offers each dead letter of an active subscriber, oldest first,
// to queue; those it takes are removed.
func (l *deadLetters) redeliver(queue func(*DeadLetter) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var kept fifo.Queue[DeadLetter]
	n := 0
	for l.list.Len() > 0 {
		dl := l.list.Pop()
		if dl.sub.active.Load() && queue(&dl) {
			n++
			continue
		}
		kept.Push(dl)
	}
	l.list = kept
	l.n.Store(int32(l.list.Len()))
	return n
}
