package watermillbus

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/ringbus/ringbus/dispatcher"
)

// Defaults of the Config fields.
const (
	DefaultTopicPrefix      = "watermill"
	DefaultBacklogLimit     = 1 << 16
	DefaultSubscriberBuffer = 1024
)

// Config configures a Bus. The zero value is ready to use: a Bus that
// creates and runs a dispatcher of its own.
type Config struct {
	// Dispatcher is the ringbus dispatcher the Bus emits its messages on.
	// Nil (the default): NewBus creates one with DispatcherOptions, runs it
	// (Run, on a goroutine the Bus owns) and closes it in Bus.Close.
	// Non-nil: the caller's dispatcher, which the caller processes (Run,
	// or Tick and Drain in a test) and stops after Bus.Close; the Bus only
	// subscribes to TopicPrefix + ".>" on it, and unsubscribes in Close.
	Dispatcher *dispatcher.Dispatcher

	// DispatcherOptions configure the dispatcher NewBus creates when
	// Dispatcher is nil. Default: none, so the dispatcher's defaults
	// (capacity 1024, Block when full, GOMAXPROCS workers). Setting both
	// Dispatcher and DispatcherOptions is an error.
	DispatcherOptions []dispatcher.Option

	// TopicPrefix is the ringbus topic (one or more tokens, no wildcard)
	// under which the Bus maps watermill topics: watermill topic t becomes
	// TopicPrefix + "." + escape(t) (see RingbusTopic). Buses that share a
	// dispatcher need different prefixes. Default "watermill".
	TopicPrefix string

	// BacklogLimit bounds, per topic, the messages that no subscription
	// has taken yet: those still queued in the dispatcher and those kept
	// for the next subscription because the topic had none. Publish
	// returns an error wrapping ErrBacklogFull beyond it. Default 65536.
	BacklogLimit int

	// SubscriberBuffer bounds, per subscription, the messages waiting
	// behind the one its consumer holds. When it is full, the delivery of
	// the topic's next message waits for room (see "Slow consumers" in the
	// package doc). Default 1024.
	SubscriberBuffer int

	// Logger receives a line per subscription and on Close, never one per
	// message. Default watermill.NopLogger.
	Logger watermill.LoggerAdapter
}

// Bus is the broker: the topics, their backlogs and their subscriptions,
// over one ringbus dispatcher. Publishers and subscribers are its clients,
// PubSub values (Bus.PubSub); messages published by one client reach the
// subscriptions of every client of the same Bus, and a message no
// subscription has acknowledged outlives the client that received it.
//
// All methods are safe for concurrent use. A Bus must not be copied after
// first use.
type Bus struct {
	d       *dispatcher.Dispatcher
	owned   bool                     // d was created by NewBus: Close closes it
	sub     *dispatcher.Subscription // the Bus's handler on prefix + ".>"
	runDone chan struct{}            // closed when the owned dispatcher's Run returns

	prefix       string
	backlogLimit int64
	bufLimit     int
	logger       watermill.LoggerAdapter

	// ctx is given to Emit, so that Close unblocks a Publish waiting for
	// room in the dispatcher's queue.
	ctx    context.Context
	cancel context.CancelFunc

	closed atomic.Bool // set under mu
	topics sync.Map    // watermill topic -> *topic: every topic seen, kept until Close (see the package doc)

	mu      sync.Mutex // guards clients, and serializes closed with newClient
	clients map[*PubSub]struct{}

	closeOnce sync.Once
}

// NewBus returns a Bus configured by cfg. With no Config.Dispatcher it
// creates a dispatcher and starts its Run on a goroutine that Close joins.
// A Config with a bad value gets an error wrapping ErrInvalidConfig.
func NewBus(cfg Config) (*Bus, error) {
	if cfg.Dispatcher != nil && len(cfg.DispatcherOptions) > 0 {
		return nil, fmt.Errorf("%w: both Dispatcher and DispatcherOptions are set", ErrInvalidConfig)
	}
	if cfg.BacklogLimit < 0 {
		return nil, fmt.Errorf("%w: BacklogLimit %d: want 0 (default) or more", ErrInvalidConfig, cfg.BacklogLimit)
	}
	if cfg.SubscriberBuffer < 0 {
		return nil, fmt.Errorf("%w: SubscriberBuffer %d: want 0 (default) or more", ErrInvalidConfig, cfg.SubscriberBuffer)
	}
	b := &Bus{
		d:            cfg.Dispatcher,
		prefix:       cfg.TopicPrefix,
		backlogLimit: int64(cfg.BacklogLimit),
		bufLimit:     cfg.SubscriberBuffer,
		logger:       cfg.Logger,
		clients:      make(map[*PubSub]struct{}),
	}
	if b.prefix == "" {
		b.prefix = DefaultTopicPrefix
	}
	if b.backlogLimit == 0 {
		b.backlogLimit = DefaultBacklogLimit
	}
	if b.bufLimit == 0 {
		b.bufLimit = DefaultSubscriberBuffer
	}
	if b.logger == nil {
		b.logger = watermill.NopLogger{}
	}
	if err := checkPrefix(b.prefix); err != nil {
		return nil, fmt.Errorf("%w: TopicPrefix %q: %s", ErrInvalidConfig, b.prefix, err)
	}
	if b.d == nil {
		d, err := dispatcher.New(cfg.DispatcherOptions...)
		if err != nil {
			return nil, fmt.Errorf("%w: DispatcherOptions: %w", ErrInvalidConfig, err)
		}
		b.d, b.owned = d, true
	}
	sub, err := b.d.On(b.prefix+".>", b.handle, dispatcher.WithName("watermillbus:"+b.prefix))
	if err != nil {
		return nil, fmt.Errorf("%w: TopicPrefix %q: %w", ErrInvalidConfig, b.prefix, err)
	}
	b.sub = sub
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if b.owned {
		b.runDone = make(chan struct{})
		go func() {
			defer close(b.runDone)
			// Run returns nil after Close; it has no other way to stop.
			if err := b.d.Run(context.Background()); err != nil {
				b.logger.Error("ringbus dispatcher stopped", err, nil)
			}
		}()
	}
	return b, nil
}

// PubSub returns a new client of the Bus: a message.Publisher and
// message.Subscriber whose Close ends its own subscriptions only. After
// Close it returns ErrClosed.
func (b *Bus) PubSub() (*PubSub, error) {
	return b.newClient(false)
}

func (b *Bus) newClient(ownsBus bool) (*PubSub, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	p := &PubSub{bus: b, ownsBus: ownsBus, subs: make(map[*subscription]struct{})}
	b.clients[p] = struct{}{}
	return p, nil
}

// Dispatcher returns the dispatcher the Bus emits on: Config.Dispatcher,
// or the one NewBus created (for its Stats, say).
func (b *Bus) Dispatcher() *dispatcher.Dispatcher { return b.d }

// RingbusTopic returns the ringbus topic that watermill topic t is emitted
// on: TopicPrefix + "." + t, where every byte but ASCII letters, digits,
// '-' and '.' is escaped as '_' and two hex digits ("a b" as "a_20b") and
// an empty token becomes "_". The mapping is
// one-to-one, and keeps the dots of t as token separators.
func (b *Bus) RingbusTopic(t string) string { return escapeTopic(b.prefix, t) }

// Close stops the dispatcher if NewBus created it (joining its Run), or
// unsubscribes from the caller's, then closes every client: when Close
// returns, every subscription's channel is closed and no goroutine of the
// Bus is left. The messages the Bus holds (queued, kept for a next
// subscription, buffered or waiting for an Ack) are discarded: they live
// in memory only; how many is logged. Publish and Subscribe return
// ErrClosed from the start of Close. Close is safe to call more than once
// and concurrently; later calls wait for the first. It returns nil.
func (b *Bus) Close() error {
	b.closeOnce.Do(b.close)
	return nil
}

func (b *Bus) close() {
	b.mu.Lock()
	b.closed.Store(true)
	clients := make([]*PubSub, 0, len(b.clients))
	for p := range b.clients {
		clients = append(clients, p)
	}
	b.mu.Unlock()

	b.cancel() // a Publish blocked on a full queue returns
	dropped := 0
	if b.owned {
		before := b.d.Stats().Dropped
		_ = b.d.Close() // its ErrDropped is counted below
		<-b.runDone
		dropped = int(b.d.Stats().Dropped - before)
	} else {
		b.sub.Unsubscribe()
	}
	for _, p := range clients {
		p.shutdown()
	}
	// What the subscriptions gave back is in the backlogs now.
	b.topics.Range(func(_, v any) bool {
		t := v.(*topic)
		t.mu.Lock()
		dropped += len(t.backlog.take())
		t.mu.Unlock()
		return true
	})
	b.logger.Info("watermillbus: bus closed", watermill.LogFields{"discarded_messages": dropped})
}

// forget removes a closed client.
func (b *Bus) forget(p *PubSub) {
	b.mu.Lock()
	delete(b.clients, p)
	b.mu.Unlock()
}

// topic returns the state of watermill topic name, creating it on first
// use, or ErrClosed after Close. The common case, a known topic, costs a
// sync.Map lookup and an atomic load.
func (b *Bus) topic(name string) (*topic, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if v, ok := b.topics.Load(name); ok {
		return v.(*topic), nil
	}
	v, _ := b.topics.LoadOrStore(name, &topic{bus: b, name: name, rb: escapeTopic(b.prefix, name)})
	return v.(*topic), nil
}

// publish emits msgs on t, in order. Each message is snapshotted (UUID,
// payload, a copy of the metadata) into an Envelope; the topic's ringbus
// topic is the ordering key, so that a topic's messages are handled in
// emit order under Run with any number of workers.
func (b *Bus) publish(t *topic, msgs []*message.Message) error {
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("watermillbus: Publish(%q): message %d of %d is nil", t.name, i+1, len(msgs))
		}
		if t.held.Add(1) > b.backlogLimit {
			t.held.Add(-1)
			return fmt.Errorf("%w: Publish(%q): %d messages wait for a subscription (BacklogLimit); %d of %d published",
				ErrBacklogFull, t.name, b.backlogLimit, i, len(msgs))
		}
		env := &Envelope{t: t, uuid: m.UUID, payload: m.Payload, meta: maps.Clone(m.Metadata)}
		if err := b.d.EmitEvent(b.ctx, dispatcher.Event{Topic: t.rb, Key: t.rb, Payload: env}); err != nil {
			t.held.Add(-1)
			if b.closed.Load() {
				err = ErrClosed
			}
			return fmt.Errorf("watermillbus: Publish(%q): message %d of %d: %w", t.name, i+1, len(msgs), err)
		}
	}
	return nil
}

// handle is the Bus's ringbus handler: it fans one message out to the
// topic's live subscriptions, or keeps it in the topic's backlog when
// there is none. It returns an error only for an event it cannot read.
//
// It runs one message of a topic at a time, in emit order (the topic is
// the event's key), so the subscriptions' buffers receive a topic's
// messages in order. It waits only when a subscription's buffer is full.
// Its return ends the event, not the message: consumers ack later (see
// Completion in the package doc).
func (b *Bus) handle(ctx context.Context, ev dispatcher.Event) error {
	env, ok := ev.Payload.(*Envelope)
	if !ok {
		return fmt.Errorf("%w: event %d on %q has payload %T", ErrForeignEvent, ev.ID, ev.Topic, ev.Payload)
	}
	t := env.t
	if t.bus != b {
		return nil // another Bus on the same dispatcher and prefix delivers it
	}
	t.mu.Lock()
	subs := t.subs // copy-on-write: safe to range after Unlock
	if len(subs) == 0 {
		t.backlog.push(env) // still counted in held
		t.mu.Unlock()
		return nil
	}
	env.holders = len(subs)
	t.mu.Unlock()
	for _, s := range subs {
		if !s.push(ctx, env) {
			t.release(env) // s ended meanwhile
		}
	}
	t.held.Add(-1) // after the pushes: the subscriptions hold it now
	return nil
}

// topic is one watermill topic's state.
//
// Invariant (under mu): the backlog is empty while subs is not, since a
// subscription that starts takes the backlog, and messages go to the
// backlog only when there is no subscription.
type topic struct {
	bus  *Bus
	name string // the watermill topic
	rb   string // its ringbus topic, also the events' ordering key

	// held counts the topic's messages that no subscription has taken:
	// queued in the dispatcher, or in the backlog. Publish bounds it.
	held atomic.Int64

	mu      sync.Mutex
	subs    []*subscription // live subscriptions, oldest first; copy-on-write
	backlog fifo            // messages kept for the next subscription
}

// attach makes s a live subscription of t. If t has no other, s takes
// the backlog: it receives the kept messages first, in order.
func (t *topic) attach(s *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if kept := t.backlog.take(); len(kept) > 0 {
		for _, env := range kept {
			env.holders = 1
		}
		t.held.Add(-int64(len(kept)))
		s.mu.Lock()
		s.q.push(kept...)
		s.mu.Unlock()
		s.notify()
	}
	t.subs = append(t.subs[:len(t.subs):len(t.subs)], s)
}

// detach removes s, which has ended, and gives back what it held and had
// not acknowledged: cur (the message its consumer had, or nil) and its
// buffer.
func (t *topic) detach(s *subscription, cur *Envelope) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, x := range t.subs {
		if x == s {
			t.subs = append(t.subs[:i:i], t.subs[i+1:]...) // copy: a handler may range the old slice
			break
		}
	}
	s.mu.Lock()
	s.ended = true
	left := s.q.take()
	s.mu.Unlock()
	close(s.done) // a handler waiting for room in s gives up
	if cur != nil {
		t.abandonLocked([]*Envelope{cur})
	}
	t.abandonLocked(left)
}

// release gives back env, which a handler could not push to a
// subscription that had ended.
func (t *topic) release(env *Envelope) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.abandonLocked([]*Envelope{env})
}

// abandonLocked counts one holder less for each of envs, and keeps those
// that no subscription holds or acknowledged: they go to the oldest live
// subscription, or to the backlog if there is none. t.mu is held.
func (t *topic) abandonLocked(envs []*Envelope) {
	keep := envs[:0]
	for _, env := range envs {
		if env.acked.Load() {
			continue
		}
		if env.holders--; env.holders <= 0 {
			keep = append(keep, env)
		}
	}
	if len(keep) == 0 {
		return
	}
	for _, env := range keep {
		env.holders = 1
	}
	if len(t.subs) > 0 {
		s := t.subs[0] // live: detach removes a subscription before it ends
		s.mu.Lock()
		s.q.push(keep...) // beyond the buffer's bound if need be: never lost
		s.mu.Unlock()
		s.notify()
		return
	}
	t.backlog.push(keep...)
	t.held.Add(int64(len(keep)))
}

// Envelope is the payload of every event a Bus emits on its dispatcher: a
// snapshot of a published message. A ringbus handler subscribed under the
// Bus's TopicPrefix may read it; the Bus's own delivery is not affected.
type Envelope struct {
	t       *topic
	uuid    string
	payload message.Payload
	meta    message.Metadata // copied at Publish, read-only afterwards

	holders int         // subscriptions holding it unacknowledged; under t.mu
	acked   atomic.Bool // some subscription's consumer acknowledged it
}

// Topic returns the watermill topic the message was published to.
func (e *Envelope) Topic() string { return e.t.name }

// Message returns a new copy of the published message: its UUID, metadata
// and payload (the payload's bytes are shared, as watermill's own Copy
// shares them). Its Ack and Nack mean nothing to the Bus.
func (e *Envelope) Message() *message.Message {
	m := message.NewMessage(e.uuid, e.payload)
	for k, v := range e.meta {
		m.Metadata[k] = v
	}
	return m
}
