// Package watermillbus is a watermill Pub/Sub backed by a ringbus
// dispatcher: a fast in-process backend behind message.Publisher and
// message.Subscriber, which passes watermill's own universal test suite
// (github.com/ThreeDotsLabs/watermill/pubsub/tests).
//
//	ps, _ := watermillbus.New(watermillbus.Config{}) // a Bus of its own, on its own dispatcher
//	defer ps.Close()
//	router.AddConsumerHandler("audit", "orders.created", ps, audit)
//	ps.Publish("orders.created", message.NewMessage(watermill.NewUUID(), payload))
//
// # Bus and clients
//
// A Bus is the broker: it holds the topics, the messages kept for them
// and their subscriptions, and emits every published message on a ringbus
// dispatcher, whose handler fans it out. A PubSub is a client of a Bus
// (Bus.PubSub): a Publisher and a Subscriber whose Close ends its own
// subscriptions only, as closing a Kafka or NATS client leaves the broker
// and its messages alone. New returns a client over a Bus of its own and
// closes both together; NewBus and Bus.PubSub give several clients (a
// Router's subscriber, a service's publisher, ...) one Bus.
//
// The dispatcher is either the Bus's own (Config.Dispatcher nil: NewBus
// creates it with Config.DispatcherOptions, runs it on a goroutine that
// Close joins, and closes it in Close), or the caller's, which the caller
// runs (Run) or drives step by step with Tick and Drain, in tests. Nothing
// else starts a goroutine but Subscribe: one per subscription, owned by
// its client, joined by the client's Close.
//
// # Topics
//
// A watermill topic is any string; a ringbus topic is dot-separated
// tokens of ASCII letters, digits, '_' and '-', at most 255 bytes.
// Watermill topic t is emitted on TopicPrefix + "." + escape(t)
// (Bus.RingbusTopic; TopicPrefix defaults to "watermill"): dots stay token
// separators, ASCII letters, digits and '-' stay as they are, every other
// byte becomes '_' and two upper-case hex digits ("a b" becomes "a_20b"),
// and an empty token becomes "_". A topic whose image would exceed 255
// bytes is refused with dispatcher.ErrBadTopic. The mapping is one-to-one, so a ringbus handler can observe watermill traffic:
// On("watermill.orders.*", ...) sees the messages of "orders.created" as
// *Envelope payloads.
//
// # Delivery
//
// A subscription's channel is unbuffered and carries one message at a
// time: the next message comes after the consumer Acks the current one.
// After a Nack, a fresh copy of the same message comes again, at once and
// before any later message. Every delivered message is a copy of its own
// (UUID, metadata and payload as published; the payload's bytes are
// shared, as watermill's Message.Copy shares them), with its own Ack and
// Nack; its Context derives from the Subscribe ctx and is cancelled after
// its Ack or Nack, or when the subscription ends. Cancelling the Subscribe
// ctx, or closing the client or the Bus, closes the channel.
//
// Publish returns once the messages are in the dispatcher's queue: it
// waits only when the queue is full, under the dispatcher's overflow
// policy (Block, the default, waits for room; Close unblocks it).
//
// # Persistence
//
// A message published to a topic that has no subscription is kept, in
// the Bus's memory, for the topic's next subscription, which receives the
// kept messages first, in publish order. When a subscription ends, the
// messages it received or had buffered and that no subscription
// acknowledged go back to the topic: to its oldest live subscription, or,
// if none, to the topic's keep for the next one. So a message stays in
// the Bus until some subscription acks it or the Bus closes; messages
// published while subscriptions are live are delivered to each of them.
// Consumed messages are not kept: a later subscription does not receive
// them.
//
// Config.BacklogLimit (default 65536) bounds, per topic, the messages no
// subscription has taken (queued in the dispatcher or kept): beyond it
// Publish returns ErrBacklogFull. The Bus remembers every topic it has
// seen until it closes (a small struct each), as watermill's gochannel
// does in its Persistent mode. Nothing survives the process or Bus.Close.
//
// # Completion
//
// A message is finished when a consumer acks it, which is later than the
// dispatcher is done with its event, and the Bus keeps that account
// itself:
//
//   - The event is done when the Bus's handler returns: it has appended
//     the message to the buffer of every live subscription of the topic,
//     counting them as its holders, or kept it for the next subscription.
//     It does not wait for any consumer.
//   - Each subscription's goroutine hands the consumer one message at a
//     time and waits for its Ack or Nack. A Nack sends a fresh copy at
//     once; an Ack marks the message acknowledged, so that no holder
//     gives it back.
//   - A subscription that ends gives back what it holds unacknowledged:
//     one holder less; when none is left and no subscription acked the
//     message, it goes back to the topic (see Persistence).
//
// The Bus does not use dispatcher.OnDone for this. OnDone says when every
// handler the event matched has returned, and the Bus's handler returns
// before any consumer has the message, on purpose. For OnDone to mean
// "acked", the handler would have to wait for the ack, on a dispatcher
// worker (or on the goroutine calling Tick or Drain), and the dispatcher
// runs an event's handlers one after the other. Then a message would
// reach a topic's second subscription only once the first had acked it;
// a consumer holding a message would hold a worker, and with it the rest
// of that worker's batch, other topics included; a Drain on the
// consumer's goroutine would wait for itself; and a consumer that
// publishes before it acks (a Router publishes a handler's output before
// acking its input) would, the queue full, wait for room from workers
// that wait for its ack, for good once every worker does. A Nack could
// not be a handler error either: the dispatcher's retries have a budget
// and a backoff, and let the key's later events overtake them (see
// Ordering in the dispatcher's doc). And the kept messages and the
// give-back would still need the Bus's own account, since done(nil) means
// either acked by every subscription the event matched or that none
// matched. With the buffers, each subscription goes at its consumer's
// pace, and a handler waits only for a full buffer (see Slow consumers).
//
// # Ordering
//
// The messages of a topic reach each of its subscriptions in publish
// order (among concurrent publishers, in the order their messages entered
// the dispatcher's queue), even under Run with many workers: every
// message of a topic is emitted with the topic's ringbus topic as its
// ordering key, so the dispatcher hands a topic's messages to the Bus's
// handler one at a time, in emit order, and the handler appends them to
// each subscription's FIFO buffer. A Nack redelivers before the next
// message. The one exception: messages handed back by a subscription that
// ended are appended after what the receiving subscription already has.
//
// # Slow consumers
//
// A subscription buffers up to Config.SubscriberBuffer messages (default
// 1024) behind the one its consumer holds. When the buffer is full, the
// handler delivering the topic waits for room, for the subscription to
// end, or for the dispatcher to stop (then it buffers the message beyond
// the bound rather than lose it). While it waits, the topic's later
// messages wait behind it, as order requires, and it holds one of the
// dispatcher's workers; other topics go on, on the other workers. A
// consumer that stops reading for good stalls its topic until its
// subscription ends, and as many stalled topics as workers stall them
// all: give a consumer that may stop a ctx, or a buffer that fits its
// bursts. No message is dropped for a slow consumer. With a caller's
// dispatcher driven by Tick or Drain, that wait happens on the caller's
// goroutine: read the subscriptions from other goroutines, or keep what
// one Drain delivers within their buffers.
//
// # Features claimed in watermill's test suite
//
// The tests run tests.TestPubSub with these tests.Features, and every
// test they enable passes under -race (TestReconnect needs a broker to
// restart; the two tests the suite skips for exactly-once backends are run
// on their own, reading with deduplication):
//
//   - ExactlyOnceDelivery: within a subscription each message arrives
//     once, and again only after the consumer Nacks it. Nothing in the Bus
//     retries on its own: the ringbus handler never fails, and a message is
//     sent to a consumer again only on Nack. The one duplicate across
//     subscriptions: a consumer that acks a message after its subscription
//     ended acks too late; the message has gone back to the topic already
//     (a broker would redeliver after such a disconnect too).
//   - GuaranteedOrder: see Ordering; TestNoAck and TestPublishSubscribeInOrder
//     check it.
//   - Persistent: messages outlive the client that published or received
//     them; every client of one Bus sees them (see Persistence). The suite
//     makes its "instances" as clients of one Bus.
//   - RequireSingleInstance: each subscription receives every message of
//     its topic; there are no consumer groups, so clients do not share out
//     a topic's messages among themselves.
//
// Not claimed: ConsumerGroups; NewSubscriberReceivesOldMessages (consumed
// messages are not kept); ContextPreserved (a delivered message's Context
// is the subscriber's, as with gochannel by default).
//
// # What the ringbus core does not give, and what the adapter does
//
//   - Acknowledgement: a ringbus handler's result is final (an error means
//     retry after backoff, then dead letter); watermill's consumer decides
//     later, over a channel. The adapter's handler only appends to
//     subscriptions' buffers; each subscription's goroutine waits for the
//     consumer's Ack or Nack, and resends on Nack (see Completion).
//   - Delivery to later subscribers: ringbus delivers to the handlers
//     subscribed when an event is processed and keeps nothing. The adapter
//     has one ringbus subscription (TopicPrefix + ".>") for all topics and
//     decides itself, under the topic's lock, between the live
//     subscriptions and the topic's keep.
//   - Per-message copies and contexts: ringbus hands every handler the
//     same payload. The Envelope is a read-only snapshot; each delivery
//     builds a new message.Message.
//   - Consumer-paced delivery without blocking workers: a ringbus handler
//     that waited for a consumer would hold a worker per slow consumer, and
//     could starve every topic. The per-subscription buffer keeps workers
//     free unless a buffer is full (see Slow consumers).
//   - Arbitrary topic names: see Topics.
//   - Subscriptions that end with a ctx: ringbus subscriptions have none;
//     the subscription's goroutine watches it.
//   - With a caller's dispatcher, Close unsubscribes, and ringbus's
//     Unsubscribe does not wait for a handler call in progress: the
//     handler treats an ended subscription as one that gave the message
//     back. Events still queued for the prefix are then dropped by the
//     dispatcher, which no longer matches them. The Bus also relies on the
//     dispatcher delivering what it accepted: under DropOldest an evicted
//     message is lost and still counts against BacklogLimit; use Block
//     (the default), Reject or DropNewest, whose refusals Publish returns.
package watermillbus
