package watermillbus

import (
	"context"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestEscapeTopic(t *testing.T) {
	for _, tt := range []struct {
		give string
		want string
	}{
		{give: "orders", want: "watermill.orders"},
		{give: "orders.eu.created", want: "watermill.orders.eu.created"},
		{give: "topic-6f1c0c1e-2b4e-4f7e-9a57-0b3f3c4b5d6e", want: "watermill.topic-6f1c0c1e-2b4e-4f7e-9a57-0b3f3c4b5d6e"},
		{give: "", want: "watermill.%"},
		{give: ".", want: "watermill.%.%"},
		{give: "a..b", want: "watermill.a.%.b"},
		{give: ".a", want: "watermill.%.a"},
		{give: "a.", want: "watermill.a.%"},
		{give: "50%", want: "watermill.50%25"},
		{give: "%", want: "watermill.%25"},
		{give: "a*b", want: "watermill.a%2Ab"},
		{give: "orders.*", want: "watermill.orders.%2A"},
		{give: "orders.>", want: "watermill.orders.%3E"},
		{give: "a b/c:d", want: "watermill.a b/c:d"},
	} {
		got := escapeTopic("watermill", tt.give)
		if got != tt.want {
			t.Errorf("escapeTopic(%q) = %q, want %q", tt.give, got, tt.want)
		}
		back, ok := unescapeTopic("watermill", got)
		if !ok || back != tt.give {
			t.Errorf("unescapeTopic(%q) = %q, %v, want %q, true", got, back, ok, tt.give)
		}
	}
}

func TestUnescapeTopicRejects(t *testing.T) {
	for _, give := range []string{
		"other.a",          // another prefix
		"watermill",        // no token after the prefix
		"watermill.",       // an empty token
		"watermill.a..b",   // an empty token
		"watermill.a%",     // a cut escape
		"watermill.a%2",    // a cut escape
		"watermill.a%41",   // not an escape escapeTopic writes
		"watermill.a*",     // a wildcard byte
		"watermill.%%",     // a '%' token is alone
		"watermill.a.%25%", // a cut escape after a good one
	} {
		if got, ok := unescapeTopic("watermill", give); ok {
			t.Errorf("unescapeTopic(%q) = %q, true, want false", give, got)
		}
	}
}

// FuzzTopic checks that every watermill topic maps to a ringbus topic that
// Emit accepts, and back to itself: the mapping is total and one-to-one.
func FuzzTopic(f *testing.F) {
	for _, s := range []string{"", ".", "a..b", "a.b", "%", "%25", "*", ">", "a*b.>", "topic-1"} {
		f.Add(s)
	}
	d, err := dispatcher.New(dispatcher.WithCapacity(1), dispatcher.WithOverflow(dispatcher.DropOldest))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		rb := escapeTopic("watermill", topic)
		if err := d.Emit(context.Background(), rb, nil); err != nil {
			t.Fatalf("Emit(escapeTopic(%q) = %q) = %v, want nil", topic, rb, err)
		}
		back, ok := unescapeTopic("watermill", rb)
		if !ok || back != topic {
			t.Fatalf("unescapeTopic(escapeTopic(%q) = %q) = %q, %v, want the topic back", topic, rb, back, ok)
		}
	})
}
