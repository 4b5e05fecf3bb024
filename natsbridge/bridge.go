package natsbridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/internal/topic"
)

// Headers the bridge sets on the messages it publishes.
const (
	// HeaderKey carries the event's ordering key (Event.Key), when set.
	HeaderKey = "Ringbus-Key"
	// HeaderContentType names the codec that encoded the data.
	HeaderContentType = "Content-Type"
	// HeaderMsgID carries the message id of a delayed event (see After):
	// the message the stream stores when the event comes due has no
	// Nats-Msg-Id, and consumers take its id from this header instead.
	HeaderMsgID = "Ringbus-Msg-Id"
)

// Defaults of Config.
const (
	DefaultStream         = "RINGBUS"
	DefaultPrefix         = "ringbus"
	DefaultPublishTimeout = 5 * time.Second
	DefaultMaxPending     = 256
)

// Config configures a Bridge. The zero value is usable.
type Config struct {
	// Stream is the JetStream stream's name. Default DefaultStream.
	Stream string

	// Prefix is the first subject token: the event on topic "a.b" is the
	// message on subject "<Prefix>.a.b", and the stream holds the subjects
	// "<Prefix>.>". Default DefaultPrefix. Dead letters go to
	// "<Prefix>.dlq.<consumer>", so topics whose first token is "dlq" are
	// reserved.
	Prefix string

	// Codec encodes payloads. Default JSON.
	Codec Codec

	// Replicas is the stream's replication factor, 1 (default) or up to 5
	// in a cluster.
	Replicas int

	// Duplicates is the stream's deduplication window: a message whose
	// Nats-Msg-Id the stream has seen within it is acknowledged and not
	// stored again. Default 0: the server's (two minutes).
	Duplicates time.Duration

	// PublishTimeout bounds how long one publish attempt waits for the
	// stream's acknowledgement: Publish tries again (with the same message
	// id) after it, PublishAsync reports a timeout. Default
	// DefaultPublishTimeout.
	PublishTimeout time.Duration

	// MaxPending bounds the PublishAsync calls whose acknowledgement has
	// not arrived; one more waits for room. Default DefaultMaxPending.
	MaxPending int

	// Configure, if set, is called with the stream's configuration before
	// the bridge creates or updates the stream (limits, retention,
	// storage). The bridge sets Name, Subjects, Replicas, Duplicates,
	// Storage, and AllowMsgSchedules and AllowRollup for delayed events
	// (see "Delayed events" in the package doc), first.
	Configure func(*jetstream.StreamConfig)
}

// Bridge carries ringbus events over a NATS JetStream stream: Publish
// stores them durably, Consume feeds them to a local dispatcher, Forward
// sends a local dispatcher's events to the stream. It is safe for
// concurrent use. The bridge does not own its connection.
type Bridge struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	cfg      Config
	instance string // this Bridge's unique id, for the message ids of Forward
	// schedules: the stream schedules messages (see After), as the
	// server reported its configuration when New created or updated it.
	schedules bool
	maxAge    time.Duration // the stream's MaxAge then; 0 for none

	slots chan struct{} // one token per PublishAsync waiting for its ack

	mu        sync.Mutex
	closed    bool
	pending   map[*nats.Msg]*AsyncAck
	consumers map[*Consumer]struct{}
}

// New makes a Bridge over the connection nc, from StartEmbedded (Conn)
// or from nats.Connect to an external server or cluster: the API is the
// same. It creates the stream, or updates its configuration to cfg's.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Bridge, error) {
	if ctx == nil {
		panic("natsbridge: New with a nil Context")
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: New: nil connection", ErrInvalidOption)
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	b := &Bridge{
		nc:        nc,
		cfg:       cfg,
		instance:  nuid.Next(),
		slots:     make(chan struct{}, cfg.MaxPending),
		pending:   make(map[*nats.Msg]*AsyncAck),
		consumers: make(map[*Consumer]struct{}),
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			b.completeAsync(m, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			b.completeAsync(m, err)
		}))
	if err != nil {
		return nil, fmt.Errorf("natsbridge: %w", err)
	}
	b.js = js
	sc := jetstream.StreamConfig{
		Name:       cfg.Stream,
		Subjects:   []string{cfg.Prefix + ".>"},
		Replicas:   cfg.Replicas,
		Duplicates: cfg.Duplicates,
		Storage:    jetstream.FileStorage,
		// Delayed events (After, At) are message schedules, which need
		// roll-ups: the server purges a schedule once it fired.
		AllowMsgSchedules: true,
		AllowRollup:       true,
	}
	if cfg.Configure != nil {
		cfg.Configure(&sc)
	}
	b.stream, err = js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("natsbridge: stream %s: %w", cfg.Stream, err)
	}
	// A server that does not know AllowMsgSchedules (older than v2.12)
	// does not report it, and would store a schedule as a plain message
	// that never fires: trust only what the server reports. Under
	// another retention than limits, a consumer's ack of a schedule
	// message (which it skips) could delete it before it fires.
	got := b.stream.CachedInfo().Config
	b.schedules = got.AllowMsgSchedules && got.Retention == jetstream.LimitsPolicy
	b.maxAge = got.MaxAge
	return b, nil
}

func (c *Config) fill() error {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if strings.ContainsAny(c.Stream, ".*> \t") {
		return fmt.Errorf("%w: Config.Stream %q: a stream name has no '.', '*', '>' or space", ErrInvalidOption, c.Stream)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if err := topic.Check(c.Prefix); err != nil {
		return fmt.Errorf("%w: Config.Prefix: %w", ErrInvalidOption, err)
	}
	if c.Codec == nil {
		c.Codec = JSON
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("%w: Config.Replicas %d: want 1..5", ErrInvalidOption, c.Replicas)
	}
	if c.Duplicates < 0 {
		return fmt.Errorf("%w: Config.Duplicates %v: want >= 0", ErrInvalidOption, c.Duplicates)
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.PublishTimeout < 0 {
		return fmt.Errorf("%w: Config.PublishTimeout %v: want > 0", ErrInvalidOption, c.PublishTimeout)
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxPending < 0 {
		return fmt.Errorf("%w: Config.MaxPending %d: want > 0", ErrInvalidOption, c.MaxPending)
	}
	return nil
}

// JetStream returns the JetStream handle the bridge uses, to inspect the
// stream and its consumers.
func (b *Bridge) JetStream() jetstream.JetStream { return b.js }

// Stream returns the stream's name.
func (b *Bridge) Stream() string { return b.cfg.Stream }

// Subject returns the subject of topic: "<Prefix>.<topic>".
func (b *Bridge) Subject(topic string) string { return b.cfg.Prefix + "." + topic }

// A PublishOption configures one Publish or PublishAsync call.
type PublishOption interface{ applyPublish(*pubConfig) }

type pubConfig struct {
	id  string
	due time.Time // when a delayed event is due; zero: no delay
}

type msgID string

func (id msgID) applyPublish(c *pubConfig) { c.id = string(id) }

// MsgID sets the message's id (the Nats-Msg-Id header). The stream stores
// a message once per id within its Duplicates window, so a publish
// repeated with the same id, after a timeout or a crash, is not stored
// twice. Default: a new unique id for each call.
func MsgID(id string) PublishOption { return msgID(id) }

// delay is After's (after) or At's (at, not zero). At with the zero time
// is a time long past: no delay, as After(0) is.
type delay struct {
	after time.Duration
	at    time.Time
}

func (o delay) applyPublish(c *pubConfig) {
	if !o.at.IsZero() {
		c.due = o.at
	} else {
		c.due = time.Now().Add(o.after)
	}
}

// After delays the event durably: the stream stores it at once as a
// message schedule, and the server publishes the event to its subject,
// for the consumers, no earlier than d after the call. A d of zero or
// less is no delay. See "Delayed events" in the package doc for its
// granularity (whole seconds), its cost and what the stream must allow;
// a stream that cannot schedule it makes the publish fail with an error
// wrapping ErrSchedule. Default: no delay.
func After(d time.Duration) PublishOption { return delay{after: d} }

// At delays the event durably until t, as After does; a t that has
// passed is no delay.
func At(t time.Time) PublishOption { return delay{at: t} }

// Publish stores e's Topic, Key and Payload in the stream and returns once
// the stream acknowledged it: from then on the event survives the death
// of this process (see "Durability" in the package doc for a machine
// crash). The subject is "<Prefix>.<Topic>", the key travels in the
// HeaderKey header, the payload through the Codec. A publish attempt that
// is not acknowledged within PublishTimeout, or finds no stream leader (a
// cluster electing one), is tried again with the same message id until it
// succeeds or ctx ends; ctx's error is then returned, wrapped with the last
// attempt's. e.ID and e.Attempt are not sent. With After or At, the
// stream stores the event's schedule, and the event reaches consumers
// when it is due (see "Delayed events" in the package doc).
func (b *Bridge) Publish(ctx context.Context, e dispatcher.Event, opts ...PublishOption) error {
	if ctx == nil {
		panic("natsbridge: Publish with a nil Context")
	}
	if b.isClosed() {
		return ErrClosed
	}
	m, err := b.message(e, opts)
	if err != nil {
		return err
	}
	_, err = b.publishMsg(ctx, m)
	return err
}

// message builds the message for e.
func (b *Bridge) message(e dispatcher.Event, opts []PublishOption) (*nats.Msg, error) {
	if err := topic.Check(e.Topic); err != nil {
		return nil, fmt.Errorf("%w: %w", dispatcher.ErrBadTopic, err)
	}
	if err := reserved(e.Topic); err != nil {
		return nil, err
	}
	var pc pubConfig
	for _, o := range opts {
		if o != nil {
			o.applyPublish(&pc)
		}
	}
	if pc.id == "" {
		pc.id = nuid.Next()
	}
	data, err := b.cfg.Codec.Marshal(e.Payload)
	if err != nil {
		return nil, fmt.Errorf("natsbridge: encoding the payload of %s: %w", e.Topic, err)
	}
	m := &nats.Msg{Subject: b.Subject(e.Topic), Data: data, Header: make(nats.Header, 3)}
	m.Header.Set(jetstream.MsgIDHeader, pc.id)
	m.Header.Set(HeaderContentType, b.cfg.Codec.ContentType())
	if e.Key != "" {
		m.Header.Set(HeaderKey, e.Key)
	}
	if !pc.due.IsZero() {
		if err := b.schedule(m, pc); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// reserved returns an error wrapping ErrReservedTopic for a topic (or
// pattern) whose first token is reserved: "dlq" (dead letters) or
// "_sched" (schedules of delayed events).
func reserved(t string) error {
	switch first, _, _ := strings.Cut(t, "."); first {
	case dlqToken:
		return fmt.Errorf("%w: %q: topics under %q hold dead letters", ErrReservedTopic, t, dlqToken)
	case schedToken:
		return fmt.Errorf("%w: %q: topics under %q hold the schedules of delayed events", ErrReservedTopic, t, schedToken)
	}
	return nil
}

// schedToken is the first token of the topics that hold the schedules of
// delayed events: "<Prefix>._sched.<id>", one subject per event because
// the server keeps one schedule per subject (a second one replaces the
// first).
const schedToken = "_sched"

// schedule turns m, the message of an event due at pc.due, into its
// schedule: the same data and headers on the event's own schedule
// subject, with the headers that make the server publish it to m's
// subject when it is due. It leaves m as it is when the due time has
// passed.
func (b *Bridge) schedule(m *nats.Msg, pc pubConfig) error {
	now := time.Now()
	if !now.Before(pc.due) {
		return nil
	}
	if !b.schedules {
		return fmt.Errorf("%w: stream %s does not allow message schedules (AllowMsgSchedules off or not supported by the server, or a retention other than limits)", ErrSchedule, b.cfg.Stream)
	}
	// The server takes whole seconds (RFC 3339 without a fraction):
	// round up, so that the event never comes before its due time.
	due := pc.due.Truncate(time.Second)
	if due.Before(pc.due) {
		due = due.Add(time.Second)
	}
	if b.maxAge > 0 && due.Sub(now) >= b.maxAge {
		return fmt.Errorf("%w: a delay of %v is not shorter than stream %s's MaxAge %v, which would discard the schedule first", ErrSchedule, due.Sub(now), b.cfg.Stream, b.maxAge)
	}
	m.Header.Set(jetstream.ScheduleHeader, "@at "+due.UTC().Format(time.RFC3339))
	m.Header.Set(jetstream.ScheduleTargetHeader, m.Subject)
	m.Header.Set(HeaderMsgID, pc.id)
	m.Subject = b.Subject(schedToken + "." + idToken(pc.id))
	return nil
}

// idToken makes a subject token of a message id: the id itself when it
// is one (letters, digits, '_' and '-', as nuid's ids), else a hash of
// it.
func idToken(id string) string {
	ok := len(id) <= 64
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
	}
	if ok {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:16])
}

// publishMsg publishes m and waits for the stream's ack, trying again
// while the failure is one a retry can cure (see retriable).
func (b *Bridge) publishMsg(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	wait := 10 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
		ack, err := b.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		}
		if !retriable(err) {
			return nil, fmt.Errorf("natsbridge: publish to %s: %w", m.Subject, err)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return nil, fmt.Errorf("%w (last attempt: %v)", serr, err)
		}
		wait = min(2*wait, time.Second)
	}
}

// retriable reports whether a failed publish may succeed when tried
// again: no answer in time, nobody to answer (no stream leader yet), the
// connection between servers, or the cluster not ready.
func retriable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AsyncAck is the outcome of one PublishAsync: Done is closed when the
// stream acknowledged the message or the attempt failed, and Err says
// which.
type AsyncAck struct {
	id   string
	done chan struct{}
	err  error // set before done is closed
}

// MsgID returns the message's id: publish again with MsgID(id) after a
// failure, and the stream stores the event at most once.
func (a *AsyncAck) MsgID() string { return a.id }

// Done is closed when the outcome is known.
func (a *AsyncAck) Done() <-chan struct{} { return a.done }

// Err returns nil when the stream acknowledged the message, else why it
// did not (a timeout after PublishTimeout: the message may or may not be
// stored). It blocks until Done is closed.
func (a *AsyncAck) Err() error {
	<-a.done
	return a.err
}

// Wait waits for the outcome, or for ctx to end (then it returns ctx's
// error).
func (a *AsyncAck) Wait(ctx context.Context) error {
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync sends the event as Publish does, without waiting for the
// stream's acknowledgement: the returned AsyncAck tells it. At most
// MaxPending publishes wait for their acknowledgement; beyond that
// PublishAsync waits for room until ctx ends. It does not try again: an
// AsyncAck that reports an error may be followed by a Publish with the
// same MsgID. Events published asynchronously reach the stream in the
// order of the calls, unless some fail and are published again.
func (b *Bridge) PublishAsync(ctx context.Context, e dispatcher.Event, opts ...PublishOption) (*AsyncAck, error) {
	if ctx == nil {
		panic("natsbridge: PublishAsync with a nil Context")
	}
	m, err := b.message(e, opts)
	if err != nil {
		return nil, err
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	a := &AsyncAck{id: m.Header.Get(jetstream.MsgIDHeader), done: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.slots
		return nil, ErrClosed
	}
	b.pending[m] = a
	b.mu.Unlock()
	if _, err := b.js.PublishMsgAsync(m); err != nil {
		b.mu.Lock()
		delete(b.pending, m)
		b.mu.Unlock()
		<-b.slots
		return nil, fmt.Errorf("natsbridge: publish to %s: %w", m.Subject, err)
	}
	return a, nil
}

// completeAsync records the outcome of the async publish of m. It runs
// on the connection's goroutines and does not block.
func (b *Bridge) completeAsync(m *nats.Msg, err error) {
	b.mu.Lock()
	a, ok := b.pending[m]
	delete(b.pending, m)
	b.mu.Unlock()
	if !ok {
		return
	}
	if err != nil {
		err = fmt.Errorf("natsbridge: publish to %s: %w", m.Subject, err)
	}
	a.err = err
	close(a.done)
	<-b.slots
}

// Forward subscribes to pattern on d a handler that publishes each event
// to the stream (as Publish does), so that events emitted locally reach
// the stream's consumers in other processes. The guarantee is weaker than
// Publish's: the event lives only in d's memory until the handler's
// publish is acknowledged, so it is lost if the process dies in between.
// A publish that fails is the handler's failure (retried by d's WithRetry
// policy, then a dead letter of d). The message id is this Bridge's id and
// the event's ID, so d's retries of one event are stored once.
//
// Events delayed in d (dispatcher.After, dispatcher.At) reach the handler,
// and so the stream, when they are due: until then they are in d's
// memory only. Publish with After or At delays an event durably.
//
// opts are given to d.On after a default name, "natsbridge.forward(<pattern>)".
// Do not forward topics that d also receives from the same stream through
// Consume: each would loop.
func (b *Bridge) Forward(d *dispatcher.Dispatcher, pattern string, opts ...dispatcher.SubscribeOption) (*dispatcher.Subscription, error) {
	h := func(ctx context.Context, e dispatcher.Event) error {
		return b.Publish(ctx, e, MsgID(b.instance+"."+strconv.FormatUint(e.ID, 10)))
	}
	all := append([]dispatcher.SubscribeOption{dispatcher.WithName("natsbridge.forward(" + pattern + ")")}, opts...)
	return d.On(pattern, h, all...)
}

func (b *Bridge) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close stops the bridge: Publish and PublishAsync return ErrClosed,
// every Consumer it started stops (as Consumer.Stop, with ctx), and Close
// waits for the acknowledgements of the PublishAsync calls made before
// it. It returns ctx's error if ctx ends first: consumers then leave the
// messages still in flight unacknowledged (the stream redelivers them
// after their AckWait), and the AsyncAcks still pending report their
// outcome later, or a timeout. It does not close the connection. Close is
// safe to call more than once.
func (b *Bridge) Close(ctx context.Context) error {
	if ctx == nil {
		panic("natsbridge: Close with a nil Context")
	}
	b.mu.Lock()
	b.closed = true
	cs := make([]*Consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	var errs []error
	for _, c := range cs {
		if err := c.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Holding every slot means no async publish is waiting for its ack.
	held := 0
	defer func() {
		for range held {
			<-b.slots
		}
	}()
	for held < cap(b.slots) {
		select {
		case b.slots <- struct{}{}:
			held++
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		}
	}
	return errors.Join(errs...)
}
