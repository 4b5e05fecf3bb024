// Package otelbus is OpenTelemetry for a ringbus dispatcher: metrics of
// what it does with events and a span per handler call, child of the span
// that was current where the event was emitted. It is a module of its own,
// so that users of the core never download OpenTelemetry.
//
//	tel, err := otelbus.New(otelbus.WithMeterProvider(mp), otelbus.WithTracerProvider(tp))
//	...
//	d, err := dispatcher.New(append(tel.Options(), dispatcher.WithRetry(3, backoff))...)
//	...
//	reg, err := tel.Observe(d) // the instruments that read d.Stats()
//	...
//	defer reg.Unregister()
//
// # Metrics
//
// Counters read from Stats when the meter provider collects, so they cost
// the dispatcher nothing per event: ringbus.emitted (events accepted),
// ringbus.delivered, ringbus.failed and ringbus.retried (handler calls),
// ringbus.dead_lettered (events). ringbus.dropped counts each discarded
// event as the dispatcher reports it, with the attribute ringbus.reason
// (newest, oldest, closed, unsubscribed, dead_letter_limit). Gauges, read
// from Stats too: ringbus.queued, ringbus.retrying, ringbus.scheduled,
// ringbus.dead_letters.
// The histogram ringbus.handler.duration (seconds) times every handler
// call, with the attributes ringbus.subscriber and ringbus.outcome
// ("delivered" or "failed"); its counts are the calls per subscriber.
// Through the Prometheus exporter the names become ringbus_emitted_total,
// ringbus_queued, ringbus_handler_duration_seconds and so on.
//
// One Instrumentation serves one dispatcher: give each dispatcher of a
// process its own, told apart by WithAttributes.
//
// # Traces
//
// Propagator carries the emitter's span context and baggage across the
// queue (see dispatcher.WithPropagator); each handler call gets a span of
// kind Consumer named "process <topic>", child of the emitter's span, with
// the messaging attributes (messaging.system "ringbus",
// messaging.destination.name the topic, messaging.message.id the event
// ID) and ringbus.subscriber, ringbus.attempt and ringbus.key. A call that
// fails records its error and sets the status to Error; a panic (or a
// runtime.Goexit) sets the status to Error with a message that says so.
// The attributes are set only on a span that is recorded. The handler's ctx holds its span, so the spans it
// starts, and the events it emits, are its children.
package otelbus
