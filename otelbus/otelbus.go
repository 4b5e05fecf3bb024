package otelbus

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/ringbus/ringbus/dispatcher"
)

// ScopeName is the instrumentation scope of otelbus's meter and tracer.
const ScopeName = "github.com/ringbus/ringbus/otelbus"

// An Option configures New.
type Option func(*config)

type config struct {
	mp      metric.MeterProvider
	tp      trace.TracerProvider
	attrs   []attribute.KeyValue
	buckets []float64
}

// WithMeterProvider sets where the metrics go. Default: otel's global
// meter provider (otel.GetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider sets where the spans go. Default: otel's global
// tracer provider (otel.GetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithAttributes adds attrs to every measurement and span: to tell
// dispatchers apart (attribute.String("bus", "orders")). Default: none.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, attrs...) }
}

// WithDurationBuckets sets the bucket boundaries, in seconds, of the
// handler duration histogram. Default: DefaultDurationBuckets.
func WithDurationBuckets(bounds ...float64) Option {
	return func(c *config) { c.buckets = bounds }
}

// DefaultDurationBuckets are the default boundaries, in seconds, of
// ringbus.handler.duration: from 100µs, where in-process handlers live, to
// 10s.
var DefaultDurationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Instrumentation makes a dispatcher's metrics and spans. Make one with
// New, give its Options to dispatcher.New, then call Observe with the
// dispatcher. It is safe for concurrent use.
type Instrumentation struct {
	meter    metric.Meter
	tracer   trace.Tracer
	duration metric.Float64Histogram
	dropped  metric.Int64Counter
	attrs    attribute.Set // the configured attributes
	// dropOpts[r] is ringbus.dropped's attribute option for DropReason r,
	// made once in New: a drop, which comes in bursts when the dispatcher
	// is overloaded, builds no attribute set.
	dropOpts [dropReasons]metric.AddOption
}

// dropReasons is one more than the largest dispatcher.DropReason.
const dropReasons = int(dispatcher.DroppedDeadLetterLimit) + 1

// New makes the instruments. It fails only when the meter provider
// refuses one.
func New(opts ...Option) (*Instrumentation, error) {
	cfg := config{buckets: DefaultDurationBuckets}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	in := &Instrumentation{
		meter:  cfg.mp.Meter(ScopeName),
		tracer: cfg.tp.Tracer(ScopeName),
		attrs:  attribute.NewSet(cfg.attrs...),
	}
	var err, e error
	in.duration, e = in.meter.Float64Histogram("ringbus.handler.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of handler calls, failed ones included."),
		metric.WithExplicitBucketBoundaries(cfg.buckets...))
	err = errors.Join(err, e)
	in.dropped, e = in.meter.Int64Counter("ringbus.dropped",
		metric.WithUnit("{event}"),
		metric.WithDescription("Events (or one subscriber's share of one) the dispatcher discarded, by reason."))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	for r := range in.dropOpts {
		in.dropOpts[r] = in.dropOpt(dispatcher.DropReason(r))
	}
	return in, nil
}

// dropOpt returns ringbus.dropped's attribute option for reason r.
func (in *Instrumentation) dropOpt(r dispatcher.DropReason) metric.AddOption {
	return metric.WithAttributeSet(in.withAttrs(attribute.String("ringbus.reason", r.String())))
}

// Options returns the dispatcher options that install the instrumentation:
// an Observer (drops, and a span and a duration per handler call) and
// Propagator. Give them to dispatcher.New.
func (in *Instrumentation) Options() []dispatcher.Option {
	return []dispatcher.Option{
		dispatcher.WithObserver(dispatcher.Observer{
			Dropped:     in.observeDrop,
			WrapHandler: in.wrap,
		}),
		dispatcher.WithPropagator(Propagator{}),
	}
}

// Observe registers the instruments that read d.Stats() at each
// collection: the counters and gauges of the package doc. Unregister the
// registration when d is gone.
func (in *Instrumentation) Observe(d *dispatcher.Dispatcher) (metric.Registration, error) {
	type read func(st *dispatcher.Stats) int64
	specs := []struct {
		name, unit, desc string
		gauge            bool
		read             read
	}{
		{"ringbus.emitted", "{event}", "Events accepted into the queue.", false,
			func(st *dispatcher.Stats) int64 { return int64(st.Emitted) }},
		{"ringbus.delivered", "{call}", "Handler calls that returned nil.", false,
			func(st *dispatcher.Stats) int64 { return int64(st.Delivered) }},
		{"ringbus.failed", "{call}", "Handler calls that returned an error or panicked.", false,
			func(st *dispatcher.Stats) int64 { return int64(st.Failed) }},
		{"ringbus.retried", "{call}", "Retry calls made.", false,
			func(st *dispatcher.Stats) int64 { return int64(st.Retried) }},
		{"ringbus.dead_lettered", "{event}", "(event, subscriber) pairs that became dead letters.", false,
			func(st *dispatcher.Stats) int64 { return int64(st.DeadLettered) }},
		{"ringbus.queued", "{event}", "Events waiting to be processed.", true,
			func(st *dispatcher.Stats) int64 { return int64(st.Queued) }},
		{"ringbus.retrying", "{event}", "Retries and redeliveries waiting, due or not.", true,
			func(st *dispatcher.Stats) int64 { return int64(st.Retrying) }},
		{"ringbus.scheduled", "{event}", "Delayed events (After, At) not yet due.", true,
			func(st *dispatcher.Stats) int64 { return int64(st.Scheduled) }},
		{"ringbus.dead_letters", "{event}", "Dead letters kept.", true,
			func(st *dispatcher.Stats) int64 { return int64(st.DeadLetters) }},
	}
	insts := make([]metric.Int64Observable, len(specs))
	observables := make([]metric.Observable, len(specs))
	for i, sp := range specs {
		var err error
		if sp.gauge {
			insts[i], err = in.meter.Int64ObservableGauge(sp.name, metric.WithUnit(sp.unit), metric.WithDescription(sp.desc))
		} else {
			insts[i], err = in.meter.Int64ObservableCounter(sp.name, metric.WithUnit(sp.unit), metric.WithDescription(sp.desc))
		}
		if err != nil {
			return nil, err
		}
		observables[i] = insts[i]
	}
	set := metric.WithAttributeSet(in.attrs)
	return in.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := d.Stats()
		for i, inst := range insts {
			o.ObserveInt64(inst, specs[i].read(&st), set)
		}
		return nil
	}, observables...)
}

// observeDrop counts one drop by reason.
func (in *Instrumentation) observeDrop(ctx context.Context, dr dispatcher.Drop) {
	if r := int(dr.Reason); r >= 0 && r < dropReasons {
		in.dropped.Add(ctx, 1, in.dropOpts[r])
		return
	}
	in.dropped.Add(ctx, 1, in.dropOpt(dr.Reason)) // a reason newer than this package
}

// withAttrs returns the configured attributes plus kvs.
func (in *Instrumentation) withAttrs(kvs ...attribute.KeyValue) attribute.Set {
	return attribute.NewSet(append(in.attrs.ToSlice(), kvs...)...)
}

// wrap is the Observer's WrapHandler: a span and a duration per call of
// subscriber's handler. The attribute sets are made once, here.
func (in *Instrumentation) wrap(subscriber string, h dispatcher.Handler) dispatcher.Handler {
	sub := attribute.String("ringbus.subscriber", subscriber)
	delivered := []metric.RecordOption{metric.WithAttributeSet(in.withAttrs(sub, attribute.String("ringbus.outcome", "delivered")))}
	failed := []metric.RecordOption{metric.WithAttributeSet(in.withAttrs(sub, attribute.String("ringbus.outcome", "failed")))}
	spanAttrs := append(in.attrs.ToSlice(),
		attribute.String("messaging.system", "ringbus"),
		attribute.String("messaging.operation.type", "process"),
		sub)
	return func(ctx context.Context, e dispatcher.Event) (err error) {
		start := time.Now()
		ctx, span := in.tracer.Start(ctx, "process "+e.Topic, trace.WithSpanKind(trace.SpanKindConsumer))
		if span.IsRecording() {
			// Only for a span that is kept: with the no-op provider or
			// a sampler that drops it, a call builds no attributes.
			attrs := append(spanAttrs[:len(spanAttrs):len(spanAttrs)],
				attribute.String("messaging.destination.name", e.Topic),
				attribute.String("messaging.message.id", strconv.FormatUint(e.ID, 10)),
				attribute.Int("ringbus.attempt", e.Attempt))
			if e.Key != "" {
				attrs = append(attrs, attribute.String("ringbus.key", e.Key))
			}
			span.SetAttributes(attrs...)
		}
		returned := false
		defer func() {
			// On a panic (or runtime.Goexit) the dispatcher recovers
			// above us: end the span without recovering, so that the
			// panic's stack stays the handler's.
			if !returned {
				span.SetStatus(codes.Error, "handler panicked or called runtime.Goexit")
				span.End()
				in.duration.Record(ctx, time.Since(start).Seconds(), failed...)
			}
		}()
		err = h(ctx, e)
		returned = true
		outcome := delivered
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			outcome = failed
		}
		span.End()
		in.duration.Record(ctx, time.Since(start).Seconds(), outcome...)
		return err
	}
}

// Propagator is a dispatcher.Propagator for OpenTelemetry: it carries the
// emitter's span context and baggage to the handlers' ctx, where the span
// context becomes the parent of the handler's span. An emit whose ctx has
// neither carries nothing and costs nothing more. Instrumentation.Options
// includes it.
type Propagator struct{}

// carried is what Propagator carries for an event.
type carried struct {
	sc  trace.SpanContext
	bag baggage.Baggage
}

// Extract returns the span context and baggage of ctx, or nil if it has
// neither.
func (Propagator) Extract(ctx context.Context) any {
	sc := trace.SpanContextFromContext(ctx)
	bag := baggage.FromContext(ctx)
	if !sc.IsValid() && bag.Len() == 0 {
		return nil
	}
	return &carried{sc: sc, bag: bag}
}

// Inject returns ctx with what Extract returned: the span context as the
// current (non-recording) span, so that a span started from ctx is its
// child, and the baggage.
func (Propagator) Inject(ctx context.Context, v any) context.Context {
	c, ok := v.(*carried)
	if !ok {
		return ctx
	}
	if c.sc.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, c.sc)
	}
	if c.bag.Len() > 0 {
		ctx = baggage.ContextWithBaggage(ctx, c.bag)
	}
	return ctx
}
