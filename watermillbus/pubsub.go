package watermillbus

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// PubSub is a client of a Bus: it implements message.Publisher and
// message.Subscriber. Its subscriptions are its own (Close ends them);
// the topics and their messages are the Bus's.
//
// All methods are safe for concurrent use.
type PubSub struct {
	bus     *Bus
	ownsBus bool // made by New: Close closes the Bus too

	closed atomic.Bool // set under mu

	mu   sync.Mutex // guards subs, and serializes closed with Subscribe
	subs map[*subscription]struct{}
	wg   sync.WaitGroup // one per subscription goroutine
}

var (
	_ message.Publisher  = (*PubSub)(nil)
	_ message.Subscriber = (*PubSub)(nil)
)

// New returns a PubSub over a Bus of its own, configured by cfg (see
// NewBus); its Close closes that Bus too. Use NewBus and Bus.PubSub
// instead for several clients of one Bus.
func New(cfg Config) (*PubSub, error) {
	b, err := NewBus(cfg)
	if err != nil {
		return nil, err
	}
	return b.newClient(true)
}

// Bus returns the Bus the client belongs to.
func (p *PubSub) Bus() *Bus { return p.bus }

// Publish queues messages on topic, in order, and returns without waiting
// for any subscriber: the Bus delivers them to the topic's subscriptions,
// or keeps them for the next subscription when the topic has none. Each
// message is copied (UUID, metadata; the payload's bytes are shared), so
// the caller's message, its Ack and its Nack are not the subscribers'.
//
// When the dispatcher's queue is full, Publish follows the dispatcher's
// overflow policy (Block, the default: it waits for room). It returns an
// error wrapping ErrBacklogFull when the topic holds Config.BacklogLimit
// messages no subscription has taken, and ErrClosed after Close. On an
// error, the messages before the failing one are published.
func (p *PubSub) Publish(topic string, messages ...*message.Message) error {
	if p.closed.Load() {
		return ErrClosed
	}
	t, err := p.bus.topic(topic)
	if err != nil {
		return err
	}
	return p.bus.publish(t, messages)
}

// Subscribe returns a channel that receives the messages published to
// topic: first those the topic kept while it had no subscription, then
// each message published from now on, in publish order. The channel
// (unbuffered) gets one message at a time: the next comes after the
// consumer Acks this one; after a Nack, a fresh copy of the same message
// comes again. Each received message is a copy of its own, whose Context
// derives from ctx and is cancelled after its Ack or Nack, or when the
// subscription ends.
//
// The channel is closed when ctx is cancelled or Close is called. A
// message the subscription had not acknowledged by then goes back to the
// topic (see "Persistence" in the package doc).
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if ctx == nil {
		return nil, errors.New("watermillbus: Subscribe with a nil ctx")
	}
	t, err := p.bus.topic(topic)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	s := newSubscription(ctx, p, t)
	p.subs[s] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()

	t.attach(s)
	p.bus.logger.Debug("watermillbus: subscribed", watermill.LogFields{"topic": topic})
	go s.run()
	return s.out, nil
}

// Close ends the client's subscriptions: when it returns, their channels
// are closed and their goroutines have exited. Messages they had not
// acknowledged go back to their topics, and messages the client published
// stay with the Bus. Later Publish and Subscribe calls return ErrClosed.
// For a PubSub made by New, Close closes its Bus too. Close is safe to
// call more than once and concurrently; it always returns nil.
func (p *PubSub) Close() error {
	p.shutdown()
	if p.ownsBus {
		return p.bus.Close()
	}
	return nil
}

// shutdown is Close without closing an owned Bus: the Bus calls it.
func (p *PubSub) shutdown() {
	p.mu.Lock()
	p.closed.Store(true)
	for s := range p.subs {
		s.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.bus.forget(p)
}

// forget removes an ended subscription.
func (p *PubSub) forget(s *subscription) {
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
}
