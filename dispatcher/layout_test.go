package dispatcher

import (
	"context"
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

// TestMatchCacheKeepsNoReplacedIndex: the consumer's cached match answer
// must not keep an unsubscribed handler reachable once it is idle (see
// proc.forgetStaleMatch), and must survive while the index is current.
func TestMatchCacheKeepsNoReplacedIndex(t *testing.T) {
	ctx := context.Background()
	d, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	sub, err := d.On("a.b", func(context.Context, Event) error { return nil })
	if err != nil {
		t.Fatalf("On: %v", err)
	}
	if err := d.Emit(ctx, "a.b", nil); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if _, err := d.Drain(ctx, 0); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if d.tick.lastIndex != d.index.Load() {
		t.Fatalf("after a Drain under an unchanged index: cached index %p, want the current %p", d.tick.lastIndex, d.index.Load())
	}
	sub.Unsubscribe()
	if _, err := d.Drain(ctx, 0); err != nil { // nothing queued: no match runs
		t.Fatalf("Drain: %v", err)
	}
	if d.tick.lastIndex != nil || d.tick.lastSubs != nil {
		t.Errorf("after Unsubscribe and a Drain: cached index %p and subscribers %v, want none", d.tick.lastIndex, d.tick.lastSubs)
	}
}
