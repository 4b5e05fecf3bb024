package natsbridge_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// freePorts returns n loopback ports free a moment ago, for the routes of
// a cluster whose members must know each other's addresses up front.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// startCluster starts three embedded servers forming a JetStream cluster,
// routes on loopback, each closed when the test ends.
func startCluster(t *testing.T) []*natsbridge.Embedded {
	t.Helper()
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	srvs := make([]*natsbridge.Embedded, 3)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range srvs {
		wg.Go(func() {
			srvs[i], errs[i] = natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{
				Dir:    t.TempDir(),
				Name:   fmt.Sprintf("n%d", i+1),
				Listen: "127.0.0.1:-1",
				Cluster: natsbridge.ClusterConfig{
					Name:   "ringbus",
					Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
					Routes: routes,
				},
			})
		})
	}
	wg.Wait()
	for i, s := range srvs {
		if s != nil {
			t.Cleanup(s.Close)
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	return srvs
}

// clusterBridge connects to every member and makes a bridge with an R3
// stream, trying again while the cluster elects its meta leader.
func clusterBridge(t *testing.T, srvs []*natsbridge.Embedded) (*nats.Conn, *natsbridge.Bridge) {
	t.Helper()
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := natsbridge.New(context.Background(), nc, natsbridge.Config{Replicas: 3, PublishTimeout: time.Second})
		if err == nil {
			t.Cleanup(func() { _ = b.Close(context.Background()) })
			return nc, b
		}
		if errors.Is(err, natsbridge.ErrInvalidOption) {
			t.Fatal(err)
		}
		<-tick.C // no meta leader yet, or too few peers
	}
}

func TestClusterStreamLeaderLoss(t *testing.T) {
	srvs := startCluster(t)
	_, b := clusterBridge(t, srvs)
	d := runDispatcher(t, dispatcher.WithWorkers(2))
	h := newHandled(4096)
	if _, err := d.On(">", h.handler()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{
		Durable:   "w",
		AckWait:   time.Second, // what the failover leaves unacknowledged comes back soon
		FetchWait: 500 * time.Millisecond,
		Bind:      []natsbridge.Binding{natsbridge.Bind[order](">")},
	})
	if err != nil {
		t.Fatal(err)
	}
	const n, stopAt = 300, 100
	seen := map[int]bool{}
	for i := range n {
		if i == stopAt {
			info, err := b.JetStream().Stream(ctx, natsbridge.DefaultStream)
			if err != nil {
				t.Fatal(err)
			}
			leader := info.CachedInfo().Cluster.Leader
			stopped := false
			for _, s := range srvs {
				if s.Server().Name() == leader {
					s.Close() // while the consumer is fetching and acknowledging
					stopped = true
				}
			}
			if !stopped {
				t.Fatalf("no member is the stream leader %q", leader)
			}
			t.Logf("stopped the stream leader %s after %d publishes", leader, i)
		}
		if err := b.Publish(ctx, dispatcher.Event{Topic: "jobs.run", Key: "k", Payload: order{N: i}}); err != nil {
			t.Fatalf("Publish(%d): %v", i, err)
		}
	}
	for len(seen) < n {
		seen[(<-h.ch).N] = true
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := b.JetStream().Stream(ctx, natsbridge.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != n {
		t.Errorf("the stream holds %d messages, want %d (each acknowledged publish once)", got, n)
	}
}
