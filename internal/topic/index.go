package topic

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Sub is one subscription as an Index sees it.
type Sub[T any] struct {
	Pattern Pattern
	// Seq is the subscription order: Match returns Values in ascending
	// Seq. It is unique within one Index.
	Seq   uint64
	Value T
}

// Index answers "which subscriptions match this topic" without looking at
// every subscription. It is immutable once NewIndex returns, so any number
// of goroutines may call Match at the same time without locks; a changed
// subscription set is a new Index (copy-on-write).
//
// The index has two parts:
//
//   - exact maps a pattern without wildcards to its subscriptions. Most
//     subscriptions are exact, and for them one map lookup with the topic
//     is the whole match.
//   - root is a token trie of the wildcard patterns, nil when there are
//     none. The path from root to a node spells a pattern prefix, one edge
//     per token: a literal token goes through children[token], "*" through
//     star. A subscription whose pattern ends at a node is in that node's
//     subs; one whose pattern is the node's prefix followed by ">" is in its
//     gt. For example "a.*.c" is in root.children["a"].star.children["c"].subs
//     and "a.>" in root.children["a"].gt.
//
// Invariants:
//   - Each subscription is in exactly one run (an exact entry, a subs or a
//     gt), and a run's subscriptions all have the same pattern, so a topic
//     matches a run as a whole and Match meets each subscription once.
//   - Each trie node stands for one fixed number of tokens, so a walk
//     reaches it at most once per topic.
//   - Every run is in ascending Seq.
type Index[T any] struct {
	exact map[string]run[T]
	root  *node[T] // nil: no wildcard subscription
	n     int      // number of subscriptions
}

// run is the subscriptions of one pattern, in ascending Seq: vals[i] has
// Seq seqs[i]. The two are parallel slices rather than one slice of pairs
// because the exact path returns vals itself, with no copy; only the merge
// of several runs reads seqs.
type run[T any] struct {
	seqs []uint64
	vals []T
}

// node is one node of the wildcard trie of an Index; see Index.
type node[T any] struct {
	children map[string]*node[T] // literal next token -> node
	star     *node[T]            // next token is "*"
	gt       run[T]              // pattern is this node's prefix + ">"
	subs     run[T]              // pattern ends exactly here
}

// NewIndex returns the index of subs. It neither keeps nor modifies subs,
// and sorts a copy by Seq if subs is not sorted already. It panics if two
// subscriptions have the same Seq: their order would be undefined, and the
// merge in Match relies on unique Seqs.
func NewIndex[T any](subs []Sub[T]) *Index[T] {
	bySeq := func(a, b Sub[T]) int { return cmp.Compare(a.Seq, b.Seq) }
	if !slices.IsSortedFunc(subs, bySeq) {
		subs = slices.Clone(subs)
		slices.SortFunc(subs, bySeq)
	}
	ix := &Index[T]{n: len(subs)}
	for i, s := range subs {
		if i > 0 && subs[i-1].Seq == s.Seq {
			panic(fmt.Sprintf("topic: NewIndex: Seq %d used twice", s.Seq))
		}
		if !s.Pattern.wild {
			if ix.exact == nil {
				ix.exact = make(map[string]run[T])
			}
			r := ix.exact[s.Pattern.raw]
			r.add(s)
			ix.exact[s.Pattern.raw] = r
			continue
		}
		if ix.root == nil {
			ix.root = &node[T]{}
		}
		n, toks := ix.root, s.Pattern.tokens
		last := len(toks) - 1
		for _, tok := range toks[:last] {
			n = n.next(tok)
		}
		if toks[last] == ">" {
			n.gt.add(s)
		} else {
			n.next(toks[last]).subs.add(s)
		}
	}
	return ix
}

// add appends s to r; NewIndex adds in ascending Seq.
func (r *run[T]) add(s Sub[T]) {
	r.seqs = append(r.seqs, s.Seq)
	r.vals = append(r.vals, s.Value)
}

// next returns the child of n for the pattern token tok, creating it.
func (n *node[T]) next(tok string) *node[T] {
	if tok == "*" {
		if n.star == nil {
			n.star = &node[T]{}
		}
		return n.star
	}
	c := n.children[tok]
	if c == nil {
		if n.children == nil {
			n.children = make(map[string]*node[T])
		}
		c = &node[T]{}
		n.children[tok] = c
	}
	return c
}

// Len returns the number of subscriptions in the index (0 for nil). A
// scratch slice with at least this capacity makes every Match of this index
// allocation-free.
func (ix *Index[T]) Len() int {
	if ix == nil {
		return 0
	}
	return ix.n
}

// Match returns the Value of every subscription whose pattern matches topic,
// each once, in ascending Seq. A nil *Index matches nothing. topic should
// have passed Check; for another string Match does not panic, but what it
// matches is unspecified.
//
// The result is read-only and its capacity is its length, so appending to
// it copies instead of writing into memory Match shares. It is either a
// slice of the index itself (when one pattern accounts for every match) or
// built in scratch's backing array, so it is valid until scratch is used
// again. scratch must be memory the caller owns, never a result of Match.
//
// Match runs for every event. When the topic matches only exact patterns,
// it is one map lookup and scratch is not touched. Wildcard matches are
// gathered by a walk of the trie and merged by Seq with the exact ones into
// scratch (see collector). Match allocates nothing unless scratch is too
// small for the result: cap(scratch) >= Len() is always enough.
func (ix *Index[T]) Match(topic string, scratch []T) []T {
	if ix == nil {
		return nil
	}
	exact := ix.exact[topic]
	if ix.root == nil {
		return slices.Clip(exact.vals)
	}
	var c collector[T]
	ix.root.walk(topic, 0, &c)
	switch {
	case c.runs == 0:
		return slices.Clip(exact.vals)
	case c.runs == 1 && len(exact.vals) == 0:
		return slices.Clip(c.last.vals) // one wildcard pattern: the whole of its run
	}
	out, e := scratch[:0], 0
	for {
		// Merge the batch, ascending, with the exact run.
		for _, m := range c.batch[:c.n] {
			for e < len(exact.seqs) && exact.seqs[e] < m.seq {
				out = append(out, exact.vals[e])
				e++
			}
			out = append(out, *m.val)
		}
		if !c.more {
			break
		}
		c.from, c.n, c.more = c.batch[c.n-1].seq+1, 0, false
		ix.root.walk(topic, 0, &c)
	}
	return slices.Clip(append(out, exact.vals[e:]...))
}

// batchLen is the number of wildcard matches one walk of the trie sorts: a
// topic with more takes another walk per batchLen of them. 32 makes that
// rare, and keeps the batch (16 bytes a match) small enough for Match's
// frame.
const batchLen = 32

// collector gathers the wildcard matches of one walk of the trie, which
// meets runs in trie order, not in Seq order. It keeps, sorted, the batchLen
// matches with the smallest Seqs at or above from, as (Seq, pointer into the
// run) pairs: a fixed array in Match's frame, so gathering never allocates,
// whatever T is and however many subscriptions match. A topic with more
// wildcard matches than that takes another walk for each further batch,
// from the last Seq merged plus one.
type collector[T any] struct {
	from  uint64 // matches with a smaller Seq were merged already
	batch [batchLen]match[T]
	n     int     // matches in batch, ascending Seq
	more  bool    // a match at or above from did not fit in batch
	runs  int     // runs with a match at or above from
	last  *run[T] // the last of them
}

// match is one wildcard match: a subscription's Seq and its Value in the
// index.
type match[T any] struct {
	seq uint64
	val *T
}

// add gathers the matches of r, a run the topic matches: it merges r's
// Seqs at or above from with the batch, both ascending, from the back, and
// keeps the batchLen smallest.
func (c *collector[T]) add(r *run[T]) {
	lo := 0
	if c.from > 0 {
		lo, _ = slices.BinarySearch(r.seqs, c.from)
	}
	m := min(len(r.seqs)-lo, batchLen) // candidates r.seqs[lo:lo+m]; more cannot fit
	if m == 0 {
		return
	}
	c.runs++
	c.last = r
	keep := min(c.n+m, batchLen)
	if keep < c.n+m || lo+m < len(r.seqs) {
		c.more = true
	}
	// k is the position of the next largest in the union; those at
	// keep or beyond are dropped. k > i until r's candidates run out, so a
	// write never lands on a batch entry not yet read, and then the batch
	// entries left are in place.
	i, j := c.n-1, lo+m-1
	for k := c.n + m - 1; j >= lo; k-- {
		var e match[T]
		if i >= 0 && c.batch[i].seq > r.seqs[j] {
			e = c.batch[i]
			i--
		} else {
			e = match[T]{seq: r.seqs[j], val: &r.vals[j]}
			j--
		}
		if k < keep {
			c.batch[k] = e
		}
	}
	c.n = keep
}

// walk gathers into c the runs below n that match the rest of topic, which
// starts at byte i; i == len(topic)+1 means no token is left (a valid topic
// does not end in '.', so i == len(topic) does not happen).
func (n *node[T]) walk(topic string, i int, c *collector[T]) {
	if i > len(topic) {
		c.add(&n.subs)
		return
	}
	// At least one token is left: ">" here matches it and all that follow.
	c.add(&n.gt)
	j := strings.IndexByte(topic[i:], '.')
	if j < 0 {
		j = len(topic)
	} else {
		j += i
	}
	if child := n.children[topic[i:j]]; child != nil {
		child.walk(topic, j+1, c)
	}
	if n.star != nil {
		n.star.walk(topic, j+1, c)
	}
}
