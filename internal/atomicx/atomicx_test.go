package atomicx_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ringbus/ringbus/internal/atomicx"
)

func TestStoreRelease64StoresTheValue(t *testing.T) {
	var x uint64
	for _, v := range []uint64{1, 0, 1 << 63, ^uint64(0), 42} {
		atomicx.StoreRelease64(&x, v)
		if got := atomic.LoadUint64(&x); got != v {
			t.Fatalf("after StoreRelease64(&x, %#x): x = %#x", v, got)
		}
	}
}

// TestStoreRelease64PublishesEarlierWrites is the message-passing litmus
// test: a writer fills a message with plain writes and publishes its number
// with StoreRelease64; a reader that loads the number with sync/atomic must
// find the whole message. Without release ordering (or if the compiler
// moved the writes past the store) the reader would see a torn message.
// Under the race detector it also checks that the detector sees the
// hand-off. The -short run is smaller.
func TestStoreRelease64PublishesEarlierWrites(t *testing.T) {
	rounds := 200_000
	if testing.Short() {
		rounds = 20_000
	}
	var (
		seq uint64
		msg [8]uint64
		ack atomic.Uint64
	)
	var wg sync.WaitGroup
	wg.Go(func() { // the reader
		for want := uint64(1); want <= uint64(rounds); want++ {
			for atomic.LoadUint64(&seq) != want {
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
		atomicx.StoreRelease64(&seq, n)
		for ack.Load() < n {
			runtime.Gosched()
		}
		if ack.Load() == uint64(rounds) && n < uint64(rounds) {
			break // the reader failed
		}
	}
	wg.Wait()
}

// TestPauseReturns: Pause is a delay with no result to check; it must
// return, for every n (none for n <= 0).
func TestPauseReturns(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 64, 1 << 10} {
		atomicx.Pause(n)
	}
}
