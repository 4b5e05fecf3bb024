package topic

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The reference below states the rules the simplest way: split at '.',
// check each token, match by recursion. FuzzCheck and FuzzMatch hold Check,
// Parse and Index.Match to it.

// refValid reports whether s is a valid topic, or with wild a valid
// pattern.
func refValid(s string, wild bool) bool {
	if s == "" || len(s) > MaxLen {
		return false
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case wild && tok == "*":
		case wild && tok == ">":
			if i != len(toks)-1 {
				return false
			}
		case tok == "":
			return false
		default:
			for _, c := range []byte(tok) {
				if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
					return false
				}
			}
		}
	}
	return true
}

// refMatch reports whether the pattern tokens pat match the topic tokens
// topic.
func refMatch(pat, topic []string) bool {
	switch {
	case len(pat) == 0:
		return len(topic) == 0
	case pat[0] == ">":
		return len(topic) > 0
	case len(topic) == 0:
		return false
	case pat[0] == "*" || pat[0] == topic[0]:
		return refMatch(pat[1:], topic[1:])
	}
	return false
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"a", "a.b", "orders.eu-west_1.created", "abcdefgh", "abcdefg.", ".bcdefgh",
		"abcdefg..ijklmno", "abcdefgh.ijklmnop", "abcdefghijklmno.", "abcdefgh\x80",
		"order placed", "orders.ünï", "orders.*.x", "run.>.abcdefgh", "a\x00bcdefghi",
		strings.Repeat("ab.", 85), strings.Repeat("a", MaxLen+1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		err := Check(topic)
		want := refValid(topic, false)
		if (err == nil) != want {
			t.Fatalf("Check(%q) = %v, want valid %v", topic, err, want)
		}
		if swar := checkSWAR(topic); (swar == nil) != want {
			t.Fatalf("checkSWAR(%q) = %v, want valid %v", topic, swar, want)
		}
		if err == nil {
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Input != topic {
			t.Fatalf("Check(%q) = %#v, want an *Error with that Input", topic, err)
		}
	})
}

// fuzzPatterns returns the patterns subscribed next to the fuzzed one: a
// fixed set, plus patterns made from topic so that matches are common.
func fuzzPatterns(topic string) []string {
	pats := []string{">", "*", "*.*", "*.>", "a", "a.b", "a.*", "a.>", "a.*.c", "*.b.>"}
	toks := strings.Split(topic, ".")
	if len(toks) > 4 {
		toks = toks[:4]
	}
	pats = append(pats, topic, topic)
	for i := range toks {
		// Each token replaced by "*", and each prefix followed by ">".
		star := slices.Clone(toks)
		star[i] = "*"
		pats = append(pats, strings.Join(star, "."), strings.Join(toks[:i+1], ".")+".>")
	}
	return pats
}

func FuzzMatch(f *testing.F) {
	seeds := []struct{ pat, topic string }{
		{"run.*", "run.finished"},
		{"run.*", "run"},
		{"run.*", "run.a.b"},
		{"run.>", "run.a"},
		{"run.>", "run.a.b"},
		{"run.>", "run"},
		{"*", "x"},
		{">", "x.y.z"},
		{"a.*.c", "a.b.c"},
		{"*.*", "a.b"},
		{"*.>", "a"},
		{"a.*.>", "a.b.c.d"},
		{"a.b", "a.b"},
		{"a.b", "a.b.c"},
		{"a*b", "a"},
		{"a>", "a"},
		{">.a", "b.a"},
		{"a..b", "a..b"},
		{".a", ".a"},
		{"a.", "a."},
		{"", ""},
		{"a.>.b", "a.x.b"},
		{"x", "a.*"},
		{"ü.*", "ü.ñ"},
		{"order.#", "order placed"},
		{"orders.eu-west_1.*", "orders.eu-west_1.created"},
	}
	for _, s := range seeds {
		f.Add(s.pat, s.topic)
	}
	f.Fuzz(func(t *testing.T, pat, topic string) {
		p, patErr := Parse(pat)
		if want := refValid(pat, true); want != (patErr == nil) {
			t.Fatalf("Parse(%q) error = %v, want valid %v", pat, patErr, want)
		}
		if patErr == nil {
			toks := strings.Split(pat, ".")
			wild := slices.Contains(toks, "*") || slices.Contains(toks, ">")
			if p.String() != pat || !slices.Equal(p.tokens, toks) || p.Wild() != wild {
				t.Fatalf("Parse(%q) = %q, tokens %q, Wild %v; want tokens %q, Wild %v", pat, p, p.tokens, p.Wild(), toks, wild)
			}
		}
		if Check(topic) != nil {
			return // Match assumes a valid topic
		}

		// Subscribe the fuzzed pattern twice, between and after the others,
		// so that shared patterns and the merge of exact and trie matches
		// are both exercised.
		pats := fuzzPatterns(topic)
		if patErr == nil {
			pats = slices.Insert(pats, len(pat)%(len(pats)+1), pat)
			pats = append(pats, pat)
		}
		var subs []Sub[string]
		for i, s := range pats {
			sp, err := Parse(s)
			if err != nil {
				continue // a pattern made from a long topic can be too long
			}
			// Seq has gaps, as after an unsubscription.
			subs = append(subs, Sub[string]{Pattern: sp, Seq: uint64(3*i + 1), Value: fmt.Sprint("s", i)})
		}
		checkMatch(t, subs, topic)

		// Three times over, interleaved: more matches than one batch.
		var many []Sub[string]
		for k := range uint64(3) {
			for _, s := range subs {
				many = append(many, Sub[string]{Pattern: s.Pattern, Seq: 3*s.Seq + k, Value: fmt.Sprint(s.Value, "/", k)})
			}
		}
		checkMatch(t, many, topic)

		if patErr == nil {
			// The fuzzed pattern alone: an exact-only or wildcard-only index.
			checkMatch(t, []Sub[string]{{Pattern: p, Seq: 7, Value: "p1"}, {Pattern: p, Seq: 9, Value: "p2"}}, topic)
		}
	})
}

// checkMatch checks NewIndex(subs).Match(topic) against refMatch, with each
// scratch.
func checkMatch(t *testing.T, subs []Sub[string], topic string) {
	t.Helper()
	topicToks := strings.Split(topic, ".")
	var want []string
	bySeq := slices.SortedFunc(slices.Values(subs), func(a, b Sub[string]) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, s := range bySeq {
		if refMatch(s.Pattern.tokens, topicToks) {
			want = append(want, s.Value)
		}
	}
	ix := NewIndex(subs)
	if ix.Len() != len(subs) {
		t.Fatalf("NewIndex(%d subscriptions).Len() = %d", len(subs), ix.Len())
	}
	for _, scratch := range scratches(ix) {
		if got := ix.Match(topic, scratch); !slices.Equal(got, want) {
			var pats []string
			for _, s := range subs {
				pats = append(pats, fmt.Sprint(s.Value, "=", s.Pattern))
			}
			t.Fatalf("Match(%q, cap %d) = %q, want %q\nsubscriptions: %q", topic, cap(scratch), got, want, pats)
		}
	}
}
