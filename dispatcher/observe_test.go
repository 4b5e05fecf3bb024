package dispatcher_test

// WithObserver, WithLogger and the per-subscription counters.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// observed records what an Observer is told, as lines like
// "failed sub 3 1 retry" (subscriber, event ID, attempt, retry or dead).
type observed struct {
	mu    sync.Mutex
	lines []string
	ctxs  []context.Context
}

func (o *observed) add(ctx context.Context, format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lines = append(o.lines, fmt.Sprintf(format, args...))
	o.ctxs = append(o.ctxs, ctx)
}

func (o *observed) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.lines)
}

func (o *observed) observer() dispatcher.Observer {
	return dispatcher.Observer{
		HandlerFailed: func(ctx context.Context, f dispatcher.Failure) {
			next := "dead"
			if f.Retry {
				next = "retry"
			}
			o.add(ctx, "failed %s %d/%d %s: %v", f.Subscriber, f.Event.ID, f.Event.Attempt, next, f.Err)
		},
		DeadLettered: func(ctx context.Context, dl dispatcher.DeadLetter) {
			o.add(ctx, "dead letter %s %d/%d: %v", dl.Subscriber, dl.Event.ID, dl.Attempts, dl.Err)
		},
		Dropped: func(ctx context.Context, dr dispatcher.Drop) {
			o.add(ctx, "dropped %s %d %q %q", dr.Reason, dr.Event.ID, dr.Event.Topic, dr.Subscriber)
		},
	}
}

func checkLines(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\ngot  %q\nwant %q", what, got, want)
	}
}

var errBoom = errors.New("boom")

func TestObserverFailuresAndDeadLetters(t *testing.T) {
	var o observed
	d := newDispatcher(t, dispatcher.WithObserver(o.observer()), dispatcher.WithRetry(2, nil))
	subscribe(t, d, "job.*", func(context.Context, dispatcher.Event) error { return nil }, dispatcher.WithName("ok"))
	subscribe(t, d, "job.*", func(_ context.Context, e dispatcher.Event) error {
		if e.Topic == "job.panic" {
			panic("kaput")
		}
		if e.Attempt == 1 {
			return errBoom
		}
		return nil
	}, dispatcher.WithName("flaky"))
	subscribe(t, d, "job.bad", func(context.Context, dispatcher.Event) error {
		return dispatcher.Permanent(errBoom)
	}, dispatcher.WithName("strict"))
	emitTopics(t, d, "job.a", "job.panic", "job.bad")
	drainIgnoringFailures(t, d)
	checkLines(t, "observed", o.get(),
		"failed flaky 1/1 retry: boom",
		"failed flaky 2/1 retry: dispatcher: handler panicked: kaput",
		"failed flaky 3/1 retry: boom",
		"failed strict 3/1 dead: boom",
		"dead letter strict 3/1: boom",
		"failed flaky 2/2 dead: dispatcher: handler panicked: kaput",
		"dead letter flaky 2/2: dispatcher: handler panicked: kaput",
	)
	if got := len(d.DeadLetters()); got != 2 {
		t.Errorf("len(DeadLetters()) = %d, want 2", got)
	}
}

func TestObserverDrops(t *testing.T) {
	ctx := context.Background()
	t.Run("newest", func(t *testing.T) {
		var o observed
		d := newDispatcher(t, dispatcher.WithObserver(o.observer()), dispatcher.WithCapacity(1), dispatcher.WithOverflow(dispatcher.DropNewest))
		type key struct{}
		ectx := context.WithValue(ctx, key{}, "emitter")
		if err := d.Emit(ectx, "a.b", 1); err != nil {
			t.Fatal(err)
		}
		if err := d.Emit(ectx, "a.c", 2); !errors.Is(err, dispatcher.ErrDropped) {
			t.Fatalf("Emit on a full queue = %v, want ErrDropped", err)
		}
		checkLines(t, "observed", o.get(), `dropped newest 0 "a.c" ""`)
		if got := o.ctxs[0].Value(key{}); got != "emitter" {
			t.Errorf("Dropped's ctx value = %v, want the emitter's ctx", got)
		}
	})
	t.Run("oldest", func(t *testing.T) {
		var o observed
		d := newDispatcher(t, dispatcher.WithObserver(o.observer()), dispatcher.WithCapacity(2), dispatcher.WithOverflow(dispatcher.DropOldest))
		emitTopics(t, d, "a.1", "a.2", "a.3", "a.4")
		checkLines(t, "observed", o.get(), `dropped oldest 1 "a.1" ""`, `dropped oldest 2 "a.2" ""`)
	})
	t.Run("close", func(t *testing.T) {
		var o observed
		d := newDispatcher(t, dispatcher.WithObserver(o.observer()), dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Hour)))
		subscribe(t, d, "a.*", func(_ context.Context, e dispatcher.Event) error {
			if e.Topic == "a.1" {
				return errBoom
			}
			return nil
		}, dispatcher.WithName("s"))
		emit(t, d, "a.1", 1)
		drainIgnoringFailures(t, d)
		emitTopics(t, d, "a.2", "a.3")
		if err := d.Close(); !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close() = %v, want ErrDropped", err)
		}
		checkLines(t, "observed", o.get(),
			"failed s 1/1 retry: boom",
			`dropped closed 2 "a.2" ""`,
			`dropped closed 3 "a.3" ""`,
			`dropped closed 1 "a.1" "s"`)
		if st := d.Stats(); st.Dropped != 3 {
			t.Errorf("Stats().Dropped = %d, want 3", st.Dropped)
		}
	})
	t.Run("unsubscribed", func(t *testing.T) {
		var o observed
		d := newDispatcher(t, dispatcher.WithObserver(o.observer()), dispatcher.WithRetry(2, nil))
		sub := subscribe(t, d, "a.b", func(context.Context, dispatcher.Event) error { return errBoom }, dispatcher.WithName("s"))
		emit(t, d, "a.b", 1)
		if _, err := d.Tick(ctx); err != nil {
			t.Fatalf("Tick() = %v", err)
		}
		sub.Unsubscribe()
		drain(t, d)
		checkLines(t, "observed", o.get(), "failed s 1/1 retry: boom", `dropped unsubscribed 1 "a.b" "s"`)
	})
	t.Run("dead letter limit", func(t *testing.T) {
		var o observed
		d := newDispatcher(t, dispatcher.WithObserver(o.observer()), dispatcher.WithDeadLetterLimit(1))
		subscribe(t, d, "a.*", func(context.Context, dispatcher.Event) error { return errBoom }, dispatcher.WithName("s"))
		emitTopics(t, d, "a.1", "a.2")
		drainIgnoringFailures(t, d)
		checkLines(t, "observed", o.get(),
			"failed s 1/1 dead: boom", "dead letter s 1/1: boom",
			`dropped dead_letter_limit 1 "a.1" "s"`,
			"failed s 2/1 dead: boom", "dead letter s 2/1: boom")
	})
}

func TestObserverComposesInOrder(t *testing.T) {
	var calls []string
	wrap := func(tag string) func(string, dispatcher.Handler) dispatcher.Handler {
		return func(name string, h dispatcher.Handler) dispatcher.Handler {
			return func(ctx context.Context, e dispatcher.Event) error {
				calls = append(calls, tag+" "+name)
				return h(ctx, e)
			}
		}
	}
	mw := func(next dispatcher.Handler) dispatcher.Handler {
		return func(ctx context.Context, e dispatcher.Event) error {
			calls = append(calls, "middleware")
			return next(ctx, e)
		}
	}
	d := newDispatcher(t,
		dispatcher.WithObserver(dispatcher.Observer{WrapHandler: wrap("first")}),
		dispatcher.WithMiddleware(mw),
		dispatcher.WithObserver(dispatcher.Observer{
			WrapHandler: wrap("second"),
			Dropped:     func(context.Context, dispatcher.Drop) {},
		}))
	subscribe(t, d, "a.b", func(context.Context, dispatcher.Event) error {
		calls = append(calls, "handler")
		return nil
	})
	emit(t, d, "a.b", 1)
	drain(t, d)
	checkLines(t, "calls", calls, "first a.b#1", "second a.b#1", "middleware", "handler")
}

func TestObserverInvalid(t *testing.T) {
	for _, tt := range []struct {
		name string
		give dispatcher.Option
	}{
		{"empty observer", dispatcher.WithObserver(dispatcher.Observer{})},
		{"nil logger", dispatcher.WithLogger(nil)},
		{"nil propagator", dispatcher.WithPropagator(nil)},
	} {
		if _, err := dispatcher.New(tt.give); !errors.Is(err, dispatcher.ErrInvalidOption) {
			t.Errorf("New(%s) error = %v, want ErrInvalidOption", tt.name, err)
		}
	}
	d := newDispatcher(t, dispatcher.WithObserver(dispatcher.Observer{
		WrapHandler: func(string, dispatcher.Handler) dispatcher.Handler { return nil },
	}))
	if _, err := d.On("a.b", func(context.Context, dispatcher.Event) error { return nil }); !errors.Is(err, dispatcher.ErrInvalidOption) {
		t.Errorf("On() with a WrapHandler returning nil: error = %v, want ErrInvalidOption", err)
	}
}

// logRecords is a slog.Handler that keeps each record as a line: level,
// message and attributes, sorted, without the time.
type logRecords struct {
	mu    sync.Mutex
	level slog.Level
	lines []string
}

func (h *logRecords) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *logRecords) WithGroup(string) slog.Handler                { return h }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	var attrs []string
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a.String())
		return true
	})
	slices.Sort(attrs)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines = append(h.lines, strings.TrimSpace(r.Level.String()+" "+r.Message+" "+strings.Join(attrs, " ")))
	return nil
}

func (h *logRecords) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lines)
}

func TestWithLogger(t *testing.T) {
	ctx := context.Background()
	h := &logRecords{level: slog.LevelDebug}
	d := newDispatcher(t, dispatcher.WithLogger(slog.New(h)), dispatcher.WithRetry(2, nil),
		dispatcher.WithCapacity(4), dispatcher.WithOverflow(dispatcher.DropNewest))
	subscribe(t, d, "order.*", func(_ context.Context, e dispatcher.Event) error {
		if e.Topic == "order.bad" {
			return errBoom
		}
		return nil
	}, dispatcher.WithName("billing"))
	for i := range 3 {
		emit(t, d, "order.placed", i) // delivered: never logged, even at Debug
	}
	if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "order.bad", Key: "o-7"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Emit(ctx, "order.placed", 4); !errors.Is(err, dispatcher.ErrDropped) {
		t.Fatalf("Emit on a full queue = %v, want ErrDropped", err)
	}
	drainIgnoringFailures(t, d)
	emit(t, d, "order.placed", 5)
	_ = d.Close()
	checkLines(t, "log", h.get(),
		`WARN dispatcher: event dropped attempt=0 event_id=0 reason=newest topic=order.placed`,
		`DEBUG dispatcher: handler failed, retry queued attempt=1 error=boom event_id=4 key=o-7 subscriber=billing topic=order.bad`,
		`WARN dispatcher: dead letter attempt=2 error=boom event_id=4 key=o-7 subscriber=billing topic=order.bad`,
		`WARN dispatcher: event dropped attempt=0 event_id=5 reason=closed topic=order.placed`,
		`INFO dispatcher: closed discarded=1`,
	)
}

func TestWithLoggerLifecycle(t *testing.T) {
	ctx := context.Background()
	h := &logRecords{level: slog.LevelInfo}
	d := newDispatcher(t, dispatcher.WithLogger(slog.New(h)), dispatcher.WithWorkers(2))
	subscribe(t, d, "a.b", func(context.Context, dispatcher.Event) error { return nil })
	wait := startRun(t, ctx, d)
	emit(t, d, "a.b", 1)
	waitFor(t, "the event to be delivered", func() bool { return d.Stats().Delivered == 1 })
	stopRun(t, ctx, d, wait)
	_ = d.Close() // closed already: no line
	got := h.get()
	// Shutdown returns when Run's workers are done, maybe before Run
	// logs its end: the last two lines come in either order.
	if len(got) == 4 {
		slices.Sort(got[2:])
	}
	checkLines(t, "log", got,
		`INFO dispatcher: run started workers=2`,
		`INFO dispatcher: shutdown begun queued=0 retrying=0`,
		`INFO dispatcher: run stopped queued=0 retrying=0`,
		`INFO dispatcher: shutdown finished dropped=0`,
	)

	h = &logRecords{level: slog.LevelInfo}
	d = newDispatcher(t, dispatcher.WithLogger(slog.New(h)), dispatcher.WithWorkers(1))
	runCtx, cancel := context.WithCancel(ctx)
	wait = startRun(t, runCtx, d)
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want context.Canceled", err)
	}
	checkLines(t, "log", h.get(),
		`INFO dispatcher: run started workers=1`,
		`WARN dispatcher: run stopped error=context canceled queued=0 retrying=0`,
	)
}
