package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
)

// Observer is told what the dispatcher does with events beyond delivering
// them: failed handler calls, dead letters and drops, plus a way to wrap
// every subscription's handler knowing its name (for spans and timings).
// It is a struct of functions, as net/http/httptrace.ClientTrace is: each
// field is optional, a nil one is not called, and fields added later
// leave existing observers valid. WithObserver installs one.
//
// The functions run synchronously on the goroutine that saw what they
// report (a worker, the caller of Tick, Drain, Emit, Close or Shutdown),
// so they must be safe for concurrent use, must not block, and must not
// call the dispatcher's Shutdown or Close; what they cost is paid on that
// path. A panic in one is not recovered.
//
// Delivered calls are not reported one by one: the counters are in Stats
// and (*Subscription).Stats, read when wanted; WrapHandler sees every call
// when a per-call view (a span, a histogram) is worth its price.
type Observer struct {
	// HandlerFailed is called after each failed handler call (an error
	// or a panic; not a call that the stop of Run cut short), once the
	// dispatcher decided what follows: f.Retry tells whether a retry is
	// queued or the pair becomes a dead letter (then DeadLettered
	// follows). ctx is the handler's, with the propagated values (see
	// WithPropagator), without WithTimeout's deadline.
	HandlerFailed func(ctx context.Context, f Failure)

	// DeadLettered is called when an (event, subscriber) pair becomes a
	// dead letter, after HandlerFailed for its last call, once
	// DeadLetters returns it. ctx is HandlerFailed's.
	DeadLettered func(ctx context.Context, dl DeadLetter)

	// Dropped is called for each event the dispatcher discards, and for
	// each share of an event (one subscriber's retry or redelivery) that
	// it discards: each increment of Stats.Dropped. ctx is the emitter's
	// for an event that DropNewest refused; otherwise a background ctx
	// with the event's propagated values, if any.
	Dropped func(ctx context.Context, dr Drop)

	// WrapHandler, if set, wraps each subscription's handler, once, when
	// On subscribes it: it gets the subscription's name (WithName or the
	// generated one) and the handler wrapped in its middleware, and
	// returns the Handler the dispatcher calls, outermost. It runs while
	// On holds the dispatcher's subscription lock, so it must not call On
	// or Unsubscribe; returning nil makes On fail with ErrInvalidOption.
	// Unlike a Middleware it knows whose handler it wraps: a span or a
	// duration metric can name the subscriber.
	WrapHandler func(subscriber string, h Handler) Handler
}

// Failure is one failed handler call, as Observer.HandlerFailed sees it.
type Failure struct {
	Event      Event  // the event, with the Attempt of the failed call
	Subscriber string // the name of the subscription whose handler failed
	Err        error  // what the handler returned; a panic is a *PanicError
	Retry      bool   // a retry is queued; false: the pair became a dead letter
}

// DropReason says why the dispatcher discarded an event.
type DropReason int

// The reasons of a Drop.
const (
	// DroppedNewest: the queue was full under DropNewest; the event was
	// never accepted (its ID is 0) and Emit returned ErrDropped.
	DroppedNewest DropReason = iota + 1
	// DroppedOldest: the queue was full under DropOldest; this, the
	// oldest queued event, was evicted for a new one.
	DroppedOldest
	// DroppedClosed: Close, or a Shutdown whose ctx ended, discarded it
	// while it was queued, waiting behind its key, or waiting for a retry.
	DroppedClosed
	// DroppedUnsubscribed: its subscriber had left when its retry (or
	// redelivery, or the rest of a call the stop of Run cut short) came up.
	DroppedUnsubscribed
	// DroppedDeadLetterLimit: it was the oldest dead letter, evicted by
	// WithDeadLetterLimit for a new one.
	DroppedDeadLetterLimit
)

// String returns the reason's name, lower case and stable, fit for a
// metric attribute or a log: "newest", "oldest", "closed", "unsubscribed"
// or "dead_letter_limit".
func (r DropReason) String() string {
	switch r {
	case DroppedNewest:
		return "newest"
	case DroppedOldest:
		return "oldest"
	case DroppedClosed:
		return "closed"
	case DroppedUnsubscribed:
		return "unsubscribed"
	case DroppedDeadLetterLimit:
		return "dead_letter_limit"
	}
	return fmt.Sprintf("DropReason(%d)", int(r))
}

// Drop is one discarded event, or one subscriber's share of one, as
// Observer.Dropped sees it.
type Drop struct {
	Event      Event      // the event; ID 0 for one never accepted (DroppedNewest)
	Subscriber string     // the subscriber whose share was dropped; "" for the whole event
	Reason     DropReason // why
}

// observer is what New's observing options configured. A dispatcher
// without any has none (config.obs is nil), so that each hook's call site
// costs one nil check.
type observer struct {
	hooks  Observer     // WithLogger's and WithObserver's, composed in the order given
	log    *slog.Logger // WithLogger's, for the lifecycle lines
	timing bool         // WithHandlerTiming
	prop   Propagator   // WithPropagator's, composed; nil: none
}

// observe returns c's observer, making it on first use.
func (c *config) observe() *observer {
	if c.obs == nil {
		c.obs = new(observer)
	}
	return c.obs
}

// WithObserver installs o's functions (see Observer). Given more than
// once, every observer is called, in the order given. An Observer with no
// function set is an invalid option. Default: none.
func WithObserver(o Observer) Option {
	return optionFunc(func(c *config) error {
		if o.HandlerFailed == nil && o.DeadLettered == nil && o.Dropped == nil && o.WrapHandler == nil {
			return fmt.Errorf("%w: WithObserver: no function set", ErrInvalidOption)
		}
		ob := c.observe()
		ob.hooks = composeObservers(ob.hooks, o)
		return nil
	})
}

// composeObservers returns an Observer that calls a's functions, then b's.
func composeObservers(a, b Observer) Observer {
	return Observer{
		HandlerFailed: composeHook(a.HandlerFailed, b.HandlerFailed),
		DeadLettered:  composeHook(a.DeadLettered, b.DeadLettered),
		Dropped:       composeHook(a.Dropped, b.Dropped),
		WrapHandler:   composeWrap(a.WrapHandler, b.WrapHandler),
	}
}

func composeHook[T any](a, b func(context.Context, T)) func(context.Context, T) {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return func(ctx context.Context, v T) {
		a(ctx, v)
		b(ctx, v)
	}
}

// composeWrap makes a's wrapper the outer one: the first observer given
// sees the call first, as the first middleware given does.
func composeWrap(a, b func(string, Handler) Handler) func(string, Handler) Handler {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return func(name string, h Handler) Handler {
		if h = b(name, h); h == nil {
			return nil
		}
		return a(name, h)
	}
}

// WithLogger logs what an operator needs to see through l: the lifecycle
// at Info (Run started and stopped, Shutdown begun and finished, Close),
// each dead letter and each dropped event at Warn, and each failed call
// that will be retried at Debug, with the attributes topic, key, event_id,
// subscriber, attempt, error (and reason for a drop). It never logs a
// delivered event: use a Middleware for that. The lines carry the ctx of
// the goroutine that saw them, with the propagated values (see
// WithPropagator), so a handler of l that reads trace IDs from ctx finds
// them. A nil l is an invalid option. Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: WithLogger(nil)", ErrInvalidOption)
		}
		ob := c.observe()
		ob.log = l
		ob.hooks = composeObservers(ob.hooks, Observer{
			HandlerFailed: func(ctx context.Context, f Failure) {
				if f.Retry && l.Enabled(ctx, slog.LevelDebug) {
					l.LogAttrs(ctx, slog.LevelDebug, "dispatcher: handler failed, retry queued", failureAttrs(f.Event, f.Subscriber, f.Err)...)
				}
			},
			DeadLettered: func(ctx context.Context, dl DeadLetter) {
				l.LogAttrs(ctx, slog.LevelWarn, "dispatcher: dead letter", failureAttrs(dl.Event, dl.Subscriber, dl.Err)...)
			},
			Dropped: func(ctx context.Context, dr Drop) {
				attrs := append(eventAttrs(dr.Event), slog.String("reason", dr.Reason.String()))
				if dr.Subscriber != "" {
					attrs = append(attrs, slog.String("subscriber", dr.Subscriber))
				}
				l.LogAttrs(ctx, slog.LevelWarn, "dispatcher: event dropped", attrs...)
			},
		})
		return nil
	})
}

func eventAttrs(e Event) []slog.Attr {
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.String("topic", e.Topic))
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	return append(attrs, slog.Uint64("event_id", e.ID), slog.Int("attempt", e.Attempt))
}

func failureAttrs(e Event, sub string, err error) []slog.Attr {
	return append(eventAttrs(e), slog.String("subscriber", sub), slog.Any("error", err))
}

// observeSub prepares a new subscriber for the observer: its handler
// wrapped by WrapHandler, its duration histogram. On calls it under subMu,
// once s's name is known.
func (d *Dispatcher) observeSub(s *subscriber) error {
	ob := d.cfg.obs
	if ob == nil {
		return nil
	}
	if w := ob.hooks.WrapHandler; w != nil {
		if s.h = w(s.name, s.h); s.h == nil {
			return fmt.Errorf("%w: On: the Observer's WrapHandler returned a nil Handler for %q", ErrInvalidOption, s.name)
		}
	}
	if ob.timing {
		s.hist = make([]histShard, 1+len(d.workers))
	}
	return nil
}

// observeFailure reports a failed call of s for ev (and, when it became a
// dead letter, dl) to the observer.
func (d *Dispatcher) observeFailure(p *proc, s *subscriber, ev *Event, tr *tracker, err error, dl *DeadLetter) {
	ob := d.cfg.obs
	if ob == nil || (ob.hooks.HandlerFailed == nil && ob.hooks.DeadLettered == nil) {
		return
	}
	ctx := d.injectCarried(p.ctx, tr.carriedValue())
	if f := ob.hooks.HandlerFailed; f != nil {
		f(ctx, Failure{Event: *ev, Subscriber: s.name, Err: err, Retry: dl == nil})
	}
	if f := ob.hooks.DeadLettered; f != nil && dl != nil {
		f(ctx, *dl)
	}
}

// observeDrop reports one drop, with a background ctx holding carried's
// values.
func (d *Dispatcher) observeDrop(carried any, dr Drop) {
	if ob := d.cfg.obs; ob != nil && ob.hooks.Dropped != nil {
		ob.hooks.Dropped(d.injectCarried(context.Background(), carried), dr)
	}
}

// observeRefused reports the drop of an event DropNewest refused, with
// its emitter's ctx.
func (d *Dispatcher) observeRefused(ctx context.Context, e *entry) {
	if ob := d.cfg.obs; ob != nil && ob.hooks.Dropped != nil {
		ob.hooks.Dropped(ctx, Drop{Event: Event{Topic: e.topic, Key: e.key, Payload: e.payload}, Reason: DroppedNewest})
	}
}

// observeDropEntry reports the drop of a queued event, which was at ring
// position pos.
func (d *Dispatcher) observeDropEntry(e *entry, pos uint64, reason DropReason) {
	if d.cfg.obs == nil {
		return
	}
	d.observeDrop(e.tr.carriedValue(), Drop{
		Event:  Event{ID: pos + 1, Topic: e.topic, Key: e.key, Payload: e.payload},
		Reason: reason,
	})
}

// observeDropJobs reports the drop of jobs (see dropJobs): a share of
// a subscriber that left, or what Close discarded.
func (d *Dispatcher) observeDropJobs(jobs []job) {
	if d.cfg.obs == nil {
		return
	}
	for i := range jobs {
		j := &jobs[i]
		dr := Drop{Event: j.ev, Reason: DroppedClosed}
		if j.sub != nil {
			dr.Subscriber = j.sub.name
			if !j.sub.active.Load() && d.state.Load() != stateClosed {
				dr.Reason = DroppedUnsubscribed
			}
		}
		d.observeDrop(j.tr.carriedValue(), dr)
	}
}

// logLifecycle logs a lifecycle line at Info (Warn when err is set).
func (d *Dispatcher) logLifecycle(ctx context.Context, msg string, err error, attrs ...slog.Attr) {
	ob := d.cfg.obs
	if ob == nil || ob.log == nil {
		return
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.Any("error", err))
	}
	ob.log.LogAttrs(ctx, level, msg, attrs...)
}

// logRunStart and logRunEnd log Run's start and end; logRunEnd returns
// Run's error.
func (d *Dispatcher) logRunStart(ctx context.Context) {
	d.logLifecycle(ctx, "dispatcher: run started", nil, slog.Int("workers", d.cfg.workers))
}

func (d *Dispatcher) logRunEnd(ctx context.Context, err error) error {
	if d.cfg.obs != nil && d.cfg.obs.log != nil {
		st := d.Stats()
		d.logLifecycle(ctx, "dispatcher: run stopped", err, slog.Int("queued", st.Queued), slog.Int("retrying", st.Retrying))
	}
	return err
}

// logShutdown logs the start of Shutdown, and returns what logs its end
// (Shutdown defers it with its result).
func (d *Dispatcher) logShutdown(ctx context.Context) func(*error) {
	if d.cfg.obs == nil || d.cfg.obs.log == nil {
		return func(*error) {}
	}
	st := d.Stats()
	d.logLifecycle(ctx, "dispatcher: shutdown begun", nil, slog.Int("queued", st.Queued), slog.Int("retrying", st.Retrying))
	return func(err *error) {
		st := d.Stats()
		d.logLifecycle(ctx, "dispatcher: shutdown finished", *err, slog.Uint64("dropped", st.Dropped))
	}
}

// logClosed logs a Close (or the close of a Shutdown whose ctx ended) that
// discarded n events.
func (d *Dispatcher) logClosed(n int) {
	d.logLifecycle(context.Background(), "dispatcher: closed", nil, slog.Int("discarded", n))
}
