package watermillbus

import "errors"

// Sentinel errors. Compare with errors.Is: the package wraps them with
// detail.
var (
	// ErrClosed is returned by Publish and Subscribe after the PubSub or
	// its Bus was closed, and by Bus.PubSub after Bus.Close.
	ErrClosed = errors.New("watermillbus: closed")

	// ErrBacklogFull is returned by Publish when the topic already holds
	// Config.BacklogLimit messages that no subscription has taken: the
	// message is not published.
	ErrBacklogFull = errors.New("watermillbus: topic backlog full")

	// ErrInvalidConfig is wrapped by the error NewBus and New return for a
	// Config with a bad value.
	ErrInvalidConfig = errors.New("watermillbus: invalid config")

	// ErrForeignEvent is returned by the Bus's ringbus handler for an event
	// under its TopicPrefix whose payload is not an *Envelope: the
	// dispatcher records it as a dead letter instead of dropping it.
	ErrForeignEvent = errors.New("watermillbus: event under the bus's prefix was not published by a Bus")
)
