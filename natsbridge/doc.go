// Package natsbridge carries ringbus events through NATS JetStream: a
// durable stream between processes, or a durable queue in front of one
// process's dispatcher. The server is embedded in the process by default
// (StartEmbedded: nats-server as a library, on a directory, with no
// listening port unless asked) or is any external NATS server or cluster
// (nats.Connect); the bridge's API is the same either way.
//
//	srv, _ := natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{Dir: "/var/lib/app/nats"})
//	defer srv.Close()
//	b, _ := natsbridge.New(ctx, srv.Conn(), natsbridge.Config{})
//	b.Consume(ctx, d, natsbridge.ConsumerConfig{
//		Durable: "billing",
//		Bind:    []natsbridge.Binding{natsbridge.Bind[Order]("orders.>")},
//	})
//	b.Publish(ctx, dispatcher.Event{Topic: "orders.placed", Key: "o-1", Payload: Order{...}})
//
// # Subjects and messages
//
// The event on topic "orders.placed" is the message on subject
// "<Prefix>.orders.placed" (Prefix defaults to "ringbus") in one stream
// (Config.Stream) that holds "<Prefix>.>". ringbus topics and NATS
// subjects share their syntax, dot-separated tokens with "*" and ">"
// wildcards, so consumer topics are NATS filter subjects as they are.
// The payload goes through Config.Codec (JSON by default); the event's Key
// travels in the Ringbus-Key header, the codec's name in Content-Type, and
// every message has a unique Nats-Msg-Id (MsgID sets one), so the stream
// stores a publish that is repeated within its Duplicates window once.
// Topics whose first token is "dlq" are reserved for dead letters, and
// those whose first token is "_sched" for the schedules of delayed
// events.
//
// # Publishing
//
// Publish returns once the stream acknowledged the event: from then on it
// survives the death of the process (see Durability for a machine crash).
// An attempt that times out or finds no stream leader is repeated, with
// the same message id, until ctx ends. PublishAsync does not wait: it
// returns an AsyncAck, and at most Config.MaxPending of them are
// outstanding (a further call waits for room until its ctx ends).
//
// Forward subscribes a local dispatcher's pattern to a handler that
// publishes each event: events emitted with Emit reach the stream without
// changing the emitters. Its guarantee is weaker than Publish's: between
// Emit and the stream's acknowledgement the event lives only in the
// dispatcher's memory, and is lost if the process dies then. Use Publish
// where an event must not be lost once the call returned.
//
// # Consuming
//
// Consume feeds a durable pull consumer into a local dispatcher with
// EmitEvent and OnDone. A message is acknowledged only when OnDone reports
// that every subscriber the dispatcher matched handled the event
// (dispatcher retries included). When one dead-lettered it, or the event
// was dropped, the message is negatively acknowledged and redelivered
// after ConsumerConfig.Backoff; after MaxDeliver deliveries it becomes a
// dead letter of the stream: it is published to "<Prefix>.dlq.<consumer>"
// with the failure in the Ringbus-Error header (and the original topic,
// delivery count and stream sequence in others), then terminated. A
// payload that does not decode into its bound type is dead-lettered at
// once. A consumer that lists a "dlq..." topic receives dead letters as
// DeadLetter payloads, to inspect or republish them.
//
// Flow control: a consumer never holds more than MaxInFlight messages
// that it took from the stream and has not settled, counting those a pull
// request may still bring; set MaxInFlight to at most the dispatcher's
// WithCapacity and every message it takes fits in the dispatcher's queue.
// The stream keeps the rest. While an event is being handled the consumer
// tells the stream so every AckWait/2, so a slow handler does not cause a
// redelivery.
//
// Typed handlers need no decoding: ConsumerConfig.Bind ties topic patterns
// to payload types (Bind[Order]("orders.>")), the consumer decodes each
// message once into that type, and the local handlers are the same
// dispatcher.Handle[Order] that take locally emitted events. An event
// whose topic no binding matches carries a Raw payload.
//
// # Ordering
//
// Within one consuming process, events with the same Key reach each
// subscriber in the order the stream stored them, one at a time: the
// consumer receives the stream in order and emits in that order, and the
// dispatcher keeps per-key order under Run. Publishes of one key are
// stored in the order their Publish calls returned (for PublishAsync, the
// order of the calls). A failure reorders, as retries do in the
// dispatcher: the failed event is redelivered after its backoff, and the
// key's later events do not wait for it.
//
// With several processes on one durable consumer, the stream hands each
// message to whichever process asks first: two events of one key may be
// handled at the same time in two processes, and in either order. Where
// per-key order matters across processes, give each process its own
// subset of the keys in the topic (for example "orders.<shard>.placed",
// one consumer per shard, each consumed by one process at a time), or
// consume with a single process.
//
// # Delivery guarantees
//
// Delivery is at-least-once end to end: an event whose Publish returned
// nil is handled by every subscriber of each consuming dispatcher, or
// becomes a dead letter of the stream. It may be handled more than once:
// when a process dies (or is stopped past its deadline) after its handlers
// ran and before the acknowledgement reached the server, when an
// acknowledgement is lost, when a delivery outlives AckWait without an
// in-progress signal, and when a publish is repeated after the stream's
// Duplicates window. Handlers that must not repeat a side effect make it
// idempotent. A Window given to ConsumerConfig.Dedupe skips messages whose
// id the consumer settled successfully among the last n, which removes
// the duplicates a process itself would see (a lost ack, a redelivery
// after a slow delivery), not those another process or an earlier run of
// this one handled.
//
// # Durability
//
// The embedded server (a single server, on its file store) writes a
// message to its store files before it acknowledges the publish: what
// was acknowledged survives the death of the process, kill -9 included
// (TestCrashKill9 kills a producing and consuming process repeatedly and
// checks it). A consumer's position is written shortly after the server
// processed the acknowledgements, so a process that dies in between
// gets some acknowledged messages again after its restart: duplicates,
// never a loss. By default the server does not fsync each write: it syncs
// its store every SyncInterval (nats-server's default, two minutes), so a
// machine crash (power loss, kernel panic) may lose what was acknowledged
// since the last sync. To be stricter, set EmbeddedConfig.SyncAlways
// (fsync before every acknowledgement, at a large cost in throughput) or
// a shorter SyncInterval (a smaller window); or run a cluster with
// Config.Replicas 3, where an acknowledged message is on a majority of
// the servers and one machine's crash loses nothing acknowledged.
//
// # Shutdown order
//
// Stop the bridge first, then the dispatcher, then the server:
// Bridge.Close (or Consumer.Stop) stops fetching and waits until the
// events it handed to the dispatcher are finished and their
// acknowledgements reached the server, so the dispatcher must still run
// meanwhile; then dispatcher.Shutdown; then Embedded.Close, which shuts
// the server down and waits for all its goroutines. A close whose ctx
// ends first leaves the messages still in flight unacknowledged: the
// stream delivers them again after AckWait, to this process after a
// restart or to another one. Nothing is lost in either case.
//
// # Delayed events
//
// Publish with the After or At option stores a delayed event in the
// stream, as a message schedule of nats-server (v2.12 and later): it
// survives the death of the process from the stream's acknowledgement
// on, like any published event, and the server publishes the event to
// its subject when it is due.
//
//	b.Publish(ctx, dispatcher.Event{Topic: "reminders.send", Key: "u-7", Payload: r},
//		natsbridge.After(10*time.Minute))
//
// The schedule is a message on "<Prefix>._sched.<id>", one subject per
// event (the server keeps one schedule per subject), with the event's
// data and headers and the Nats-Schedule ("@at <time>") and
// Nats-Schedule-Target headers. When it is due the server stores the
// event on "<Prefix>.<Topic>" and purges the schedule. The server drops
// Nats-Msg-Id from the event it stores then, so the bridge carries the
// message id in HeaderMsgID too: consumers and their Dedupe Window see
// the same id as for an event published without a delay. Consumers never
// hand a schedule to their dispatcher: one whose patterns cover
// "_sched.<id>" (">" does) acknowledges it and skips it, and a consumer
// pattern beginning with "_sched" is refused.
//
// Granularity: whole seconds. The due time is rounded up to the next
// whole second, so an event never reaches a consumer before its due
// time; it comes later by that rounding, by the server's schedule timer,
// and by the time it takes to reach a consumer. A due time that has
// passed when Publish is called is no delay: the event is published as
// usual. After computes the due time on this process's clock and the
// server compares it with its own: an external server whose clock is
// behind delays the event by the difference, one that is ahead shortens
// the delay by it.
//
// Cost: a delayed event is two writes to the stream (the schedule, then
// the event) and a purge, instead of one write; each consumer whose
// patterns cover the schedule's subject receives and acknowledges it once
// more. Publish with a delay takes longer than without one (see
// BENCHMARKS.md, "Delayed publish"). Until it is due a
// schedule takes its place in the stream's limits (MaxMsgs, MaxBytes):
// a stream that discards old messages may discard a schedule before it
// fires. A delay that is not shorter than the stream's MaxAge is refused
// with ErrSchedule, as it would be discarded.
//
// The stream: New creates it with AllowMsgSchedules and AllowRollup (the
// server requires roll-ups for schedules and then allows purges), and
// turns them on in a stream that exists without them, which the server
// allows (it refuses only to turn schedules off again). A stream whose
// configuration has no AllowMsgSchedules after New (Config.Configure
// turned it off, or a server older than v2.12 that does not report it), or
// whose retention is not the limits policy (a consumer's acknowledgement
// of the schedule could then remove it before it fires), cannot delay:
// a delayed Publish returns an error wrapping ErrSchedule, and nothing is
// stored. The server refuses schedules together with DiscardNew,
// AllowMsgCounter, a mirror or sources: a Configure that sets one of
// those must turn AllowMsgSchedules off.
//
// Events emitted into a local dispatcher with its After and At options
// wait in that process's memory: Forward publishes them when they are
// due, and they are lost if the process dies before then. Publish with
// After or At where a delay must survive the process.
package natsbridge
