package keyq_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/ringbus/ringbus/internal/keyq"
)

func TestAdmitRounds(t *testing.T) {
	tests := []struct {
		name        string
		owned       []string // keys owned before the call under test
		give        []string // keys of the admitted items, ids 0, 1, ...
		want        []int    // ids of the kept items, in the order returned
		wantLast    []int    // ids of the items last was called on, sorted
		wantBacklog map[string][]int
	}{
		{name: "none"},
		{
			name: "distinct keys keep their order",
			give: []string{"a", "", "b", "c"},
			want: []int{0, 1, 2, 3}, wantLast: []int{0, 2, 3},
		},
		{
			name: "a key's later items come in later rounds",
			give: []string{"a", "a", "b", "a", "", "c", "b"},
			// round 0: a0 b2 4 c5; round 1: a1 b6; round 2: a3
			want: []int{0, 2, 4, 5, 1, 6, 3}, wantLast: []int{3, 5, 6},
		},
		{
			name:  "a key owned before waits in its backlog",
			owned: []string{"a"},
			give:  []string{"a", "b", "a", "b"},
			want:  []int{1, 3}, wantLast: []int{3},
			wantBacklog: map[string][]int{"a": {0, 2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := keyq.New[item](8)
			if len(tt.owned) > 0 {
				q.Admit(batch(100, tt.owned...), keyOf)
			}
			var last []int
			give := batch(0, tt.give...)
			got := q.AdmitRounds(give, keyOf, func(it *item) { last = append(last, it.id) })
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("AdmitRounds(%q) kept %v, want %v", tt.give, ids(got), tt.want)
			}
			slices.Sort(last)
			if !slices.Equal(last, tt.wantLast) {
				t.Errorf("AdmitRounds(%q) called last on %v, want %v", tt.give, last, tt.wantLast)
			}
			for i := len(got); i < len(give); i++ {
				if give[i] != (item{}) {
					t.Errorf("AdmitRounds(%q) left items[%d] = %+v, want the zero item", tt.give, i, give[i])
				}
			}
			// Each kept key is owned once: one release frees it.
			for _, it := range got {
				if it.key != "" && slices.Contains(last, it.id) {
					if next, ok := q.Release(it.key); ok {
						t.Errorf("Release(%q) = item %d, want the key free", it.key, next.id)
					}
				}
			}
			for _, k := range tt.owned {
				if got := drain(t, q, k); !slices.Equal(got, tt.wantBacklog[k]) {
					t.Errorf("backlog of %q = %v, want %v", k, got, tt.wantBacklog[k])
				}
			}
			wantState(t, q, 0, 0, false)
		})
	}
}

// TestAdmitRoundsThenAdmit: a key a call of AdmitRounds acquired is owned
// for later calls, which queue its items behind it; the scratch of one
// call does not leak into the next.
func TestAdmitRoundsThenAdmit(t *testing.T) {
	q := keyq.New[item](8)
	noLast := func(*item) {}
	if got := q.AdmitRounds(batch(0, "a", "a"), keyOf, noLast); !slices.Equal(ids(got), []int{0, 1}) {
		t.Fatalf("first AdmitRounds kept %v, want [0 1]", ids(got))
	}
	if got := q.AdmitRounds(batch(10, "a", "b", "b"), keyOf, noLast); !slices.Equal(ids(got), []int{11, 12}) {
		t.Errorf("second AdmitRounds kept %v, want [11 12]", ids(got))
	}
	if got := drain(t, q, "a"); !slices.Equal(got, []int{10}) {
		t.Errorf("backlog of a = %v, want [10]", got)
	}
	drain(t, q, "b")
	wantState(t, q, 0, 0, false)
}

// TestIdleEntriesBounded: a released key keeps its entry for the next
// time, up to IdleKeys of them; a stream of new keys does not grow the
// table beyond that, and every key still works as a fresh one.
func TestIdleEntriesBounded(t *testing.T) {
	q := keyq.New[item](8)
	for i := range 3 * keyq.IdleKeys {
		k := fmt.Sprintf("k%d", i)
		if got := q.Admit(batch(i, k, k), keyOf); !slices.Equal(ids(got), []int{i}) {
			t.Fatalf("Admit(%q, %q) kept %v, want [%d]", k, k, ids(got), i)
		}
		if got := drain(t, q, k); !slices.Equal(got, []int{i + 1}) {
			t.Fatalf("backlog of %q = %v, want [%d]", k, got, i+1)
		}
	}
	wantState(t, q, 0, 0, false)
	if n := keyq.Entries(q); n > keyq.IdleKeys {
		t.Errorf("Entries() = %d after releasing every key, want at most %d", n, keyq.IdleKeys)
	}
	// An idle key is owned afresh, and its backlog starts empty.
	if got := q.Admit(batch(0, "k0", "k0"), keyOf); !slices.Equal(ids(got), []int{0}) {
		t.Errorf("Admit(k0, k0) kept %v, want [0]", ids(got))
	}
	if got := drain(t, q, "k0"); !slices.Equal(got, []int{1}) {
		t.Errorf("backlog of k0 = %v, want [1]", got)
	}
	q.Reset(nil)
	if n := keyq.Entries(q); n != 0 {
		t.Errorf("Entries() = %d after Reset, want 0", n)
	}
}

// TestReleaseN: the owner takes up to n backlogged items at once, oldest
// first, keeps the key while there were any, and frees it when there are
// none.
func TestReleaseN(t *testing.T) {
	q := keyq.New[item](8)
	q.Admit(batch(0, "a", "a", "a", "a", "b"), keyOf)
	steps := []struct {
		n       int
		want    []int
		wantOK  bool
		wantLen int
	}{
		{n: 2, want: []int{1, 2}, wantOK: true, wantLen: 1},
		{n: 2, want: []int{3}, wantOK: true, wantLen: 0},
		{n: 2, want: nil, wantOK: false, wantLen: 0},
	}
	for i, s := range steps {
		got, ok := q.ReleaseN("a", nil, s.n)
		if !slices.Equal(ids(got), s.want) || ok != s.wantOK {
			t.Errorf("step %d: ReleaseN(a, %d) = %v, %t, want %v, %t", i, s.n, ids(got), ok, s.want, s.wantOK)
		}
		if q.Len() != s.wantLen {
			t.Errorf("step %d: Len() = %d, want %d", i, q.Len(), s.wantLen)
		}
	}
	wantState(t, q, 0, 1, false) // b is still owned
	wantReleasePanic(t, q, "a")
	if _, ok := q.Release("b"); ok {
		t.Errorf("Release(b) found an item, want none")
	}
}
