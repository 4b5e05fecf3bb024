package watermillbus

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// subscription is one Subscribe call: a buffer that the Bus's handler
// fills, and a goroutine, owned by the PubSub (its WaitGroup), that hands
// the buffer's messages to the consumer one at a time.
//
// Ownership of an envelope: the handler pushes it into q; run pops it and
// holds it (cur) until the consumer acks it; when the subscription ends,
// detach gives back cur, if unacknowledged, and what is left in q.
type subscription struct {
	p      *PubSub
	t      *topic
	ctx    context.Context // Subscribe's ctx, cancelled by Close too
	cancel context.CancelFunc
	out    chan *message.Message
	limit  int

	ready chan struct{} // cap 1: a push woke the consumer
	space chan struct{} // cap 1: a pop made room for a waiting handler
	done  chan struct{} // closed by detach, after ended is set

	mu    sync.Mutex
	q     fifo
	ended bool // set by detach: pushes fail from then on
}

func newSubscription(ctx context.Context, p *PubSub, t *topic) *subscription {
	ctx, cancel := context.WithCancel(ctx)
	return &subscription{
		p:      p,
		t:      t,
		ctx:    ctx,
		cancel: cancel,
		out:    make(chan *message.Message),
		limit:  p.bus.bufLimit,
		ready:  make(chan struct{}, 1),
		space:  make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// notify wakes the consumer goroutine if it waits for a message.
func (s *subscription) notify() {
	select {
	case s.ready <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// push appends env to the buffer, waiting while the buffer is full. It
// reports false, without pushing, when the subscription has ended. When
// ctx (the dispatcher's, for its handler) ends, it stops waiting and
// pushes beyond the bound: one message over the limit rather than one
// lost.
func (s *subscription) push(ctx context.Context, env *Envelope) bool {
	force := false
	for {
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return false
		}
		if force || s.q.len() < s.limit {
			s.q.push(env)
			s.mu.Unlock()
			s.notify()
			return true
		}
		s.mu.Unlock()
		select {
		case <-s.space:
		case <-s.done:
		case <-ctx.Done():
			force = true
		}
	}
}

// next returns the next buffered message, waiting for one, or nil when the
// subscription's ctx ends.
func (s *subscription) next() *Envelope {
	done := s.ctx.Done()
	for {
		select {
		case <-done:
			return nil
		default:
		}
		s.mu.Lock()
		if n := s.q.len(); n > 0 {
			env := s.q.pop()
			s.mu.Unlock()
			if n >= s.limit { // a handler may wait for room
				select {
				case s.space <- struct{}{}:
				default:
				}
			}
			return env
		}
		s.mu.Unlock()
		select {
		case <-s.ready:
		case <-done:
			return nil
		}
	}
}

// run delivers the buffer's messages until the subscription's ctx ends,
// then gives back what it holds and closes the output channel.
func (s *subscription) run() {
	defer s.p.wg.Done()
	var cur *Envelope // the message being delivered when ctx ended
	for {
		env := s.next()
		if env == nil {
			break
		}
		if !s.deliver(env) {
			cur = env
			break
		}
	}
	if cur != nil && cur.acked.Load() {
		cur = nil
	}
	s.t.detach(s, cur) // before closing out: a Subscribe after the close finds the messages
	s.cancel()
	close(s.out)
	s.p.forget(s)
	s.p.bus.logger.Debug("watermillbus: subscription ended", watermill.LogFields{"topic": s.t.name})
}

// deliver sends fresh copies of env to the consumer until one is acked
// (true) or the subscription's ctx ends (false). A Nack sends a new copy
// at once, before any later message: order is kept.
func (s *subscription) deliver(env *Envelope) bool {
	done := s.ctx.Done()
	for {
		select {
		case <-done:
			return false
		default:
		}
		m := env.Message()
		mctx, cancel := context.WithCancel(s.ctx)
		m.SetContext(mctx)
		select {
		case s.out <- m:
		case <-done:
			cancel()
			return false
		}
		select {
		case <-m.Acked():
			env.acked.Store(true)
			cancel()
			return true
		case <-m.Nacked():
			cancel() // and send a fresh copy
		case <-done:
			cancel()
			select {
			case <-m.Acked(): // acked as the subscription ended: it counts
				env.acked.Store(true)
			default:
			}
			return false
		}
	}
}
