package dispatcher

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
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

// CheckRetryHeap runs ops random operations on a retry heap (push, pop,
// and remove of a delayed event by the index its tracker records) against
// a sorted list, and returns the first difference, or nil.
// TestRetryHeap calls it.
func CheckRetryHeap(seed uint64, ops int) error {
	rng := rand.New(rand.NewPCG(seed, seed))
	var h retryHeap
	var model []retryItem // sorted by due, then seq
	var delayed []*tracker
	seq := uint64(0)
	base := time.Unix(0, 0)
	for op := range ops {
		switch k := rng.IntN(4); {
		case k < 2 || len(model) == 0:
			seq++
			it := retryItem{due: base.Add(time.Duration(rng.IntN(8)) * time.Second), seq: seq}
			it.ev.ID = seq
			if rng.IntN(2) == 0 {
				it.tr = newTracker(nil)
				it.tr.sched.Store(schedWaiting)
				delayed = append(delayed, it.tr)
			}
			h.push(it)
			i, _ := slices.BinarySearchFunc(model, it, compareRetries)
			model = slices.Insert(model, i, it)
		case k == 2 || len(delayed) == 0:
			got, want := h.pop(), model[0]
			model = model[1:]
			if got.ev.ID != want.ev.ID {
				return fmt.Errorf("op %d: pop = ID %d, want %d", op, got.ev.ID, want.ev.ID)
			}
			if got.tr != nil && got.tr.hidx != -1 {
				return fmt.Errorf("op %d: a popped delayed event's tracker still records index %d", op, got.tr.hidx)
			}
			delayed = slices.DeleteFunc(delayed, func(t *tracker) bool { return t == got.tr })
		default:
			t := delayed[rng.IntN(len(delayed))]
			if t.hidx < 0 || t.hidx >= len(h) || h[t.hidx].tr != t {
				return fmt.Errorf("op %d: a delayed event's recorded index %d is wrong", op, t.hidx)
			}
			got := h.remove(t.hidx)
			if got.tr != t || t.hidx != -1 {
				return fmt.Errorf("op %d: remove took ID %d, its tracker's index is %d", op, got.ev.ID, t.hidx)
			}
			model = slices.DeleteFunc(model, func(it retryItem) bool { return it.tr == t })
			delayed = slices.DeleteFunc(delayed, func(d *tracker) bool { return d == t })
		}
		if len(h) != len(model) {
			return fmt.Errorf("op %d: %d items, want %d", op, len(h), len(model))
		}
		for i, it := range h {
			if it.tr != nil && it.tr.hidx != i {
				return fmt.Errorf("op %d: the delayed event at %d records index %d", op, i, it.tr.hidx)
			}
		}
		if cap(h) > len(h) && h[:cap(h)][len(h)].ev.ID != 0 {
			return fmt.Errorf("op %d: a removed item stays reachable past the heap's end", op)
		}
	}
	for len(model) > 0 {
		if got, want := h.pop(), model[0]; got.ev.ID != want.ev.ID {
			return fmt.Errorf("final pop = ID %d, want %d", got.ev.ID, want.ev.ID)
		}
		model = model[1:]
	}
	return nil
}

func compareRetries(a, b retryItem) int {
	if c := a.due.Compare(b.due); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}
