package dispatchertest

import (
	"context"
	"errors"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// firstStep is the first move of the fake clock after Settle's last
// progress; each move without progress doubles the next one.
const firstStep = time.Millisecond

// Settle processes what d holds on the caller's goroutine until nothing
// is queued and nothing waits: it drains d (following cascades), and
// while retries wait for their backoff or delayed events (After, At) for
// their due time, it moves synctest's fake clock on
// and drains again. It returns how many events it processed (a retry
// counts as one, as in Drain) and the handler failures it dead-lettered,
// joined as Drain joins them (errors.Is and errors.As reach each one).
//
// Settle is for tests that drive d with Tick and Drain, without Run. Any
// other error fails the test through tb: d runs under Run (ErrRunning) or
// is stopped (ErrClosed), or tb's context ended. Handlers get tb's
// context.
//
// Moving the clock needs a synctest bubble: when retries wait and Settle
// is not inside synctest.Test, it fails the test instead of sleeping for
// real. The dispatcher does not say when its next retry is due, so Settle
// moves the clock in steps, from a millisecond, doubling each time no
// retry came due: a retry runs no earlier than its due time and, counted
// from the last event processed, after at most twice its wait plus a
// millisecond. A test of exact retry times drives Drain and time.Sleep
// itself, as the dispatcher package's documentation shows.
func Settle(tb TB, d *dispatcher.Dispatcher) (int, error) {
	tb.Helper()
	ctx := tb.Context()
	var (
		total    int
		failures []error
		step     = firstStep
	)
	for {
		n, err := d.Drain(ctx, 0)
		total += n
		if err != nil {
			if stopped(ctx, err) {
				tb.Fatalf("dispatchertest: Settle: Drain error = %v", err)
				return total, errors.Join(failures...)
			}
			failures = append(failures, err)
		}
		st := d.Stats()
		switch {
		case st.Queued > 0:
			continue // emitted meanwhile, by another goroutine
		case !waiting(st):
			return total, errors.Join(failures...)
		case !inBubble():
			tb.Fatalf("dispatchertest: Settle: %d retries and %d delayed events wait for their time: call Settle inside synctest.Test, so that it moves the fake clock", st.Retrying, st.Scheduled)
			return total, errors.Join(failures...)
		}
		if n > 0 {
			step = firstStep
		}
		time.Sleep(step) // the fake clock: returns at once
		step *= 2
	}
}

// waiting reports whether d, with nothing queued, holds work that a Drain
// cannot take yet: retries and delayed events, which wait for their time.
func waiting(st dispatcher.Stats) bool {
	return st.Retrying > 0 || st.Scheduled > 0
}

// stopped reports whether a Drain error says more than that handlers
// failed: d runs under Run or is closed, or ctx ended.
func stopped(ctx context.Context, err error) bool {
	return errors.Is(err, dispatcher.ErrRunning) || errors.Is(err, dispatcher.ErrClosed) || ctx.Err() != nil
}

// inBubble reports whether the calling goroutine is inside a synctest
// bubble, where time.Sleep moves a fake clock. The testing/synctest
// package has no such query; synctest.Wait panics outside a bubble, and
// inside one it returns once the bubble's other goroutines are blocked,
// which is what a sleep would wait for anyway.
func inBubble() (in bool) {
	defer func() {
		if recover() != nil {
			in = false
		}
	}()
	synctest.Wait()
	return true
}
