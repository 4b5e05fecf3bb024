// Package topic validates topics, parses subscription patterns and finds the
// subscriptions that match a topic. It knows nothing of handlers or events:
// the dispatcher validates with [Check] and [Parse] and looks subscribers up
// in an [Index].
//
// # Topics
//
// A topic is one or more tokens separated by '.', at most [MaxLen] (255)
// bytes in all: "run", "run.finished", "orders.eu-west_1.created". A token
// is one or more of the ASCII letters 'A' to 'Z' and 'a' to 'z', the digits
// '0' to '9', '_' and '-'. Nothing else: no space, '/', ',', '#', '$', no
// control byte, no byte of a non-ASCII character, and no empty token (so no
// leading, trailing or doubled '.').
//
// The alphabet is a whitelist, the characters NATS recommends for subject
// names, so that a topic reads the same in a log line, a metric label, a
// file name or a NATS subject, and so that a character that means something
// elsewhere ('#' and '+' are MQTT's wildcards, '/' its separator, a leading
// '$' NATS's system prefix) is refused instead of silently taken literally.
// The length bound keeps a topic a name, not a payload.
//
// # Patterns
//
// A pattern is written like a topic, and a token of it may also be a
// wildcard, but only as a whole token:
//
//   - "*" matches exactly one token: "run.*" matches "run.a", not "run" and
//     not "run.a.b".
//   - ">" matches one or more tokens and may only be the last token:
//     "run.>" matches "run.a" and "run.a.b", not "run".
//
// "a*b", "a>", ">.a" and "run.#" are bad patterns. An emitted topic has no
// wildcard, so that a topic can never be mistaken for a pattern.
//
// # Errors
//
// A refused topic or pattern gets an [*Error] whose Reason names the first
// offending byte or character and its byte offset (from 0), for example
//
//	"order placed": byte ' ' at 5 is not allowed (tokens are ASCII letters, digits, '_' and '-')
//
// # Matching
//
// An [Index] holds a set of subscriptions and answers which of them match a
// topic, in subscription order, each once. It is immutable: to change the
// set, build a new Index and swap it in (copy-on-write), so that readers
// never take a lock.
package topic
