package watermillbus

import (
	"errors"
	"fmt"
	"strings"
)

// Topic names.
//
// A watermill topic is any string; a ringbus topic is one or more tokens
// separated by '.', each of ASCII letters, digits, '_' and '-', at most 255
// bytes in all. The Bus maps watermill topic t to the ringbus topic
// prefix + "." + escape(t), where escape keeps every '.' as a token
// separator, every ASCII letter, digit and '-' as is, and:
//
//   - every other byte, '_' included, becomes '_' and its two upper-case
//     hex digits ("a b" becomes "a_20b", "a_b" becomes "a_5Fb");
//   - an empty token (the topic "", or "a..b", ".a", "a.") becomes "_".
//
// A lone '_' never comes from a non-empty token (an escaping '_' is always
// followed by two hex digits), so the mapping is one-to-one: two watermill
// topics never share a ringbus topic, and unescape inverts it. Topics with
// dots, the usual watermill style ("orders.created"), map token for token,
// so a ringbus pattern such as "watermill.orders.*" selects watermill
// topics. A watermill topic whose ringbus topic would be longer than 255
// bytes is refused by Publish and Subscribe with dispatcher.ErrBadTopic.

// plain reports whether escapeTopic keeps c as it is.
func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
}

// checkPrefix reports why prefix cannot prefix ringbus topics: an empty
// token, or a byte a ringbus token may not hold.
func checkPrefix(prefix string) error {
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !plain(c) && c != '_' {
				return fmt.Errorf("byte %q is not allowed (tokens are ASCII letters, digits, '_' and '-')", c)
			}
		}
	}
	return nil
}

const hexDigits = "0123456789ABCDEF"

// escapeTopic returns the ringbus topic of watermill topic t under prefix.
func escapeTopic(prefix, t string) string {
	var b strings.Builder
	b.Grow(len(prefix) + 1 + len(t) + 2)
	b.WriteString(prefix)
	b.WriteByte('.')
	start := 0 // first byte of the current token
	for i := 0; i <= len(t); i++ {
		if i == len(t) || t[i] == '.' {
			if i == start {
				b.WriteByte('_') // empty token
			}
			if i < len(t) {
				b.WriteByte('.')
			}
			start = i + 1
			continue
		}
		if c := t[i]; plain(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
	}
	return b.String()
}

// unescapeTopic inverts escapeTopic: it returns the watermill topic of
// ringbus topic rb under prefix, and false when rb is not the image of any
// watermill topic under prefix.
func unescapeTopic(prefix, rb string) (string, bool) {
	rest, ok := strings.CutPrefix(rb, prefix+".")
	if !ok {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(rest))
	for i, tok := range strings.Split(rest, ".") {
		if i > 0 {
			b.WriteByte('.')
		}
		switch tok {
		case "_":
			continue // an empty token
		case "":
			return "", false // escapeTopic never writes one
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			switch {
			case plain(c):
			case c == '_' && j+2 < len(tok):
				hi, lo := strings.IndexByte(hexDigits, tok[j+1]), strings.IndexByte(hexDigits, tok[j+2])
				if hi < 0 || lo < 0 {
					return "", false
				}
				c = byte(hi<<4 | lo)
				if plain(c) {
					return "", false // escapeTopic keeps it as it is
				}
				j += 2
			default:
				return "", false
			}
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
