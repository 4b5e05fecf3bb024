package watermillbus

import (
	"context"
	"errors"
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
		{give: "", want: "watermill._"},
		{give: ".", want: "watermill._._"},
		{give: "a..b", want: "watermill.a._.b"},
		{give: ".a", want: "watermill._.a"},
		{give: "a.", want: "watermill.a._"},
		{give: "50%", want: "watermill.50_25"},
		{give: "_", want: "watermill._5F"},
		{give: "a_b", want: "watermill.a_5Fb"},
		{give: "a*b", want: "watermill.a_2Ab"},
		{give: "orders.*", want: "watermill.orders._2A"},
		{give: "orders.>", want: "watermill.orders._3E"},
		{give: "a b/c:d", want: "watermill.a_20b_2Fc_3Ad"},
		{give: "ü", want: "watermill._C3_BC"},
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
		"watermill.a_",     // a cut escape
		"watermill.a_2",    // a cut escape
		"watermill.a_41",   // an escaped letter: escapeTopic keeps letters
		"watermill.a_2a",   // lower-case hex: escapeTopic writes upper case
		"watermill.a*",     // a byte no token holds
		"watermill.__",     // a lone '_' is a whole token
		"watermill.a._25_", // a cut escape after a good one
	} {
		if got, ok := unescapeTopic("watermill", give); ok {
			t.Errorf("unescapeTopic(%q) = %q, true, want false", give, got)
		}
	}
}

// FuzzTopic checks that every watermill topic maps to a ringbus topic that
// Emit accepts, and back to itself: the mapping is total and one-to-one.
func FuzzTopic(f *testing.F) {
	for _, s := range []string{"", ".", "a..b", "a.b", "%", "_", "_5F", "*", ">", "a*b.>", "topic-1", "ü"} {
		f.Add(s)
	}
	d, err := dispatcher.New(dispatcher.WithCapacity(1), dispatcher.WithOverflow(dispatcher.DropOldest))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		rb := escapeTopic("watermill", topic)
		err := d.Emit(context.Background(), rb, nil)
		switch {
		case len(rb) > 255 && !errors.Is(err, dispatcher.ErrBadTopic):
			t.Fatalf("Emit(escapeTopic(%q)), %d bytes = %v, want ErrBadTopic", topic, len(rb), err)
		case len(rb) <= 255 && err != nil:
			t.Fatalf("Emit(escapeTopic(%q) = %q) = %v, want nil", topic, rb, err)
		}
		back, ok := unescapeTopic("watermill", rb)
		if !ok || back != topic {
			t.Fatalf("unescapeTopic(escapeTopic(%q) = %q) = %q, %v, want the topic back", topic, rb, back, ok)
		}
	})
}
