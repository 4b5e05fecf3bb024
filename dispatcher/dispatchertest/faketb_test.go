package dispatchertest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/ringbus/ringbus/dispatcher"
)

// FakeTB is a TB (and a benchB) that records what the kit reports instead
// of failing the test that uses it, so that the kit's tests can check the
// failures it reports. Its Fatalf returns, as the kit expects of a TB
// whose Fatalf does.
type FakeTB struct {
	ctx context.Context

	mu       sync.Mutex
	errors   []string // Errorf messages
	fatals   []string // Fatalf messages
	cleanups []func()
	metrics  map[string]float64
	timer    []string // "reset" and "stop" calls, in order
}

// NewFakeTB returns a FakeTB whose Context is ctx.
func NewFakeTB(ctx context.Context) *FakeTB { return &FakeTB{ctx: ctx} }

func (f *FakeTB) Helper() {}

func (f *FakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

func (f *FakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
}

func (f *FakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *FakeTB) Context() context.Context { return f.ctx }

func (f *FakeTB) ResetTimer() { f.timerCall("reset") }

func (f *FakeTB) StopTimer() { f.timerCall("stop") }

func (f *FakeTB) timerCall(what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.timer = append(f.timer, what)
}

func (f *FakeTB) ReportMetric(n float64, unit string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.metrics == nil {
		f.metrics = make(map[string]float64)
	}
	f.metrics[unit] = n
}

// RunCleanups runs the functions given to Cleanup, the last first, as the
// testing package does at the end of a test.
func (f *FakeTB) RunCleanups() {
	f.mu.Lock()
	fns := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for _, fn := range slices.Backward(fns) {
		fn()
	}
}

// Errors returns the Errorf messages so far.
func (f *FakeTB) Errors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.errors)
}

// Fatals returns the Fatalf messages so far.
func (f *FakeTB) Fatals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.fatals)
}

// Metrics returns the metrics reported, by unit.
func (f *FakeTB) Metrics() map[string]float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.metrics)
}

// TimerCalls returns the ResetTimer ("reset") and StopTimer ("stop")
// calls, in order.
func (f *FakeTB) TimerCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.timer)
}

// RunBenchmark is the kit's benchmark with the fake as its B and n
// events.
func RunBenchmark(f *FakeTB, n int, d *dispatcher.Dispatcher, load Load) { benchmark(f, n, d, load) }

// Percentile exports percentile to the tests.
var Percentile = percentile
