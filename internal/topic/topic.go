package topic

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest topic or pattern, in bytes.
const MaxLen = 255

// tokenRule is what every "not allowed" reason ends with.
const tokenRule = "tokens are ASCII letters, digits, '_' and '-'"

// tokenBytes[c] reports whether c may appear in a token.
var tokenBytes = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") {
		t[c] = true
	}
	return t
}()

// Error says why a topic or pattern was refused. Reason names the first
// offending byte or character and its byte offset; the dispatcher wraps the
// Error with its own sentinel.
type Error struct {
	Input  string // the topic or pattern as given
	Reason string // what is wrong with it
}

// Error returns the input, quoted, and the reason.
func (e *Error) Error() string { return fmt.Sprintf("%q: %s", e.Input, e.Reason) }

// Check returns nil if topic is a valid emitted topic (see the package doc:
// tokens, no wildcard, at most MaxLen bytes), else an *Error.
//
// Check runs on every Emit: it is one pass over the bytes with a table
// lookup each, and allocates only for an error. Reading eight bytes at a
// time (checkSWAR in the tests) does not pay for this alphabet: a word needs
// five range tests, more work than eight lookups; BenchmarkCheck compares
// the two.
func Check(topic string) error {
	if reason := problem(topic, false); reason != "" {
		return &Error{Input: topic, Reason: reason}
	}
	return nil
}

// problem returns why s is not a valid topic (pattern false) or pattern
// (pattern true), or "" if it is. Check and Parse share it, so that topics
// and patterns have one statement of the rule and one set of reasons.
func problem(s string, pattern bool) string {
	switch {
	case s == "" && pattern:
		return "empty pattern"
	case s == "":
		return "empty topic"
	case len(s) > MaxLen:
		return fmt.Sprintf("%d bytes, more than the limit of %d", len(s), MaxLen)
	}
	start := 0 // first byte of the current token
	for i := 0; i < len(s); i++ {
		c := s[i]
		if tokenBytes[c] {
			continue
		}
		switch {
		case c == '.':
			if i == start || i == len(s)-1 {
				return fmt.Sprintf("'.' at %d leaves an empty token", i)
			}
			start = i + 1
		case (c == '*' || c == '>') && !pattern:
			return fmt.Sprintf("wildcard %q at %d is not allowed in an emitted topic", c, i)
		case c == '*' || c == '>':
			if i != start || i+1 < len(s) && s[i+1] != '.' {
				return fmt.Sprintf("wildcard %q at %d must be a whole token", c, i)
			}
			if c == '>' && i+1 < len(s) {
				return fmt.Sprintf("wildcard '>' at %d must be the last token", i)
			}
		default:
			return badByte(s, i)
		}
	}
	return ""
}

// badByte returns the reason for s[i], a byte no topic or pattern may hold:
// the character it starts if it is non-ASCII UTF-8, else the byte.
func badByte(s string, i int) string {
	c := s[i]
	switch r, size := utf8.DecodeRuneInString(s[i:]); {
	case c < utf8.RuneSelf:
		what := fmt.Sprintf("byte %q at %d is not allowed (%s)", c, i, tokenRule)
		if c == '#' {
			what += "; '>' is the multi-token wildcard, in patterns"
		}
		return what
	case size > 1:
		return fmt.Sprintf("non-ASCII character %q at %d is not allowed (%s)", r, i, tokenRule)
	default:
		return fmt.Sprintf("byte 0x%02x at %d (not UTF-8) is not allowed (%s)", c, i, tokenRule)
	}
}

// Pattern is a parsed subscription pattern. It is immutable; the zero
// Pattern is no pattern Parse returns, and in an Index it matches no valid
// topic.
type Pattern struct {
	raw    string   // the pattern as given to Parse
	tokens []string // raw split at '.'; every token is non-empty
	wild   bool     // some token is "*" or ">"
}

// Parse parses s as a subscription pattern (see the package doc), or
// returns an *Error saying which rule s breaks. Parsing happens once, at
// subscription, so that a bad pattern is reported to the subscriber instead
// of silently never matching.
func Parse(s string) (Pattern, error) {
	if reason := problem(s, true); reason != "" {
		return Pattern{}, &Error{Input: s, Reason: reason}
	}
	tokens := strings.Split(s, ".")
	wild := slices.Contains(tokens, "*") || slices.Contains(tokens, ">")
	return Pattern{raw: s, tokens: tokens, wild: wild}, nil
}

// String returns the pattern as it was given to Parse.
func (p Pattern) String() string { return p.raw }

// Wild reports whether p has a wildcard token. A pattern without one
// matches exactly the topic spelled like it.
func (p Pattern) Wild() bool { return p.wild }
