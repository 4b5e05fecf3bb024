//go:build stress

package dispatcher

import (
	"fmt"
	"testing"
)

// Long runs of the runtime tests: go test -race -tags stress -run Stress.

// TestStressSoak is TestRunSoak with millions of events.
func TestStressSoak(t *testing.T) {
	events := 5_000_000
	if testing.Short() {
		events = 500_000
	}
	rtSoak(t, events)
}

// TestStressOrder is TestOrderPerKeyUnderRun and TestOrderHotKeys with
// many more events per key.
func TestStressOrder(t *testing.T) {
	perKey := 20_000
	if testing.Short() {
		perKey = 2_000
	}
	for _, workers := range []int{1, 2, 4, 8} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			for _, capacity := range []int{8, 1024} {
				t.Run(fmt.Sprintf("cap=%d", capacity), func(t *testing.T) {
					rtOrder(t, orderConfig{workers: workers, capacity: capacity, keys: 50, perKey: perKey, unkeyed: 2})
				})
			}
			t.Run("hot keys", func(t *testing.T) {
				rtOrder(t, orderConfig{workers: workers, capacity: 64, keys: 4, perKey: 10 * perKey, unkeyed: 1})
			})
		})
	}
}
