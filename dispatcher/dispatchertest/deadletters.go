package dispatchertest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/ringbus/ringbus/dispatcher"
)

// maxShown bounds how many dead letters NoDeadLetters prints, and
// payloadWidth how much of each payload.
const (
	maxShown     = 10
	payloadWidth = 200
)

// NoDeadLetters fails the test if d keeps dead letters when the test
// ends: it registers a tb.Cleanup that prints each one (event, topic, key,
// subscriber, attempts, error, payload, and a panic's stack). Call it
// right after creating d; a cleanup that closes d may run first, since
// dead letters outlive Close.
func NoDeadLetters(tb TB, d *dispatcher.Dispatcher) {
	tb.Helper()
	tb.Cleanup(func() {
		tb.Helper()
		if dls := d.DeadLetters(); len(dls) > 0 {
			tb.Errorf("dispatchertest: %d dead letter(s) left at the end of the test:\n%s", len(dls), FormatDeadLetters(dls))
		}
	})
}

// FormatDeadLetters describes dls for a test's failure message, one
// dead letter per paragraph, the first ten of them.
func FormatDeadLetters(dls []dispatcher.DeadLetter) string {
	var b strings.Builder
	for i, dl := range dls {
		if i == maxShown {
			fmt.Fprintf(&b, "  ... and %d more\n", len(dls)-maxShown)
			break
		}
		e := dl.Event
		fmt.Fprintf(&b, "  event %d %q", e.ID, e.Topic)
		if e.Key != "" {
			fmt.Fprintf(&b, " key %q", e.Key)
		}
		fmt.Fprintf(&b, " for subscriber %q after %d attempt(s): %v\n", dl.Subscriber, dl.Attempts, dl.Err)
		payload := fmt.Sprintf("%+v", e.Payload)
		if len(payload) > payloadWidth {
			payload = payload[:payloadWidth] + "..."
		}
		fmt.Fprintf(&b, "    payload (%T): %s\n", e.Payload, payload)
		if pe := (*dispatcher.PanicError)(nil); errors.As(dl.Err, &pe) && len(pe.Stack) > 0 {
			b.WriteString("    panic stack:\n")
			for line := range bytes.Lines(bytes.TrimRight(pe.Stack, "\n")) {
				b.WriteString("      ")
				b.Write(line)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
