package otelbus_test

import (
	"context"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/otelbus"
)

// The handler's span is a child of the span that was current at Emit, and
// the counters read the dispatcher's Stats.
func Example() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)

	tel, _ := otelbus.New(otelbus.WithMeterProvider(mp), otelbus.WithTracerProvider(tp))
	d, _ := dispatcher.New(tel.Options()...)
	defer d.Close()
	reg, _ := tel.Observe(d)
	defer reg.Unregister()
	d.On("order.placed", func(ctx context.Context, e dispatcher.Event) error { return nil }, dispatcher.WithName("billing"))

	rctx, request := tp.Tracer("shop").Start(ctx, "POST /orders")
	d.Emit(rctx, "order.placed", 1001)
	request.End()
	d.Drain(ctx, 0)

	for _, s := range spans.Ended() {
		fmt.Printf("span %q, child of the request: %v\n", s.Name(), s.Parent().SpanID() == request.SpanContext().SpanID())
	}
	var rm metricdata.ResourceMetrics
	reader.Collect(ctx, &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "ringbus.delivered" {
			fmt.Println(m.Name, sum.DataPoints[0].Value)
		}
	}
	// Output:
	// span "POST /orders", child of the request: false
	// span "process order.placed", child of the request: true
	// ringbus.delivered 1
}
