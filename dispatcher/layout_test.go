package dispatcher_test

// The memory layout of the event queue.

import (
	"testing"
	"unsafe"

	"github.com/ringbus/ringbus/dispatcher"
)

// TestRingSlotIsOneCacheLine holds the queue's padding to its purpose: a
// ring slot of exactly 64 bytes, one cache line.
func TestRingSlotIsOneCacheLine(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the slot's padding is sized for 64-bit platforms")
	}
	if got := dispatcher.SlotSize(); got != 64 {
		t.Errorf("SlotSize() = %d, want 64: fix the padding of the ring's element", got)
	}
}
