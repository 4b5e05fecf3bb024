package watermillbus

import (
	"errors"
	"strings"
)

// Topic names.
//
// A watermill topic is any string; a ringbus topic is one or more
// non-empty tokens separated by '.', with no '*' or '>' byte. The Bus maps
// watermill topic t to the ringbus topic prefix + "." + escape(t), where
// escape keeps every '.' as a token separator and every other byte as is,
// except:
//
//   - '%' becomes "%25", '*' becomes "%2A" and '>' becomes "%3E";
//   - an empty token (the topic "", or "a..b", ".a", "a.") becomes "%".
//
// A lone '%' never comes from a non-empty token (a '%' is always followed
// by two hex digits), so the mapping is one-to-one: two watermill topics
// never share a ringbus topic, and unescape inverts it. Topics with dots,
// the usual watermill style ("orders.created"), map token for token, so a
// ringbus pattern such as "watermill.orders.*" selects watermill topics.

// checkPrefix reports why prefix cannot prefix ringbus topics: an empty
// token, or a '*' or '>' byte.
func checkPrefix(prefix string) error {
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		if strings.ContainsAny(tok, "*>") {
			return errors.New("'*' or '>' in a topic")
		}
	}
	return nil
}

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
				b.WriteByte('%') // empty token
			}
			if i < len(t) {
				b.WriteByte('.')
			}
			start = i + 1
			continue
		}
		switch c := t[i]; c {
		case '%':
			b.WriteString("%25")
		case '*':
			b.WriteString("%2A")
		case '>':
			b.WriteString("%3E")
		default:
			b.WriteByte(c)
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
		case "%":
			continue // an empty token
		case "":
			return "", false // escapeTopic never writes one
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			switch c {
			case '*', '>':
				return "", false
			case '%':
				if j+2 >= len(tok) {
					return "", false
				}
				switch tok[j+1 : j+3] {
				case "25":
					c = '%'
				case "2A":
					c = '*'
				case "3E":
					c = '>'
				default:
					return "", false
				}
				j += 2
			}
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
