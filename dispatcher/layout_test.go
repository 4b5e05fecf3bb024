package dispatcher

import (
	"testing"
	"unsafe"

	"github.com/ringbus/ringbus/internal/ring"
)

// TestRingSlotIsOneCacheLine holds entry's padding to its purpose: a ring
// slot of exactly 64 bytes (see entry).
func TestRingSlotIsOneCacheLine(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("entry's padding is sized for 64-bit platforms")
	}
	if got := ring.SlotSize[entry](); got != 64 {
		t.Errorf("ring.SlotSize[entry]() = %d, want 64: fix entry's padding", got)
	}
}
