package dispatcher_test

// Stats.

import (
	"context"
	"slices"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestStatsQueuedSeenFromAHandler: while a Tick processes the first of
// three events, the other two still wait to be processed.
func TestStatsQueuedSeenFromAHandler(t *testing.T) {
	d := newDispatcher(t)
	var seen []int
	subscribe(t, d, "t", func(context.Context, dispatcher.Event) error {
		seen = append(seen, d.Stats().Queued)
		return nil
	})
	emitTopics(t, d, "t", "t", "t")
	drain(t, d)
	if want := []int{2, 1, 0}; !slices.Equal(seen, want) {
		t.Errorf("Stats().Queued seen by the handler for events 1, 2, 3 = %v, want %v", seen, want)
	}
}
