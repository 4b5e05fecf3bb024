package dispatcher

import (
	"context"
	"fmt"
	"reflect"
)

// Event is one emitted event as a handler sees it.
type Event struct {
	// ID is assigned by the dispatcher when the event is accepted: 1, 2,
	// 3, ... in emit order, without gaps. A value set by the caller of
	// EmitEvent is ignored.
	ID uint64
	// Topic is the dot-separated topic the event was emitted on.
	Topic string
	// Key is the optional ordering key: under Run, events with the same
	// non-empty key reach each subscriber in emit order, one at a time.
	Key string
	// Payload is the value given to Emit. The dispatcher never copies or
	// inspects it; a pointer payload is shared by every handler.
	Payload any
	// Attempt is 1 on the first call of a handler for this event, 2 on its
	// first retry, and so on. Redeliver starts again at 1.
	Attempt int
}

// Handler handles one event. A nil error means the event was handled; an
// error (or a panic) makes the dispatcher retry the call within the retry
// budget and then record a dead letter. ctx is cancelled when the
// dispatcher stops the handler's worker; pass it to Emit to emit from the
// handler.
type Handler func(ctx context.Context, e Event) error

// Handle adapts a function of a typed payload to a Handler. The handler
// fails with an error wrapping ErrPayloadType when an event's payload is
// not a T. A nil payload is passed as T's zero value when T is a pointer,
// interface, map, slice, channel or function type; for any other T it is a
// type mismatch.
func Handle[T any](fn func(ctx context.Context, p T) error) Handler {
	nilable := false
	switch reflect.TypeFor[T]().Kind() { // once, here: never on the hot path
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		nilable = true
	}
	return func(ctx context.Context, e Event) error {
		p, ok := e.Payload.(T)
		if !ok {
			if e.Payload != nil || !nilable {
				return fmt.Errorf("%w: event %d (%s) has payload %T, handler wants %v",
					ErrPayloadType, e.ID, e.Topic, e.Payload, reflect.TypeFor[T]())
			}
			// A nil payload and a nilable T: p is T's zero value, nil.
		}
		return fn(ctx, p)
	}
}
