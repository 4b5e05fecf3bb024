//go:build stress

package dispatcher_test

// Long runs of the Run tests: go test -race -tags stress -run Stress.

import "testing"

// TestStressSoak is TestRunSoak with millions of events.
func TestStressSoak(t *testing.T) {
	runSoak(t, sizeFor(5_000_000, 500_000))
}

// TestStressOrder is TestOrderPerKeyUnderRun with many more events per key.
func TestStressOrder(t *testing.T) {
	orderPerKey(t, sizeFor(20_000, 2_000))
}

// TestStressOrderHotKeys is TestOrderHotKeys with many more events per key,
// from 1 to 8 workers.
func TestStressOrderHotKeys(t *testing.T) {
	orderHotKeys(t, []int{1, 2, 4, 8}, sizeFor(200_000, 20_000))
}

// TestStressMillionDelayedEvents: a million delayed events spread over an
// hour (see TestManyDelayedEventsCostMemoryNotGoroutines).
func TestStressMillionDelayedEvents(t *testing.T) { checkManyDelayed(t, 1_000_000) }
