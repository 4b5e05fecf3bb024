package topic

import (
	"slices"
	"strings"
	"testing"
)

// This file holds the word-at-a-time topic checks that BenchmarkCheck
// measures Check against: checkSWAR, the current rule eight bytes at a
// time, and oldCheckTopic, the rule before this package (non-empty tokens,
// no '*' or '>', any other byte allowed).

// checkSWAR is Check reading eight bytes at a time: any word it cannot
// vouch for sends the whole topic to Check, which writes the error, so the
// word checks only have to be right about "valid".
func checkSWAR(topic string) error {
	n := len(topic)
	if n < 8 || n > MaxLen || topic[0] == '.' || topic[n-1] == '.' {
		return Check(topic)
	}
	var bad, prevDots uint64
	i := 0
	for ; i+8 <= n; i += 8 {
		b, dots := wordFlags(load8(topic[i:]))
		// A dot ending the previous word and one starting this word
		// also make an empty token.
		bad |= b | dots&(prevDots>>56)
		prevDots = dots
	}
	if i < n {
		// The tail: the last eight bytes, overlapping the word before,
		// so that a pair of dots across the boundary is inside this word.
		b, _ := wordFlags(load8(topic[n-8:]))
		bad |= b
	}
	if bad != 0 {
		return Check(topic)
	}
	return nil
}

// A topic is read as little-endian uint64 words, byte k of the word in bits
// 8k to 8k+7, and each check below leaves a flag in the top bit (0x80) of
// each byte. The arithmetic is exact only for bytes below 0x80 (no carry
// leaves a byte); a word with any byte at or above 0x80 is refused by its
// own flag (w&high), so what the other flags say about it does not matter.
const (
	ones = 0x0101010101010101
	high = 0x8080808080808080 // the top bit of every byte
	low7 = 0x7f7f7f7f7f7f7f7f
)

// wordFlags returns bad, with a top bit set in every byte of w that is not
// a token byte or '.', and where w holds two '.' in a row, and dots, with
// the top bit set in every byte of w that is '.'. Other bits are zero.
func wordFlags(w uint64) (bad, dots uint64) {
	dots = equal(w, '.')
	ok := within(w|ones*0x20, 'a', 'z') | // letters: |0x20 folds 'A'-'Z' onto 'a'-'z'
		within(w, '0', '9') | equal(w, '_') | equal(w, '-') | dots
	return (w|^ok)&high | dots&(dots>>8), dots
}

// atLeast returns w with the top bit of each byte set where that byte is at
// least c (c <= 0x80): adding 0x80-c carries into the top bit exactly then,
// and a byte below 0x80 plus at most 0x80 does not carry out of the byte.
// The low seven bits of each byte are garbage.
func atLeast(w uint64, c byte) uint64 { return w + ones*uint64(0x80-c) }

// within returns w with the top bit of each byte set where that byte is in
// [lo, hi], and garbage in the low seven bits.
func within(w uint64, lo, hi byte) uint64 { return atLeast(w, lo) &^ atLeast(w, hi+1) }

// equal returns w with the top bit of each byte set where that byte is c,
// and zero elsewhere: x = w^c is zero exactly in those bytes, and x+0x7f
// sets a byte's top bit when the byte is not zero.
func equal(w uint64, c byte) uint64 { return high &^ ((w ^ ones*uint64(c)) + low7) }

// load8 returns the first eight bytes of s, which has at least eight, as a
// little-endian word (the compiler makes it one load where it can).
func load8(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// TestSWAREveryByte puts every byte value at every position of topics of 8
// to 24 bytes, and a second dot next to every dot, so that each lane of
// checkSWAR's words, their boundaries and the overlapping tail see each
// byte; checkSWAR must agree with Check.
func TestSWAREveryByte(t *testing.T) {
	for n := 8; n <= 24; n++ {
		base := []byte(strings.Repeat("ab.c-_9Z", 3)[:n])
		base[n-1] = 'x' // a valid topic of n bytes
		for i := range n {
			for c := range 256 {
				give := slices.Clone(base)
				give[i] = byte(c)
				checkSWARSame(t, string(give))
			}
			give := slices.Clone(base)
			give[i] = '.'
			if i+1 < n {
				give[i+1] = '.'
			}
			checkSWARSame(t, string(give))
		}
	}
}

// checkSWARSame checks that checkSWAR and Check agree on topic.
func checkSWARSame(t *testing.T, topic string) {
	t.Helper()
	if got, want := checkSWAR(topic), Check(topic); (got == nil) != (want == nil) {
		t.Fatalf("checkSWAR(%q) = %v, Check %v", topic, got, want)
	}
}

// oldCheckTopic is the emitted-topic check of the old rule, as it was.
func oldCheckTopic(topic string) error {
	n := len(topic)
	if n < 8 || topic[0] == '.' || topic[n-1] == '.' {
		return oldCheckTopicSlow(topic)
	}
	var bad, prevDots uint64
	i := 0
	for ; i+8 <= n; i += 8 {
		w := load8(topic[i:])
		dots := oldByteMask(w, '.')
		bad |= oldByteMask(w, '*') | oldByteMask(w, '>') | dots&(dots>>8) | dots&(prevDots>>56)
		prevDots = dots
	}
	if i < n {
		w := load8(topic[n-8:])
		dots := oldByteMask(w, '.')
		bad |= oldByteMask(w, '*') | oldByteMask(w, '>') | dots&(dots>>8)
	}
	if bad != 0 {
		return oldCheckTopicSlow(topic)
	}
	return nil
}

// oldByteMask returns w with 0x80 in every byte equal to c and 0 elsewhere.
func oldByteMask(w uint64, c byte) uint64 {
	x := w ^ (ones * uint64(c))
	return ^((x&low7 + low7) | x | low7)
}

// oldCheckTopicSlow is oldCheckTopic's byte-by-byte form.
func oldCheckTopicSlow(topic string) error {
	if topic == "" {
		return &Error{Input: topic, Reason: "empty topic"}
	}
	start := 0
	for i := 0; i < len(topic); i++ {
		switch topic[i] {
		case '.':
			if i == start {
				return &Error{Input: topic, Reason: "empty token"}
			}
			start = i + 1
		case '*', '>':
			return &Error{Input: topic, Reason: "wildcard in an emitted topic"}
		}
	}
	if start == len(topic) {
		return &Error{Input: topic, Reason: "empty token"}
	}
	return nil
}
