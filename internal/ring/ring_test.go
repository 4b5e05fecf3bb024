package ring

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
	"weak"

	"golang.org/x/sync/errgroup"
)

// Helpers for the sequential scenarios. Each reports through t and goes on,
// so one run shows every step that went wrong.

func wantPush(t *testing.T, q queue[int], v int) {
	t.Helper()
	if !q.TryPush(v) {
		t.Errorf("TryPush(%d) = false, want true", v)
	}
}

func wantPushFail(t *testing.T, q queue[int], v int) {
	t.Helper()
	if q.TryPush(v) {
		t.Errorf("TryPush(%d) = true, want false", v)
	}
}

func wantPop(t *testing.T, q queue[int], want int) {
	t.Helper()
	if got, ok := q.TryPop(); !ok || got != want {
		t.Errorf("TryPop() = %v, %v, want %v, true", got, ok, want)
	}
}

func wantEmpty(t *testing.T, q queue[int]) {
	t.Helper()
	if got, ok := q.TryPop(); ok {
		t.Errorf("TryPop() = %v, %v, want 0, false", got, ok)
	}
}

func wantPopN(t *testing.T, q queue[int], size int, want []int, wantFirst uint64) {
	t.Helper()
	dst := make([]int, size)
	n, first := q.TryPopN(dst)
	if n != len(want) || first != wantFirst || !slices.Equal(dst[:n], want) {
		t.Errorf("TryPopN(len %d) = %d, %d with %v, want %d, %d with %v",
			size, n, first, dst[:n], len(want), wantFirst, want)
	}
}

func wantPopShare(t *testing.T, q queue[int], size, parts int, want []int, wantFirst uint64) {
	t.Helper()
	dst := make([]int, size)
	n, first := q.TryPopShare(dst, parts)
	if n != len(want) || first != wantFirst || !slices.Equal(dst[:n], want) {
		t.Errorf("TryPopShare(len %d, %d) = %d, %d with %v, want %d, %d with %v",
			size, parts, n, first, dst[:n], len(want), wantFirst, want)
	}
}

func wantReady(t *testing.T, q queue[int], want bool) {
	t.Helper()
	if got := q.Ready(); got != want {
		t.Errorf("Ready() = %v, want %v", got, want)
	}
}

func wantLen(t *testing.T, q queue[int], want int) {
	t.Helper()
	if got := q.Len(); got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
}

func wantPushed(t *testing.T, q queue[int], want uint64) {
	t.Helper()
	if got := q.Pushed(); got != want {
		t.Errorf("Pushed() = %d, want %d", got, want)
	}
}

func seq(from, to int) []int {
	var s []int
	for v := from; v < to; v++ {
		s = append(s, v)
	}
	return s
}

func TestSequential(t *testing.T) {
	tests := []struct {
		name string
		give int // capacity
		run  func(t *testing.T, q queue[int])
	}{
		{
			name: "empty",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				wantLen(t, q, 0)
				wantPushed(t, q, 0)
				wantEmpty(t, q)
				wantPopN(t, q, 4, nil, 0)
				wantPopN(t, q, 0, nil, 0)
				if q.Closed() {
					t.Errorf("Closed() = true, want false")
				}
			},
		},
		{
			name: "full",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				for v := range 4 {
					wantPush(t, q, v)
				}
				wantLen(t, q, 4)
				wantPushFail(t, q, 4)
				wantPushed(t, q, 4) // a failed push takes no position
				wantPop(t, q, 0)
				wantPush(t, q, 4)
				wantPushFail(t, q, 5)
				for v := 1; v <= 4; v++ {
					wantPop(t, q, v)
				}
				wantEmpty(t, q)
				wantLen(t, q, 0)
			},
		},
		{
			name: "wrap 10 laps one at a time",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				for v := range 40 {
					wantPush(t, q, v)
					wantLen(t, q, 1)
					wantPop(t, q, v)
				}
				wantPushed(t, q, 40)
			},
		},
		{
			name: "wrap 10 laps full each lap",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				// Start one slot in, so every lap straddles the end of the array.
				wantPush(t, q, -1)
				wantPop(t, q, -1)
				v := 0
				for range 10 {
					for range 4 {
						wantPush(t, q, v)
						v++
					}
					wantPushFail(t, q, v)
					for w := v - 4; w < v; w++ {
						wantPop(t, q, w)
					}
					wantEmpty(t, q)
				}
				wantPushed(t, q, 41)
			},
		},
		{
			name: "wrap 10 laps half full",
			give: 8,
			run: func(t *testing.T, q queue[int]) {
				for v := range 4 {
					wantPush(t, q, v)
				}
				for v := 4; v < 84; v++ {
					wantPush(t, q, v)
					wantPop(t, q, v-4)
					wantLen(t, q, 4)
				}
			},
		},
		{
			name: "capacity 1",
			give: 1,
			run: func(t *testing.T, q queue[int]) {
				for v := range 10 {
					wantPush(t, q, v)
					wantPushFail(t, q, v+100)
					wantLen(t, q, 1)
					wantPop(t, q, v)
					wantEmpty(t, q)
				}
				wantPush(t, q, 10)
				wantPopN(t, q, 4, []int{10}, 10)
				wantPopN(t, q, 4, nil, 11)
			},
		},
		{
			name: "TryPopN partial, full and empty",
			give: 8,
			run: func(t *testing.T, q queue[int]) {
				for v := range 5 {
					wantPush(t, q, v)
				}
				wantPopN(t, q, 3, seq(0, 3), 0) // fewer than are there
				wantPopN(t, q, 8, seq(3, 5), 3) // more than are there
				wantPopN(t, q, 8, nil, 5)       // empty: first is the next position
				wantPopN(t, q, 0, nil, 5)
				for v := 5; v < 13; v++ {
					wantPush(t, q, v)
				}
				wantPopN(t, q, 8, seq(5, 13), 5) // exactly full, across the end
				wantPopN(t, q, 1, nil, 13)
			},
		},
		{
			name: "TryPopN larger than capacity",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				wantPush(t, q, 0)
				wantPop(t, q, 0)
				for v := 1; v <= 4; v++ {
					wantPush(t, q, v)
				}
				wantPopN(t, q, 10, seq(1, 5), 1)
				wantEmpty(t, q)
			},
		},
		{
			name: "TryPopShare takes a share of what is ready",
			give: 16,
			run: func(t *testing.T, q queue[int]) {
				for v := range 10 {
					wantPush(t, q, v)
				}
				wantPopShare(t, q, 16, 4, seq(0, 3), 0)  // ceil(10/4)
				wantPopShare(t, q, 16, 4, seq(3, 5), 3)  // ceil(7/4)
				wantPopShare(t, q, 2, 2, seq(5, 6), 5)   // a share of the 2 counted
				wantPopShare(t, q, 16, 1, seq(6, 10), 6) // 1 part: all of it
				wantPopShare(t, q, 16, 3, nil, 10)       // empty
				wantPush(t, q, 10)
				wantPopShare(t, q, 16, 8, seq(10, 11), 10) // one value: one consumer takes it
				wantPush(t, q, 11)
				wantPopShare(t, q, 16, 0, seq(11, 12), 11) // parts below 1 count as 1
			},
		},
		{
			name: "Ready",
			give: 2,
			run: func(t *testing.T, q queue[int]) {
				wantReady(t, q, false)
				for lap := range 3 {
					wantPush(t, q, 2*lap)
					wantReady(t, q, true)
					wantPush(t, q, 2*lap+1)
					wantPop(t, q, 2*lap)
					wantReady(t, q, true)
					wantPop(t, q, 2*lap+1)
					wantReady(t, q, false)
				}
			},
		},
		{
			name: "TryPopN mixed with TryPop",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				v, next := 0, 0
				for lap := range 10 {
					for q.TryPush(v) {
						v++
					}
					wantPop(t, q, next)
					next++
					want := seq(next, min(next+lap%4+1, v))
					wantPopN(t, q, lap%4+1, want, uint64(next))
					next += len(want)
				}
			},
		},
		{
			name: "close",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				for v := range 3 {
					wantPush(t, q, v)
				}
				q.Close()
				if !q.Closed() {
					t.Errorf("Closed() = false, want true")
				}
				wantPushFail(t, q, 3)
				wantPushed(t, q, 3)
				wantLen(t, q, 3)
				wantPop(t, q, 0)
				wantPushFail(t, q, 3) // room again, still closed
				wantPopN(t, q, 4, seq(1, 3), 1)
				wantEmpty(t, q)
				q.Close() // idempotent
				if !q.Closed() {
					t.Errorf("Closed() after second Close = false, want true")
				}
				wantPushFail(t, q, 4)
				wantPushed(t, q, 3)
				wantPopN(t, q, 4, nil, 3)
			},
		},
		{
			name: "reopen",
			give: 4,
			run: func(t *testing.T, q queue[int]) {
				wantPush(t, q, 0)
				q.Close()
				wantPushFail(t, q, 1)
				q.Reopen()
				if q.Closed() {
					t.Errorf("Closed() after Reopen = true, want false")
				}
				wantPush(t, q, 1) // at the position after the last push
				wantPushed(t, q, 2)
				wantPopN(t, q, 4, seq(0, 2), 0)
				q.Reopen() // on an open ring: nothing changes
				wantPush(t, q, 2)
				wantPushed(t, q, 3)
			},
		},
		{
			name: "close empty",
			give: 1,
			run: func(t *testing.T, q queue[int]) {
				q.Close()
				wantPushFail(t, q, 0)
				wantEmpty(t, q)
				wantLen(t, q, 0)
				wantPushed(t, q, 0)
			},
		},
	}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					tt.run(t, newQueue[int](impl, tt.give))
				})
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	tests := []struct {
		give int
		want int
	}{
		{give: 1, want: 1},
		{give: 2, want: 2},
		{give: 3, want: 4},
		{give: 4, want: 4},
		{give: 5, want: 8},
		{give: 1000, want: 1024},
		{give: 1024, want: 1024},
	}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			for _, tt := range tests {
				q := newQueue[int](impl, tt.give)
				if got := q.Cap(); got != tt.want {
					t.Errorf("New(%d).Cap() = %d, want %d", tt.give, got, tt.want)
				}
				pushed := 0
				for q.TryPush(pushed) {
					pushed++
				}
				if pushed != tt.want {
					t.Errorf("New(%d) took %d pushes before full, want %d", tt.give, pushed, tt.want)
				}
			}
		})
	}
}

func TestNewPanics(t *testing.T) {
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			for _, give := range []int{0, -1, MaxCapacity + 1} {
				func() {
					defer func() {
						if recover() == nil {
							t.Errorf("New(%d) did not panic", give)
						}
					}()
					newQueue[int](impl, give)
				}()
			}
		})
	}
}

// payload is big enough to get an allocation of its own: the tiny
// allocator packs smaller pointer-free objects together, and a weak pointer
// to one of them stays valid while its neighbours live.
type payload struct {
	_ [64]byte
}

// pushPayload pushes a fresh payload and returns only a weak pointer to it,
// so no frame that outlives this call holds it strongly.
//
//go:noinline
func pushPayload(t *testing.T, q queue[*payload]) weak.Pointer[payload] {
	t.Helper()
	p := new(payload)
	if !q.TryPush(p) {
		t.Fatalf("TryPush(%p) = false, want true", p)
	}
	return weak.Make(p)
}

//go:noinline
func popPayload(t *testing.T, q queue[*payload], batch bool) {
	t.Helper()
	if batch {
		dst := make([]*payload, 4)
		if n, _ := q.TryPopN(dst); n != 1 {
			t.Fatalf("TryPopN(len 4) = %d, _, want 1, _", n)
		}
		clear(dst)
		return
	}
	if p, ok := q.TryPop(); !ok || p == nil {
		t.Fatalf("TryPop() = %p, %v, want non-nil, true", p, ok)
	}
}

// collected reports whether the value behind w is gone after a full GC.
// runtime.GC returns only after the cycle's mark and sweep are complete,
// and weak pointers are cleared by then.
func collected(w weak.Pointer[payload]) bool {
	runtime.GC()
	return w.Value() == nil
}

// TestPopClearsSlot proves that a popped value is not kept alive by the
// ring: while it is queued a GC must keep it, once popped a GC must free it.
func TestPopClearsSlot(t *testing.T) {
	for _, impl := range impls {
		for _, batch := range []bool{false, true} {
			t.Run(fmt.Sprintf("impl=%s/batch=%v", impl, batch), func(t *testing.T) {
				q := newQueue[*payload](impl, 4)
				// Go around twice so slots are reused.
				for i := range 8 {
					w := pushPayload(t, q)
					if collected(w) {
						t.Fatalf("push %d: queued value was collected", i)
					}
					popPayload(t, q, batch)
					if !collected(w) {
						t.Errorf("push %d: popped value is still reachable", i)
					}
				}
				runtime.KeepAlive(q)
			})
		}
	}
}

// TestPopClearsSlotWhiteBox checks the same directly in Ring's slots.
func TestPopClearsSlotWhiteBox(t *testing.T) {
	r := New[*int](4)
	dst := make([]*int, 3)
	for i := range 12 {
		v := new(int)
		r.TryPush(v)
		r.TryPush(v)
		if _, ok := r.TryPop(); !ok {
			t.Fatalf("TryPop() failed after two pushes")
		}
		if n, _ := r.TryPopN(dst); n != 1 {
			t.Fatalf("TryPopN(len 3) = %d, want 1", n)
		}
		for j := range r.slots {
			if p := r.slots[j].val; p != nil {
				t.Errorf("round %d: slot %d holds %p after every value was popped", i, j, p)
			}
		}
	}
}

// procs sets GOMAXPROCS for the rest of the test and restores it after.
func procs(t *testing.T, n int) {
	t.Helper()
	prev := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// hammerDeadline bounds a hammer run that has lost a value, so a bug shows
// up as an error instead of a test that spins until the go test timeout.
const hammerDeadline = time.Minute

// goProduce starts producers goroutines in g that push the values 0..n-1
// into q: producer p pushes p, p+producers, ... in order, yielding while q
// is full.
func goProduce(g *errgroup.Group, q queue[int], producers, n int) {
	for p := range producers {
		g.Go(func() error {
			for v := p; v < n; v += producers {
				for !q.TryPush(v) {
					runtime.Gosched()
				}
			}
			return nil
		})
	}
}

// hammer pushes the values 0..n-1 from producers goroutines and pops them
// from consumers goroutines. Producer p pushes p, p+producers, ... in
// order. Consumers alternate TryPop and TryPopN with varying batch sizes.
// It returns what each consumer popped, in its order.
func hammer(q queue[int], producers, consumers, n int) ([][]int, error) {
	start := time.Now()
	var popped atomic.Int64
	got := make([][]int, consumers)
	var g errgroup.Group
	goProduce(&g, q, producers, n)
	for c := range consumers {
		g.Go(func() error {
			dst := make([]int, 8)
			mine := make([]int, 0, n/consumers+8)
			for i := 0; popped.Load() < int64(n); i++ {
				var k int
				if i%2 == 0 {
					if v, ok := q.TryPop(); ok {
						mine = append(mine, v)
						k = 1
					}
				} else {
					k, _ = q.TryPopN(dst[:1+i%len(dst)])
					mine = append(mine, dst[:k]...)
				}
				if k > 0 {
					popped.Add(int64(k))
					continue
				}
				if i%1024 == 0 && time.Since(start) > hammerDeadline {
					return fmt.Errorf("consumer %d: gave up after %v with %d of %d values popped",
						c, hammerDeadline, popped.Load(), n)
				}
				runtime.Gosched()
			}
			got[c] = mine
			return nil
		})
	}
	return got, g.Wait()
}

// checkHammer checks that every value 0..n-1 was popped exactly once, that
// nothing else was, and that each consumer saw each producer's values in
// push order.
func checkHammer(t *testing.T, got [][]int, producers, n int) {
	t.Helper()
	seen := make([]bool, n)
	var sum, count int
	for c, vs := range got {
		last := make([]int, producers)
		for p := range last {
			last[p] = -1
		}
		for _, v := range vs {
			if v < 0 || v >= n {
				t.Fatalf("consumer %d popped %d, never pushed", c, v)
			}
			if seen[v] {
				t.Fatalf("value %d popped twice", v)
			}
			seen[v] = true
			sum += v
			count++
			if p := v % producers; v <= last[p] {
				t.Fatalf("consumer %d popped %d after %d, both from producer %d", c, v, last[p], p)
			}
			last[v%producers] = v
		}
	}
	if want := n * (n - 1) / 2; count != n || sum != want {
		t.Fatalf("popped %d values with sum %d, want %d with sum %d", count, sum, n, want)
	}
}

func TestHammer(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	counts := []int{1, 2, 4, 8}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			for _, gomaxprocs := range []int{1, 2, 4} {
				t.Run(fmt.Sprintf("procs=%d", gomaxprocs), func(t *testing.T) {
					procs(t, gomaxprocs)
					for _, producers := range counts {
						for _, consumers := range counts {
							t.Run(fmt.Sprintf("producers=%d/consumers=%d", producers, consumers), func(t *testing.T) {
								q := newQueue[int](impl, 16)
								got, err := hammer(q, producers, consumers, n)
								if err != nil {
									t.Fatal(err)
								}
								checkHammer(t, got, producers, n)
								wantLen(t, q, 0)
								wantPushed(t, q, uint64(n))
							})
						}
					}
				})
			}
		})
	}
}

// TestHammerSmallCapacity hammers rings of one and two slots, where every
// push and pop meets a full or an empty ring and laps are shortest.
func TestHammerSmallCapacity(t *testing.T) {
	n := 5_000
	if testing.Short() {
		n = 1_000
	}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			for _, gomaxprocs := range []int{2, 4} {
				t.Run(fmt.Sprintf("procs=%d", gomaxprocs), func(t *testing.T) {
					procs(t, gomaxprocs)
					for _, capacity := range []int{1, 2} {
						for _, workers := range []int{1, 4} {
							t.Run(fmt.Sprintf("cap=%d/producers=%d/consumers=%d", capacity, workers, workers), func(t *testing.T) {
								q := newQueue[int](impl, capacity)
								got, err := hammer(q, workers, workers, n)
								if err != nil {
									t.Fatal(err)
								}
								checkHammer(t, got, workers, n)
							})
						}
					}
				})
			}
		})
	}
}

// TestHammerPositions checks that the first positions TryPopN reports,
// expanded to first, first+1, ..., cover 0..n-1 exactly once. With one
// producer, the value pushed at position i is i, so the values must match
// their positions too.
func TestHammerPositions(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			procs(t, 4)
			for _, producers := range []int{1, 4} {
				t.Run(fmt.Sprintf("producers=%d/consumers=4", producers), func(t *testing.T) {
					const consumers = 4
					q := newQueue[int](impl, 8)
					var popped atomic.Int64
					positions := make([][]uint64, consumers)
					var g errgroup.Group
					goProduce(&g, q, producers, n)
					for c := range consumers {
						g.Go(func() error {
							dst := make([]int, 5)
							var mine []uint64
							for i := 0; popped.Load() < int64(n); i++ {
								k, first := q.TryPopN(dst[:1+i%len(dst)])
								if k == 0 {
									runtime.Gosched()
									continue
								}
								for j := range k {
									pos := first + uint64(j)
									if producers == 1 && uint64(dst[j]) != pos {
										return fmt.Errorf("TryPopN returned %d at position %d, want %d", dst[j], pos, pos)
									}
									mine = append(mine, pos)
								}
								popped.Add(int64(k))
							}
							positions[c] = mine
							return nil
						})
					}
					if err := g.Wait(); err != nil {
						t.Fatal(err)
					}
					seen := make([]bool, n)
					count := 0
					for _, ps := range positions {
						for _, pos := range ps {
							if pos >= uint64(n) {
								t.Fatalf("position %d out of range 0..%d", pos, n-1)
							}
							if seen[pos] {
								t.Fatalf("position %d reported twice", pos)
							}
							seen[pos] = true
							count++
						}
					}
					if count != n {
						t.Fatalf("got %d positions, want %d", count, n)
					}
				})
			}
		})
	}
}

// TestNoSpuriousFailure checks that TryPush fails only when the ring is
// full and TryPop only when it is empty, under contention. Two channels
// used as semaphores keep the ring provably neither full nor empty at the
// calls that must succeed: a producer pushes only while it holds one of
// Cap() space tokens, and a consumer pops only after a push has returned
// and handed it an item token.
func TestNoSpuriousFailure(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	const workers = 4
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			for _, tc := range []struct{ procs, capacity int }{{2, 1}, {2, 2}, {4, 1}, {4, 4}} {
				t.Run(fmt.Sprintf("procs=%d/cap=%d", tc.procs, tc.capacity), func(t *testing.T) {
					procs(t, tc.procs)
					q := newQueue[int](impl, tc.capacity)
					space := make(chan struct{}, q.Cap())
					for range q.Cap() {
						space <- struct{}{}
					}
					items := make(chan struct{}, q.Cap())
					// A worker that fails stops waiting; ctx tells the
					// others, which would otherwise wait for its tokens.
					g, ctx := errgroup.WithContext(context.Background())
					take := func(c chan struct{}) bool {
						select {
						case <-c:
							return true
						case <-ctx.Done():
							return false
						}
					}
					for w := range workers {
						g.Go(func() error {
							for v := w; v < n; v += workers {
								if !take(space) {
									return nil
								}
								if !q.TryPush(v) {
									return fmt.Errorf("TryPush(%d) = false with the ring not full", v)
								}
								items <- struct{}{} // never blocks: at most Cap() items
							}
							return nil
						})
						g.Go(func() error {
							for range n / workers {
								if !take(items) {
									return nil
								}
								if v, ok := q.TryPop(); !ok {
									return fmt.Errorf("TryPop() = %v, %v with the ring not empty", v, ok)
								}
								space <- struct{}{} // never blocks: at most Cap() tokens
							}
							return nil
						})
					}
					if err := g.Wait(); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

// TestHammerClose closes the ring while producers push: every push that
// reported success must be popped, and Pushed must count exactly those.
func TestHammerClose(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			procs(t, 4)
			const producers = 4
			q := newQueue[int](impl, 16)
			var accepted, popped atomic.Int64
			var sumPushed, sumPopped atomic.Int64
			var g errgroup.Group
			for p := range producers {
				g.Go(func() error {
					for v := p; !q.Closed(); v += producers {
						if v == n/2 {
							q.Close()
						}
						if q.TryPush(v) {
							accepted.Add(1)
							sumPushed.Add(int64(v))
						} else {
							runtime.Gosched()
						}
					}
					return nil
				})
			}
			g.Go(func() error {
				dst := make([]int, 4)
				for {
					// Read closed before popping: once it is set and a pop
					// finds the ring empty, every accepted value is out,
					// except pushes that claimed a position before Close
					// and are still writing, which Len still counts.
					closed := q.Closed()
					k, _ := q.TryPopN(dst)
					for _, v := range dst[:k] {
						sumPopped.Add(int64(v))
					}
					popped.Add(int64(k))
					if k == 0 {
						if closed && q.Len() == 0 {
							return nil
						}
						runtime.Gosched()
					}
				}
			})
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			if a, p := accepted.Load(), popped.Load(); a != p || uint64(a) != q.Pushed() {
				t.Fatalf("accepted %d pushes, popped %d, Pushed() = %d; want all equal", a, p, q.Pushed())
			}
			if a, p := sumPushed.Load(), sumPopped.Load(); a != p {
				t.Fatalf("sum of pushed values %d, of popped values %d; want equal", a, p)
			}
		})
	}
}

// TestLineSizedSlotsAreAligned backs SlotSize's promise: with a slot of
// exactly 64 bytes, every slot starts a cache line (Go's allocator aligns
// the power-of-two-sized slot array), and such slots are kept in position
// order, one line per position.
func TestLineSizedSlotsAreAligned(t *testing.T) {
	type line struct{ a, b, c, d, e, f, g uint64 } // 56 bytes: a 64-byte slot
	if SlotSize[line]() != cacheLine {
		t.Fatalf("SlotSize = %d, want %d", SlotSize[line](), cacheLine)
	}
	for _, capacity := range []int{2, 8, 64, 1024, 1 << 14} {
		r := New[line](capacity)
		if a := uintptr(unsafe.Pointer(&r.slots[0])); a%cacheLine != 0 {
			t.Errorf("New(%d): slots start at %#x, not on a %d-byte line", capacity, a, cacheLine)
		}
		for pos := range uint64(len(r.slots)) {
			if got := r.slot(pos); got != &r.slots[pos] {
				t.Errorf("New(%d): position %d is not slot %d: line-sized slots are not in position order", capacity, pos, pos)
				break
			}
		}
	}
}

// TestLayout checks the offsets Ring's padding promises: head and tail
// each start a falseSharingRange of their own, on 32-bit platforms too.
func TestLayout(t *testing.T) {
	var r Ring[int]
	tests := []struct {
		name string
		give uintptr
		want uintptr
	}{
		{"Offsetof(head)", unsafe.Offsetof(r.head), falseSharingRange},
		{"Offsetof(tail)", unsafe.Offsetof(r.tail), 2 * falseSharingRange},
		{"Sizeof(Ring)", unsafe.Sizeof(r), 3 * falseSharingRange},
	}
	for _, tt := range tests {
		if tt.give != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.give, tt.want)
		}
	}
}

// TestSmallElements runs a Ring of 4-byte and 1-byte values, whose slots
// are smaller than the 8-byte-aligned sequence number would be on its own
// on 32-bit platforms (where a bare uint64 field is only 4-byte aligned):
// every slot's sequence number must still be usable atomically.
func TestSmallElements(t *testing.T) {
	t.Run("int32", func(t *testing.T) { testSmallElements[int32](t) })
	t.Run("byte", func(t *testing.T) { testSmallElements[byte](t) })
}

func testSmallElements[T int32 | byte](t *testing.T) {
	const capacity = 8
	r := New[T](capacity)
	next := 0 // the next value to pop
	dst := make([]T, 3)
	for lap := range 3 {
		for i := range capacity {
			if v := T(lap*capacity + i); !r.TryPush(v) {
				t.Fatalf("lap %d: TryPush(%d) = false, want true", lap, v)
			}
		}
		if got, ok := r.TryPop(); !ok || got != T(next) {
			t.Errorf("lap %d: TryPop() = %d, %v, want %d, true", lap, got, ok, next)
		}
		next++
		for next < (lap+1)*capacity {
			n, first := r.TryPopN(dst)
			if n == 0 || first != uint64(next) {
				t.Fatalf("lap %d: TryPopN(len %d) = %d, %d, want at least 1, %d", lap, len(dst), n, first, next)
			}
			for _, v := range dst[:n] {
				if v != T(next) {
					t.Errorf("lap %d: TryPopN gave %d, want %d", lap, v, next)
				}
				next++
			}
		}
		if got, ok := r.TryPop(); ok {
			t.Errorf("lap %d: TryPop() = %d, true on an empty ring", lap, got)
		}
	}
}
