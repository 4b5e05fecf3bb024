package atomicx_test

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/ringbus/ringbus/internal/atomicx"
)

// TestStoreReleaseStoresTheValue: what StoreRelease stores is what Load
// returns, so the assembly writes the word atomic.Uint64 keeps its value
// in.
func TestStoreReleaseStoresTheValue(t *testing.T) {
	if got := unsafe.Sizeof(atomic.Uint64{}); got != 8 {
		t.Fatalf("unsafe.Sizeof(atomic.Uint64{}) = %d, want 8: StoreRelease writes its first word", got)
	}
	var pair [2]atomic.Uint64 // the neighbour must stay untouched
	for _, v := range []uint64{1, 0, 1 << 63, ^uint64(0), 42} {
		atomicx.StoreRelease(&pair[0], v)
		if got := pair[0].Load(); got != v {
			t.Fatalf("after StoreRelease(a, %#x): a.Load() = %#x", v, got)
		}
		if got := pair[1].Load(); got != 0 {
			t.Fatalf("StoreRelease wrote past its word: neighbour = %#x", got)
		}
	}
}

// TestStoreReleasePublishesEarlierWrites is the message-passing litmus
// test: a writer fills a message with plain writes and publishes its number
// with StoreRelease; a reader that loads the number must find the whole
// message. Without release ordering (or if the compiler moved the writes
// past the store) the reader would see a torn message. Under the race
// detector it also checks that the detector sees the hand-off.
func TestStoreReleasePublishesEarlierWrites(t *testing.T) {
	rounds := 200_000
	if testing.Short() {
		rounds = 20_000
	}
	var (
		seq atomic.Uint64
		msg [8]uint64
		ack atomic.Uint64
	)
	var wg sync.WaitGroup
	wg.Go(func() { // the reader
		for want := uint64(1); want <= uint64(rounds); want++ {
			for seq.Load() != want {
				runtime.Gosched()
			}
			for i, v := range msg {
				if v != want*uint64(i+1) {
					t.Errorf("round %d: msg[%d] = %d, want %d", want, i, v, want*uint64(i+1))
					ack.Store(uint64(rounds)) // stop the writer
					return
				}
			}
			ack.Store(want)
		}
	})
	for n := uint64(1); n <= uint64(rounds); n++ {
		for i := range msg {
			msg[i] = n * uint64(i+1)
		}
		atomicx.StoreRelease(&seq, n)
		for ack.Load() < n {
			runtime.Gosched()
		}
		if ack.Load() == uint64(rounds) && n < uint64(rounds) {
			break // the reader failed
		}
	}
	wg.Wait()
}

// TestPauseReturns: Pause returns for every count, zero and negative ones
// included (the assembly's loop must not run a count below 1 down through
// the whole int range).
func TestPauseReturns(t *testing.T) {
	for _, n := range []int{math.MinInt, -1, 0, 1, 2, 64} {
		atomicx.Pause(n)
	}
}
