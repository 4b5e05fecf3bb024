package natsbridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/internal/topic"
)

// Headers of a dead letter, added to the failed message's own.
const (
	HeaderTopic      = "Ringbus-Topic"      // the topic the event was published on
	HeaderError      = "Ringbus-Error"      // the failure, as text
	HeaderConsumer   = "Ringbus-Consumer"   // the durable consumer that gave up
	HeaderDeliveries = "Ringbus-Deliveries" // how many times it was delivered
	HeaderStreamSeq  = "Ringbus-Stream-Seq" // the failed message's stream sequence
)

// dlqToken is the first token of the topics that hold dead letters.
const dlqToken = "dlq"

// Defaults of ConsumerConfig.
const (
	DefaultMaxDeliver = 5
	DefaultAckWait    = 30 * time.Second
	DefaultFetchWait  = 5 * time.Second
)

// ConsumerConfig configures Consume. Durable is required.
type ConsumerConfig struct {
	// Durable is the durable consumer's name: the stream keeps its
	// position (what was acknowledged) across restarts, and processes that
	// consume with the same name share its messages. It is also the last
	// token of its dead letters' subject, so it must be a valid topic
	// token (letters, digits, '_' and '-').
	Durable string

	// Topics are the topic patterns to consume ("orders.*", "audit.>").
	// Default: every topic (">"). Dead letters ("dlq.<consumer>") are
	// consumed only by a consumer that names a pattern beginning with
	// "dlq"; they reach its handlers as DeadLetter payloads. The schedules
	// of delayed events ("_sched.<id>") reach no handler, and a pattern
	// beginning with "_sched" is refused (ErrReservedTopic).
	Topics []string

	// Bind says which payload type each topic decodes into (see Bind); the
	// first binding whose pattern matches wins. An event whose topic no
	// binding matches gets a Raw payload.
	Bind []Binding

	// MaxInFlight bounds the messages this consumer has taken from the
	// stream and not yet settled (acknowledged, negatively acknowledged or
	// dead-lettered): it never fetches more. Set it to at most the
	// dispatcher's WithCapacity, so that every fetched message fits in the
	// dispatcher's queue. Default dispatcher.DefaultCapacity.
	MaxInFlight int

	// MaxDeliver is how many times a message is delivered before it
	// becomes a dead letter: after the MaxDeliver-th failure it is
	// published to "<Prefix>.dlq.<Durable>" and terminated. Default
	// DefaultMaxDeliver.
	MaxDeliver int

	// Backoff is the delay before the redelivery that follows the n-th
	// failed delivery (n from 1). Default
	// dispatcher.ExponentialBackoff(time.Second, time.Minute).
	Backoff func(n int) time.Duration

	// AckWait is how long the stream waits for a delivered message's
	// outcome before it delivers it again. While an event is still being
	// handled, the consumer tells the stream so every AckWait/2, so a slow
	// handler does not cause a redelivery; a process that dies leaves its
	// messages to be redelivered AckWait after their last such signal.
	// Default DefaultAckWait.
	AckWait time.Duration

	// FetchWait is how long one pull request waits on the server for
	// messages. Default DefaultFetchWait.
	FetchWait time.Duration

	// Dedupe, if set, skips messages whose id it saw settled successfully
	// (see Window): such a message is acknowledged without reaching the
	// dispatcher again.
	Dedupe *Window

	// Configure, if set, is called with the consumer's configuration
	// before it is created or updated.
	Configure func(*jetstream.ConsumerConfig)
}

// Raw is the payload of a consumed event whose topic no Binding matches:
// the message as it came.
type Raw struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// DeadLetter is the payload of a consumed dead letter (topic
// "dlq.<consumer>"): the failed event as it was published, and why it
// failed.
type DeadLetter struct {
	Topic      string // the failed event's topic
	Key        string // its ordering key
	Consumer   string // the consumer that gave up on it
	Err        string // the last failure
	Deliveries int    // how many times it was delivered
	StreamSeq  uint64 // the failed message's stream sequence
	Header     nats.Header
	Data       []byte // the failed event's data, as its Codec encoded it
}

// Binding ties a topic pattern to a payload type: see Bind.
type Binding struct {
	pattern string
	decode  func(c Codec, data []byte) (any, error)
}

// Bind makes the consumer decode the payload of events whose topic
// matches pattern into a T (a value, not a pointer, unless T is a pointer
// type), so that local handlers take it with dispatcher.Handle[T] as if
// the event had been emitted locally. A message that does not decode is
// dead-lettered at once, with an error wrapping ErrDecode.
func Bind[T any](pattern string) Binding {
	return Binding{pattern: pattern, decode: func(c Codec, data []byte) (any, error) {
		var v T
		if err := c.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		return v, nil
	}}
}

// Consumer feeds the messages of a durable JetStream pull consumer into a
// local dispatcher. Stop it, or Close its Bridge, before the dispatcher
// shuts down.
type Consumer struct {
	b     *Bridge
	d     *dispatcher.Dispatcher
	cons  jetstream.Consumer
	cfg   ConsumerConfig
	binds *topic.Index[*Binding]
	dlqOK bool // the consumer asked for dead letters

	fetchCtx  context.Context // ends when Stop begins
	stopFetch context.CancelFunc
	settleCtx context.Context // ends when Stop gives up
	stopAll   context.CancelFunc

	outcomes chan outcome  // OnDone's reports; room for MaxInFlight, so a send never blocks
	room     chan struct{} // a slot was freed (capacity 1)

	mu      sync.Mutex
	used    int // slots reserved by a fetch or held by a message in flight
	flights map[*flight]struct{}

	fetchDone  chan struct{}
	settleDone chan struct{}
	stopOnce   sync.Once
	stopErr    error
}

// flight is one message taken from the stream and not yet settled.
type flight struct {
	msg   jetstream.Msg
	meta  *jetstream.MsgMetadata
	id    string // for Dedupe: Nats-Msg-Id, else the stream sequence
	topic string
}

// outcome is what happened to a flight.
type outcome struct {
	f     *flight
	err   error
	final bool // no redelivery can help: dead-letter now
	skip  bool // not for this consumer: ack, and do not remember its id
}

// Consume creates or updates the durable consumer cfg.Durable on the
// bridge's stream and starts feeding its messages into d with EmitEvent:
// the event's Topic is the subject without the prefix, its Key the
// HeaderKey header, its Payload decoded as cfg.Bind says. A message is
// acknowledged when OnDone reports that every subscriber d matched
// handled the event; on failure (a dead letter in d, or the event
// dropped) it is negatively acknowledged with the Backoff delay, and
// after MaxDeliver deliveries it becomes a dead letter of the stream (see
// ConsumerConfig.MaxDeliver). d must be running (Run) or driven (Drain)
// for anything to be acknowledged.
//
// Consume starts two goroutines, which Stop (or the Bridge's Close)
// stops and waits for.
func (b *Bridge) Consume(ctx context.Context, d *dispatcher.Dispatcher, cfg ConsumerConfig) (*Consumer, error) {
	if ctx == nil {
		panic("natsbridge: Consume with a nil Context")
	}
	if d == nil {
		return nil, fmt.Errorf("%w: Consume: nil dispatcher", ErrInvalidOption)
	}
	if b.isClosed() {
		return nil, ErrClosed
	}
	c := &Consumer{b: b, d: d, cfg: cfg, flights: make(map[*flight]struct{})}
	subjects, err := c.fill()
	if err != nil {
		return nil, err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxDeliver:    c.cfg.MaxDeliver + 1, // one more: see settle and deliver
		MaxAckPending: -1,                   // each process bounds itself (MaxInFlight)
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(subjects) == 1 {
		cc.FilterSubject = subjects[0]
	} else {
		cc.FilterSubjects = subjects
	}
	if cfg.Configure != nil {
		cfg.Configure(&cc)
	}
	c.cons, err = b.js.CreateOrUpdateConsumer(ctx, b.cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("natsbridge: consumer %s: %w", cfg.Durable, err)
	}
	c.outcomes = make(chan outcome, c.cfg.MaxInFlight)
	c.room = make(chan struct{}, 1)
	c.fetchCtx, c.stopFetch = context.WithCancel(context.Background())
	c.settleCtx, c.stopAll = context.WithCancel(context.Background())
	c.fetchDone, c.settleDone = make(chan struct{}), make(chan struct{})
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.consumers[c] = struct{}{}
	b.mu.Unlock()
	go c.fetchLoop()
	go c.settleLoop()
	return c, nil
}

// fill checks cfg, sets its defaults and returns the filter subjects.
func (c *Consumer) fill() ([]string, error) {
	cfg := &c.cfg
	if err := topic.Check(cfg.Durable); err != nil || strings.Contains(cfg.Durable, ".") {
		return nil, fmt.Errorf("%w: ConsumerConfig.Durable %q: want one topic token (letters, digits, '_', '-')", ErrInvalidOption, cfg.Durable)
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{">"}
	}
	subjects := make([]string, 0, len(cfg.Topics))
	for _, t := range cfg.Topics {
		if _, err := topic.Parse(t); err != nil {
			return nil, fmt.Errorf("%w: ConsumerConfig.Topics: %w", dispatcher.ErrBadTopic, err)
		}
		if first, _, _ := strings.Cut(t, "."); first == dlqToken {
			c.dlqOK = true
		} else if first == schedToken {
			return nil, reserved(t)
		}
		subjects = append(subjects, c.b.Subject(t))
	}
	subs := make([]topic.Sub[*Binding], 0, len(cfg.Bind))
	for i := range cfg.Bind {
		bd := &cfg.Bind[i]
		p, err := topic.Parse(bd.pattern)
		if err != nil {
			return nil, fmt.Errorf("%w: ConsumerConfig.Bind: %w", dispatcher.ErrBadTopic, err)
		}
		if bd.decode == nil {
			return nil, fmt.Errorf("%w: ConsumerConfig.Bind[%d]: a Binding is made by Bind", ErrInvalidOption, i)
		}
		subs = append(subs, topic.Sub[*Binding]{Pattern: p, Seq: uint64(i + 1), Value: bd})
	}
	c.binds = topic.NewIndex(subs)
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = dispatcher.DefaultCapacity
	}
	if cfg.MaxInFlight < 1 {
		return nil, fmt.Errorf("%w: ConsumerConfig.MaxInFlight %d: want > 0", ErrInvalidOption, cfg.MaxInFlight)
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if cfg.MaxDeliver < 1 {
		return nil, fmt.Errorf("%w: ConsumerConfig.MaxDeliver %d: want > 0", ErrInvalidOption, cfg.MaxDeliver)
	}
	if cfg.Backoff == nil {
		cfg.Backoff = dispatcher.ExponentialBackoff(time.Second, time.Minute)
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.FetchWait == 0 {
		cfg.FetchWait = DefaultFetchWait
	}
	if cfg.AckWait < time.Millisecond || cfg.FetchWait < time.Millisecond {
		return nil, fmt.Errorf("%w: ConsumerConfig.AckWait %v, FetchWait %v: want at least 1ms", ErrInvalidOption, cfg.AckWait, cfg.FetchWait)
	}
	return subjects, nil
}

// Name returns the durable consumer's name.
func (c *Consumer) Name() string { return c.cfg.Durable }

// fetchLoop pulls messages while there is room for them, until Stop. It
// reserves the room for a whole batch before it asks, so the messages in
// flight never exceed MaxInFlight even while the server is still
// delivering a batch.
func (c *Consumer) fetchLoop() {
	defer close(c.fetchDone)
	ctx := c.fetchCtx
	wait := 10 * time.Millisecond
	for {
		n, ok := c.reserve(ctx)
		if !ok {
			return
		}
		fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchWait)
		batch, err := c.cons.Fetch(n, jetstream.FetchContext(fctx))
		got := 0
		if err == nil {
			for m := range batch.Messages() {
				got++
				c.deliver(ctx, m)
			}
			err = batch.Error()
		}
		cancel()
		c.release(n - got)
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			// The server is away (restarting, electing a leader):
			// ask again after a pause.
			if sleep(ctx, wait) != nil {
				return
			}
			wait = min(2*wait, time.Second)
			continue
		}
		wait = 10 * time.Millisecond
	}
}

// reserve waits until at least half the slots are free (or all the
// in-flight messages settled, when MaxInFlight is 1), reserves every free
// slot and returns their number; false when ctx ended.
func (c *Consumer) reserve(ctx context.Context) (int, bool) {
	max := c.cfg.MaxInFlight
	for {
		c.mu.Lock()
		free := max - c.used
		if free > 0 && free >= (max+1)/2 {
			c.used = max
			c.mu.Unlock()
			return free, true
		}
		c.mu.Unlock()
		select {
		case <-c.room:
		case <-ctx.Done():
			return 0, false
		}
	}
}

// release frees n slots.
func (c *Consumer) release(n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.used -= n
	c.mu.Unlock()
	select {
	case c.room <- struct{}{}:
	default:
	}
}

// deliver hands one fetched message, which holds a reserved slot, to the
// dispatcher, or settles it at once.
func (c *Consumer) deliver(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to acknowledge.
		c.release(1)
		return
	}
	f := &flight{msg: m, meta: meta, topic: strings.TrimPrefix(m.Subject(), c.b.cfg.Prefix+".")}
	f.id = m.Headers().Get(jetstream.MsgIDHeader)
	if f.id == "" {
		// A delayed event that came due: the server dropped its
		// Nats-Msg-Id, the bridge kept it here.
		f.id = m.Headers().Get(HeaderMsgID)
	}
	if f.id == "" {
		f.id = "seq:" + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	c.mu.Lock()
	c.flights[f] = struct{}{}
	c.mu.Unlock()
	isDLQ := strings.HasPrefix(f.topic, dlqToken+".")
	switch {
	case isDLQ && !c.dlqOK:
		// A dead letter under a pattern like ">": not for this consumer,
		// and its id is not one Dedupe should remember.
		c.outcomes <- outcome{f: f, skip: true}
		return
	case strings.HasPrefix(f.topic, schedToken+"."):
		// The schedule of a delayed event, under a pattern like ">":
		// the event itself comes when it is due, with the same id,
		// which Dedupe must not have seen. The ack does not remove the
		// schedule from the stream (limits retention; see
		// Bridge.schedule).
		c.outcomes <- outcome{f: f, skip: true}
		return
	case c.cfg.Dedupe != nil && c.cfg.Dedupe.Contains(f.id):
		c.outcomes <- outcome{f: f}
		return
	case int(meta.NumDelivered) > c.cfg.MaxDeliver:
		// The delivery beyond MaxDeliver: the earlier ones ended without
		// an outcome (the process died, or stopped first).
		c.outcomes <- outcome{f: f, final: true,
			err: fmt.Errorf("%w: %d deliveries", ErrUnfinished, meta.NumDelivered-1)}
		return
	}
	var payload any
	if isDLQ {
		payload = deadLetterOf(m, meta)
	} else if bs := c.binds.Match(f.topic, nil); len(bs) > 0 {
		payload, err = bs[0].decode(c.b.cfg.Codec, m.Data())
		if err != nil {
			c.outcomes <- outcome{f: f, final: true,
				err: fmt.Errorf("%w: %s into the type bound to %q: %w", ErrDecode, f.topic, bs[0].pattern, err)}
			return
		}
	} else {
		payload = Raw{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
	}
	e := dispatcher.Event{Topic: f.topic, Key: m.Headers().Get(HeaderKey), Payload: payload}
	err = c.d.EmitEvent(ctx, e, dispatcher.OnDone(func(err error) {
		if err == nil {
			// The common case settles here, on the goroutine that
			// finished the event: an ack only queues a few bytes on
			// the connection.
			c.settle(outcome{f: f})
			return
		}
		c.outcomes <- outcome{f: f, err: err}
	}))
	if err != nil {
		c.outcomes <- outcome{f: f, err: fmt.Errorf("natsbridge: the dispatcher refused the event: %w", err)}
	}
}

// deadLetterOf reads the DeadLetter a dead-letter message carries.
func deadLetterOf(m jetstream.Msg, meta *jetstream.MsgMetadata) DeadLetter {
	h := m.Headers()
	n, _ := strconv.Atoi(h.Get(HeaderDeliveries))
	seq, _ := strconv.ParseUint(h.Get(HeaderStreamSeq), 10, 64)
	return DeadLetter{
		Topic: h.Get(HeaderTopic), Key: h.Get(HeaderKey), Consumer: h.Get(HeaderConsumer),
		Err: h.Get(HeaderError), Deliveries: n, StreamSeq: seq, Header: h, Data: m.Data(),
	}
}

// settleLoop acknowledges, negatively acknowledges or dead-letters each
// message as its outcome arrives, and tells the stream every AckWait/2
// that the messages still in flight are being worked on. It runs until
// Stop gives up waiting, or until Stop saw every flight settled.
func (c *Consumer) settleLoop() {
	defer close(c.settleDone)
	tick := time.NewTicker(c.cfg.AckWait / 2)
	defer tick.Stop()
	for {
		select {
		case o := <-c.outcomes:
			c.settle(o)
		case <-tick.C:
			c.mu.Lock()
			for f := range c.flights {
				_ = f.msg.InProgress() // a lost signal costs at most a redelivery
			}
			c.mu.Unlock()
		case <-c.settleCtx.Done():
			return
		}
	}
}

// settle ends one flight. Acks and naks are not waited for: a lost one
// makes the stream redeliver the message (at-least-once). Successes are
// settled by OnDone itself, failures by settleLoop, because a dead letter
// waits for the stream's ack.
func (c *Consumer) settle(o outcome) {
	f := o.f
	switch {
	case o.skip:
		_ = f.msg.Ack()
	case o.err == nil:
		if f.msg.Ack() == nil && c.cfg.Dedupe != nil {
			c.cfg.Dedupe.Add(f.id)
		}
	case o.final || int(f.meta.NumDelivered) >= c.cfg.MaxDeliver:
		if err := c.deadLetter(f, o.err); err != nil {
			// Not stored: leave the message unsettled, so that the
			// stream delivers it once more, beyond MaxDeliver, and
			// deliver dead-letters it then.
			break
		}
		_ = f.msg.TermWithReason("ringbus dead letter")
	default:
		_ = f.msg.NakWithDelay(c.cfg.Backoff(int(f.meta.NumDelivered)))
	}
	c.mu.Lock()
	delete(c.flights, f)
	c.mu.Unlock()
	c.release(1)
}

// deadLetter publishes f's message, with the failure in its headers, to
// "<Prefix>.dlq.<Durable>", and waits for the stream's ack. Its message id
// is derived from the consumer and the stream sequence, so a dead letter
// published again after a crash is stored once.
func (c *Consumer) deadLetter(f *flight, failure error) error {
	m := &nats.Msg{Subject: c.b.Subject(dlqToken + "." + c.cfg.Durable), Data: f.msg.Data(), Header: nats.Header{}}
	for k, v := range f.msg.Headers() {
		m.Header[k] = append([]string(nil), v...)
	}
	seq := strconv.FormatUint(f.meta.Sequence.Stream, 10)
	m.Header.Set(jetstream.MsgIDHeader, "dlq."+c.cfg.Durable+"."+seq)
	m.Header.Set(HeaderTopic, f.topic)
	m.Header.Set(HeaderError, headerText(failure.Error()))
	m.Header.Set(HeaderConsumer, c.cfg.Durable)
	m.Header.Set(HeaderDeliveries, strconv.FormatUint(f.meta.NumDelivered, 10))
	m.Header.Set(HeaderStreamSeq, seq)
	_, err := c.b.publishMsg(c.settleCtx, m)
	return err
}

// headerText makes s fit in a header value: one line, bounded.
func headerText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const max = 1024
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// InFlight returns how many messages the consumer has taken from the
// stream and not yet settled.
func (c *Consumer) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flights)
}

// Stop stops fetching, waits until every message in flight is settled
// (its event finished in the dispatcher, then acknowledged or not) and
// until the server has received those acknowledgements, then stops the
// consumer's goroutines. If ctx ends first, Stop returns ctx's error at
// once: the messages still in flight are left unacknowledged, and the
// stream delivers them again after AckWait. Messages the server sent for
// a pull request that Stop cut short are redelivered after AckWait too.
// The dispatcher must still process events while Stop waits: stop
// consumers before shutting the dispatcher down. Stop is safe to call
// more than once; later calls return the first one's result.
func (c *Consumer) Stop(ctx context.Context) error {
	if ctx == nil {
		panic("natsbridge: Stop with a nil Context")
	}
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Consumer) stop(ctx context.Context) error {
	defer func() {
		c.b.mu.Lock()
		delete(c.b.consumers, c)
		c.b.mu.Unlock()
	}()
	c.stopFetch()
	<-c.fetchDone // the fetch loop does not block once its ctx ended
	err := c.waitSettled(ctx)
	c.stopAll()
	<-c.settleDone
	if err != nil {
		return err
	}
	return flush(ctx, c.b.nc)
}

// flush waits until the server has processed what nc sent (the acks),
// or ctx ends. nats.go wants a deadline: without one, ctx gets
// DefaultPublishTimeout.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPublishTimeout)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("natsbridge: flushing the acknowledgements: %w", err)
	}
	return nil
}

// waitSettled waits until no message is in flight, or ctx ends.
func (c *Consumer) waitSettled(ctx context.Context) error {
	for {
		c.mu.Lock()
		used := c.used
		c.mu.Unlock()
		if used == 0 {
			return nil
		}
		select {
		case <-c.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
