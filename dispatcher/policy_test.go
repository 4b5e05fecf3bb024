package dispatcher_test

// Per-subscription policies (SPEC part two): Permanent failures, WithRetry,
// WithTimeout and WithMiddleware given to New and to On. Time runs on
// synctest's fake clock: no test here waits in real time.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// codeError is a typed handler error, for errors.As.
type codeError struct{ code int }

func (e *codeError) Error() string { return fmt.Sprintf("code %d", e.code) }

func TestPermanentNilIsNil(t *testing.T) {
	if err := dispatcher.Permanent(nil); err != nil {
		t.Errorf("Permanent(nil) = %v, want nil", err)
	}
	sentinel := errors.New("sentinel")
	err := dispatcher.Permanent(sentinel)
	if err == nil || !errors.Is(err, sentinel) {
		t.Errorf("Permanent(sentinel) = %v, want an error wrapping sentinel", err)
	}
}

// TestPermanentFailureIsNeverRetried: a failure marked Permanent (however
// deep in the chain), and every ErrPayloadType failure of Handle[T], is
// dead-lettered at its first call whatever the retry budget, under Drain
// and under Run; errors.Is and errors.As still reach the handler's error on
// the dead letter and on Drain's error.
func TestPermanentFailureIsNeverRetried(t *testing.T) {
	sentinel := errors.New("malformed")
	coded := &codeError{code: 42}
	asPermanent := func(next dispatcher.Handler) dispatcher.Handler {
		return func(ctx context.Context, e dispatcher.Event) error {
			return dispatcher.Permanent(next(ctx, e))
		}
	}
	tests := []struct {
		name     string
		give     dispatcher.Handler
		mw       []dispatcher.Middleware // On's
		payload  any
		wantIs   []error
		wantCode int // errors.As reaches a *codeError with this code, if set
	}{
		{
			name:   "Permanent(sentinel)",
			give:   func(context.Context, dispatcher.Event) error { return dispatcher.Permanent(sentinel) },
			wantIs: []error{sentinel},
		},
		{
			name:     "Permanent(typed error)",
			give:     func(context.Context, dispatcher.Event) error { return dispatcher.Permanent(coded) },
			wantIs:   []error{coded},
			wantCode: 42,
		},
		{
			name: "Permanent wrapped by the handler",
			give: func(context.Context, dispatcher.Event) error {
				return fmt.Errorf("decode: %w", dispatcher.Permanent(fmt.Errorf("field x: %w", coded)))
			},
			wantIs:   []error{coded},
			wantCode: 42,
		},
		{
			name: "Permanent joined with another error",
			give: func(context.Context, dispatcher.Event) error {
				return errors.Join(sentinel, dispatcher.Permanent(coded))
			},
			wantIs: []error{sentinel, coded},
		},
		{
			name: "Permanent reached only through an As method",
			give: func(context.Context, dispatcher.Event) error {
				return asOnly{inner: dispatcher.Permanent(sentinel)}
			},
		},
		{
			name:     "Permanent by a middleware",
			give:     func(context.Context, dispatcher.Event) error { return coded },
			mw:       []dispatcher.Middleware{asPermanent},
			wantIs:   []error{coded},
			wantCode: 42,
		},
		{
			name:    "Handle[int] got a string",
			give:    dispatcher.Handle(func(context.Context, int) error { return nil }),
			payload: "one",
			wantIs:  []error{dispatcher.ErrPayloadType},
		},
		{
			name:    "Handle[int] got nil",
			give:    dispatcher.Handle(func(context.Context, int) error { return nil }),
			payload: nil,
			wantIs:  []error{dispatcher.ErrPayloadType},
		},
		{
			name:    "Handle[*codeError] got a codeError value",
			give:    dispatcher.Handle(func(context.Context, *codeError) error { return nil }),
			payload: codeError{code: 1},
			wantIs:  []error{dispatcher.ErrPayloadType},
		},
	}
	for _, tt := range tests {
		for _, mode := range []string{"Drain", "Run"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					ctx := context.Background()
					d := newDispatcher(t, dispatcher.WithRetry(5, linearBackoff), dispatcher.WithWorkers(2))
					var calls atomic.Int32
					h := func(ctx context.Context, e dispatcher.Event) error {
						calls.Add(1)
						return tt.give(ctx, e)
					}
					subscribe(t, d, "job", h, dispatcher.WithName("worker"), dispatcher.WithMiddleware(tt.mw...))
					if mode == "Drain" {
						emit(t, d, "job", tt.payload)
						n, err := d.Drain(ctx, 0)
						if n != 1 {
							t.Errorf("Drain(0) = %d, want 1", n)
						}
						checkErrorChain(t, "Drain(0) error", err, tt.wantIs, tt.wantCode)
						if hes := handlerErrors(err); len(hes) != 1 || hes[0].Attempt != 1 || hes[0].Subscriber != "worker" {
							t.Errorf("Drain(0) error = %v, want one HandlerError of worker at attempt 1", err)
						}
						advanceClock(time.Hour) // far past any backoff
						if n, err := d.Drain(ctx, 0); n != 0 || err != nil {
							t.Errorf("Drain(0) an hour later = %d, %v, want 0, nil", n, err)
						}
					} else {
						wait := startRun(t, ctx, d)
						emit(t, d, "job", tt.payload)
						if err := d.Shutdown(ctx); err != nil { // waits for retries, if any
							t.Errorf("Shutdown() error = %v", err)
						}
						if err := wait(); err != nil {
							t.Errorf("Run() error = %v", err)
						}
					}
					if n := calls.Load(); n != 1 {
						t.Errorf("handler called %d times, want 1", n)
					}
					want := dispatcher.Stats{Emitted: 1, Failed: 1, DeadLettered: 1, DeadLetters: 1}
					if st := d.Stats(); st != want {
						t.Errorf("Stats() = %+v, want %+v", st, want)
					}
					dls := d.DeadLetters()
					if len(dls) != 1 {
						t.Fatalf("DeadLetters() = %+v, want one", dls)
					}
					if dls[0].Attempts != 1 || dls[0].Event.Attempt != 1 || dls[0].Subscriber != "worker" {
						t.Errorf("DeadLetters()[0] = %+v, want worker's after 1 attempt", dls[0])
					}
					checkErrorChain(t, "DeadLetter.Err", dls[0].Err, tt.wantIs, tt.wantCode)
				})
			})
		}
	}
}

// checkErrorChain checks that errors.Is reaches each of wantIs in err,
// and errors.As a *codeError with wantCode if it is set.
func checkErrorChain(t *testing.T, what string, err error, wantIs []error, wantCode int) {
	t.Helper()
	for _, w := range wantIs {
		if !errors.Is(err, w) {
			t.Errorf("%s = %v, want errors.Is(_, %v)", what, err, w)
		}
	}
	if wantCode != 0 {
		var ce *codeError
		if !errors.As(err, &ce) || ce.code != wantCode {
			t.Errorf("%s = %v, want errors.As to reach *codeError %d", what, err, wantCode)
		}
	}
}

// TestPolicyRetryOnReplacesNew: On's WithRetry replaces New's attempts and
// backoff for its subscription only; the others keep New's.
func TestPolicyRetryOnReplacesNew(t *testing.T) {
	hour := func(int) time.Duration { return time.Hour }
	tests := []struct {
		name      string
		give      []dispatcher.SubscribeOption
		wantCalls int // by one Drain: a retry an hour away is not made
		wantDead  bool
	}{
		{name: "New's", give: nil, wantCalls: 1},
		{name: "three, no backoff", give: []dispatcher.SubscribeOption{dispatcher.WithRetry(3, nil)}, wantCalls: 3, wantDead: true},
		{name: "five, no backoff", give: []dispatcher.SubscribeOption{dispatcher.WithRetry(5, nil)}, wantCalls: 5, wantDead: true},
		{name: "no retry", give: []dispatcher.SubscribeOption{dispatcher.WithRetry(1, nil)}, wantCalls: 1, wantDead: true},
		{name: "two, New's backoff not kept", give: []dispatcher.SubscribeOption{dispatcher.WithRetry(2, nil)}, wantCalls: 2, wantDead: true},
		{name: "a timeout keeps New's retry", give: []dispatcher.SubscribeOption{dispatcher.WithTimeout(time.Minute)}, wantCalls: 1},
		{name: "a middleware keeps New's retry", give: []dispatcher.SubscribeOption{dispatcher.WithMiddleware(func(h dispatcher.Handler) dispatcher.Handler { return h })}, wantCalls: 1},
	}
	d := newDispatcher(t, dispatcher.WithRetry(4, hour))
	fail := errors.New("fail")
	var mu sync.Mutex
	calls := map[string]int{}
	for _, tt := range tests {
		h := func(context.Context, dispatcher.Event) error {
			mu.Lock()
			calls[tt.name]++
			mu.Unlock()
			return fail
		}
		subscribe(t, d, "t", h, append([]dispatcher.SubscribeOption{dispatcher.WithName(tt.name)}, tt.give...)...)
	}
	emit(t, d, "t", nil)
	drainIgnoringFailures(t, d)

	dead := map[string]int{}
	for _, dl := range d.DeadLetters() {
		dead[dl.Subscriber] = dl.Attempts
	}
	for _, tt := range tests {
		if got := calls[tt.name]; got != tt.wantCalls {
			t.Errorf("subscriber %q called %d times, want %d", tt.name, got, tt.wantCalls)
		}
		if n, ok := dead[tt.name]; ok != tt.wantDead || (ok && n != tt.wantCalls) {
			t.Errorf("subscriber %q: dead letter after %d attempts (present %v), want present %v after %d", tt.name, n, ok, tt.wantDead, tt.wantCalls)
		}
	}
	if st := d.Stats(); st.Retrying != 3 {
		t.Errorf("Stats().Retrying = %d, want 3 (the subscribers with New's retry wait an hour)", st.Retrying)
	}
}

// TestPolicyTimeoutDeadline: each handler call's ctx has a deadline
// exactly WithTimeout's d after that call starts (synctest's clock does
// not move while goroutines run); On's WithTimeout replaces New's, longer
// or shorter; On's other options keep New's timeout.
func TestPolicyTimeoutDeadline(t *testing.T) {
	const noDeadline = time.Duration(-1)
	sec := time.Second
	tests := []struct {
		name    string
		giveNew []dispatcher.Option
		giveOn  []dispatcher.SubscribeOption
		want    time.Duration // noDeadline: the ctx has none
	}{
		{name: "none", want: noDeadline},
		{name: "New's", giveNew: []dispatcher.Option{dispatcher.WithTimeout(sec)}, want: sec},
		{name: "On's", giveOn: []dispatcher.SubscribeOption{dispatcher.WithTimeout(2 * sec)}, want: 2 * sec},
		{
			name:    "On's shorter replaces New's",
			giveNew: []dispatcher.Option{dispatcher.WithTimeout(3 * sec)},
			giveOn:  []dispatcher.SubscribeOption{dispatcher.WithTimeout(sec)},
			want:    sec,
		},
		{
			name:    "On's longer replaces New's",
			giveNew: []dispatcher.Option{dispatcher.WithTimeout(sec)},
			giveOn:  []dispatcher.SubscribeOption{dispatcher.WithTimeout(3 * sec)},
			want:    3 * sec,
		},
		{
			name:    "On's WithRetry keeps New's timeout",
			giveNew: []dispatcher.Option{dispatcher.WithTimeout(sec)},
			giveOn:  []dispatcher.SubscribeOption{dispatcher.WithRetry(2, nil)},
			want:    sec,
		},
		{
			name:    "the last of New's",
			giveNew: []dispatcher.Option{dispatcher.WithTimeout(sec), dispatcher.WithTimeout(5 * sec)},
			want:    5 * sec,
		},
		{
			name:    "the last of On's",
			giveNew: []dispatcher.Option{dispatcher.WithTimeout(sec)},
			giveOn:  []dispatcher.SubscribeOption{dispatcher.WithTimeout(2 * sec), dispatcher.WithTimeout(4 * sec)},
			want:    4 * sec,
		},
	}
	for _, tt := range tests {
		for _, mode := range []string{"Drain", "Run"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					ctx := context.Background()
					d := newDispatcher(t, append([]dispatcher.Option{dispatcher.WithWorkers(1)}, tt.giveNew...)...)
					var mu sync.Mutex
					var got []time.Duration // deadline - call start, per call
					var starts []time.Time
					h := func(ctx context.Context, e dispatcher.Event) error {
						start := time.Now()
						dl, ok := ctx.Deadline()
						mu.Lock()
						starts = append(starts, start)
						if ok {
							got = append(got, dl.Sub(start))
						} else {
							got = append(got, noDeadline)
						}
						mu.Unlock()
						advanceClock(7 * time.Second) // the next call starts later
						return nil
					}
					subscribe(t, d, "t", h, tt.giveOn...)
					advanceClock(90 * time.Second) // calls start long after New
					emitTopics(t, d, "t", "t", "t")
					if mode == "Drain" {
						if n := drain(t, d); n != 3 {
							t.Errorf("Drain(0) = %d, want 3", n)
						}
					} else {
						wait := startRun(t, ctx, d)
						if err := d.Shutdown(ctx); err != nil {
							t.Errorf("Shutdown() error = %v", err)
						}
						if err := wait(); err != nil {
							t.Errorf("Run() error = %v", err)
						}
					}
					want := []time.Duration{tt.want, tt.want, tt.want}
					if !slices.Equal(got, want) {
						t.Errorf("deadline - call start = %v, want %v (-1ns: no deadline)", got, want)
					}
					if len(starts) == 3 && starts[1].Sub(starts[0]) != 7*time.Second {
						t.Errorf("the calls started %v apart, want 7s (the test's own check of the clock)", starts[1].Sub(starts[0]))
					}
				})
			})
		}
	}
}

// TestPolicyTimeoutFailureIsRetried: a call that returns an error after its
// WithTimeout deadline passed (ctx.Err(), or any error) is a failure like
// any other: counted, retried within the budget, dead-lettered after it;
// under Run it is not taken for a call cut short by Run's stop.
func TestPolicyTimeoutFailureIsRetried(t *testing.T) {
	late := errors.New("late")
	tests := []struct {
		name string
		// give is the handler's behaviour for call number attempt: it
		// overruns the 1s deadline and fails while attempt <= fails.
		fails     int
		returnErr func(ctx context.Context) error
		wantStats dispatcher.Stats
		wantIs    error // the dead letter's error, if one
		wantTime  time.Duration
	}{
		{
			name:      "ctx.Err() then success",
			fails:     2,
			returnErr: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			wantStats: dispatcher.Stats{Emitted: 1, Delivered: 1, Failed: 2, Retried: 2},
			wantTime:  2 * time.Second,
		},
		{
			name:      "ctx.Err() every time",
			fails:     3,
			returnErr: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			wantStats: dispatcher.Stats{Emitted: 1, Failed: 3, Retried: 2, DeadLettered: 1, DeadLetters: 1},
			wantIs:    context.DeadlineExceeded,
			wantTime:  3 * time.Second,
		},
		{
			name:      "another error after the deadline",
			fails:     1,
			returnErr: func(context.Context) error { advanceClock(5 * time.Second); return late },
			wantStats: dispatcher.Stats{Emitted: 1, Delivered: 1, Failed: 1, Retried: 1},
			wantTime:  5 * time.Second,
		},
		{
			name:      "another error after the deadline, every time",
			fails:     3,
			returnErr: func(context.Context) error { advanceClock(5 * time.Second); return late },
			wantStats: dispatcher.Stats{Emitted: 1, Failed: 3, Retried: 2, DeadLettered: 1, DeadLetters: 1},
			wantIs:    late,
			wantTime:  15 * time.Second,
		},
	}
	for _, tt := range tests {
		for _, mode := range []string{"Drain", "Run"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					ctx := context.Background()
					d := newDispatcher(t, dispatcher.WithWorkers(2), dispatcher.WithRetry(3, nil), dispatcher.WithTimeout(time.Second))
					var calls atomic.Int32
					subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
						calls.Add(1)
						if e.Attempt <= tt.fails {
							return tt.returnErr(ctx)
						}
						return nil
					})
					start := time.Now()
					emit(t, d, "t", nil)
					if mode == "Drain" {
						n, err := d.Drain(ctx, 0)
						if want := min(3, tt.fails+1); n != want {
							t.Errorf("Drain(0) = %d, want %d", n, want)
						}
						if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
							t.Errorf("Drain(0) error = %v, want it to wrap %v", err, tt.wantIs)
						}
						if tt.wantIs == nil && err != nil {
							t.Errorf("Drain(0) error = %v, want nil", err)
						}
					} else {
						wait := startRun(t, ctx, d)
						if err := d.Shutdown(ctx); err != nil {
							t.Errorf("Shutdown() error = %v", err)
						}
						if err := wait(); err != nil {
							t.Errorf("Run() error = %v", err)
						}
					}
					if got := time.Since(start); got != tt.wantTime {
						t.Errorf("the calls took %v of fake time, want %v", got, tt.wantTime)
					}
					if st := d.Stats(); st != tt.wantStats {
						t.Errorf("Stats() = %+v, want %+v", st, tt.wantStats)
					}
					dls := d.DeadLetters()
					if tt.wantIs == nil && len(dls) != 0 {
						t.Errorf("DeadLetters() = %+v, want none", dls)
					}
					if tt.wantIs != nil && (len(dls) != 1 || !errors.Is(dls[0].Err, tt.wantIs) || dls[0].Attempts != 3) {
						t.Errorf("DeadLetters() = %+v, want one after 3 attempts wrapping %v", dls, tt.wantIs)
					}
				})
			})
		}
	}
}

// TestPolicyInvalidOption: a bad WithTimeout, WithRetry or WithMiddleware
// makes New and On fail with ErrInvalidOption, and a middleware that
// returns a nil Handler makes On fail (the wrapping is On's).
func TestPolicyInvalidOption(t *testing.T) {
	pass := func(next dispatcher.Handler) dispatcher.Handler { return next }
	tests := []struct {
		name string
		give dispatcher.PolicyOption
	}{
		{name: "WithTimeout(0)", give: dispatcher.WithTimeout(0)},
		{name: "WithTimeout(-1ns)", give: dispatcher.WithTimeout(-1)},
		{name: "WithTimeout(-1h)", give: dispatcher.WithTimeout(-time.Hour)},
		{name: "WithRetry(0)", give: dispatcher.WithRetry(0, nil)},
		{name: "WithMiddleware(nil)", give: dispatcher.WithMiddleware(nil)},
		{name: "WithMiddleware(pass, nil)", give: dispatcher.WithMiddleware(pass, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d, err := dispatcher.New(tt.give); d != nil || !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("New(%s) = %v, %v, want nil, ErrInvalidOption", tt.name, d, err)
				if d != nil {
					_ = d.Close()
				}
			}
			d := newDispatcher(t)
			if sub, err := d.On("t", func(context.Context, dispatcher.Event) error { return nil }, tt.give); sub != nil || !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("On(\"t\", h, %s) = %v, %v, want nil, ErrInvalidOption", tt.name, sub, err)
			}
		})
	}

	nilHandler := func(dispatcher.Handler) dispatcher.Handler { return nil }
	mwTests := []struct {
		name     string
		giveNew  []dispatcher.Middleware
		giveOn   []dispatcher.Middleware
		newFails bool // New's middleware returns nil: every On fails
	}{
		{name: "New's returns nil", giveNew: []dispatcher.Middleware{nilHandler}, newFails: true},
		{name: "New's inner returns nil", giveNew: []dispatcher.Middleware{pass, nilHandler}, newFails: true},
		{name: "New's outer returns nil", giveNew: []dispatcher.Middleware{nilHandler, pass}, newFails: true},
		{name: "On's returns nil", giveOn: []dispatcher.Middleware{nilHandler}},
		{name: "On's returns nil under New's", giveNew: []dispatcher.Middleware{pass}, giveOn: []dispatcher.Middleware{pass, nilHandler}},
	}
	for _, tt := range mwTests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDispatcher(t, dispatcher.WithMiddleware(tt.giveNew...))
			var calls atomic.Int32
			h := func(context.Context, dispatcher.Event) error { calls.Add(1); return nil }
			if sub, err := d.On("t", h, dispatcher.WithName("mw"), dispatcher.WithMiddleware(tt.giveOn...)); sub != nil || !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("On() = %v, %v, want nil, ErrInvalidOption", sub, err)
			}
			// The failed On left no subscription behind, and its name
			// is free; with New's middleware at fault, every On fails.
			if _, err := d.On("other", h, dispatcher.WithName("mw")); (err != nil) != tt.newFails {
				t.Errorf("On(\"other\") after the failed On error = %v, want an error: %v", err, tt.newFails)
			}
			emitTopics(t, d, "t")
			if n := drain(t, d); n != 1 || calls.Load() != 0 {
				t.Errorf("Drain(0) = %d with %d calls, want 1 event and no call", n, calls.Load())
			}
		})
	}
}

// TestPolicyMiddlewareOrder: New's middlewares are outermost, in the order
// given (over several WithMiddleware options), then On's, then the
// handler; each subscription gets its own chain, built once by On.
func TestPolicyMiddlewareOrder(t *testing.T) {
	tests := []struct {
		name    string
		giveNew [][]string // WithMiddleware options of New, by middleware name
		giveOn  [][]string // WithMiddleware options of On
		want    []string
	}{
		{name: "none", want: []string{"h"}},
		{name: "New's", giveNew: [][]string{{"n1", "n2"}}, want: []string{"n1>", "n2>", "h", "<n2", "<n1"}},
		{name: "On's", giveOn: [][]string{{"o1", "o2"}}, want: []string{"o1>", "o2>", "h", "<o2", "<o1"}},
		{
			name:    "New's outside On's",
			giveNew: [][]string{{"n1", "n2"}},
			giveOn:  [][]string{{"o1"}},
			want:    []string{"n1>", "n2>", "o1>", "h", "<o1", "<n2", "<n1"},
		},
		{
			name:    "several options each",
			giveNew: [][]string{{"n1"}, {"n2", "n3"}},
			giveOn:  [][]string{{"o1", "o2"}, {"o3"}},
			want:    []string{"n1>", "n2>", "n3>", "o1>", "o2>", "o3>", "h", "<o3", "<o2", "<o1", "<n3", "<n2", "<n1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l callLog
			var built sync.Map // middleware name -> *atomic.Int32, how many handlers it wrapped
			mw := func(name string) dispatcher.Middleware {
				return func(next dispatcher.Handler) dispatcher.Handler {
					n, _ := built.LoadOrStore(name, new(atomic.Int32))
					n.(*atomic.Int32).Add(1)
					return func(ctx context.Context, e dispatcher.Event) error {
						l.add("%s>", name)
						err := next(ctx, e)
						l.add("<%s", name)
						return err
					}
				}
			}
			mws := func(names []string) []dispatcher.Middleware {
				var out []dispatcher.Middleware
				for _, n := range names {
					out = append(out, mw(n))
				}
				return out
			}
			var newOpts []dispatcher.Option
			for _, names := range tt.giveNew {
				newOpts = append(newOpts, dispatcher.WithMiddleware(mws(names)...))
			}
			var onOpts []dispatcher.SubscribeOption
			for _, names := range tt.giveOn {
				onOpts = append(onOpts, dispatcher.WithMiddleware(mws(names)...))
			}
			d := newDispatcher(t, newOpts...)
			subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { l.add("h"); return nil }, onOpts...)

			for i := range 3 {
				l = callLog{}
				emit(t, d, "t", i)
				drain(t, d)
				checkCalls(t, fmt.Sprintf("event %d", i+1), &l, tt.want...)
			}
			// Built once by On, not per call: every middleware wrapped
			// one handler.
			built.Range(func(k, v any) bool {
				if n := v.(*atomic.Int32).Load(); n != 1 {
					t.Errorf("middleware %v wrapped %d handlers, want 1", k, n)
				}
				return true
			})

			// A second subscription gets New's middleware and not the
			// first one's.
			l = callLog{}
			subscribe(t, d, "u", func(context.Context, dispatcher.Event) error { l.add("h2"); return nil })
			emit(t, d, "u", nil)
			drain(t, d)
			var want []string
			for _, names := range tt.giveNew {
				for _, n := range names {
					want = append(want, n+">")
				}
			}
			inner := slices.Clone(want)
			slices.Reverse(inner)
			want = append(want, "h2")
			for _, s := range inner {
				want = append(want, "<"+s[:len(s)-1])
			}
			checkCalls(t, "second subscription", &l, want...)
		})
	}
}

// TestPolicyMiddlewareSeesTheCall: a middleware gets the event with its
// Attempt, the call's ctx (with WithTimeout's deadline) and the handler's
// error, and what it returns is the call's outcome.
func TestPolicyMiddlewareSeesTheCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := errors.New("fail")
		var l callLog
		observe := func(next dispatcher.Handler) dispatcher.Handler {
			return func(ctx context.Context, e dispatcher.Event) error {
				dl, ok := ctx.Deadline()
				err := next(ctx, e)
				l.add("id=%d attempt=%d deadline=%v/%v err=%v", e.ID, e.Attempt, time.Until(dl), ok, err)
				if e.Attempt == 2 {
					return nil // the middleware decides: success
				}
				return err
			}
		}
		d := newDispatcher(t, dispatcher.WithRetry(3, nil), dispatcher.WithTimeout(time.Minute), dispatcher.WithMiddleware(observe))
		subscribe(t, d, "t", func(context.Context, dispatcher.Event) error { return fail })
		emit(t, d, "t", nil)
		if n, err := d.Drain(context.Background(), 0); n != 2 || err != nil {
			t.Errorf("Drain(0) = %d, %v, want 2, nil", n, err)
		}
		checkCalls(t, "middleware", &l,
			"id=1 attempt=1 deadline=1m0s/true err=fail",
			"id=1 attempt=2 deadline=1m0s/true err=fail")
		want := dispatcher.Stats{Emitted: 1, Delivered: 1, Failed: 1, Retried: 1}
		if st := d.Stats(); st != want {
			t.Errorf("Stats() = %+v, want %+v", st, want)
		}
	})
}

// asOnly exposes the error it holds to errors.As through its As method
// alone, without Unwrap: errors.Is does not see inside it, errors.As does.
type asOnly struct{ inner error }

func (e asOnly) Error() string      { return "as-only: " + e.inner.Error() }
func (e asOnly) As(target any) bool { return errors.As(e.inner, target) }
