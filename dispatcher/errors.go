package dispatcher

import (
	"errors"
	"fmt"
)

// Sentinel errors. Compare with errors.Is: the dispatcher wraps them with
// detail.
var (
	// ErrInvalidOption is wrapped by the error New and On return for an
	// option with a bad value.
	ErrInvalidOption = errors.New("dispatcher: invalid option")

	// ErrFull is returned by Emit under the Reject policy when the queue is
	// full, and by an Emit from inside a handler that would have to wait
	// under Block (see the package doc, "Emitting from a handler").
	ErrFull = errors.New("dispatcher: queue full")

	// ErrDropped is returned by Emit under DropNewest when the queue is
	// full and the new event was discarded, and wrapped by Close when it
	// discarded queued events.
	ErrDropped = errors.New("dispatcher: event dropped")

	// ErrClosed is returned by Emit after Shutdown or Close (Shutdown still
	// accepts emits from handlers while it drains), by Tick and Drain after
	// either, and by Run after either.
	ErrClosed = errors.New("dispatcher: closed")

	// ErrRunning is wrapped by the error of Tick and Drain while Run owns
	// the queue or another Tick or Drain runs, of a second concurrent Run,
	// and of Shutdown called from a handler. The message says who owns the
	// queue and what to do.
	ErrRunning = errors.New("dispatcher: the queue is being processed")

	// ErrBadTopic is returned for an empty topic, a topic with a wildcard,
	// and a pattern that does not parse.
	ErrBadTopic = errors.New("dispatcher: bad topic")

	// ErrGoexit is the failure recorded for a handler call that ended its
	// goroutine with runtime.Goexit (t.FailNow and t.Fatal do that). Under
	// Run the worker is replaced; the rest of its batch stays queued.
	ErrGoexit = errors.New("dispatcher: handler called runtime.Goexit")

	// ErrPayloadType is returned by a Handle[T] or HandleEvent[T] handler
	// that got a payload of another type than T. Such a failure is never
	// retried: the pair becomes a dead letter at once.
	ErrPayloadType = errors.New("dispatcher: payload type mismatch")
)

// PanicError is the error a handler call becomes when the handler panics.
// It keeps the panic value and the stack of the panicking goroutine.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the stack trace at the panic, as runtime/debug.Stack formats it
}

// Error reports the panic value. The stack is in the Stack field.
func (e *PanicError) Error() string {
	return fmt.Sprintf("dispatcher: handler panicked: %v", e.Value)
}

// Unwrap returns the panic value when it is an error, so errors.Is and
// errors.As see through a panic(err).
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// HandlerError is how the errors of Tick and Drain report one dead-lettered
// handler failure: which subscriber failed on which event, at which
// attempt. Unwrap returns the handler's error (a *PanicError for a panic),
// which is also what the DeadLetter's Err holds.
type HandlerError struct {
	Subscriber string
	EventID    uint64
	Topic      string
	Attempt    int
	Err        error
}

// Error says which subscriber failed on which event, and why.
func (e *HandlerError) Error() string {
	return fmt.Sprintf("dispatcher: subscriber %q failed on event %d (%s), attempt %d: %v",
		e.Subscriber, e.EventID, e.Topic, e.Attempt, e.Err)
}

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

// Permanent marks err as a failure that no retry can fix (a malformed
// event, a programming error): the (event, subscriber) pair becomes a dead
// letter at its first failure, whatever the retry budget. errors.Is and
// errors.As on the result, and on the dead letter's Err, still reach err.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// isPermanent reports whether a handler's failure must not be retried: it
// was marked Permanent, or it is a payload type mismatch, which no retry
// changes.
func isPermanent(err error) bool {
	return hasPermanent(err) || errors.Is(err, ErrPayloadType)
}

// hasPermanent reports whether err's tree holds a *permanentError, as
// errors.As with a *permanentError target does. It walks the tree itself,
// because errors.As's target escapes to the heap: an allocation at every
// failure. An error with its own As method is handed to errors.As, which
// honours it.
func hasPermanent(err error) bool {
	for {
		switch x := err.(type) {
		case nil:
			return false
		case *permanentError:
			return true
		case interface{ As(any) bool }:
			var pe *permanentError
			return errors.As(err, &pe)
		case interface{ Unwrap() error }:
			err = x.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				if hasPermanent(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
}
