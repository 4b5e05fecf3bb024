package dispatcher

import "sync/atomic"

// subscriber is one registration made by On.
type subscriber struct {
	name   string
	seq    uint64  // subscription order: unique, ascending in On order
	pat    pattern // parsed pattern
	h      Handler
	active atomic.Bool // cleared by Unsubscribe
}
