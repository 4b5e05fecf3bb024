package dispatchertest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/ringbus/ringbus/dispatcher"
)

// Recorder records the events its handlers are called with, by topic. Its
// zero value is ready to use; it is safe for concurrent use, so it works
// under Run as well as with Tick, Drain and Settle. It must not be copied
// after first use.
//
// Subscribe Handle to record every call (each retry is one more call: the
// Event's Attempt tells them apart), or wrap a handler with Wrap to record
// the events it handled successfully.
type Recorder struct {
	mu      sync.Mutex
	all     []dispatcher.Event
	byTopic map[string][]dispatcher.Event
	// changed is closed, and replaced, each time an event is recorded:
	// Wait sleeps on it, so waiting costs no polling.
	changed chan struct{}
}

// Handle is a dispatcher.Handler that records e and returns nil:
// d.On("order.*", rec.Handle).
func (r *Recorder) Handle(_ context.Context, e dispatcher.Event) error {
	r.record(e)
	return nil
}

// Wrap returns a Handler that calls h and records e when h returns nil:
// the Recorder then holds the events h handled, each once, whatever the
// failed calls before.
func (r *Recorder) Wrap(h dispatcher.Handler) dispatcher.Handler {
	return func(ctx context.Context, e dispatcher.Event) error {
		if err := h(ctx, e); err != nil {
			return err
		}
		r.record(e)
		return nil
	}
}

func (r *Recorder) record(e dispatcher.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byTopic == nil {
		r.byTopic = make(map[string][]dispatcher.Event)
	}
	r.all = append(r.all, e)
	r.byTopic[e.Topic] = append(r.byTopic[e.Topic], e)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Events returns the events recorded on topic (an exact topic, not a
// pattern), in the order they were recorded.
func (r *Recorder) Events(topic string) []dispatcher.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byTopic[topic])
}

// All returns every event recorded, in the order they were recorded.
func (r *Recorder) All() []dispatcher.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// Topics returns the topics of the events recorded, sorted.
func (r *Recorder) Topics() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	topics := make([]string, 0, len(r.byTopic))
	for topic := range r.byTopic {
		topics = append(topics, topic)
	}
	slices.Sort(topics)
	return topics
}

// Len returns how many events were recorded on topic.
func (r *Recorder) Len(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byTopic[topic])
}

// Reset forgets every event recorded.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all, r.byTopic = nil, nil
}

// Wait blocks until at least n events were recorded on topic, and
// returns nil, or until ctx ends, and returns an error that wraps
// ctx.Err() and says how many came. It is for tests under Run, where
// events are handled on the workers: it waits on a channel, never polls,
// so inside a synctest bubble it lets the fake clock advance.
func (r *Recorder) Wait(ctx context.Context, topic string, n int) error {
	for {
		r.mu.Lock()
		got := len(r.byTopic[topic])
		if got >= n {
			r.mu.Unlock()
			return nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("dispatchertest: waiting for %d events on %q, %d recorded: %w", n, topic, got, ctx.Err())
		}
	}
}

// Payloads returns the payloads of the events recorded on topic as Ts,
// in the order they were recorded. A payload that is not a T fails the
// test (and is left out): the topic carries another type than the test
// expects, such as a *Order where an Order was meant. A nil payload is
// T's zero value when T is a pointer, interface, map, slice, channel or
// function type, as in dispatcher.Handle.
func Payloads[T any](tb TB, r *Recorder, topic string) []T {
	tb.Helper()
	events := r.Events(topic)
	out := make([]T, 0, len(events))
	for _, e := range events {
		p, ok := e.Payload.(T)
		if !ok && e.Payload == nil && nilable[T]() {
			ok = true
		}
		if !ok {
			tb.Errorf("dispatchertest: event %d on %q has payload %T (%v), want %v",
				e.ID, topic, e.Payload, e.Payload, reflect.TypeFor[T]())
			continue
		}
		out = append(out, p)
	}
	return out
}

// nilable reports whether nil converts to a T.
func nilable[T any]() bool {
	switch reflect.TypeFor[T]().Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func:
		return true
	}
	return false
}
