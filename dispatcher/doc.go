// Package dispatcher is ringbus's in-process event dispatcher: producers
// emit events and return at once, a bounded ring buffer holds them, and
// the handlers subscribed to each event's topic run later, either on a pool
// of worker goroutines (Run) or step by step on the caller's goroutine
// (Tick and Drain), deterministically, for tests.
//
//	d, _ := dispatcher.New()
//	d.On("run.finished", dispatcher.Handle(func(ctx context.Context, r Run) error {
//		return audit(ctx, r)
//	}))
//	d.Emit(ctx, "run.finished", Run{Tenant: "t1", Rows: 3}) // queued; nothing ran
//	d.Drain(ctx, 0)                                        // audit ran
//
// # Topics and patterns
//
// A topic is a dot-separated list of tokens, such as "run.finished", at
// most 255 bytes. A token is one or more ASCII letters, digits, '_' or '-'
// (the characters NATS recommends for subjects): "order placed",
// "order/placed", "a,b" and "ünï.code" are bad topics, refused with
// ErrBadTopic rather than taken literally. A subscription's pattern
// matches topics exactly, or with wildcard tokens: "*" matches exactly one token ("run.*" matches
// "run.finished") and ">", as the last token, one or more ("run.>" matches
// "run.a.b" but not "run"). A wildcard is a whole token: "a*b" is a bad
// pattern, and so is "order.#" ('#' is AMQP's and MQTT's wildcard, not
// ours). Emitted topics have no wildcard. Bad topics and patterns get
// ErrBadTopic. Matching costs a map lookup plus, when wildcard patterns
// exist, a walk of a token trie: never a scan of the subscriptions.
//
// # Payloads: values or pointers
//
// An event's Payload is whatever Emit was given; Handle[T] and
// HandleEvent[T] hand it to the handler as a T. Pick, per topic, a value
// type or a pointer type, and use that same type in Emit and in Handle:
//
//   - A value (Emit(ctx, "order.placed", Order{...}), Handle[Order]) is
//     copied when it is emitted, and each handler gets its own copy: the
//     emitter may reuse its variable at once, and a handler that changes
//     its copy changes nothing the others see. What the value's fields
//     point to (slices, maps, pointers) is still shared. Values are the
//     safe default, and what the examples use.
//   - A pointer (Emit(ctx, "order.placed", &Order{...}), Handle[*Order])
//     is shared by the emitter and every handler. Under Run they may use
//     it at the same time (a retry runs on another worker than the next
//     subscriber's call, and events that carry the same pointer run on
//     several workers), so none may change it without synchronizing:
//     treat it as read-only once emitted. It saves copying a large
//     payload.
//
// A mismatch, such as Handle[Order] given a *Order, is a programming
// error: the call fails at once, without retry, with an error wrapping
// ErrPayloadType that names both types and says which change fixes it;
// the pair becomes a dead letter and the other subscribers still get the
// event. A nil payload is the zero value of a pointer, interface, map,
// slice, channel or function T, and a mismatch for any other T.
//
// # Delivery guarantees
//
// Delivery is at-most-once: the queue lives in memory, so the events it
// holds are lost if the process dies. Within the process nothing is lost
// silently: an event the queue accepted (Emit returned nil) is delivered
// to every subscriber its topic matched when it was processed, or becomes a
// dead letter for the subscribers that kept failing, or is counted in
// Stats.Dropped (by DropOldest, Close, a Shutdown whose ctx ended, the
// dead-letter bound, or an Unsubscribe with retries pending). An event the
// queue did not accept makes Emit return an error.
//
// To learn when one event is finished, emit it with EmitEvent and the
// OnDone option: its function runs exactly once, after every subscriber
// matched has delivered the event or dead-lettered it (retries included),
// with nil, the dead letters' errors joined, or an error wrapping
// ErrDropped. It is what a bridge from a durable queue acknowledges with,
// for at-least-once delivery end to end.
//
// To wait until everything emitted so far is finished without stopping,
// call Flush: it returns once every event accepted before the call has
// been delivered, dead-lettered or dropped, retries and delayed events
// included. Under Run it waits for the workers; without Run it processes
// on the caller's goroutine. Events emitted meanwhile are processed but
// not waited for, and many concurrent Flush calls share one wait.
//
// # Delayed events
//
// EmitEvent with After(d) or At(t) accepts an event now (its ID and the
// Emitted count are given then) and processes it no earlier than its due
// time, by the time package's clock, so tests drive it with
// testing/synctest. Delayed events wait with the retries, in one queue
// ordered by due time under one timer: they cost memory in proportion to
// their number, no goroutine or timer each, and nothing when no event is
// delayed. They are bounded by the capacity (the overflow policy applies
// when it is reached) and counted by Stats.Scheduled. Tick and Drain take
// in the ones that are due; under Run a keyed delayed event takes its
// place in its key's order when it comes due. Shutdown waits for them
// within its ctx; Close drops them.
//
// # Ordering
//
// Without Run, the queue is one FIFO: Tick and Drain process events in emit
// order, and for each event the handlers run in subscription order, one
// after the other. Event IDs are 1, 2, 3, ... in emit order.
//
// Under Run, events with the same non-empty Key (EmitEvent) reach each
// subscriber in emit order and one at a time: the worker that takes a
// keyed event owns its key while it processes it, and events of the key
// that other workers take meanwhile wait in the key's backlog. A batch
// runs its own events of a key in rounds, one event of each key per round,
// and when the owner is done with a key, up to 8 of its next events join
// the end of the owner's batch, so a worker goes round the keys it holds
// instead of running all of a busy key's events before the other keys'
// (a batch that grows long hands its keys on to the other workers
// instead). Events without a
// key are spread over all workers, concurrently and in any order. For each
// event, the handlers still run one after the other, in subscription order.
//
// Workers take events in batches: each takes an even share of the events
// ready at that moment (with two workers and ten events, five), at most
// 128, and runs them in order. So a slow handler delays the rest of its
// worker's batch, while events queued after the batch was taken go to the
// other workers.
//
// Key backlogs hold at most WithCapacity events together. When they are
// full (one key receives events much faster than its handlers finish
// them), workers stop taking new events from the queue until the backlogs
// shrink: memory stays bounded, and the queue, then the emitters (by the
// overflow policy), feel the pressure. Until then, other keys flow.
//
// Retries reorder: a failed call is retried after its backoff, and the
// events of the same key emitted after it do not wait for the retry. So
// with a retry budget, a subscriber may see key k's event 2 before the
// successful retry of event 1. The retry itself still runs one at a time
// with the key's other events. Applications that need strict per-key order
// through failures use no retries (the default) and order their own
// recovery from the dead letters.
//
// # Overflow policies
//
// The queue holds WithCapacity events (default 1024, rounded up to a power
// of two). When it is full, Emit follows WithOverflow:
//
//   - Block (default): wait for room until the emitter's ctx ends (then
//     return ctx.Err()) or the dispatcher closes (ErrClosed). Blocked
//     emitters are served first come, first served: an emitter that finds
//     others waiting queues behind them, unless the free room exceeds
//     their number (then its slot is not one they need). They sleep,
//     without polling, until there is room for them. Under Run, workers wake them once they
//     have emptied the queue to half its capacity, so that each wake-up is
//     followed by many emits; if the workers stop taking before that (all
//     of them busy in long handlers), the emitters are given the room
//     there is about a millisecond after the last take.
//   - Reject: return ErrFull at once.
//   - DropNewest: discard the new event, count it, return ErrDropped.
//   - DropOldest: evict the oldest queued event, count it, accept the new
//     one.
//
// Retries waiting for their backoff and redeliveries have their own bound
// of the same size; a failure whose retry finds it full becomes a dead
// letter at once.
//
// # Emitting from a handler
//
// A handler may call Emit with the ctx it was given. Under Block, an emit
// from a handler never waits for room: every worker could be inside a
// handler, waiting for itself. It returns an error wrapping ErrFull
// instead, and the handler decides: return it (the event's retry budget
// then paces the cascade) or drop the follow-up knowingly. Emits that find
// room behave as any other. During Shutdown, emits from handlers are still
// accepted, so cascades complete.
//
// # Panics and dead letters
//
// Every handler call is isolated: an error or a panic fails only that
// (event, subscriber) pair. A panic becomes a *PanicError with the value
// and the stack (Unwrap returns the value when it is an error). The other
// subscribers still get the event, and the worker or the Drain goes on.
// A failed pair is retried, for that subscriber only, up to the
// WithRetry budget (default: 1 attempt, no retry), each call waiting
// backoff(attempt) after the previous one; then it becomes a DeadLetter
// with the event, the subscriber's name, the last error and the attempt
// count. Dead letters are kept up to WithDeadLetterLimit (default 1024),
// oldest evicted first and counted as dropped. Redeliver queues them again
// for their own subscribers with a fresh budget.
//
// The backoff is any func(attempt int) time.Duration; ConstantBackoff,
// ExponentialBackoff and WithJitter make the usual ones. A handler returns
// Permanent(err) for a failure that no retry can fix (a malformed event):
// the pair becomes a dead letter at its first failure, whatever the
// budget, and errors.Is and errors.As still reach err. ErrPayloadType
// failures are permanent too. WithTimeout(d) gives each call a ctx with a
// deadline d after the call starts; a call that returns an error after it
// is a failure like any other, retried within the budget, and a handler
// that ignores its ctx is not stopped. WithMiddleware wraps handlers (the
// first given outermost) to log, measure or trace every call, retries
// included (the Event's Attempt says which): what the middleware returns is
// the call's outcome.
//
// WithRetry, WithTimeout and WithMiddleware given to New set every
// subscription's default; given to On, they set that subscription's own:
// On's WithRetry and WithTimeout replace New's, and On's middleware runs
// inside New's.
//
// A handler that calls runtime.Goexit (t.FailNow and t.Fatal do) ends the
// goroutine running it; the dispatcher cannot prevent that, but it records
// the call as failed with ErrGoexit, queues the event for the subscribers
// after it, keeps the rest of the batch queued, and under Run starts a new
// worker in place of the old. In a Drain on a test's goroutine, the test
// ends there; a later Drain processes what is left.
//
// # Lifecycle
//
// New starts nothing. Run starts WithWorkers goroutines (default
// GOMAXPROCS) in an errgroup and blocks until the dispatcher stops:
//
//   - Shutdown(ctx) is graceful: outside emits get ErrClosed, everything
//     queued, everything handlers emit meanwhile and every pending retry
//     and delayed event is processed, then Run returns nil. Without Run, Shutdown drains on the
//     caller's goroutine.
//   - Close is immediate: emits get ErrClosed, in-flight handler calls
//     finish (their ctx is cancelled), what is still queued is dropped,
//     counted, and reported by Close's error (ErrDropped). A handler may
//     call Close.
//   - Cancelling Run's ctx stops the workers after their in-flight calls
//     (their ctx is cancelled); queued events stay, for a later Run, Tick
//     or Drain. A call that returns an error after that cancellation is
//     not a failure: its (event, subscriber) pair stays queued, in order,
//     and its handler may see the event again.
//
// Shutdown and Close are safe to call more than once and concurrently.
// When Run, Shutdown or Close returns, no goroutine of the dispatcher is
// left, with two exceptions that cannot be otherwise: a Close called by a
// handler under Run returns while that handler's worker is still in the
// handler (the worker exits when the handler returns, and Run returns
// then), and a Shutdown whose ctx ended returns at once, even while a
// handler that ignores its cancelled ctx is still running (Run returns
// when it does). Idle workers park; an emit wakes one only when one is
// parked.
//
// A nil ctx is a programming error: Emit, EmitEvent, Tick, Drain, Run,
// Shutdown, Flush and Redeliver panic with a message that says so, before they
// change anything.
//
// # Running in a service
//
// A service runs the worker pool for its whole life and stops it
// gracefully on SIGTERM, giving the queue a bounded time to drain:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	d, err := dispatcher.New(dispatcher.WithRetry(5, dispatcher.ExponentialBackoff(time.Second, time.Minute).WithJitter(0.2)))
//	...
//	runErr := make(chan error, 1)
//	go func() { runErr <- d.Run(context.WithoutCancel(ctx)) }()
//
//	// ... serve: request handlers call d.Emit(r.Context(), ...) ...
//
//	<-ctx.Done() // SIGTERM
//	stop()       // a second signal kills the process at once
//	// Stop the producers first (http.Server.Shutdown, say): once
//	// Shutdown begins, their emits get ErrClosed.
//	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	if err := d.Shutdown(sctx); err != nil {
//		log.Printf("dispatcher: %v; %d events dropped", err, d.Stats().Dropped)
//	}
//	if err := <-runErr; err != nil { // nil after Shutdown
//		log.Print(err)
//	}
//
// Run gets context.WithoutCancel(ctx): the ctx's values (a logger, say)
// reach the handlers, but not its cancellation. Were Run's ctx the
// signal's, SIGTERM would cancel the in-flight calls' ctx and stop the
// workers with the queue still full, and the process would exit with
// those events unhandled. This way the signal reaches the dispatcher only
// through Shutdown, which processes everything queued, everything the
// handlers emit meanwhile and every pending retry, while in-flight calls
// finish with their ctx intact (WithTimeout still bounds each call).
//
// If Shutdown's deadline passes first, the rest goes as with Close: the
// in-flight calls' ctx is cancelled, what is still queued or waiting for
// a retry is dropped and counted in Stats.Dropped (OnDone reports
// ErrDropped), a call that returns an error after that cancellation is
// dropped and counted too, not retried or dead-lettered, and Shutdown
// returns its ctx's error at once. A handler that ignores its ctx keeps
// its worker until it returns, and Run returns only then: a process that
// cannot wait for it exits without waiting for Run.
//
// Handlers get the ctx of Run (of Tick or Drain, or of Shutdown without
// Run), never the ctx of the Emit that queued the event: the values and
// the cancellation of the emitter's ctx do not cross the queue. A request
// that ends, or is cancelled, after it emitted does not cancel the
// handling of its events; what a handler needs from the request (a trace
// ID, a tenant) travels in the payload, or is carried by WithPropagator
// (see "Observing"). Example_service shows the recipe end to end.
//
// # Observing
//
// Stats counts for the whole dispatcher, (*Subscription).Stats for one
// subscription: delivered, failed, retried and dead-lettered, the same
// counters split by subscriber. They cost a consumer one atomic add per
// batch per subscriber; nothing else below is paid unless configured.
//
// WithLogger logs through log/slog what an operator must see: the
// lifecycle at Info, each dead letter and each dropped event at Warn with
// the event's topic, key, ID, subscriber, attempt and error, and retried
// failures at Debug; never a delivered event. WithObserver installs
// functions called on the goroutine that saw a failure, a dead letter or a
// drop, and one that wraps each subscription's handler knowing its name,
// for spans and timings: the otelbus module builds OpenTelemetry metrics
// and traces on it. WithHandlerTiming keeps a histogram of handler call
// durations per subscription (two clock reads per call).
//
// WithPropagator carries chosen values (a span context, a request ID) of
// the emitter's ctx to the ctx of the event's handler calls, retries and
// redeliveries included, without keeping the emitter's ctx or its
// cancellation: a Propagator extracts a small value at Emit and injects it
// before each call.
//
// # Testing with Tick and Drain
//
// Without Run, no goroutine exists: Emit only queues, and the test drives
// processing with Tick (one round: what was queued when it began) or Drain
// (until the queue is empty or a limit). Both return how many events they
// processed and the handler failures they dead-lettered, joined. Retry
// backoff uses the time package, so under testing/synctest the test
// advances the fake clock with time.Sleep and drains again, without real
// waiting:
//
//	synctest.Test(t, func(t *testing.T) {
//		d, _ := dispatcher.New(dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Second)))
//		...
//		d.Drain(ctx, 0)         // first call fails
//		time.Sleep(time.Second) // fake clock: returns at once
//		d.Drain(ctx, 0)         // the retry runs
//	})
//
// A jittered backoff (WithJitter) is random, so a test checks its bounds:
// advance the clock to just before the shortest possible delay and see a
// Drain run no retry, then to the longest and see it run the retry.
package dispatcher
