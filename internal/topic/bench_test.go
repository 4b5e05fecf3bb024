package topic

import (
	"fmt"
	"slices"
	"testing"
)

// benchTopics are valid topics of 3, 12, 24 and 60 bytes.
var benchTopics = []string{
	"a.b",
	"orders.eu.v1",
	"orders.eu-west_1.created",
	"tenants.acme-corp.orders.eu-west_1.created.v2.priority.highx",
}

// BenchmarkCheck compares Check (a byte-table loop) with checkSWAR (the
// same rule eight bytes at a time) and with oldCheckTopic (the old rule,
// eight bytes at a time); see swar_test.go.
func BenchmarkCheck(b *testing.B) {
	impls := []struct {
		name  string
		check func(string) error
	}{
		{"loop", Check},
		{"swar", checkSWAR},
		{"old", oldCheckTopic},
	}
	for _, topic := range benchTopics {
		for _, impl := range impls {
			b.Run(fmt.Sprintf("len=%d/impl=%s", len(topic), impl.name), func(b *testing.B) {
				if err := impl.check(topic); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					_ = impl.check(topic)
				}
			})
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	patterns := []string{">", "orders.>", "orders.*.created", "orders.eu.created", "orders.us.created", "users.*", "audit.>"}
	for i := range 100 {
		patterns = append(patterns, fmt.Sprintf("topic%d.x", i))
	}
	indexes := []struct {
		name string
		ix   *Index[uint64]
	}{
		{"exact", NewIndex(newSubs(b, "orders.eu.created", "orders.eu.created", "users.created"))},
		{"one-wildcard", NewIndex(newSubs(b, "orders.*.created", "users.created", "audit.>"))},
		{"wildcards", NewIndex(newSubs(b, patterns...))},
		{"batches", NewIndex(newSubs(b, slices.Repeat([]string{">", "orders.>", "*.eu.*", "orders.eu.created"}, 10)...))},
	}
	for _, tt := range indexes {
		b.Run(tt.name, func(b *testing.B) {
			scratch := make([]uint64, 0, tt.ix.Len())
			b.ReportAllocs()
			for b.Loop() {
				tt.ix.Match("orders.eu.created", scratch)
			}
		})
	}
}
