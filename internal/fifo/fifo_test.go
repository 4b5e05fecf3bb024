package fifo

import (
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQueueOrder pushes and pops in interleaved runs, so that the slice
// both slides and grows, and checks FIFO order against a counter.
func TestQueueOrder(t *testing.T) {
	var q Queue[int]
	next, want := 0, 0
	for round := range 50 {
		for range round % 7 * 3 {
			q.Push(next)
			next++
		}
		for range round % 5 * 2 {
			if q.Len() == 0 {
				break
			}
			if got := q.Pop(); got != want {
				t.Fatalf("Pop() = %d, want %d", got, want)
			}
			want++
		}
		if got := q.Len(); got != next-want {
			t.Fatalf("Len() = %d, want %d", got, next-want)
		}
		items := q.Items()
		for i, v := range items {
			if v != want+i {
				t.Fatalf("Items()[%d] = %d, want %d", i, v, want+i)
			}
		}
	}
}

// TestQueueKeepsNothingPopped: a popped or reset value must be
// collectable, so that a queue that was once busy pins no payload.
func TestQueueKeepsNothingPopped(t *testing.T) {
	for _, tt := range []struct {
		name  string
		empty func(q *Queue[*[64]byte])
	}{
		{"Pop", func(q *Queue[*[64]byte]) {
			for q.Len() > 0 {
				q.Pop()
			}
		}},
		{"Reset", func(q *Queue[*[64]byte]) { q.Reset() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var q Queue[*[64]byte]
			const n = 8
			freed := make(chan int, n)
			for i := range n {
				p := new([64]byte)
				runtime.AddCleanup(p, func(i int) { freed <- i }, i)
				q.Push(p)
			}
			q.Push(nil) // keeps the buffer in use after the pops below
			tt.empty(&q)
			got := 0
			for range 100 { // GC cycles: a value still referenced is never freed
				runtime.GC()
				for drained := false; !drained; {
					select {
					case <-freed:
						got++
					default:
						drained = true
					}
				}
				if got == n {
					break
				}
				runtime.Gosched() // lets the cleanup goroutine run
			}
			if got != n {
				t.Errorf("%d of %d values were collected after %s", got, n, tt.name)
			}
			runtime.KeepAlive(&q)
		})
	}
}
