package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/ringbus/ringbus/watermillbus"
)

// BenchmarkWatermill measures publish-to-handler through watermill's own
// interfaces, message.Publisher and message.Subscriber, on two backends:
// ringbus's (watermillbus, a Bus of its own with the dispatcher's defaults)
// and watermill's in-memory gochannel (default Config: no persistence, an
// unbuffered output channel). Everything but the backend is the same code.
//
// One op is one published message; the clock stops when every subscriber
// has handled and acked every message, so ns/op is ns per message with
// subs handler calls in it. The consumer is either a goroutine per
// subscription that reads the channel and acks (consumer=channel) or a
// watermill Router with one consumer handler per subscription
// (consumer=router: what a watermill service runs; the router starts a
// goroutine per message and acks when the handler returns). A handler
// counts the message and nothing else. Both backends hand a subscription
// its next message only after the ack of the previous one.
//
// gochannel's Publish starts a goroutine per message and subscriber and
// returns, with no bound; watermillbus's waits when its queue is full. To
// measure both at the same load, one producer keeps at most wmbWindow
// messages in flight (published, not yet handled by every subscriber) on
// both. The UUID is a constant, so that generating one costs neither.
func BenchmarkWatermill(b *testing.B) {
	for _, consumer := range []string{"channel", "router"} {
		for _, subs := range []int{1, 10} {
			for _, impl := range wmbImpls {
				b.Run(fmt.Sprintf("consumer=%s/subs=%d/impl=%s", consumer, subs, impl.name), func(b *testing.B) {
					b.ReportAllocs()
					h, err := newWmbHarness(impl.new, consumer, subs, int64(b.N)*int64(subs))
					if err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					err = h.publish(b.N)
					if err == nil {
						<-h.done
					}
					b.StopTimer()
					if err = errors.Join(err, h.close()); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}

// TestWatermillBackends checks the benchmark's harness on each backend
// and consumer: every subscriber handles every message once.
func TestWatermillBackends(t *testing.T) {
	const n, subs = 3000, 3
	for _, consumer := range []string{"channel", "router"} {
		for _, impl := range wmbImpls {
			t.Run(consumer+"/"+impl.name, func(t *testing.T) {
				h, err := newWmbHarness(impl.new, consumer, subs, n*subs)
				if err != nil {
					t.Fatal(err)
				}
				err = h.publish(n)
				if err == nil {
					<-h.done
				}
				if err = errors.Join(err, h.close()); err != nil {
					t.Fatal(err)
				}
				for i := range subs {
					if got := h.perSub[i].Load(); got != n {
						t.Errorf("subscriber %d handled %d messages, want %d", i, got, n)
					}
				}
			})
		}
	}
}

// wmbWindow is how many messages the producer keeps in flight: the
// ringbus dispatcher's default capacity.
const wmbWindow = 1024

const wmbTopic = "bench.watermill"

var wmbPayload = message.Payload("event")

// wmbImpls are the backends, watermillbus first so that benchstat
// compares gochannel with it.
var wmbImpls = []struct {
	name string
	new  func() (message.Publisher, message.Subscriber, error)
}{
	{"watermillbus", func() (message.Publisher, message.Subscriber, error) {
		ps, err := watermillbus.New(watermillbus.Config{})
		return ps, ps, err
	}},
	{"gochannel", func() (message.Publisher, message.Subscriber, error) {
		g := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
		return g, g, nil
	}},
}

// wmbHarness is one backend with subs subscriptions to wmbTopic and their
// consumers.
type wmbHarness struct {
	pub    message.Publisher
	sub    message.Subscriber
	subs   int64
	router *message.Router
	runErr chan error     // the router's Run result
	wg     sync.WaitGroup // the channel consumers

	handled atomic.Int64 // handler calls, all subscribers
	_       [120]byte    // handled is written by every handler call: keep the rest off its line
	perSub  []atomic.Int64
	want    int64
	done    chan struct{} // closed at the want-th handler call
}

func newWmbHarness(newImpl func() (message.Publisher, message.Subscriber, error), consumer string, subs int, want int64) (*wmbHarness, error) {
	pub, sub, err := newImpl()
	if err != nil {
		return nil, err
	}
	h := &wmbHarness{pub: pub, sub: sub, subs: int64(subs), perSub: make([]atomic.Int64, subs), want: want, done: make(chan struct{})}
	if want == 0 {
		close(h.done)
	}
	switch consumer {
	case "channel":
		for i := range subs {
			msgs, err := sub.Subscribe(context.Background(), wmbTopic)
			if err != nil {
				return nil, errors.Join(err, h.close())
			}
			h.wg.Go(func() {
				for msg := range msgs { // closed by the subscriber's Close
					h.hit(i)
					msg.Ack()
				}
			})
		}
	case "router":
		r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
		if err != nil {
			return nil, errors.Join(err, h.close())
		}
		for i := range subs {
			r.AddConsumerHandler(fmt.Sprintf("handler-%d", i), wmbTopic, sub, func(*message.Message) error {
				h.hit(i)
				return nil
			})
		}
		h.router, h.runErr = r, make(chan error, 1)
		go func() { h.runErr <- r.Run(context.Background()) }()
		<-r.Running()
	default:
		return nil, errors.Join(fmt.Errorf("unknown consumer %q", consumer), h.close())
	}
	return h, nil
}

func (h *wmbHarness) hit(sub int) {
	h.perSub[sub].Add(1)
	if h.handled.Add(1) == h.want {
		close(h.done)
	}
}

// publish publishes n messages, keeping at most wmbWindow in flight.
func (h *wmbHarness) publish(n int) error {
	for i := range int64(n) {
		for (i-wmbWindow)*h.subs >= h.handled.Load() {
			runtime.Gosched()
		}
		if err := h.pub.Publish(wmbTopic, message.NewMessage("bench", wmbPayload)); err != nil {
			return err
		}
	}
	return nil
}

// close stops the consumers and the backend and joins their goroutines.
func (h *wmbHarness) close() error {
	var err error
	if h.router != nil {
		err = h.router.Close() // closes the subscriber, so its handlers stop
		err = errors.Join(err, <-h.runErr)
	}
	err = errors.Join(err, h.sub.Close(), h.pub.Close()) // both safe to repeat
	h.wg.Wait()
	return err
}
