package dispatcher

import (
	"time"

	"github.com/ringbus/ringbus/internal/ring"
)

// What the external tests (package dispatcher_test) need to see of the
// internals: each accessor says what it means and which test uses it.

// Running reports whether Run has taken the queue: from then on its
// workers handle the events, and Shutdown and Close stop Run instead of
// working on their caller's goroutine. startRun (helpers_test.go), which
// most tests of Run use, waits for it.
func Running(d *Dispatcher) bool { return d.owner.Load() == ownerRun }

// Sleepers returns how many of Run's workers are parked, waiting for an
// event. TestIdleRunUsesNoCPU and TestIdleParkedWorkerWakes wait for it.
func Sleepers(d *Dispatcher) int { return int(d.sleepers.Load()) }

// RoomLook is how long after a worker's take that left emitters blocked
// Run's scheduler gives them the room there is.
// TestRunBlockedEmitterLooksForRoomItself checks it.
const RoomLook time.Duration = roomLook

// SlotSize returns the size of one slot of the event queue's ring.
// TestRingSlotIsOneCacheLine checks it.
func SlotSize() uintptr { return ring.SlotSize[entry]() }

// Outstanding returns how many jobs outside the ring Flush's ledger counts
// as not finished. TestModel checks that it is 0 once everything is.
func Outstanding(d *Dispatcher) int64 { return d.ledger.outside() }
