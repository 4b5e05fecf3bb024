package dispatcher

import (
	"context"
	"fmt"
)

// A Propagator carries chosen values of the emitter's ctx (a trace's span
// context, a tenant, a request ID) across the queue into the ctx of the
// handlers of the event. The emitter's ctx itself never crosses: the
// dispatcher keeps only what Extract returns, so the emitter's ctx is not
// kept alive and its cancellation and deadline do not reach the handlers.
// WithPropagator installs one; otelbus has one for OpenTelemetry.
type Propagator interface {
	// Extract returns what to carry from ctx, the ctx given to Emit or
	// EmitEvent, or nil for nothing. It runs on the emitter's goroutine
	// for every emit that passes the topic and state checks, before the
	// event is queued (also when the queue then refuses it). The value
	// must not hold ctx and should be small and immutable: every handler
	// call of the event, on any worker, gets it.
	Extract(ctx context.Context) any

	// Inject returns ctx, the ctx of a handler call, with what Extract
	// returned for the event (never nil). It runs on the goroutine making
	// the call, before the call and its middleware, for each call of the
	// event: the first, each retry and each redelivery. It must not
	// block, and should derive the result from ctx without cancelling
	// anything: the dispatcher's cancellation of ctx must still reach the
	// handler.
	Inject(ctx context.Context, carried any) context.Context
}

// WithPropagator makes the dispatcher carry values from each emitter's ctx
// to the handlers' ctx through p (see Propagator). Given more than once,
// every propagator carries its own values: each Extract is called in the
// order given, each Inject in the same order. A nil p is an invalid
// option. Default: none, and then nothing is extracted or injected and no
// emit or call pays anything for it.
//
// The carried value rides with the event: an event that carries one costs
// an allocation at emit (as OnDone does; with OnDone, the same one), and
// its handler calls a call of Inject each. Dead letters keep it, so a
// redelivered event carries it again; Observer's functions and WithLogger's
// lines about the event get a ctx with it.
func WithPropagator(p Propagator) Option {
	return optionFunc(func(c *config) error {
		if p == nil {
			return fmt.Errorf("%w: WithPropagator(nil)", ErrInvalidOption)
		}
		ob := c.observe()
		switch prev := ob.prop.(type) {
		case nil:
			ob.prop = p
		case propagators:
			ob.prop = append(prev[:len(prev):len(prev)], p)
		default:
			ob.prop = propagators{prev, p}
		}
		return nil
	})
}

// propagators is several Propagators: each carries its own value, at its
// index of the []any carried.
type propagators []Propagator

func (ps propagators) Extract(ctx context.Context) any {
	var vs []any
	for i, p := range ps {
		if v := p.Extract(ctx); v != nil {
			if vs == nil {
				vs = make([]any, len(ps))
			}
			vs[i] = v
		}
	}
	if vs == nil {
		return nil
	}
	return vs
}

func (ps propagators) Inject(ctx context.Context, carried any) context.Context {
	vs := carried.([]any)
	for i, p := range ps {
		if vs[i] != nil {
			ctx = p.Inject(ctx, vs[i])
		}
	}
	return ctx
}

// carry stores what the propagator extracts from ctx in e, in its
// tracker, made for the purpose if the emit has no OnDone: the ring's
// slot has no room for another field, and an event without one must not
// pay for it.
func (d *Dispatcher) carry(ctx context.Context, e *entry) {
	v := d.cfg.obs.prop.Extract(ctx)
	if v == nil {
		return
	}
	if e.tr == nil {
		e.tr = carriedTracker(v)
		return
	}
	e.tr.carried = v
}

// carriedTracker returns a tracker that only carries v (no completion
// function: nobody waits for the event), or nil for a nil v: for an emit
// without OnDone, and for a redelivery, whose OnDone was told long ago.
func carriedTracker(v any) *tracker {
	if v == nil {
		return nil
	}
	t := newTracker(nil)
	t.carried = v
	return t
}

// carriedValue returns the propagated value t carries, if any.
func (t *tracker) carriedValue() any {
	if t == nil {
		return nil
	}
	return t.carried
}

// injectCarried returns ctx with carried injected, or ctx when there is
// nothing to inject.
func (d *Dispatcher) injectCarried(ctx context.Context, carried any) context.Context {
	if carried == nil || d.cfg.obs == nil || d.cfg.obs.prop == nil {
		return ctx
	}
	return d.cfg.obs.prop.Inject(ctx, carried)
}
