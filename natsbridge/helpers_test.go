package natsbridge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// ackedUpTo waits until the durable consumer's ack floor reaches floor and
// returns its info: acknowledgements travel to the server asynchronously,
// so a consumer that stopped may not be counted there yet. A floor that is
// never reached leaves the test to go test's -timeout.
func ackedUpTo(t testing.TB, b *natsbridge.Bridge, durable string, floor uint64) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := context.Background()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := b.JetStream().Consumer(ctx, natsbridge.DefaultStream, durable)
		if err != nil {
			t.Fatal(err)
		}
		if info := c.CachedInfo(); info.AckFloor.Stream >= floor {
			return info
		}
		<-tick.C
	}
}

// order is the payload the tests publish.
type order struct {
	N   int    `json:"n"`
	Key string `json:"key"`
}

// startServer starts an embedded server on dir (a new temporary
// directory when dir is ""), closed when the test ends.
func startServer(t testing.TB, dir string) *natsbridge.Embedded {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	srv, err := natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{Dir: dir})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// newBridge makes a bridge over srv's connection, closed when the test
// ends.
func newBridge(t testing.TB, srv *natsbridge.Embedded, cfg natsbridge.Config) *natsbridge.Bridge {
	t.Helper()
	b, err := natsbridge.New(context.Background(), srv.Conn(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// runDispatcher makes a dispatcher and runs it until the test ends
// (Shutdown, then Run's return is waited for).
func runDispatcher(t testing.TB, opts ...dispatcher.Option) *dispatcher.Dispatcher {
	t.Helper()
	d, err := dispatcher.New(opts...)
	if err != nil {
		t.Fatalf("dispatcher.New: %v", err)
	}
	stop := startRun(d)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
	return d
}

// startRun runs d on a goroutine; the function it returns shuts d down
// and waits for Run.
func startRun(d *dispatcher.Dispatcher) func() error {
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(context.Background()) }()
	return func() error {
		return errors.Join(d.Shutdown(context.Background()), <-runErr)
	}
}

// publishN publishes orders n = from..to-1 on topic, keyed key, and
// fails the test on an error.
func publishN(t testing.TB, b *natsbridge.Bridge, topic, key string, from, to int) {
	t.Helper()
	for n := from; n < to; n++ {
		e := dispatcher.Event{Topic: topic, Key: key, Payload: order{N: n, Key: key}}
		if err := b.Publish(context.Background(), e); err != nil {
			t.Fatalf("Publish(%d): %v", n, err)
		}
	}
}
