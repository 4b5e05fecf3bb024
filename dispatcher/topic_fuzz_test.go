package dispatcher

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The reference below states the topic rules the simplest way: split at
// '.', check each token, match by recursion. FuzzMatch holds checkTopic,
// parsePattern and index.match to it.

// refValidTopic reports whether s is a valid emitted topic.
func refValidTopic(s string) bool {
	if s == "" || strings.ContainsAny(s, "*>") {
		return false
	}
	return !slices.Contains(strings.Split(s, "."), "")
}

// refValidPattern reports whether s is a valid pattern.
func refValidPattern(s string) bool {
	if s == "" {
		return false
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return false
		case tok == "*":
		case tok == ">":
			if i != len(toks)-1 {
				return false
			}
		case strings.ContainsAny(tok, "*>"):
			return false
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
	}
	for _, s := range seeds {
		f.Add(s.pat, s.topic)
	}
	f.Fuzz(func(t *testing.T, pat, topic string) {
		topicErr := checkTopic(topic)
		if ok := refValidTopic(topic); ok != (topicErr == nil) {
			t.Fatalf("checkTopic(%q) = %v, want valid %v", topic, topicErr, ok)
		}
		if topicErr != nil && !errors.Is(topicErr, ErrBadTopic) {
			t.Fatalf("checkTopic(%q) = %v, want one wrapping ErrBadTopic", topic, topicErr)
		}

		p, patErr := parsePattern(pat)
		if ok := refValidPattern(pat); ok != (patErr == nil) {
			t.Fatalf("parsePattern(%q) error = %v, want valid %v", pat, patErr, ok)
		}
		if patErr != nil {
			if !errors.Is(patErr, ErrBadTopic) {
				t.Fatalf("parsePattern(%q) error = %v, want one wrapping ErrBadTopic", pat, patErr)
			}
		} else {
			toks := strings.Split(pat, ".")
			wild := slices.Contains(toks, "*") || slices.Contains(toks, ">")
			if p.raw != pat || !slices.Equal(p.tokens, toks) || p.wild != wild {
				t.Fatalf("parsePattern(%q) = %+v, want raw %q, tokens %q, wild %v", pat, p, pat, toks, wild)
			}
		}
		if topicErr != nil {
			return // match assumes a valid topic
		}

		// Subscribe the fuzzed pattern twice, between and after the others,
		// so that shared patterns and the merge of exact and trie matches
		// are both exercised.
		pats := fuzzPatterns(topic)
		if patErr == nil {
			mid := len(pat) % (len(pats) + 1)
			pats = slices.Insert(pats, mid, pat)
			pats = append(pats, pat)
		}
		var subs []*subscriber
		for i, s := range pats {
			sp, err := parsePattern(s)
			if err != nil {
				continue // a pattern made from a strange topic can be bad
			}
			// seq has gaps, as after Unsubscribe.
			subs = append(subs, &subscriber{name: fmt.Sprintf("s%d", i), seq: uint64(3*i + 1), pat: sp})
		}
		checkMatch(t, subs, topic)
		if patErr == nil {
			// The fuzzed pattern alone: exact-only or wildcard-only index.
			checkMatch(t, []*subscriber{
				{name: "p1", seq: 7, pat: p},
				{name: "p2", seq: 9, pat: p},
			}, topic)
		}
	})
}

// checkMatch checks buildIndex(subs).match(topic) against refMatch, with
// scratch slices that are nil, too small and large enough.
func checkMatch(t *testing.T, subs []*subscriber, topic string) {
	t.Helper()
	topicToks := strings.Split(topic, ".")
	var want []string
	for _, s := range subs {
		if refMatch(s.pat.tokens, topicToks) {
			want = append(want, s.name)
		}
	}
	ix := buildIndex(subs)
	if ix.size() != len(subs) {
		t.Fatalf("buildIndex(%d subscribers).size() = %d", len(subs), ix.size())
	}
	for _, scratch := range [][]*subscriber{nil, make([]*subscriber, 0, 1), make([]*subscriber, 0, ix.size())} {
		var got []string
		for _, s := range ix.match(topic, scratch) {
			got = append(got, s.name)
		}
		if !slices.Equal(got, want) {
			var pats []string
			for _, s := range subs {
				pats = append(pats, s.name+"="+s.pat.raw)
			}
			t.Fatalf("match(%q, cap %d) = %q, want %q\nsubscribers: %q", topic, cap(scratch), got, want, pats)
		}
	}
}
