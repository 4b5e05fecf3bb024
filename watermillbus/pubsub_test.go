package watermillbus_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/watermillbus"
)

// features are the guarantees the package doc claims, each with its
// reason there. Persistent holds between clients of one Bus, which is how
// the suite's constructor below makes its instances.
var features = tests.Features{
	ConsumerGroups:        false,
	ExactlyOnceDelivery:   true,
	GuaranteedOrder:       true,
	Persistent:            true,
	RequireSingleInstance: true,
}

// newSuiteBus returns a Bus for one run of the suite, closed when the
// test and all its (parallel) subtests are done, and a constructor of its
// clients: every instance the suite makes is a client of that one Bus, as
// a broker's suite connects every instance to the same broker.
func newSuiteBus(t *testing.T, cfg watermillbus.Config) tests.PubSubConstructor {
	t.Helper()
	bus, err := watermillbus.NewBus(cfg)
	if err != nil {
		t.Fatalf("NewBus: %v", err)
	}
	t.Cleanup(func() { bus.Close() })
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
		ps, err := bus.PubSub()
		if err != nil {
			t.Fatalf("Bus.PubSub: %v", err)
		}
		return ps, ps
	}
}

func TestPubSub(t *testing.T) {
	tests.TestPubSub(t, features, newSuiteBus(t, watermillbus.Config{}), nil)
}

// TestPubSubConfigs runs the suite again on configurations that stress
// other paths: a caller's dispatcher that the test runs, with more workers
// than cores (per-topic order then rests on the ordering key alone), and
// a Bus whose queue and subscription buffers are tiny, so that publishers
// wait for room and the handler waits for subscriptions' buffers.
func TestPubSubConfigs(t *testing.T) {
	t.Run("dispatcher=caller/workers=8", func(t *testing.T) {
		d, err := dispatcher.New(dispatcher.WithWorkers(8))
		if err != nil {
			t.Fatalf("dispatcher.New: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		t.Cleanup(func() {
			// Registered first, so it runs after the Bus's Close.
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want nil or context.Canceled", err)
			}
		})
		tests.TestPubSub(t, features, newSuiteBus(t, watermillbus.Config{Dispatcher: d}), nil)
	})
	t.Run("capacity=8/buffer=2", func(t *testing.T) {
		cfg := watermillbus.Config{
			DispatcherOptions: []dispatcher.Option{dispatcher.WithCapacity(8)},
			SubscriberBuffer:  2,
		}
		tests.TestPubSub(t, features, newSuiteBus(t, cfg), nil)
	})
}

// TestSkippedForExactlyOnce runs the two suite tests that TestPubSub skips
// for backends claiming ExactlyOnceDelivery ("not supported yet" in
// watermill v1.5.1), with that one feature off, so that they read with
// deduplication: closing subscribers, concurrently or between batches,
// must lose no message.
func TestSkippedForExactlyOnce(t *testing.T) {
	f := features
	f.ExactlyOnceDelivery = false
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, tests.TestContext, tests.PubSubConstructor)
	}{
		{"TestConcurrentClose", tests.TestConcurrentClose},
		{"TestContinueAfterSubscribeClose", tests.TestContinueAfterSubscribeClose},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, tests.TestContext{TestID: tests.NewTestID(), Features: f}, newSuiteBus(t, watermillbus.Config{}))
		})
	}
}
