//go:build stress

package watermillbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/ringbus/ringbus/watermillbus"
)

// TestPubSubStress runs watermill's suite STRESS_TEST_COUNT times (default
// 10) in parallel, on one Bus; the stress tag also makes the suite's
// timeouts 5 times longer and doubles GOMAXPROCS.
func TestPubSubStress(t *testing.T) {
	tests.TestPubSubStressTest(t, features, newSuiteBus(t, watermillbus.Config{}), nil)
}
