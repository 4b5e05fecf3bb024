// Package dispatchertest helps test and benchmark code built on
// package dispatcher: a Recorder of handled events, Settle to process
// everything a dispatcher holds (advancing synctest's fake clock for
// retries that wait), NoDeadLetters to fail a test that leaves dead
// letters behind, and Benchmark to measure a pipeline's throughput and
// latency under Run.
//
//	func TestOrderPipeline(t *testing.T) {
//		synctest.Test(t, func(t *testing.T) {
//			d, _ := dispatcher.New(dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Minute)))
//			dispatchertest.NoDeadLetters(t, d)
//			var rec dispatchertest.Recorder
//			d.On("order.placed", reserveStock) // fails once, then succeeds
//			d.On("stock.reserved", rec.Handle)
//
//			d.Emit(t.Context(), "order.placed", Order{ID: "o-1"})
//			dispatchertest.Settle(t, d) // the retry ran a minute later, in fake time
//
//			got := dispatchertest.Payloads[Reservation](t, &rec, "stock.reserved")
//			...
//		})
//	}
//
// The functions that take a TB (a *testing.T or *testing.B) report what
// goes wrong through it, so a test needs no error plumbing. Settle,
// Payloads and NoDeadLetters run on the test's goroutine; the Recorder is
// safe for concurrent use, so its handler works under Run too, where
// Recorder.Wait waits for events without sleeping.
//
// The package uses only package dispatcher's exported API: what it does,
// a test could do by hand.
package dispatchertest

import "context"

// TB is the part of testing.TB the package uses: a *testing.T, a
// *testing.B or a *testing.F satisfies it. The package never stops a test
// by itself: after Fatalf it returns, so a TB whose Fatalf returns (a fake
// one, in a test of a helper) sees every failure reported.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	// Context is the test's context: the handlers that Settle runs get
	// it.
	Context() context.Context
}
