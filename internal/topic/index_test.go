package topic

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// newSubs returns one Sub per pattern, with Seq 1, 2, 3, ... in the order
// given and the Seq as Value.
func newSubs(t testing.TB, patterns ...string) []Sub[uint64] {
	t.Helper()
	subs := make([]Sub[uint64], len(patterns))
	for i, s := range patterns {
		p, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) error = %v", s, err)
		}
		subs[i] = Sub[uint64]{Pattern: p, Seq: uint64(i + 1), Value: uint64(i + 1)}
	}
	return subs
}

// scratches returns the scratch slices every match is tried with: none,
// too small, and large enough for ix.
func scratches[T any](ix *Index[T]) [][]T {
	return [][]T{nil, make([]T, 0, 1), make([]T, 0, ix.Len())}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name  string
		subs  []string // patterns, in subscription order: Seq 1, 2, ...
		topic string
		want  []uint64 // Seq of the matching subscriptions
	}{
		{name: "exact", subs: []string{"a", "a.b", "a.b.c"}, topic: "a.b", want: []uint64{2}},
		{name: "exact/shared", subs: []string{"a.b", "x", "a.b"}, topic: "a.b", want: []uint64{1, 3}},
		{name: "exact/none", subs: []string{"a", "a.b"}, topic: "b", want: nil},
		{name: "exact/prefix is no match", subs: []string{"a.b"}, topic: "a.b.c", want: nil},
		{name: "exact/case matters", subs: []string{"Orders", "orders"}, topic: "orders", want: []uint64{2}},

		{name: "star", subs: []string{"run.*"}, topic: "run.finished", want: []uint64{1}},
		{name: "star/too few", subs: []string{"run.*"}, topic: "run", want: nil},
		{name: "star/too many", subs: []string{"run.*"}, topic: "run.a.b", want: nil},
		{name: "star/first", subs: []string{"*.b", "*.c"}, topic: "a.b", want: []uint64{1}},
		{name: "star/middle", subs: []string{"a.*.c", "a.*.d"}, topic: "a.x.c", want: []uint64{1}},
		{name: "star/alone", subs: []string{"*", "*.*"}, topic: "a", want: []uint64{1}},
		{name: "star/all", subs: []string{"*.*.*", "*.*"}, topic: "x.y.z", want: []uint64{1}},

		{name: "gt/one", subs: []string{"run.>"}, topic: "run.a", want: []uint64{1}},
		{name: "gt/many", subs: []string{"run.>"}, topic: "run.a.b", want: []uint64{1}},
		{name: "gt/none", subs: []string{"run.>"}, topic: "run", want: nil},
		{name: "gt/other prefix", subs: []string{"run.>"}, topic: "walk.a", want: nil},
		{name: "gt/alone", subs: []string{">"}, topic: "a.b.c", want: []uint64{1}},
		{name: "gt/alone one token", subs: []string{">"}, topic: "a", want: []uint64{1}},
		{name: "gt/deep", subs: []string{"a.b.c.>"}, topic: "a.b.c.d.e.f", want: []uint64{1}},

		{name: "mixed/star gt", subs: []string{"a.*.>"}, topic: "a.b.c", want: []uint64{1}},
		{name: "mixed/star gt too few", subs: []string{"a.*.>"}, topic: "a.b", want: nil},
		{name: "mixed/star gt first", subs: []string{"*.>"}, topic: "a.b", want: []uint64{1}},
		{
			name:  "mixed/literal and star siblings",
			subs:  []string{"a.b.c", "a.*.c", "a.b.*", "*.b.c", "a.*.*", "*.*.c", "a.c.b"},
			topic: "a.b.c",
			want:  []uint64{1, 2, 3, 4, 5, 6},
		},
		{
			name:  "mixed/shared wildcard pattern",
			subs:  []string{"a.>", "x", "a.>", "a.*"},
			topic: "a.b",
			want:  []uint64{1, 3, 4},
		},

		// The trie meets ">" at the root first, then "a.>", then "a.*",
		// then "*.b"; the result must still be in Seq order, with the
		// exact subscriptions merged in.
		{
			name:  "order/exact and wildcard",
			subs:  []string{"a.>", "a.b", "*.b", "a.b", ">", "a.*", "b.>"},
			topic: "a.b",
			want:  []uint64{1, 2, 3, 4, 5, 6},
		},
		{name: "order/wildcard before exact", subs: []string{">", "*.*", "a.b", "a.b"}, topic: "a.b", want: []uint64{1, 2, 3, 4}},
		{name: "order/exact before wildcard", subs: []string{"a.b", "a.b", ">", "*.*"}, topic: "a.b", want: []uint64{1, 2, 3, 4}},
		{name: "order/wildcard only matches", subs: []string{"x", "*.b", "a.b.c", ">"}, topic: "a.b", want: []uint64{2, 4}},
		{name: "order/one wildcard pattern", subs: []string{"a.*", "x.>", "a.*"}, topic: "a.b", want: []uint64{1, 3}},
		{name: "order/exact only with wildcards present", subs: []string{"x.>", "a.b", "*.c"}, topic: "a.b", want: []uint64{2}},
		{name: "none", subs: []string{"a.>", "a.b", "*.b", "x"}, topic: "z", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkMatchSeqs(t, NewIndex(newSubs(t, tt.subs...)), tt.topic, tt.want)
		})
	}
}

// checkMatchSeqs checks ix.Match(topic) against want with each scratch.
func checkMatchSeqs(t *testing.T, ix *Index[uint64], topic string, want []uint64) {
	t.Helper()
	for _, scratch := range scratches(ix) {
		if got := ix.Match(topic, scratch); !slices.Equal(got, want) {
			t.Errorf("Match(%q, cap %d) = %v, want %v", topic, cap(scratch), got, want)
		}
	}
}

// TestMatchManyWildcards matches more wildcard subscriptions than one walk
// of the trie sorts (batchLen), from many runs and from one, with exact
// ones interleaved.
func TestMatchManyWildcards(t *testing.T) {
	shapes := []string{">", "a.>", "*.*", "a.*", "*.b", "a.b"}
	var pats []string
	for range 3*batchLen + 1 {
		pats = append(pats, shapes...)
	}
	ix := NewIndex(newSubs(t, pats...))
	all := make([]uint64, len(pats))
	for i := range all {
		all[i] = uint64(i + 1)
	}
	checkMatchSeqs(t, ix, "a.b", all)

	// Every subscriber of one wildcard pattern, and nothing else.
	var one []uint64
	for i, p := range pats {
		if p == "a.>" || p == ">" {
			one = append(one, uint64(i+1))
		}
	}
	checkMatchSeqs(t, ix, "a.b.c", one)

	// One wildcard pattern with more subscriptions than a batch, merged
	// with an exact one.
	pats = append(slices.Repeat([]string{"a.*"}, 2*batchLen+1), "a.b")
	all = all[:len(pats)]
	checkMatchSeqs(t, NewIndex(newSubs(t, pats...)), "a.b", all)
}

func TestMatchEmptyIndex(t *testing.T) {
	for name, ix := range map[string]*Index[uint64]{"nil": nil, "NewIndex(nil)": NewIndex[uint64](nil)} {
		if n := ix.Len(); n != 0 {
			t.Errorf("%s: Len() = %d, want 0", name, n)
		}
		if got := ix.Match("a", nil); len(got) != 0 {
			t.Errorf("%s: Match(%q) = %v, want none", name, "a", got)
		}
	}
	for _, give := range []string{"a", "a.*"} {
		if n := NewIndex(newSubs(t, give)).Len(); n != 1 {
			t.Errorf("NewIndex(%q).Len() = %d, want 1", give, n)
		}
	}
	// The zero Pattern matches no valid topic.
	ix := NewIndex([]Sub[uint64]{{Seq: 1, Value: 1}})
	checkMatchSeqs(t, ix, "a", nil)
}

// TestNewIndexUnsorted checks that NewIndex restores Seq order when it is
// given subscriptions out of order, and leaves its argument alone.
func TestNewIndexUnsorted(t *testing.T) {
	subs := newSubs(t, "a.b", ">", "a.b", "a.*", "a.b")
	slices.Reverse(subs)
	give := slices.Clone(subs)
	ix := NewIndex(give)
	if !slices.EqualFunc(give, subs, func(a, b Sub[uint64]) bool { return a.Seq == b.Seq }) {
		t.Errorf("NewIndex modified its argument")
	}
	checkMatchSeqs(t, ix, "a.b", []uint64{1, 2, 3, 4, 5})
}

func TestNewIndexDuplicateSeq(t *testing.T) {
	subs := newSubs(t, "a", "b")
	subs[1].Seq = subs[0].Seq
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Seq 1 used twice") {
			t.Errorf("NewIndex with Seq 1 twice: recover() = %v, want a panic naming Seq 1", r)
		}
	}()
	NewIndex(subs)
}

// TestMatchResultIsolation checks that appending to a result of Match
// writes neither into the index, which other goroutines read at the same
// time, nor into scratch.
func TestMatchResultIsolation(t *testing.T) {
	tests := []struct {
		name        string
		subs        []string
		want        []uint64 // Match("a.b")
		wantScratch bool     // the result is built in scratch
	}{
		{name: "exact", subs: []string{"a.b", "a.b", "x"}, want: []uint64{1, 2}},
		{name: "one wildcard pattern", subs: []string{"a.*", "a.*", "x"}, want: []uint64{1, 2}},
		{name: "merged", subs: []string{"a.*", "a.b", "x"}, want: []uint64{1, 2}, wantScratch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex(newSubs(t, tt.subs...))
			scratch := make([]uint64, 0, ix.Len())
			got := ix.Match("a.b", scratch)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Match(%q) = %v, want %v", "a.b", got, tt.want)
			}
			if cap(got) != len(got) {
				t.Errorf("Match(%q) has cap %d, want its length %d", "a.b", cap(got), len(got))
			}
			if inScratch := &got[0] == &scratch[:1][0]; inScratch != tt.wantScratch {
				t.Errorf("Match(%q) result in scratch = %v, want %v", "a.b", inScratch, tt.wantScratch)
			}
			_ = append(got, 99)
			if again := ix.Match("a.b", nil); !slices.Equal(again, tt.want) {
				t.Errorf("Match(%q) after an append to an earlier result = %v, want %v", "a.b", again, tt.want)
			}
			if s := scratch[:cap(scratch)]; slices.Contains(s, 99) {
				t.Errorf("an append to a result wrote into scratch: %v", s)
			}
		})
	}
}

func TestMatchAllocs(t *testing.T) {
	many := slices.Repeat([]string{">", "a.*", "*.b", "a.b"}, batchLen)
	tests := []struct {
		name  string
		subs  []string
		topic string
		want  int
	}{
		{name: "exact only", subs: []string{"a.b", "a.b", "a.c", "x"}, topic: "a.b", want: 2},
		{name: "exact only/no match", subs: []string{"a.b", "x"}, topic: "a.z", want: 0},
		{name: "wildcards", subs: []string{"a.b", ">", "a.*", "*.b", "a.>", "a.b", "x.*"}, topic: "a.b", want: 6},
		{name: "wildcards/one pattern", subs: []string{"a.*", "x", "a.*"}, topic: "a.b", want: 2},
		{name: "wildcards/exact match only", subs: []string{"a.b", "x.>"}, topic: "a.b", want: 1},
		{name: "wildcards/no match", subs: []string{"a.b", "x.>", "*.*.*"}, topic: "a.z", want: 0},
		{name: "wildcards/several batches", subs: many, topic: "a.b", want: len(many)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex(newSubs(t, tt.subs...))
			scratch := make([]uint64, 0, ix.Len())
			topic := strings.Clone(tt.topic) // not the map's key string
			var got []uint64
			n := testing.AllocsPerRun(100, func() {
				got = ix.Match(topic, scratch)
			})
			if len(got) != tt.want {
				t.Errorf("Match(%q) = %v, want %d values", tt.topic, got, tt.want)
			}
			if n != 0 {
				t.Errorf("Match(%q) allocs = %v, want 0", tt.topic, n)
			}
		})
	}
}
