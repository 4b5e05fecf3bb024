package ring

import (
	"slices"
	"testing"
)

// FuzzRing runs the same operations on a Ring and on refRing and compares
// every result. The first byte picks the capacity (1..16, rounded up as New
// does); each later byte is one operation, and popN takes its batch size
// from the byte after it, and from that byte's top three bits the number of
// consumers it takes a share for (TryPopShare; 1 is TryPopN).
func FuzzRing(f *testing.F) {
	f.Add([]byte{0, 0, 3, 0, 3, 3})                                  // capacity 1: push, pop, push, pop, empty pop
	f.Add([]byte{3, 0, 0, 0, 0, 0, 6, 3, 3, 3, 3, 3})                // capacity 4: fill, overfill, len, drain
	f.Add([]byte{7, 0, 1, 2, 0, 1, 5, 3, 0, 5, 9, 5, 0, 6})          // capacity 8: popN partial, large, zero
	f.Add([]byte{2, 0, 0, 15, 0, 6, 3, 5, 4, 3, 6})                  // close with values in, then drain
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0, 0, 5, 3, 0, 0, 0, 5, 8, 6}) // wrap around with batches
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		capacity := 1 + int(ops[0]%16)
		r, ref := New[int](capacity), newRef[int](capacity)
		if r.Cap() != ref.Cap() {
			t.Fatalf("New(%d).Cap() = %d, reference %d", capacity, r.Cap(), ref.Cap())
		}
		next := 0
		for i := 1; i < len(ops); i++ {
			switch op := ops[i] % 8; op {
			case 0, 1, 2: // push, the most common op so rings fill up
				got, want := r.TryPush(next), ref.TryPush(next)
				if got != want {
					t.Fatalf("op %d: TryPush(%d) = %v, reference %v", i, next, got, want)
				}
				next++
			case 3, 4: // pop
				got, gotOK := r.TryPop()
				want, wantOK := ref.TryPop()
				if got != want || gotOK != wantOK {
					t.Fatalf("op %d: TryPop() = %v, %v, reference %v, %v", i, got, gotOK, want, wantOK)
				}
			case 5: // popN, with 0 up to twice the capacity
				k := 0
				if i+1 < len(ops) {
					i++
					k = int(ops[i]) % (2*r.Cap() + 1)
				}
				got, want := make([]int, k), make([]int, k)
				parts := 1 + int(ops[i]>>5) // 1 to 8: a share of the ready values
				n, first := r.TryPopShare(got, parts)
				wantN, wantFirst := ref.TryPopShare(want, parts)
				if n != wantN || first != wantFirst || !slices.Equal(got[:n], want[:wantN]) {
					t.Fatalf("op %d: TryPopShare(len %d, %d) = %d, %d with %v, reference %d, %d with %v",
						i, k, parts, n, first, got[:n], wantN, wantFirst, want[:wantN])
				}
			case 6: // observers
				if got, want := r.Len(), ref.Len(); got != want {
					t.Fatalf("op %d: Len() = %d, reference %d", i, got, want)
				}
				if got, want := r.Ready(), ref.Ready(); got != want {
					t.Fatalf("op %d: Ready() = %v, reference %v", i, got, want)
				}
				if got, want := r.Pushed(), ref.Pushed(); got != want {
					t.Fatalf("op %d: Pushed() = %d, reference %d", i, got, want)
				}
				if got, want := r.Closed(), ref.Closed(); got != want {
					t.Fatalf("op %d: Closed() = %v, reference %v", i, got, want)
				}
			case 7: // close, rarely: half the 7s, so most inputs stay open longer
				if ops[i]&8 != 0 {
					r.Close()
					ref.Close()
				}
			}
		}
		// Drain both and compare what is left.
		for {
			got, gotOK := r.TryPop()
			want, wantOK := ref.TryPop()
			if got != want || gotOK != wantOK {
				t.Fatalf("drain: TryPop() = %v, %v, reference %v, %v", got, gotOK, want, wantOK)
			}
			if !gotOK {
				break
			}
		}
		if r.Len() != 0 || r.Pushed() != ref.Pushed() {
			t.Fatalf("after drain: Len() = %d, Pushed() = %d, want 0, %d", r.Len(), r.Pushed(), ref.Pushed())
		}
	})
}
