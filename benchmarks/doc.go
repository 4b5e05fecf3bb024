// Package benchmarks compares ringbus, in one run on one machine, with what
// a Go program would otherwise use: a buffered channel and the best bounded
// queues the module proxy serves (queue_test.go), and in-process pub/sub
// libraries, a worker pool and a hand-written channel-plus-workers bus
// (dispatch_test.go). It is its own module so that none of the competitors
// enters the core's go.mod.
//
// The package holds only tests and benchmarks; README.md says what each
// benchmark measures and why it is built the way it is, RESULTS.md holds
// the published numbers, and `make bench-compare` (in the repository root)
// reproduces them.
package benchmarks
