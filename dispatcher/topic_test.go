package dispatcher

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCheckTopic(t *testing.T) {
	tests := []struct {
		give    string
		wantErr bool
	}{
		{give: "a"},
		{give: "run.finished"},
		{give: "orders.eu.created"},
		{give: "a-b_c:1.x/y"},
		{give: "ünïcode.tøpic"},
		{give: "a.b.c.d.e.f.g.h.i.j"},

		{give: "", wantErr: true},
		{give: ".", wantErr: true},
		{give: "..", wantErr: true},
		{give: ".a", wantErr: true},
		{give: "a.", wantErr: true},
		{give: "a..b", wantErr: true},
		{give: "*", wantErr: true},
		{give: ">", wantErr: true},
		{give: "run.*", wantErr: true},
		{give: "run.>", wantErr: true},
		{give: "a*b", wantErr: true},
		{give: "a>", wantErr: true},
		{give: ">.a", wantErr: true},
		{give: "a.*.c", wantErr: true},
		{give: "a.b*", wantErr: true},
		{give: "a.>b", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.give), func(t *testing.T) {
			err := checkTopic(tt.give)
			if tt.wantErr {
				checkBadTopicErr(t, "checkTopic", tt.give, err)
				return
			}
			if err != nil {
				t.Errorf("checkTopic(%q) = %v, want nil", tt.give, err)
			}
		})
	}
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		give    string
		want    pattern
		wantErr bool
	}{
		{give: "a", want: pattern{raw: "a", tokens: []string{"a"}}},
		{give: "run.finished", want: pattern{raw: "run.finished", tokens: []string{"run", "finished"}}},
		{give: "*", want: pattern{raw: "*", tokens: []string{"*"}, wild: true}},
		{give: ">", want: pattern{raw: ">", tokens: []string{">"}, wild: true}},
		{give: "run.*", want: pattern{raw: "run.*", tokens: []string{"run", "*"}, wild: true}},
		{give: "run.>", want: pattern{raw: "run.>", tokens: []string{"run", ">"}, wild: true}},
		{give: "*.*", want: pattern{raw: "*.*", tokens: []string{"*", "*"}, wild: true}},
		{give: "*.>", want: pattern{raw: "*.>", tokens: []string{"*", ">"}, wild: true}},
		{give: "a.*.c.>", want: pattern{raw: "a.*.c.>", tokens: []string{"a", "*", "c", ">"}, wild: true}},

		{give: "", wantErr: true},
		{give: ".", wantErr: true},
		{give: ".a", wantErr: true},
		{give: "a.", wantErr: true},
		{give: "a..b", wantErr: true},
		{give: "a*b", wantErr: true},
		{give: "a>", wantErr: true},
		{give: ">a", wantErr: true},
		{give: "**", wantErr: true},
		{give: "*>", wantErr: true},
		{give: "a.b*", wantErr: true},
		{give: ">.a", wantErr: true},
		{give: ">.>", wantErr: true},
		{give: "a.>.b", wantErr: true},
		{give: "a.>.", wantErr: true},
		{give: "*.", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.give), func(t *testing.T) {
			got, err := parsePattern(tt.give)
			if tt.wantErr {
				checkBadTopicErr(t, "parsePattern", tt.give, err)
				return
			}
			if err != nil {
				t.Fatalf("parsePattern(%q) error = %v, want nil", tt.give, err)
			}
			if got.raw != tt.want.raw || !slices.Equal(got.tokens, tt.want.tokens) || got.wild != tt.want.wild {
				t.Errorf("parsePattern(%q) = %+v, want %+v", tt.give, got, tt.want)
			}
		})
	}
}

// checkBadTopicErr checks that err is the error of fn for the bad topic or
// pattern give.
func checkBadTopicErr(t *testing.T, fn, give string, err error) {
	t.Helper()
	if !errors.Is(err, ErrBadTopic) {
		t.Fatalf("%s(%q) error = %v, want one wrapping ErrBadTopic", fn, give, err)
	}
	if q := strconv.Quote(give); !strings.Contains(err.Error(), q) {
		t.Errorf("%s(%q) error = %q, want it to contain %s", fn, give, err, q)
	}
}

// newSubs returns one subscriber per pattern, with seq 1, 2, 3, ... in the
// order given and names "s1", "s2", ...
func newSubs(t testing.TB, patterns ...string) []*subscriber {
	t.Helper()
	subs := make([]*subscriber, len(patterns))
	for i, s := range patterns {
		p, err := parsePattern(s)
		if err != nil {
			t.Fatalf("parsePattern(%q) error = %v", s, err)
		}
		subs[i] = &subscriber{name: fmt.Sprintf("s%d", i+1), seq: uint64(i + 1), pat: p}
	}
	return subs
}

// seqs returns the seq of each subscriber in subs.
func seqs(subs []*subscriber) []uint64 {
	out := make([]uint64, len(subs))
	for i, s := range subs {
		out[i] = s.seq
	}
	return out
}

func TestIndexMatch(t *testing.T) {
	tests := []struct {
		name  string
		subs  []string // patterns, in subscription order: seq 1, 2, ...
		topic string
		want  []uint64 // seq of the matching subscribers
	}{
		{name: "exact", subs: []string{"a", "a.b", "a.b.c"}, topic: "a.b", want: []uint64{2}},
		{name: "exact/shared", subs: []string{"a.b", "x", "a.b"}, topic: "a.b", want: []uint64{1, 3}},
		{name: "exact/none", subs: []string{"a", "a.b"}, topic: "b", want: nil},
		{name: "exact/prefix is no match", subs: []string{"a.b"}, topic: "a.b.c", want: nil},

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
		// then "*.b"; the result must still be in subscription order, with
		// the exact subscribers merged in.
		{
			name:  "order/exact and wildcard",
			subs:  []string{"a.>", "a.b", "*.b", "a.b", ">", "a.*", "b.>"},
			topic: "a.b",
			want:  []uint64{1, 2, 3, 4, 5, 6},
		},
		{
			name:  "order/wildcard before exact",
			subs:  []string{">", "*.*", "a.b", "a.b"},
			topic: "a.b",
			want:  []uint64{1, 2, 3, 4},
		},
		{
			name:  "order/exact before wildcard",
			subs:  []string{"a.b", "a.b", ">", "*.*"},
			topic: "a.b",
			want:  []uint64{1, 2, 3, 4},
		},
		{
			name:  "order/wildcard only matches",
			subs:  []string{"x", "*.b", "a.b.c", ">"},
			topic: "a.b",
			want:  []uint64{2, 4},
		},
		{
			name:  "order/exact only matches with wildcards present",
			subs:  []string{"x.>", "a.b", "*.c"},
			topic: "a.b",
			want:  []uint64{2},
		},
		{name: "none", subs: []string{"a.>", "a.b", "*.b", "x"}, topic: "z", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := buildIndex(newSubs(t, tt.subs...))
			for _, scratch := range [][]*subscriber{nil, make([]*subscriber, 0, 1), make([]*subscriber, 0, ix.size())} {
				got := ix.match(tt.topic, scratch)
				if !slices.Equal(seqs(got), tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
					t.Errorf("match(%q, cap %d) = %v, want %v", tt.topic, cap(scratch), seqs(got), tt.want)
				}
			}
		})
	}
}

func TestMatchEmptyIndex(t *testing.T) {
	for name, ix := range map[string]*index{"nil": nil, "buildIndex(nil)": buildIndex(nil)} {
		if !ix.empty() {
			t.Errorf("%s: empty() = false, want true", name)
		}
		if n := ix.size(); n != 0 {
			t.Errorf("%s: size() = %d, want 0", name, n)
		}
		if got := ix.match("a", nil); len(got) != 0 {
			t.Errorf("%s: match(%q) = %v, want none", name, "a", seqs(got))
		}
	}
	for _, give := range []string{"a", "a.*"} {
		ix := buildIndex(newSubs(t, give))
		if ix.empty() {
			t.Errorf("buildIndex(%q).empty() = true, want false", give)
		}
		if n := ix.size(); n != 1 {
			t.Errorf("buildIndex(%q).size() = %d, want 1", give, n)
		}
	}
}

// TestMatchUnsortedSubscribers checks that buildIndex restores subscription order
// when it is given subscribers out of order, and leaves its argument alone.
func TestMatchUnsortedSubscribers(t *testing.T) {
	subs := newSubs(t, "a.b", ">", "a.b", "a.*", "a.b")
	slices.Reverse(subs)
	give := slices.Clone(subs)
	ix := buildIndex(give)
	if !slices.Equal(give, subs) {
		t.Errorf("buildIndex modified its argument: %v, want %v", seqs(give), seqs(subs))
	}
	for _, topic := range []string{"a.b", "x"} {
		got := seqs(ix.match(topic, nil))
		if !slices.IsSorted(got) {
			t.Errorf("match(%q) = %v, want ascending seq", topic, got)
		}
	}
	if got, want := seqs(ix.match("a.b", nil)), []uint64{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("match(%q) = %v, want %v", "a.b", got, want)
	}
}

// TestMatchResultIsolation checks that appending to a result of match does
// not write into the index, which other goroutines read at the same time.
func TestMatchResultIsolation(t *testing.T) {
	subs := newSubs(t, "a.b", "a.b", "x")
	ix := buildIndex(subs)
	got := ix.match("a.b", nil)
	_ = append(got, subs[2])
	if again := seqs(ix.match("a.b", nil)); !slices.Equal(again, []uint64{1, 2}) {
		t.Errorf("match(%q) after append to an earlier result = %v, want [1 2]", "a.b", again)
	}
	// A node's subs and gt slices are clipped the same way.
	wild := newSubs(t, "a.*", "a.*", "x")
	ix = buildIndex(wild)
	scratch := make([]*subscriber, 0, ix.size())
	got = ix.match("a.b", scratch)
	if !slices.Equal(seqs(got), []uint64{1, 2}) {
		t.Fatalf("match(%q) = %v, want [1 2]", "a.b", seqs(got))
	}
	if &got[0] != &scratch[:1][0] {
		t.Errorf("match(%q) with wildcard matches did not use scratch", "a.b")
	}
}

// TestMatchMergeBySeq checks mergeBySeq on every split of seq 1..6 into two
// sorted runs.
func TestMatchMergeBySeq(t *testing.T) {
	const n = 6
	all := newSubs(t, "a", "a", "a", "a", "a", "a")
	for mask := 0; mask < 1<<n; mask++ {
		var a, b []*subscriber
		for i := range n {
			if mask&(1<<i) != 0 {
				a = append(a, all[i])
			} else {
				b = append(b, all[i])
			}
		}
		wantA, wantB := seqs(a), seqs(b)
		got := seqs(mergeBySeq(a, b))
		if want := seqs(all); !slices.Equal(got, want) {
			t.Errorf("mergeBySeq(%v, %v) = %v, want %v", wantA, wantB, got, want)
		}
		if !slices.Equal(seqs(b), wantB) {
			t.Errorf("mergeBySeq(%v, %v) modified its second argument: %v", wantA, wantB, seqs(b))
		}
	}
}

func TestTopicAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		if err := checkTopic("orders.eu.created"); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("checkTopic allocs = %v, want 0", n)
	}

	tests := []struct {
		name  string
		subs  []string
		topic string
		want  int
	}{
		{name: "exact only", subs: []string{"a.b", "a.b", "a.c", "x"}, topic: "a.b", want: 2},
		{name: "exact only/no match", subs: []string{"a.b", "x"}, topic: "a.z", want: 0},
		{name: "wildcards", subs: []string{"a.b", ">", "a.*", "*.b", "a.>", "a.b", "x.*"}, topic: "a.b", want: 6},
		{name: "wildcards/exact match only", subs: []string{"a.b", "x.>"}, topic: "a.b", want: 1},
		{name: "wildcards/no match", subs: []string{"a.b", "x.>", "*.*.*"}, topic: "a.z", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := buildIndex(newSubs(t, tt.subs...))
			scratch := make([]*subscriber, 0, ix.size())
			topic := strings.Clone(tt.topic) // not the map's key string
			var got []*subscriber
			n := testing.AllocsPerRun(100, func() {
				got = ix.match(topic, scratch)
			})
			if len(got) != tt.want {
				t.Errorf("match(%q) = %v, want %d subscribers", tt.topic, seqs(got), tt.want)
			}
			if n != 0 {
				t.Errorf("match(%q) allocs = %v, want 0", tt.topic, n)
			}
		})
	}
}

func BenchmarkIndexMatch(b *testing.B) {
	patterns := []string{">", "orders.>", "orders.*.created", "orders.eu.created", "orders.us.created", "users.*", "audit.>"}
	for i := range 100 {
		patterns = append(patterns, fmt.Sprintf("topic%d.x", i))
	}
	ix := buildIndex(newSubs(b, patterns...))
	exact := buildIndex(newSubs(b, "orders.eu.created", "orders.eu.created", "users.created"))
	scratch := make([]*subscriber, 0, ix.size())
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			exact.match("orders.eu.created", scratch)
		}
	})
	b.Run("wildcards", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ix.match("orders.eu.created", scratch)
		}
	})
	b.Run("checkTopic", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = checkTopic("orders.eu.created")
		}
	})
}
