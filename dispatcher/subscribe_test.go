package dispatcher_test

// On, subscription names, topic patterns and Unsubscribe.

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestOnRejectsBadPatterns(t *testing.T) {
	for _, give := range []string{
		"", ".", "..", "a.", ".a", "a..b", "a*b", "*a", "a*", "a>", ">a", "a.b>",
		">.a", "a.>.b", ">.>", "**", ">>", "a.**", "run.*x",
	} {
		t.Run(give, func(t *testing.T) {
			d := newDispatcher(t)
			sub, err := d.On(give, func(context.Context, dispatcher.Event) error { return nil })
			if !errors.Is(err, dispatcher.ErrBadTopic) {
				t.Errorf("On(%q) error = %v, want ErrBadTopic", give, err)
			}
			if sub != nil {
				t.Errorf("On(%q) returned a subscription with its error", give)
			}
		})
	}
}

func TestOnAcceptsGoodPatterns(t *testing.T) {
	for _, give := range []string{
		"a", "run.finished", "*", ">", "run.*", "*.finished", "run.>", "*.*.>", "a.*.c", "a-b_c.D9",
	} {
		t.Run(give, func(t *testing.T) {
			d := newDispatcher(t)
			if _, err := d.On(give, func(context.Context, dispatcher.Event) error { return nil }); err != nil {
				t.Errorf("On(%q) error = %v, want nil", give, err)
			}
		})
	}
}

func TestOnRejectsNilHandlerAndBadSubscribeOptions(t *testing.T) {
	ok := func(context.Context, dispatcher.Event) error { return nil }
	tests := []struct {
		name string
		h    dispatcher.Handler
		opts []dispatcher.SubscribeOption
	}{
		{"nil handler", nil, nil},
		{"WithName(\"\")", ok, []dispatcher.SubscribeOption{dispatcher.WithName("")}},
		{"nil SubscribeOption", ok, []dispatcher.SubscribeOption{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDispatcher(t)
			sub, err := d.On("a", tt.h, tt.opts...)
			if !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("On(%q, %s) error = %v, want ErrInvalidOption", "a", tt.name, err)
			}
			if sub != nil {
				t.Errorf("On(%q, %s) returned a subscription with its error", "a", tt.name)
			}
			// Nothing was subscribed: an event on "a" reaches no handler.
			emitTopics(t, d, "a")
			drain(t, d)
			if st := d.Stats(); st.Delivered+st.Failed != 0 {
				t.Errorf("handler calls after a refused On = %d, want 0", st.Delivered+st.Failed)
			}
		})
	}
}

func TestSubscriptionNames(t *testing.T) {
	d := newDispatcher(t)
	fail := errors.New("fail")
	var l callLog
	named := subscribe(t, d, "run.finished", l.handler("named", fail), dispatcher.WithName("audit"))
	gen1 := subscribe(t, d, "run.finished", l.handler("gen1", fail))
	gen2 := subscribe(t, d, "run.finished", l.handler("gen2", fail))

	if got := named.Name(); got != "audit" {
		t.Errorf("Name() = %q, want %q", got, "audit")
	}
	for _, s := range []*dispatcher.Subscription{gen1, gen2} {
		if got := s.Name(); got == "" || !strings.Contains(got, "run.finished") {
			t.Errorf("generated Name() = %q, want a non-empty name that contains the pattern", got)
		}
	}
	if gen1.Name() == gen2.Name() {
		t.Errorf("two subscriptions to one pattern got the same generated name %q", gen1.Name())
	}

	emitTopics(t, d, "run.finished")
	_, err := d.Drain(context.Background(), 0)
	dls := d.DeadLetters()
	var gotNames []string
	for _, dl := range dls {
		gotNames = append(gotNames, dl.Subscriber)
	}
	wantNames := []string{"audit", gen1.Name(), gen2.Name()}
	if !slices.Equal(gotNames, wantNames) {
		t.Errorf("DeadLetters() subscribers = %q, want %q", gotNames, wantNames)
	}
	var errNames []string
	for _, he := range handlerErrors(err) {
		errNames = append(errNames, he.Subscriber)
	}
	if !slices.Equal(errNames, wantNames) {
		t.Errorf("Drain error's HandlerError subscribers = %q, want %q", errNames, wantNames)
	}
}

func TestTopicPatternsThroughTheDispatcher(t *testing.T) {
	tests := []struct {
		pattern string
		topic   string
		want    bool
	}{
		{"run.finished", "run.finished", true},
		{"run.finished", "run.finishedx", false},
		{"run.finished", "run", false},
		{"run.finished", "run.finished.x", false},
		{"run.*", "run.finished", true},
		{"run.*", "run", false},
		{"run.*", "run.a.b", false},
		{"run.*", "job.finished", false},
		{"*.finished", "run.finished", true},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.c", false},
		{"*", "run", true},
		{"*", "run.finished", false},
		{"run.>", "run.a", true},
		{"run.>", "run.a.b", true},
		{"run.>", "run", false},
		{"run.>", "runner.a", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"*.>", "a", false},
		{"*.>", "a.b", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.topic, func(t *testing.T) {
			d := newDispatcher(t)
			var got []string
			subscribe(t, d, tt.pattern, func(_ context.Context, e dispatcher.Event) error {
				got = append(got, e.Topic)
				return nil
			})
			emitTopics(t, d, tt.topic)
			drain(t, d)
			if matched := len(got) == 1; matched != tt.want || len(got) > 1 {
				t.Errorf("On(%q) got %q for Emit(%q), want delivered: %v", tt.pattern, got, tt.topic, tt.want)
			}
		})
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	a := subscribe(t, d, "t", l.handler("a", nil))
	subscribe(t, d, "t", l.handler("b", nil))

	emitTopics(t, d, "t")
	drain(t, d)
	a.Unsubscribe()
	emitTopics(t, d, "t")
	drain(t, d)
	checkCalls(t, "after Unsubscribe", &l, "a:1", "b:1", "b:2")
}

func TestUnsubscribeAppliesToEventsAlreadyQueued(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	a := subscribe(t, d, "t", l.handler("a", nil))
	emitTopics(t, d, "t", "t")
	a.Unsubscribe()
	drain(t, d)
	checkCalls(t, "queued before Unsubscribe, drained after", &l)
}

func TestUnsubscribeIsIdempotent(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	a := subscribe(t, d, "t", l.handler("a", nil))
	b := subscribe(t, d, "t", l.handler("b", nil))
	a.Unsubscribe()
	a.Unsubscribe()
	a.Unsubscribe()
	emitTopics(t, d, "t")
	drain(t, d)
	// The repeated Unsubscribe must not remove another subscription.
	checkCalls(t, "after three Unsubscribe calls", &l, "b:1")
	b.Unsubscribe()
	emitTopics(t, d, "t")
	drain(t, d)
	checkCalls(t, "after every Unsubscribe", &l, "b:1")
}

func TestUnsubscribeFromInsideHandler(t *testing.T) {
	d := newDispatcher(t)
	var l callLog
	var self *dispatcher.Subscription
	self = subscribe(t, d, "t", func(ctx context.Context, e dispatcher.Event) error {
		l.add("once:%d", e.ID)
		self.Unsubscribe()
		self.Unsubscribe() // still idempotent from a handler
		return nil
	})
	subscribe(t, d, "t", l.handler("other", nil))
	emitTopics(t, d, "t", "t", "t")
	if n := drain(t, d); n != 3 {
		t.Errorf("Drain(0) = %d, want 3", n)
	}
	checkCalls(t, "handler that unsubscribes itself", &l, "once:1", "other:1", "other:2", "other:3")
}

func TestUnsubscribeDiscardsPendingRetries(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithRetry(3, nil))
	var l callLog
	sub := subscribe(t, d, "t", l.handler("bad", errors.New("fail")))
	emitTopics(t, d, "t")
	if _, err := d.Tick(context.Background()); err != nil {
		t.Fatalf("Tick() error = %v", err)
	}
	sub.Unsubscribe()
	drain(t, d)
	checkCalls(t, "after Unsubscribe", &l, "bad:1")
	st := d.Stats()
	if st.Dropped != 1 || st.Retried != 0 || st.DeadLettered != 0 || st.Retrying != 0 {
		t.Errorf("Stats() = %+v, want Dropped 1 (the discarded retry), Retried 0, DeadLettered 0, Retrying 0", st)
	}
}

// TestUnsubscribedHandlerIsNotKeptReachable: once a handler is unsubscribed
// and Drain has gone idle, the dispatcher keeps nothing reachable that only
// the handler holds, though Drain's last event went to that handler. A
// second subscription, made after it, stays.
func TestUnsubscribedHandlerIsNotKeptReachable(t *testing.T) {
	d := newDispatcher(t)
	sub, collected := subscribeHolding(t, d, "a.b")
	subscribe(t, d, "other", func(context.Context, dispatcher.Event) error { return nil })
	emit(t, d, "a.b", nil)
	if n := drain(t, d); n != 1 {
		t.Fatalf("Drain(0) = %d, want 1", n)
	}
	sub.Unsubscribe()
	if n := drain(t, d); n != 0 { // nothing queued: the consumer goes idle
		t.Fatalf("Drain(0) = %d, want 0", n)
	}
	runtime.GC()
	recv(t, collected, "the unsubscribed handler's memory to be collected")
	runtime.KeepAlive(d)
}

// subscribeHolding subscribes to pattern a handler that holds a pointer to
// memory nothing else holds, and returns a channel closed once the garbage
// collector has freed that memory.
func subscribeHolding(t *testing.T, d *dispatcher.Dispatcher, pattern string) (*dispatcher.Subscription, <-chan struct{}) {
	t.Helper()
	held := new([64]byte)
	collected := make(chan struct{})
	runtime.AddCleanup(held, func(c chan struct{}) { close(c) }, collected)
	sub := subscribe(t, d, pattern, func(context.Context, dispatcher.Event) error {
		runtime.KeepAlive(held)
		return nil
	})
	return sub, collected
}
