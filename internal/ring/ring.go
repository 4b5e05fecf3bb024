// Package ring is the bounded multi-producer multi-consumer FIFO queue that
// sits between ringbus's producers and its workers, after Dmitry Vyukov's
// bounded MPMC queue.
//
// It is non-blocking in the common case but not lock-free: a push or pop
// claims a position with a CAS and then releases the position's slot with
// a store, and a producer or consumer preempted between the two makes every
// other one that reaches that slot wait (spinning, then yielding) until it
// runs again. What it avoids is a lock on the common path, not waiting.
package ring

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync/atomic"

	"github.com/ringbus/ringbus/internal/atomicx"
	"unsafe"
)

// falseSharingRange is the distance, in bytes, that keeps two hot words from
// sharing a cache line. Lines are 64 bytes on amd64 and most arm64 parts, but
// Intel's spatial prefetcher pulls lines in 128-byte aligned pairs, so two
// words 64 bytes apart still ping-pong between cores. 128 bytes is what
// Folly's hardware_destructive_interference_size and crossbeam's CachePadded
// use on x86-64 and arm64.
const falseSharingRange = 128

// cacheLine is the size of a cache line on amd64 and most arm64 parts.
const cacheLine = 64

// wordSize is the size of a pointer; a slice header is three words. Ring's
// padding uses it so that head and tail keep their offsets on 32-bit
// platforms too.
const wordSize = bits.UintSize / 8

// MaxCapacity is the largest capacity New accepts: the largest power of two
// an int holds on 32-bit platforms, so that Cap and Len fit an int
// everywhere. A ring that large takes at least 8 GiB of slots.
const MaxCapacity = 1 << 30

// SlotSize returns the bytes a Ring[T] uses per position: T and its
// sequence number. A caller that keeps it a multiple of 64 (padding T) gets
// slots that never share a cache line (the slot array of a power-of-two
// number of them is 64-byte aligned by Go's allocator).
func SlotSize[T any]() uintptr { return unsafe.Sizeof(slot[T]{}) }

// closedBit marks the tail as closed. Positions count pushes from zero and
// never reach 2^63 (that is centuries at a billion pushes a second), so the
// top bit is free.
const closedBit = 1 << 63

// spinsBeforeYield bounds the busy-wait on a slot whose owner is between its
// claim and its release before the waiter yields the processor.
const spinsBeforeYield = 16

// Ring is a bounded multi-producer multi-consumer FIFO queue of T.
//
// It follows Dmitry Vyukov's bounded MPMC queue: an array of slots, each
// with a sequence number, and two monotonically increasing positions, tail
// (next push) and head (next pop). A position p maps to slot p&mask. The
// sequence number of a slot says whose turn it is:
//
//	seq == p        the slot is free for the producer of position p
//	seq == p+1      the slot holds the value pushed at position p, ready for
//	                the consumer of position p
//	seq == p+cap    the consumer of p is done; the slot is free for the
//	                producer of position p+cap (the next lap)
//
// Invariants:
//   - head <= tail <= head+cap: the ring never holds more than cap values.
//   - Only the goroutine whose CAS moved tail from p to p+1 writes slot
//     p&mask, and only until it stores seq = p+1.
//   - Only the goroutine whose CAS moved head past p reads and clears slot
//     p&mask, and only until it stores seq = p+cap.
//   - A value is pushed at exactly one position and popped at exactly one
//     position; a popped slot is cleared so the ring keeps nothing alive.
//
// So a slot is owned by nobody (waiting for its turn), by one producer
// (between the tail CAS and the seq store), or by one consumer (between the
// head CAS and the seq store). The sequence number is the only hand-off;
// the value itself is plain memory, published by the release of the seq
// store and acquired by the other side's seq load.
//
// TryPush and TryPop never fail while the ring has room or values: when the
// slot at the position they read is still owned by a goroutine that claimed
// it but has not released it yet, they wait for it (spinning, then yielding)
// rather than report a full or empty ring that is neither. That keeps every
// call linearizable; the price is that the ring is not lock-free: a
// producer or consumer descheduled inside its claim delays the ones that
// reach its slot next, for as long as it stays descheduled.
//
// The scheme needs at least two slots: with one, "ready for the consumer of
// p" (p+1) would read as "free for the producer of p+1". A ring of capacity
// 1 therefore has two slots, and its producers also check head.
//
// head and tail sit on cache lines of their own (see falseSharingRange).
// Slots are not padded: small ones are spread so that neighbouring
// positions do not share a line (see New), and a user that wants each slot
// on lines of its own pads T (see SlotSize).
//
// A Ring must not be copied after first use.
type Ring[T any] struct {
	_     noCopy
	mask  uint64
	cap   uint64 // len(slots), or 1 for a ring of capacity 1
	slots []slot[T]
	// Position p lives in slot ((p&lineMask)<<perLine | (p&mask)>>lines):
	// consecutive positions go to different falseSharingRange blocks, so a
	// producer writing position p and a consumer reading p-1 do not share
	// a line. See New.
	lineMask uint64
	// zero points to a T that is never written, which a pop copies into
	// the slots it empties. (A zero T on the stack is stored with
	// overlapping stores, and copying it stalls on them, store forwarding
	// failing, at every pop.)
	zero    *T
	perLine uint8
	lines   uint8
	// The fields above are read-only after New. The padding fills them out
	// to falseSharingRange bytes (three uint64s, a three-word slice header,
	// a pointer and two bytes), so that head and tail each start a range
	// of their own: TestLayout checks the offsets on every platform it
	// runs on.
	_    [falseSharingRange - 3*8 - 4*wordSize - 2]byte
	head atomic.Uint64
	_    [falseSharingRange - 8]byte
	tail atomic.Uint64 // closedBit | next push position
	_    [falseSharingRange - 8]byte
}

type slot[T any] struct {
	// seq says whose turn the slot is (see Ring). Only the slot's owner
	// stores to it, and the store hands the slot over.
	seq atomic.Uint64 // loaded with Load, stored by its owner with atomicx.StoreRelease
	val T
}

// New returns an empty ring that holds capacity values, rounded up to a
// power of two. A capacity below 1 or above MaxCapacity is a programming
// error and panics.
func New[T any](capacity int) *Ring[T] {
	if capacity < 1 {
		panic(fmt.Sprintf("ring: capacity %d is below 1", capacity))
	}
	if capacity > MaxCapacity {
		panic(fmt.Sprintf("ring: capacity %d is above MaxCapacity (2^30)", capacity))
	}
	n := uint64(2) // see the type comment
	for n < uint64(capacity) {
		n <<= 1
	}
	r := &Ring[T]{mask: n - 1, cap: n, slots: make([]slot[T], n), zero: new(T)}
	if capacity == 1 {
		r.cap = 1
	}
	// Slots smaller than a cache line would put consecutive positions,
	// which a producer and a consumer use at the same time, on one line.
	// Spread them over blocks of falseSharingRange bytes: with k slots to
	// a block (a power of two) and n/k blocks, position p goes to block p
	// mod n/k, at index p div n/k within it. A slot of a line or more is
	// stored in position order (k = 1): each position has lines of its
	// own when the slot size is a multiple of the line, and a consumer
	// taking a batch reads consecutive lines, which the hardware
	// prefetches (BENCHMARKS.md has the measurement behind this choice).
	k := uint64(1)
	size := uint64(SlotSize[T]())
	for size < cacheLine && 2*k*size <= falseSharingRange && 2*k <= n/2 {
		k *= 2
	}
	blocks := n / k
	r.lineMask = blocks - 1
	r.perLine = uint8(bits.TrailingZeros64(k))
	r.lines = uint8(bits.TrailingZeros64(blocks))
	for i := range n {
		r.slot(i).seq.Store(i)
	}
	return r
}

// slot returns the slot of position pos.
func (r *Ring[T]) slot(pos uint64) *slot[T] {
	i := pos & r.mask
	// The shift counts are below 64; masking them says so to the
	// compiler, which otherwise adds the zeroing that Go's shifts by 64 or
	// more need.
	return &r.slots[(i&r.lineMask)<<(r.perLine&63)|i>>(r.lines&63)]
}

// Cap returns the number of values the ring holds when full.
func (r *Ring[T]) Cap() int { return int(r.cap) }

// Len returns the number of values in the ring, counting pushes that have
// claimed a position and not finished. Under concurrent use it is a
// snapshot that may be stale by the time it returns.
func (r *Ring[T]) Len() int {
	h := r.head.Load()
	t := r.tail.Load() &^ closedBit // loaded after h, so t >= h
	n := t - h
	if n > r.cap {
		// head and tail moved between the two loads.
		return int(r.cap)
	}
	return int(n)
}

// Pushed reports how many values were ever pushed: the position the next
// push will take.
func (r *Ring[T]) Pushed() uint64 { return r.tail.Load() &^ closedBit }

// Popped returns how many pops have claimed their position: every
// position below it is taken out of the ring (or being read by its
// consumer).
func (r *Ring[T]) Popped() uint64 { return r.head.Load() }

// Close makes every later push fail. Values already pushed stay and can be
// popped; a push that claimed its position before Close completes. Close is
// idempotent.
func (r *Ring[T]) Close() { r.tail.Or(closedBit) }

// Reopen undoes Close: pushes succeed again, at the positions that follow
// the last push before Close.
func (r *Ring[T]) Reopen() { r.tail.And(^uint64(closedBit)) }

// Closed reports whether Close was called (and Reopen not since).
func (r *Ring[T]) Closed() bool { return r.tail.Load()&closedBit != 0 }

// TryPush appends v and reports whether it did; it fails only when the ring
// is full or closed.
func (r *Ring[T]) TryPush(v T) bool {
	spins, fails := 0, 0
	pos := r.tail.Load()
	for {
		if pos&closedBit != 0 {
			return false
		}
		s := r.slot(pos)
		seq := s.seq.Load()
		switch {
		case seq == pos:
			// The slot is free for position pos. Claim it; on success it
			// is ours alone until the seq store below publishes it.
			if r.cap == 1 && pos != r.head.Load() {
				return false // capacity 1: the other slot is still full
			}
			if r.tail.CompareAndSwap(pos, pos+1) {
				s.val = v
				// Hand the slot to the consumer of pos: whoever loads
				// pos+1 sees v. Only this goroutine writes seq now, so a
				// release store is enough (see internal/atomicx).
				atomicx.StoreRelease(&s.seq, pos+1)
				return true
			}
			// Another producer won.
			fails = lostCAS(fails)
			pos = r.tail.Load()
		case seq < pos:
			// The slot still holds the value from the previous lap. The
			// ring is full if head is a whole lap behind pos; otherwise
			// its consumer claimed it and is still copying it out.
			// pos may be stale by now, with head already past it, so
			// compare without subtracting: pos-head would wrap around
			// and report a full ring that never was.
			if r.head.Load()+r.cap <= pos {
				return false
			}
			spins = backoff(spins)
			pos = r.tail.Load()
		default:
			// Another producer took pos; catch up.
			pos = r.tail.Load()
		}
	}
}

// TryPop removes and returns the oldest value and reports whether there was
// one.
func (r *Ring[T]) TryPop() (T, bool) {
	var buf [1]T
	n, _ := r.pop(buf[:], 1)
	return buf[0], n == 1
}

// TryPopN removes up to len(dst) of the oldest values into dst, in FIFO
// order, and returns how many it removed and the position of the first:
// the number of values pushed before dst[0], so positions count 0, 1, 2, ...
// in push order. It takes the values in one claim, so a consumer pays for
// the shared head once per batch instead of once per value.
func (r *Ring[T]) TryPopN(dst []T) (n int, first uint64) {
	return r.pop(dst, 1)
}

// TryPopShare is TryPopN for one of parts consumers that share the ring:
// of the k values ready at the head (counting at most len(dst)), it takes
// ceil(k/parts) and leaves the rest to the others, so that a few values
// spread over the consumers instead of going to the first that comes.
// parts below 1 count as 1.
func (r *Ring[T]) TryPopShare(dst []T, parts int) (n int, first uint64) {
	return r.pop(dst, max(parts, 1))
}

// Ready reports whether the value at the head is completely pushed, so
// that a pop would take it at once. Unlike Len it does not read the tail,
// whose cache line moves to the pushing core at every push: a consumer
// that polls Ready while the ring is empty does not slow the producers
// down. It may answer false for a value whose push is finishing, so it is
// a hint for polling; decide with Len or a pop.
func (r *Ring[T]) Ready() bool {
	for {
		pos := r.head.Load()
		seq := r.slot(pos).seq.Load()
		switch {
		case seq == pos+1:
			return true
		case seq < pos+1:
			return false // not pushed yet, or being pushed
		}
		// Another consumer took pos (seq moved a lap on): look again.
	}
}

func (r *Ring[T]) pop(dst []T, parts int) (int, uint64) {
	if len(dst) == 0 {
		return 0, r.head.Load()
	}
	limit := uint64(len(dst))
	spins, fails := 0, 0
	pos := r.head.Load()
	for {
		s := r.slot(pos)
		seq := s.seq.Load()
		if seq == pos+1 {
			// Count the ready slots from pos on: ready means seq == p+1.
			n := uint64(1)
			for n < limit && r.slot(pos+n).seq.Load() == pos+n+1 {
				n++
			}
			if parts > 1 {
				// Only shares pay for a division (a DIV instruction).
				n = (n + uint64(parts) - 1) / uint64(parts)
			}
			// Claim positions [pos, pos+n). A ready slot stays ready until
			// its consumer releases it, and only the CAS winner consumes
			// it, so the slots we counted are still ready after the CAS.
			if !r.head.CompareAndSwap(pos, pos+n) {
				// Another consumer won.
				fails = lostCAS(fails)
				pos = r.head.Load()
				continue
			}
			zero := r.zero
			dst = dst[:n]
			for i := range dst {
				if i > 0 {
					s = r.slot(pos + uint64(i))
				}
				dst[i] = s.val
				s.val = *zero
				// Hand the slot to the producer of the next lap, with
				// the value cleared.
				atomicx.StoreRelease(&s.seq, pos+uint64(i)+r.mask+1)
			}
			return int(n), pos
		}
		if seq > pos+1 {
			// Another consumer took pos already; catch up.
			pos = r.head.Load()
			continue
		}
		// The slot is not ready. The ring is empty if nothing was pushed
		// at pos; otherwise its producer claimed it and is still writing.
		if r.tail.Load()&^closedBit <= pos {
			return 0, pos
		}
		spins = backoff(spins)
		pos = r.head.Load()
	}
}

// backoff waits a little for a goroutine that owns a slot to release it.
func backoff(spins int) int {
	if spins < spinsBeforeYield {
		return spins + 1
	}
	runtime.Gosched()
	return spins
}

// lostCAS counts one more lost CAS on head or tail, waits for 2^count
// spin-wait hints (at most 64, see atomicx.Pause), and returns the count.
// Retrying at once would take the line back from the winner before it
// finishes with it.
func lostCAS(fails int) int {
	fails++
	atomicx.Pause(1 << min(fails, 6))
	return fails
}

// noCopy lets go vet's copylocks check flag copies of a Ring.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}
