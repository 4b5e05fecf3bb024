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
	// inspects it; a pointer payload is shared by every handler (see
	// "Payloads: values or pointers" in the package doc).
	Payload any
	// Attempt is 1 on the first call of a handler for this event, 2 on its
	// first retry, and so on. Redeliver starts again at 1.
	Attempt int
}

// Handler handles one event. A nil error means the event was handled; an
// error (or a panic) makes the dispatcher retry the call within the retry
// budget and then record a dead letter; an error wrapped by Permanent is
// dead-lettered at once.
//
// ctx is the dispatcher's, not the emitter's: under Run it derives from
// Run's ctx, under Tick, Drain or Shutdown (without Run) from the ctx of
// that call, with WithTimeout's deadline when one is set. The values and
// the cancellation of the ctx given to Emit do not cross the queue; put
// what a handler needs in the payload or the Event. ctx is cancelled when
// the dispatcher stops the handler's worker (Run's ctx ends, Close, or a
// Shutdown whose ctx ended). Pass it to Emit to emit from the handler.
// WithPropagator carries chosen values of the emitter's ctx into it.
type Handler func(ctx context.Context, e Event) error

// Handle adapts a function of a typed payload to a Handler: the handler
// gets e.Payload as a T. When the payload is not a T, the call fails with
// an error wrapping ErrPayloadType, which is never retried: the pair
// becomes a dead letter at once, and the other subscribers still get the
// event. The error names the event, the payload's type and T, and says
// what to change when the two differ only by a pointer:
//
//	dispatcher: payload type mismatch: event 3 (orders.placed) has payload main.Order, handler wants *main.Order: emit a pointer or use Handle[main.Order]
//
// A nil payload is passed as T's zero value when T is a pointer,
// interface, map, slice, channel or function type; for any other T it is a
// mismatch. Whether to emit values or pointers is discussed in the package
// doc ("Payloads: values or pointers"): use the same type in Emit and in
// Handle. HandleEvent also gives the handler the Event.
func Handle[T any](fn func(ctx context.Context, p T) error) Handler {
	pt := payloadTypeOf[T]("Handle")
	return func(ctx context.Context, e Event) error {
		p, err := payloadAs[T](&e, &pt)
		if err != nil {
			return err
		}
		return fn(ctx, p)
	}
}

// HandleEvent is Handle for a handler that needs the event as well as its
// typed payload: its ID, Topic, Key or Attempt (to log, to make a side
// effect idempotent, to behave differently on a retry). The payload is
// checked as Handle checks it, with the same errors; e.Payload still holds
// it, untyped.
func HandleEvent[T any](fn func(ctx context.Context, e Event, p T) error) Handler {
	pt := payloadTypeOf[T]("HandleEvent")
	return func(ctx context.Context, e Event) error {
		p, err := payloadAs[T](&e, &pt)
		if err != nil {
			return err
		}
		return fn(ctx, e, p)
	}
}

// payloadType is what Handle and HandleEvent know of their T, settled
// once, when the handler is made, so that a call only asserts the type.
type payloadType struct {
	want    reflect.Type
	nilable bool   // a nil payload is T's zero value
	adapter string // "Handle" or "HandleEvent", for the error's hint
}

func payloadTypeOf[T any](adapter string) payloadType {
	pt := payloadType{want: reflect.TypeFor[T](), adapter: adapter}
	switch pt.want.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		pt.nilable = true
	}
	return pt
}

// payloadAs returns e's payload as a T (pt describes T), or an error
// wrapping ErrPayloadType. Reflection runs only to build the error.
func payloadAs[T any](e *Event, pt *payloadType) (T, error) {
	p, ok := e.Payload.(T)
	if !ok && (e.Payload != nil || !pt.nilable) {
		return p, pt.mismatch(e.ID, e.Topic, e.Payload)
	}
	// Either a T, or a nil payload and a nilable T: p is T's zero value.
	return p, nil
}

// mismatch says that event id on topic has a payload of another type
// than the handler wants, and what to change when a pointer is all that
// differs.
func (pt *payloadType) mismatch(id uint64, topic string, payload any) error {
	want := pt.want
	if payload == nil {
		return fmt.Errorf("%w: event %d (%s) has a nil payload, handler wants %v: "+
			"a nil payload is only the zero value of a pointer, interface, map, slice, channel or function type",
			ErrPayloadType, id, topic, want)
	}
	got := reflect.TypeOf(payload)
	hint := ""
	switch {
	case want.Kind() == reflect.Pointer && want.Elem() == got:
		hint = fmt.Sprintf(": emit a pointer or use %s[%v]", pt.adapter, got)
	case got.Kind() == reflect.Pointer && got.Elem() == want:
		hint = fmt.Sprintf(": emit a value or use %s[%v]", pt.adapter, got)
	case want.Kind() == reflect.Interface && reflect.PointerTo(got).Implements(want):
		hint = fmt.Sprintf(": %v implements it, %v does not: emit a pointer", reflect.PointerTo(got), got)
	}
	return fmt.Errorf("%w: event %d (%s) has payload %v, handler wants %v%s",
		ErrPayloadType, id, topic, got, want, hint)
}
