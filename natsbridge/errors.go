package natsbridge

import "errors"

// Sentinel errors. Compare with errors.Is: the bridge wraps them with
// detail.
var (
	// ErrInvalidOption is wrapped by the error of New, StartEmbedded and
	// Consume for a configuration with a bad value.
	ErrInvalidOption = errors.New("natsbridge: invalid option")

	// ErrClosed is returned by Publish, PublishAsync and Consume after the
	// Bridge was closed, and by a Consumer's methods after it stopped.
	ErrClosed = errors.New("natsbridge: closed")

	// ErrReservedTopic is returned by Publish for a topic whose first
	// token is "dlq" (subjects <prefix>.dlq.<consumer> hold dead letters)
	// or "_sched" (subjects <prefix>._sched.<id> hold the schedules of
	// delayed events), and by Consume for a "_sched" pattern.
	ErrReservedTopic = errors.New("natsbridge: reserved topic")

	// ErrSchedule is wrapped by the error of a delayed publish (After,
	// At) that the stream cannot schedule: it does not allow message
	// schedules, or the delay is not shorter than its MaxAge.
	ErrSchedule = errors.New("natsbridge: the stream cannot schedule the event")

	// ErrDecode is wrapped by the failure a dead letter records when a
	// message's payload could not be decoded into the type bound to its
	// topic (see Bind). No redelivery fixes that: such a message is
	// dead-lettered at once.
	ErrDecode = errors.New("natsbridge: cannot decode payload")

	// ErrUnfinished is the failure a dead letter records for a message
	// that reached its last delivery without an outcome: every delivery
	// ended without an ack or a nak (the consuming process died, or it
	// stopped before the event was finished).
	ErrUnfinished = errors.New("natsbridge: delivered without an outcome")
)
