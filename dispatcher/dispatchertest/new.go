package dispatchertest

import "github.com/ringbus/ringbus/dispatcher"

// New returns dispatcher.New(opts...), failing the test if it returns an
// error, and closes the dispatcher when the test ends (what Close drops
// then does not matter any more). Cleanups run last registered first, so
// a NoDeadLetters registered after New checks before the Close.
func New(tb TB, opts ...dispatcher.Option) *dispatcher.Dispatcher {
	tb.Helper()
	d, err := dispatcher.New(opts...)
	if err != nil {
		tb.Fatalf("dispatchertest: dispatcher.New() error = %v", err)
		return nil
	}
	tb.Cleanup(func() { _ = d.Close() })
	return d
}
