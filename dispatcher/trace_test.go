package dispatcher_test

// WithPropagator: values of the emitter's ctx reach the handlers' ctx, and
// nothing else of it does.

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

// traceKey is the ctx key of the test's trace ID.
type traceKey struct{}

// traceProp carries the string under traceKey, and counts its calls.
type traceProp struct {
	mu        sync.Mutex
	extracted int
	injected  int
}

func (p *traceProp) Extract(ctx context.Context) any {
	p.mu.Lock()
	p.extracted++
	p.mu.Unlock()
	if v, ok := ctx.Value(traceKey{}).(string); ok {
		return v
	}
	return nil
}

func (p *traceProp) Inject(ctx context.Context, v any) context.Context {
	p.mu.Lock()
	p.injected++
	p.mu.Unlock()
	return context.WithValue(ctx, traceKey{}, v)
}

func traceOf(ctx context.Context) string {
	v, _ := ctx.Value(traceKey{}).(string)
	return v
}

// callSeen is what a handler saw of its ctx.
type callSeen struct {
	topic   string
	attempt int
	trace   string
	ctxErr  error
}

func TestPropagatorCarriesAcrossTheQueue(t *testing.T) {
	prop := new(traceProp)
	d := newDispatcher(t, dispatcher.WithPropagator(prop), dispatcher.WithRetry(2, nil))
	var seen []callSeen
	subscribe(t, d, "req.>", func(ctx context.Context, e dispatcher.Event) error {
		seen = append(seen, callSeen{e.Topic, e.Attempt, traceOf(ctx), ctx.Err()})
		switch e.Topic {
		case "req.flaky":
			if e.Attempt == 1 {
				return errBoom
			}
		case "req.bad":
			return errBoom
		case "req.cascade":
			return d.Emit(ctx, "req.followup", nil) // from the handler: its ctx carries the trace on
		}
		return nil
	})
	ectx, cancel := context.WithCancel(context.WithValue(context.Background(), traceKey{}, "t-1"))
	var doneErr []error
	if err := d.EmitEvent(ectx, dispatcher.Event{Topic: "req.flaky"}, dispatcher.OnDone(func(err error) { doneErr = append(doneErr, err) })); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"req.bad", "req.cascade"} {
		if err := d.Emit(ectx, topic, nil); err != nil {
			t.Fatal(err)
		}
	}
	emit(t, d, "req.untraced", nil)
	cancel() // the request ends before its events are handled
	drainIgnoringFailures(t, d)
	if n, err := d.Redeliver(context.Background()); n != 1 || err != nil {
		t.Fatalf("Redeliver() = %d, %v; want 1, nil", n, err)
	}
	drainIgnoringFailures(t, d)

	want := []callSeen{
		{"req.flaky", 1, "t-1", nil},
		{"req.bad", 1, "t-1", nil},
		{"req.cascade", 1, "t-1", nil},
		{"req.untraced", 1, "", nil},
		{"req.flaky", 2, "t-1", nil},
		{"req.bad", 2, "t-1", nil},
		{"req.followup", 1, "t-1", nil},
		{"req.bad", 1, "t-1", nil}, // redelivered
		{"req.bad", 2, "t-1", nil},
	}
	if !slices.Equal(seen, want) {
		t.Errorf("calls seen:\ngot  %v\nwant %v", seen, want)
	}
	if len(doneErr) != 1 || doneErr[0] != nil {
		t.Errorf("OnDone calls = %v, want one nil", doneErr)
	}
	// Five emits (the cascade's included); an Inject for each traced call.
	if prop.extracted != 5 || prop.injected != 8 {
		t.Errorf("Extract calls = %d, Inject calls = %d; want 5, 8", prop.extracted, prop.injected)
	}
}

func TestPropagatorUnderRun(t *testing.T) {
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithPropagator(new(traceProp)), dispatcher.WithWorkers(2))
	got := make(chan string, 2)
	subscribe(t, d, "a.b", func(ctx context.Context, e dispatcher.Event) error {
		got <- traceOf(ctx)
		return nil
	})
	wait := startRun(t, ctx, d)
	if err := d.Emit(context.WithValue(ctx, traceKey{}, "t-2"), "a.b", nil); err != nil {
		t.Fatal(err)
	}
	if tr := recv(t, got, "the handler's call"); tr != "t-2" {
		t.Errorf("handler's trace = %q, want t-2", tr)
	}
	stopRun(t, ctx, d, wait)
}

// pairProp is a second propagator, for another key.
type pairKey struct{}

type pairProp struct{}

func (pairProp) Extract(ctx context.Context) any { return ctx.Value(pairKey{}) }
func (pairProp) Inject(ctx context.Context, v any) context.Context {
	return context.WithValue(ctx, pairKey{}, v)
}

func TestPropagatorsCompose(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithPropagator(new(traceProp)), dispatcher.WithPropagator(pairProp{}))
	var got [][2]any
	subscribe(t, d, "a.b", func(ctx context.Context, e dispatcher.Event) error {
		got = append(got, [2]any{ctx.Value(traceKey{}), ctx.Value(pairKey{})})
		return nil
	})
	bg := context.Background()
	for _, ctx := range []context.Context{
		context.WithValue(context.WithValue(bg, traceKey{}, "t"), pairKey{}, 7),
		context.WithValue(bg, pairKey{}, 8),
		context.WithValue(bg, traceKey{}, "u"),
		bg,
	} {
		if err := d.Emit(ctx, "a.b", nil); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, d)
	want := [][2]any{{"t", 7}, {nil, 8}, {"u", nil}, {nil, nil}}
	if !slices.Equal(got, want) {
		t.Errorf("values seen = %v, want %v", got, want)
	}
}

// TestPropagatorKeepsNoEmitterCtx: once Emit returns, the dispatcher
// keeps nothing of the emitter's ctx but what Extract returned, so what
// the ctx holds can be collected while the event is still queued.
func TestPropagatorKeepsNoEmitterCtx(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithPropagator(new(traceProp)))
	collected := make(chan struct{})
	emitWithHeavyCtx(t, d, collected)
	runtime.GC()
	recv(t, collected, "the emitter's ctx to be collected")
	var got string
	subscribe(t, d, "a.b", func(ctx context.Context, _ dispatcher.Event) error {
		got = traceOf(ctx)
		return nil
	})
	drain(t, d)
	if got != "t-3" {
		t.Errorf("handler's trace = %q, want t-3", got)
	}
}

// heavy is what the emitter's ctx holds besides the trace ID.
type heavy [4096]byte

type heavyKey struct{}

//go:noinline
func emitWithHeavyCtx(t *testing.T, d *dispatcher.Dispatcher, collected chan struct{}) {
	h := new(heavy)
	runtime.AddCleanup(h, func(ch chan struct{}) { close(ch) }, collected)
	ctx, cancel := context.WithCancel(context.WithValue(context.WithValue(context.Background(), heavyKey{}, h), traceKey{}, "t-3"))
	defer cancel()
	if err := d.Emit(ctx, "a.b", nil); err != nil {
		t.Fatal(err)
	}
}

func TestNoPropagatorNoValue(t *testing.T) {
	d := newDispatcher(t)
	var got []string
	subscribe(t, d, "a.b", func(ctx context.Context, _ dispatcher.Event) error {
		got = append(got, traceOf(ctx))
		return nil
	})
	if err := d.Emit(context.WithValue(context.Background(), traceKey{}, "t-4"), "a.b", nil); err != nil {
		t.Fatal(err)
	}
	drain(t, d)
	if !slices.Equal(got, []string{""}) {
		t.Errorf("traces seen without WithPropagator = %q, want one empty", got)
	}
}

// TestPropagatorReachesObserver: the Observer's functions and the
// logger's lines get a ctx with the event's propagated values.
func TestPropagatorReachesObserver(t *testing.T) {
	var o observed
	d := newDispatcher(t, dispatcher.WithPropagator(new(traceProp)), dispatcher.WithObserver(o.observer()))
	subscribe(t, d, "a.bad", func(context.Context, dispatcher.Event) error { return errBoom }, dispatcher.WithName("s"))
	ctx := context.WithValue(context.Background(), traceKey{}, "t-5")
	if err := d.Emit(ctx, "a.bad", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Tick(context.Background()); err == nil {
		t.Fatal("Tick() = nil, want the dead letter's error")
	}
	if err := d.Emit(ctx, "a.queued", nil); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	checkLines(t, "observed", o.get(), "failed s 1/1 dead: boom", "dead letter s 1/1: boom", `dropped closed 2 "a.queued" ""`)
	for i, ctx := range o.ctxs {
		if got := traceOf(ctx); got != "t-5" {
			t.Errorf("ctx of %q: trace %q, want t-5", o.lines[i], got)
		}
	}
}
