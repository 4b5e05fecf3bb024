package dispatcher

import (
	"fmt"
	"slices"
	"strings"
)

// Topics and patterns.
//
// A topic is one or more non-empty tokens separated by '.': "run",
// "run.finished", "orders.eu.created". A pattern has the same shape, and a
// token of a pattern may be a wildcard, but only as a whole token:
//
//   - "*" matches exactly one token: "run.*" matches "run.a", not "run" and
//     not "run.a.b".
//   - ">" matches one or more tokens and may only be the last token:
//     "run.>" matches "run.a" and "run.a.b", not "run".
//
// "a*b", "a>", ">.a", "a..b", ".a", "a." and "" are bad patterns: a '*' or
// '>' that is not a whole token would mean different things to different
// readers, so it is refused instead of being taken literally. An emitted
// topic contains no '*' or '>' byte at all, so that a topic can never be
// mistaken for a pattern.

// checkTopic reports, as an error wrapping ErrBadTopic, why topic is not a
// valid emitted topic: it is empty, has an empty token, or contains '*' or
// '>'. It returns nil for a valid topic.
//
// checkTopic runs on every Emit, so it looks at eight bytes at a time (see
// byteMask) and does not allocate on success; a failure goes through
// checkTopicSlow, which says what is wrong.
func checkTopic(topic string) error {
	n := len(topic)
	if n < 8 || topic[0] == '.' || topic[n-1] == '.' {
		return checkTopicSlow(topic) // short topics: a byte loop is as fast
	}
	var bad, prevDots uint64
	i := 0
	for ; i+8 <= n; i += 8 {
		w := load8(topic[i:])
		dots := byteMask(w, '.')
		// A wildcard byte anywhere, or two dots in a row: within the
		// word, or the last byte of the previous word and the first of
		// this one.
		bad |= byteMask(w, '*') | byteMask(w, '>') | dots&(dots>>8) | dots&(prevDots>>56)
		prevDots = dots
	}
	if i < n {
		// The tail: the last eight bytes, overlapping the word before,
		// so the pair across the boundary is inside this word.
		w := load8(topic[n-8:])
		dots := byteMask(w, '.')
		bad |= byteMask(w, '*') | byteMask(w, '>') | dots&(dots>>8)
	}
	if bad != 0 {
		return checkTopicSlow(topic)
	}
	return nil
}

// load8 returns the first eight bytes of s, which has at least eight, as a
// little-endian word (the compiler makes it one load).
func load8(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// byteMask returns w with 0x80 in every byte equal to c and 0 elsewhere.
// It is exact: (x&0x7f..)+0x7f.. sets a byte's top bit when its low seven
// bits are not all zero, and or-ing x adds the byte's own top bit, so only a
// zero byte of x (a byte of w equal to c) ends with its top bit clear.
func byteMask(w uint64, c byte) uint64 {
	const low7 = 0x7f7f7f7f7f7f7f7f
	x := w ^ (0x0101010101010101 * uint64(c))
	return ^((x&low7 + low7) | x | low7)
}

// checkTopicSlow is checkTopic's byte-by-byte form: it finds what is wrong
// with a topic the fast form refused.
func checkTopicSlow(topic string) error {
	if topic == "" {
		return badTopic(topic, "empty topic")
	}
	start := 0 // first byte of the current token
	for i := 0; i < len(topic); i++ {
		switch topic[i] {
		case '.':
			if i == start {
				return badTopic(topic, "empty token")
			}
			start = i + 1
		case '*', '>':
			return badTopic(topic, "wildcard in an emitted topic")
		}
	}
	if start == len(topic) {
		return badTopic(topic, "empty token")
	}
	return nil
}

// badTopic returns the error for a bad topic or pattern s.
func badTopic(s, reason string) error {
	return fmt.Errorf("%w: %q: %s", ErrBadTopic, s, reason)
}

// pattern is a parsed subscription pattern. It is immutable.
type pattern struct {
	raw    string   // the pattern as given to On
	tokens []string // raw split at '.'; every token is non-empty
	wild   bool     // some token is "*" or ">"; false: matches raw only
}

// parsePattern parses s as a subscription pattern, or returns an error
// wrapping ErrBadTopic that says which rule s breaks. Parsing happens once,
// in On, so that a bad pattern is reported to the subscriber instead of
// silently never matching.
func parsePattern(s string) (pattern, error) {
	if s == "" {
		return pattern{}, badTopic(s, "empty pattern")
	}
	tokens := strings.Split(s, ".")
	wild := false
	for i, tok := range tokens {
		switch {
		case tok == "":
			return pattern{}, badTopic(s, "empty token")
		case tok == "*":
			wild = true
		case tok == ">":
			if i != len(tokens)-1 {
				return pattern{}, badTopic(s, `">" must be the last token`)
			}
			wild = true
		case strings.ContainsAny(tok, "*>"):
			return pattern{}, badTopic(s, `"*" and ">" must be whole tokens`)
		}
	}
	return pattern{raw: s, tokens: tokens, wild: wild}, nil
}

// index answers "which subscribers match this topic" without looking at
// every subscription. It is built once per change of the subscription set
// (copy-on-write: the dispatcher swaps in a new index) and is immutable
// afterwards, so any number of goroutines may call match concurrently
// without locks.
//
// The index has two parts:
//
//   - exact maps a pattern without wildcards to its subscribers. Most
//     subscriptions are exact, and for them one map lookup with the topic
//     is the whole match.
//   - root is a token trie of the wildcard patterns, nil when there are
//     none. The path from root to a node spells a pattern prefix, one edge
//     per token: a literal token goes through children[token], "*" through
//     star. A subscriber whose pattern ends at a node is in that node's subs;
//     one whose pattern is the node's prefix followed by ">" is in its gt.
//     For example "a.*.c" is root.children["a"].star.children["c"].subs and
//     "a.>" is root.children["a"].gt.
//
// Every slice holds its subscribers in subscription order (seq ascending),
// and each subscriber is in exactly one slice, so a match never sees a
// subscriber twice.
type index struct {
	exact map[string][]*subscriber
	root  *node // nil: no wildcard subscriber
	n     int   // number of subscribers
}

// node is one node of the wildcard trie of an index; see index.
type node struct {
	children map[string]*node // literal next token -> node
	star     *node            // next token is "*"
	gt       []*subscriber    // pattern is this node's prefix + ">"
	subs     []*subscriber    // pattern ends exactly here
}

// buildIndex builds the index of subs. subs should be in subscription order
// (seq ascending), which is how the dispatcher keeps them; if they are not,
// buildIndex sorts a copy, because match relies on that order. buildIndex
// neither keeps nor modifies subs.
func buildIndex(subs []*subscriber) *index {
	bySeq := func(a, b *subscriber) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	}
	if !slices.IsSortedFunc(subs, bySeq) {
		subs = slices.Clone(subs)
		slices.SortStableFunc(subs, bySeq)
	}
	ix := &index{n: len(subs)}
	for _, s := range subs {
		if !s.pat.wild {
			if ix.exact == nil {
				ix.exact = make(map[string][]*subscriber)
			}
			ix.exact[s.pat.raw] = append(ix.exact[s.pat.raw], s)
			continue
		}
		if ix.root == nil {
			ix.root = &node{}
		}
		n := ix.root
		toks := s.pat.tokens
		if toks[len(toks)-1] == ">" {
			toks = toks[:len(toks)-1]
		}
		for _, tok := range toks {
			n = n.next(tok)
		}
		if len(toks) < len(s.pat.tokens) {
			n.gt = append(n.gt, s)
		} else {
			n.subs = append(n.subs, s)
		}
	}
	// Clip every slice, so that a caller appending to a slice returned by
	// match gets a copy instead of writing into the shared index.
	for k, v := range ix.exact {
		ix.exact[k] = slices.Clip(v)
	}
	ix.root.clip()
	return ix
}

// next returns the child of n for the pattern token tok, creating it.
func (n *node) next(tok string) *node {
	if tok == "*" {
		if n.star == nil {
			n.star = &node{}
		}
		return n.star
	}
	c := n.children[tok]
	if c == nil {
		if n.children == nil {
			n.children = make(map[string]*node)
		}
		c = &node{}
		n.children[tok] = c
	}
	return c
}

// clip clips the subscriber slices of n and its descendants; see buildIndex.
func (n *node) clip() {
	if n == nil {
		return
	}
	n.gt = slices.Clip(n.gt)
	n.subs = slices.Clip(n.subs)
	for _, c := range n.children {
		c.clip()
	}
	n.star.clip()
}

// empty reports whether the index has no subscriber at all, so that Emit
// can skip an event nobody listens to. A nil index is empty.
func (ix *index) empty() bool {
	return ix.size() == 0
}

// size returns the number of subscribers in the index (0 for nil). A
// scratch slice with at least this capacity makes every match of this index
// allocation-free.
func (ix *index) size() int {
	if ix == nil {
		return 0
	}
	return ix.n
}

// match returns every subscriber whose pattern matches topic, each once, in
// subscription order. topic must be valid (see checkTopic). The result is
// read-only and valid until scratch is used again: it may be a slice of the
// index itself, or scratch.
//
// scratch must be memory the caller owns, never a slice that match
// returned: that may belong to the index, and match writes into scratch, so
// the index would be corrupted for every goroutine. Keep the scratch buffer
// in its own variable, with capacity size() to never allocate.
//
// match runs for every event, so it does not allocate when scratch has room
// for the result: the topic is tokenized by walking indexes into the string,
// and map lookups with a substring of topic do not copy it. When no wildcard
// pattern matches, the result is the exact map's slice and scratch is not
// touched. Otherwise the result is scratch[:0] with the trie's matches
// (sorted by seq: the walk meets them in trie order, not in subscription
// order) merged with the exact ones.
func (ix *index) match(topic string, scratch []*subscriber) []*subscriber {
	if ix == nil {
		return nil
	}
	exact := ix.exact[topic]
	if ix.root == nil {
		return exact
	}
	out := ix.root.walk(topic, 0, scratch[:0])
	if len(out) == 0 {
		return exact
	}
	// Insertion sort: the wildcard matches of one topic are few.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].seq < out[j-1].seq; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return mergeBySeq(out, exact)
}

// walk appends to out the subscribers of the trie below n that match the
// rest of topic, which starts at byte i; i == len(topic)+1 means no token is
// left (i == len(topic) cannot happen: a valid topic does not end in '.').
// Each node of the trie stands for one fixed number of tokens, so the walk
// reaches each node at most once and appends each subscriber at most once.
func (n *node) walk(topic string, i int, out []*subscriber) []*subscriber {
	if i > len(topic) {
		return append(out, n.subs...)
	}
	// At least one token is left: ">" here matches it and all that follow.
	out = append(out, n.gt...)
	j := strings.IndexByte(topic[i:], '.')
	if j < 0 {
		j = len(topic)
	} else {
		j += i
	}
	if c := n.children[topic[i:j]]; c != nil {
		out = c.walk(topic, j+1, out)
	}
	if n.star != nil {
		out = n.star.walk(topic, j+1, out)
	}
	return out
}

// mergeBySeq merges b into a, both sorted by seq and disjoint, in place in
// a's backing array (which grows only if it lacks room for len(a)+len(b)),
// and returns the merged slice.
func mergeBySeq(a, b []*subscriber) []*subscriber {
	m, k := len(a), len(b)
	if k == 0 {
		return a
	}
	// Move a to the tail and merge from the front: the write index w =
	// i + (j-k) stays below the read index j of the tail until b is used
	// up, at which point the rest of the tail is already in place.
	a = append(a, b...)
	copy(a[k:], a[:m])
	i, j, w := 0, k, 0
	for i < k && j < m+k {
		if b[i].seq < a[j].seq {
			a[w] = b[i]
			i++
		} else {
			a[w] = a[j]
			j++
		}
		w++
	}
	copy(a[w:], b[i:])
	return a
}
