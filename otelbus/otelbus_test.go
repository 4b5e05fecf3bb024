package otelbus_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/otelbus"
)

var errBoom = errors.New("boom")

// setup is a dispatcher instrumented into an in-memory metric reader and
// span recorder.
type setup struct {
	d      *dispatcher.Dispatcher
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
}

func newSetup(t *testing.T, opts ...dispatcher.Option) *setup {
	t.Helper()
	s := &setup{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = s.tp.Shutdown(context.Background())
	})
	tel, err := otelbus.New(otelbus.WithMeterProvider(mp), otelbus.WithTracerProvider(s.tp),
		otelbus.WithAttributes(attribute.String("bus", "test")))
	if err != nil {
		t.Fatalf("otelbus.New() error = %v", err)
	}
	s.d, err = dispatcher.New(append(tel.Options(), opts...)...)
	if err != nil {
		t.Fatalf("dispatcher.New() error = %v", err)
	}
	t.Cleanup(func() { _ = s.d.Close() })
	reg, err := tel.Observe(s.d)
	if err != nil {
		t.Fatalf("Observe() error = %v", err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })
	return s
}

func (s *setup) on(t *testing.T, pattern, name string, h dispatcher.Handler) {
	t.Helper()
	if _, err := s.d.On(pattern, h, dispatcher.WithName(name)); err != nil {
		t.Fatalf("On(%q) error = %v", pattern, err)
	}
}

// collect returns the metrics by name.
func (s *setup) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect() error = %v", err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelbus.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, otelbus.ScopeName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// int64Points returns the points of an int64 sum or gauge, by the value
// of attribute key ("" for the whole point set's single point).
func int64Points(t *testing.T, m metricdata.Metrics, key attribute.Key) map[string]int64 {
	t.Helper()
	var points []metricdata.DataPoint[int64]
	switch data := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !data.IsMonotonic || data.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s: monotonic %v, temporality %v; want a cumulative counter", m.Name, data.IsMonotonic, data.Temporality)
		}
		points = data.DataPoints
	case metricdata.Gauge[int64]:
		points = data.DataPoints
	default:
		t.Fatalf("%s: data %T, want an int64 sum or gauge", m.Name, m.Data)
	}
	out := map[string]int64{}
	for _, p := range points {
		if v, _ := p.Attributes.Value("bus"); v.AsString() != "test" {
			t.Errorf("%s: point without the WithAttributes attribute: %v", m.Name, p.Attributes.ToSlice())
		}
		k := ""
		if key != "" {
			v, _ := p.Attributes.Value(key)
			k = v.String()
		}
		out[k] = p.Value
	}
	return out
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, dispatcher.WithRetry(2, nil), dispatcher.WithCapacity(4), dispatcher.WithOverflow(dispatcher.DropNewest))
	s.on(t, "order.*", "billing", func(_ context.Context, e dispatcher.Event) error {
		if e.Topic == "order.bad" {
			return errBoom
		}
		return nil
	})
	s.on(t, "order.placed", "mailer", func(context.Context, dispatcher.Event) error { return nil })
	for _, topic := range []string{"order.placed", "order.placed", "order.bad"} {
		if err := s.d.Emit(ctx, topic, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.d.Drain(ctx, 0); err == nil {
		t.Fatal("Drain() = nil, want the dead letter's error")
	}
	// Four queued (the capacity), a fifth refused.
	for i := range 5 {
		err := s.d.Emit(ctx, "order.placed", nil)
		if i == 4 && !errors.Is(err, dispatcher.ErrDropped) {
			t.Fatalf("fifth Emit = %v, want ErrDropped", err)
		}
	}

	got := s.collect(t)
	for _, c := range []struct {
		name string
		want int64
	}{
		{"ringbus.emitted", 7},
		{"ringbus.delivered", 4}, // billing 2, mailer 2
		{"ringbus.failed", 2},
		{"ringbus.retried", 1},
		{"ringbus.dead_lettered", 1},
		{"ringbus.queued", 4},
		{"ringbus.retrying", 0},
		{"ringbus.scheduled", 0},
		{"ringbus.dead_letters", 1},
	} {
		m, ok := got[c.name]
		if !ok {
			t.Errorf("no metric %s", c.name)
			continue
		}
		if p := int64Points(t, m, ""); p[""] != c.want || len(p) != 1 {
			t.Errorf("%s = %v, want %d", c.name, p, c.want)
		}
	}
	if p := int64Points(t, got["ringbus.dropped"], "ringbus.reason"); !equalMaps(p, map[string]int64{"newest": 1}) {
		t.Errorf("ringbus.dropped = %v, want newest: 1", p)
	}

	h, ok := got["ringbus.handler.duration"].Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("ringbus.handler.duration: %T, want a float64 histogram", got["ringbus.handler.duration"].Data)
	}
	if unit := got["ringbus.handler.duration"].Unit; unit != "s" {
		t.Errorf("ringbus.handler.duration unit %q, want s", unit)
	}
	calls := map[string]uint64{}
	for _, p := range h.DataPoints {
		sub, _ := p.Attributes.Value("ringbus.subscriber")
		out, _ := p.Attributes.Value("ringbus.outcome")
		calls[sub.AsString()+"/"+out.AsString()] = p.Count
		if len(p.Bounds) != len(otelbus.DefaultDurationBuckets) {
			t.Errorf("histogram bounds %v, want DefaultDurationBuckets", p.Bounds)
		}
	}
	want := map[string]uint64{"billing/delivered": 2, "billing/failed": 2, "mailer/delivered": 2}
	if !equalMaps(calls, want) {
		t.Errorf("handler.duration counts = %v, want %v", calls, want)
	}
}

func equalMaps[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func attrOf(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func TestSpans(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, dispatcher.WithRetry(2, nil))
	var handlerBag []string
	s.on(t, "order.*", "billing", func(ctx context.Context, e dispatcher.Event) error {
		handlerBag = append(handlerBag, baggage.FromContext(ctx).Member("tenant").Value())
		switch e.Topic {
		case "order.placed":
			return s.d.Emit(ctx, "order.billed", nil) // a child of this call's span
		case "order.flaky":
			if e.Attempt == 1 {
				return errBoom
			}
		case "order.panic":
			panic("kaput")
		}
		return nil
	})
	member, _ := baggage.NewMember("tenant", "t1")
	bag, _ := baggage.New(member)
	rctx, request := s.tp.Tracer("test").Start(baggage.ContextWithBaggage(ctx, bag), "request")
	if err := s.d.EmitEvent(rctx, dispatcher.Event{Topic: "order.placed", Key: "o-1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.d.Emit(rctx, "order.flaky", nil); err != nil {
		t.Fatal(err)
	}
	request.End() // the request is over before its events are handled
	if err := s.d.Emit(ctx, "order.panic", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.d.Drain(ctx, 0); err == nil {
		t.Fatal("Drain() = nil, want the panic's dead letter")
	}

	spans := s.spans.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, sp := range spans {
		byName[sp.Name()] = append(byName[sp.Name()], sp)
	}
	req := byName["request"][0].SpanContext()
	placed := byName["process order.placed"]
	if len(placed) != 1 {
		t.Fatalf("spans %q: %d, want 1", "process order.placed", len(placed))
	}
	p := placed[0]
	if p.Parent().SpanID() != req.SpanID() || p.SpanContext().TraceID() != req.TraceID() {
		t.Errorf("handler span's parent %v, want the request's span %v", p.Parent(), req)
	}
	if p.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("handler span kind %v, want Consumer", p.SpanKind())
	}
	for key, want := range map[attribute.Key]string{
		"messaging.system":           "ringbus",
		"messaging.destination.name": "order.placed",
		"messaging.message.id":       "1",
		"ringbus.subscriber":         "billing",
		"ringbus.key":                "o-1",
		"bus":                        "test",
	} {
		if got := attrOf(p, key).String(); got != want {
			t.Errorf("handler span attribute %s = %q, want %q", key, got, want)
		}
	}
	billed := byName["process order.billed"]
	if len(billed) != 1 || billed[0].Parent().SpanID() != p.SpanContext().SpanID() {
		t.Errorf("the cascade's span: %d spans, want 1 child of the emitting handler's span", len(billed))
	}
	flaky := byName["process order.flaky"]
	if len(flaky) != 2 {
		t.Fatalf("spans of order.flaky: %d, want 2 (a call and its retry)", len(flaky))
	}
	for i, sp := range flaky {
		wantStatus := codes.Unset
		if i == 0 {
			wantStatus = codes.Error
		}
		if sp.Status().Code != wantStatus || attrOf(sp, "ringbus.attempt").AsInt64() != int64(i+1) || sp.Parent().SpanID() != req.SpanID() {
			t.Errorf("order.flaky call %d: status %v, attempt %d, parent %v; want %v, %d, the request", i+1,
				sp.Status().Code, attrOf(sp, "ringbus.attempt").AsInt64(), sp.Parent().SpanID(), wantStatus, i+1)
		}
	}
	if len(flaky[0].Events()) != 1 || flaky[0].Events()[0].Name != "exception" {
		t.Errorf("failed call's span events %v, want the recorded error", flaky[0].Events())
	}
	panicked := byName["process order.panic"]
	if len(panicked) != 2 {
		t.Errorf("spans of order.panic: %d, want 2 (a call and its retry)", len(panicked))
	}
	for _, sp := range panicked {
		if sp.Status().Code != codes.Error || sp.Parent().IsValid() {
			t.Errorf("panicking call: status %v, parent %v; want Error, none (its emitter had no span)", sp.Status().Code, sp.Parent())
		}
	}
	// The first round: placed, flaky, panic; the next: the retries, then
	// the event the first handler emitted.
	wantBag := []string{"t1", "t1", "", "t1", "", "t1"}
	if !slices.Equal(handlerBag, wantBag) {
		t.Errorf("baggage seen by the calls = %q, want %q", handlerBag, wantBag)
	}
}

// TestUnderRun: spans and metrics under Run with two workers; no
// goroutine is left (goleak in TestMain).
func TestUnderRun(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, dispatcher.WithWorkers(2))
	const events = 100
	handled := make(chan struct{}, events)
	s.on(t, "a.b", "s", func(context.Context, dispatcher.Event) error {
		handled <- struct{}{}
		return nil
	})
	errc := make(chan error, 1)
	go func() { errc <- s.d.Run(ctx) }()
	rctx, request := s.tp.Tracer("test").Start(ctx, "request")
	for range events {
		if err := s.d.Emit(rctx, "a.b", nil); err != nil {
			t.Fatal(err)
		}
	}
	request.End()
	for range events {
		<-handled // by Run's workers: Run has started when Shutdown comes
	}
	if err := s.d.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	n := 0
	for _, sp := range s.spans.Ended() {
		if sp.Name() == "process a.b" && sp.Parent().SpanID() == request.SpanContext().SpanID() {
			n++
		}
	}
	if n != events {
		t.Errorf("handler spans under the request: %d, want %d", n, events)
	}
	if p := int64Points(t, s.collect(t)["ringbus.delivered"], ""); p[""] != events {
		t.Errorf("ringbus.delivered = %v, want %d", p, events)
	}
}

func TestPropagatorNothingToCarry(t *testing.T) {
	if v := (otelbus.Propagator{}).Extract(context.Background()); v != nil {
		t.Errorf("Extract(a ctx without span or baggage) = %v, want nil", v)
	}
	ctx := context.Background()
	if got := (otelbus.Propagator{}).Inject(ctx, "not ours"); got != ctx {
		t.Error("Inject(a value it did not extract) changed ctx")
	}
}
