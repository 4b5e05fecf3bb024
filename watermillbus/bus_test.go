package watermillbus_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/watermillbus"
)

// Most tests below drive a caller's dispatcher with Drain, inside a
// synctest bubble: a Publish queues, nothing moves until Drain, and
// synctest.Wait tells when the subscriptions' goroutines have done all
// they can.

// newDrainedBus returns a Bus over a dispatcher that the test drives with
// Drain. The caller closes the Bus (inside the bubble).
func newDrainedBus(t *testing.T, cfg watermillbus.Config) (*watermillbus.Bus, *dispatcher.Dispatcher) {
	t.Helper()
	d, err := dispatcher.New()
	if err != nil {
		t.Fatalf("dispatcher.New: %v", err)
	}
	cfg.Dispatcher = d
	bus, err := watermillbus.NewBus(cfg)
	if err != nil {
		t.Fatalf("NewBus: %v", err)
	}
	return bus, d
}

func newClient(t *testing.T, bus *watermillbus.Bus) *watermillbus.PubSub {
	t.Helper()
	ps, err := bus.PubSub()
	if err != nil {
		t.Fatalf("Bus.PubSub: %v", err)
	}
	return ps
}

func subscribe(t *testing.T, ps *watermillbus.PubSub, ctx context.Context, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := ps.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	return ch
}

// publish publishes one message per id, whose payload is the id too.
func publish(t *testing.T, ps *watermillbus.PubSub, topic string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := ps.Publish(topic, message.NewMessage(id, []byte(id))); err != nil {
			t.Fatalf("Publish(%q, %s): %v", topic, id, err)
		}
	}
}

func drain(t *testing.T, d *dispatcher.Dispatcher) {
	t.Helper()
	if _, err := d.Drain(context.Background(), 0); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// recv returns the next message; in a bubble, a receive that can never
// complete fails the test as a deadlock.
func recv(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	m, ok := <-ch
	if !ok {
		t.Fatalf("channel closed, want a message")
	}
	return m
}

func recvAck(t *testing.T, ch <-chan *message.Message, want string) {
	t.Helper()
	if m := recv(t, ch); m.UUID != want {
		t.Errorf("received %s, want %s", m.UUID, want)
		m.Ack()
	} else if !m.Ack() {
		t.Errorf("Ack of %s = false", m.UUID)
	}
}

// expectIdle checks, once every goroutine of the bubble is blocked, that
// ch has nothing to give.
func expectIdle(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	synctest.Wait()
	select {
	case m, ok := <-ch:
		if ok {
			t.Errorf("received %s, want nothing yet", m.UUID)
		} else {
			t.Errorf("channel closed, want it open and idle")
		}
	default:
	}
}

// expectClosed checks that ch is closed, reading no message.
func expectClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	if m, ok := <-ch; ok {
		t.Errorf("received %s, want the channel closed", m.UUID)
	}
}

func TestDeliveryWaitsForDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, d := newDrainedBus(t, watermillbus.Config{})
		defer bus.Close()
		ps := newClient(t, bus)

		publish(t, ps, "orders", "1")
		drain(t, d) // no subscription yet: "1" is kept
		ch := subscribe(t, ps, context.Background(), "orders")
		publish(t, ps, "orders", "2")
		recvAck(t, ch, "1")
		expectIdle(t, ch) // "2" waits in the dispatcher's queue
		drain(t, d)       // returns before anyone reads "2": the handler only buffers it (see Completion)
		recvAck(t, ch, "2")
		expectIdle(t, ch)
	})
}

func TestNackRedeliversBeforeNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, d := newDrainedBus(t, watermillbus.Config{})
		defer bus.Close()
		ps := newClient(t, bus)
		ch := subscribe(t, ps, context.Background(), "jobs")
		publish(t, ps, "jobs", "a", "b")
		drain(t, d)

		first := recv(t, ch)
		if first.UUID != "a" {
			t.Fatalf("received %s, want a", first.UUID)
		}
		expectIdle(t, ch) // one message at a time: b waits for a's Ack or Nack
		first.Nack()
		again := recv(t, ch)
		if again.UUID != "a" || again == first {
			t.Errorf("after Nack received %s (same copy: %v), want a fresh copy of a", again.UUID, again == first)
		}
		if err := first.Context().Err(); err == nil {
			t.Errorf("the nacked copy's Context is not cancelled")
		}
		again.Ack()
		recvAck(t, ch, "b")
	})
}

func TestEachSubscriptionGetsItsOwnCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, d := newDrainedBus(t, watermillbus.Config{})
		defer bus.Close()
		ps := newClient(t, bus)
		ch1 := subscribe(t, ps, context.Background(), "a.b")
		ch2 := subscribe(t, newClient(t, bus), context.Background(), "a.b")

		sent := message.NewMessage("id-1", []byte("payload"))
		sent.Metadata.Set("k", "v")
		if err := ps.Publish("a.b", sent); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		sent.Metadata.Set("k", "changed after Publish")
		drain(t, d)

		m1, m2 := recv(t, ch1), recv(t, ch2)
		for i, m := range []*message.Message{m1, m2} {
			if m == sent {
				t.Errorf("subscription %d received the publisher's message itself", i+1)
			}
			if m.UUID != "id-1" || string(m.Payload) != "payload" || m.Metadata.Get("k") != "v" {
				t.Errorf("subscription %d received UUID %q payload %q metadata %v, want id-1, payload, k=v",
					i+1, m.UUID, m.Payload, m.Metadata)
			}
		}
		m1.Metadata.Set("k", "changed by subscriber 1")
		if got := m2.Metadata.Get("k"); got != "v" {
			t.Errorf("subscription 2 sees metadata k=%q after subscription 1 changed its copy, want v", got)
		}
		m1.Ack()
		m2.Ack()
		synctest.Wait()
		if m1.Context().Err() == nil || m2.Context().Err() == nil {
			t.Errorf("a message's Context is not cancelled after its Ack")
		}
	})
}

func TestEndedSubscriptionGivesBack(t *testing.T) {
	t.Run("to the next subscription", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, d := newDrainedBus(t, watermillbus.Config{})
			defer bus.Close()
			ps := newClient(t, bus)
			publish(t, ps, "t", "1", "2", "3")
			drain(t, d)

			ctx, cancel := context.WithCancel(context.Background())
			ch := subscribe(t, ps, ctx, "t")
			recvAck(t, ch, "1")
			held := recv(t, ch) // "2", never acked
			cancel()
			expectClosed(t, ch)
			if held.Context().Err() == nil {
				t.Errorf("the held message's Context is not cancelled when its subscription ends")
			}

			next := subscribe(t, ps, context.Background(), "t")
			recvAck(t, next, "2")
			recvAck(t, next, "3")
			expectIdle(t, next)
		})
	})
	t.Run("to the oldest live subscription", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, d := newDrainedBus(t, watermillbus.Config{})
			defer bus.Close()
			ps := newClient(t, bus)
			publish(t, ps, "t", "kept")
			drain(t, d)

			leaving := newClient(t, bus)
			first := subscribe(t, leaving, context.Background(), "t") // takes "kept"
			second := subscribe(t, ps, context.Background(), "t")
			if m := recv(t, first); m.UUID != "kept" {
				t.Fatalf("first subscription received %s, want kept", m.UUID)
			}
			expectIdle(t, second)
			leaving.Close()
			expectClosed(t, first)
			recvAck(t, second, "kept")
			publish(t, ps, "t", "live")
			drain(t, d)
			recvAck(t, second, "live")
		})
	})
	t.Run("not what another subscription acked", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bus, d := newDrainedBus(t, watermillbus.Config{})
			defer bus.Close()
			ps := newClient(t, bus)
			ctx, cancel := context.WithCancel(context.Background())
			ch1 := subscribe(t, ps, ctx, "t")
			ch2 := subscribe(t, ps, context.Background(), "t")
			publish(t, ps, "t", "x")
			drain(t, d)
			recvAck(t, ch2, "x")
			recv(t, ch1) // held, never acked
			cancel()
			expectClosed(t, ch1)
			expectIdle(t, ch2) // ch2 acked x already: nothing comes back
			late := subscribe(t, ps, context.Background(), "t")
			expectIdle(t, late)
		})
	})
}

func TestBacklogLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, d := newDrainedBus(t, watermillbus.Config{BacklogLimit: 2})
		defer bus.Close()
		ps := newClient(t, bus)
		err := ps.Publish("t", message.NewMessage("1", nil), message.NewMessage("2", nil), message.NewMessage("3", nil))
		if !errors.Is(err, watermillbus.ErrBacklogFull) {
			t.Fatalf("Publish of 3 messages with BacklogLimit 2 = %v, want ErrBacklogFull", err)
		}
		drain(t, d)
		ch := subscribe(t, ps, context.Background(), "t") // takes the 2 kept messages
		publish(t, ps, "t", "4")
		drain(t, d)
		for _, want := range []string{"1", "2", "4"} {
			recvAck(t, ch, want)
		}
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, _ := newDrainedBus(t, watermillbus.Config{})
		a, b := newClient(t, bus), newClient(t, bus)
		chA := subscribe(t, a, context.Background(), "t")
		chB := subscribe(t, b, context.Background(), "t")

		for i := range 2 {
			if err := a.Close(); err != nil {
				t.Errorf("PubSub.Close #%d = %v, want nil", i+1, err)
			}
		}
		expectClosed(t, chA)
		if err := a.Publish("t", message.NewMessage("1", nil)); !errors.Is(err, watermillbus.ErrClosed) {
			t.Errorf("Publish after Close = %v, want ErrClosed", err)
		}
		if _, err := a.Subscribe(context.Background(), "t"); !errors.Is(err, watermillbus.ErrClosed) {
			t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
		}
		expectIdle(t, chB) // the other client goes on
		publish(t, b, "t", "1")

		for i := range 2 {
			if err := bus.Close(); err != nil {
				t.Errorf("Bus.Close #%d = %v, want nil", i+1, err)
			}
		}
		expectClosed(t, chB)
		if err := b.Publish("t", message.NewMessage("2", nil)); !errors.Is(err, watermillbus.ErrClosed) {
			t.Errorf("Publish after Bus.Close = %v, want ErrClosed", err)
		}
		if _, err := bus.PubSub(); !errors.Is(err, watermillbus.ErrClosed) {
			t.Errorf("Bus.PubSub after Close = %v, want ErrClosed", err)
		}
	})
}

func TestNewOwnsItsBus(t *testing.T) {
	ps, err := watermillbus.New(watermillbus.Config{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ch := subscribe(t, ps, context.Background(), "t")
	publish(t, ps, "t", "1")
	recvAck(t, ch, "1") // delivered by the Bus's own Run
	if err := ps.Close(); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
	expectClosed(t, ch)
	if _, err := ps.Bus().PubSub(); !errors.Is(err, watermillbus.ErrClosed) {
		t.Errorf("Bus.PubSub after the owning PubSub's Close = %v, want ErrClosed", err)
	}
}

func TestConfigErrors(t *testing.T) {
	d, err := dispatcher.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		give watermillbus.Config
	}{
		{"dispatcher and options", watermillbus.Config{Dispatcher: d, DispatcherOptions: []dispatcher.Option{dispatcher.WithWorkers(1)}}},
		{"bad dispatcher option", watermillbus.Config{DispatcherOptions: []dispatcher.Option{dispatcher.WithWorkers(0)}}},
		{"negative BacklogLimit", watermillbus.Config{BacklogLimit: -1}},
		{"negative SubscriberBuffer", watermillbus.Config{SubscriberBuffer: -1}},
		{"wildcard prefix", watermillbus.Config{TopicPrefix: "a.*"}},
		{"empty token in prefix", watermillbus.Config{TopicPrefix: "a..b"}},
	} {
		bus, err := watermillbus.NewBus(tt.give)
		if !errors.Is(err, watermillbus.ErrInvalidConfig) {
			t.Errorf("%s: NewBus = %v, want ErrInvalidConfig", tt.name, err)
		}
		if bus != nil {
			bus.Close()
		}
	}
}

func TestForeignEventIsADeadLetter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, d := newDrainedBus(t, watermillbus.Config{})
		defer bus.Close()
		if err := d.Emit(context.Background(), "watermill.orders", "not an envelope"); err != nil {
			t.Fatalf("Emit: %v", err)
		}
		if _, err := d.Drain(context.Background(), 0); !errors.Is(err, watermillbus.ErrForeignEvent) {
			t.Errorf("Drain = %v, want ErrForeignEvent", err)
		}
		if n := len(d.DeadLetters()); n != 1 {
			t.Errorf("%d dead letters, want 1", n)
		}
	})
}

func TestRingbusHandlerSeesEnvelope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus, d := newDrainedBus(t, watermillbus.Config{})
		defer bus.Close()
		if got, want := bus.RingbusTopic("orders.created"), "watermill.orders.created"; got != want {
			t.Errorf("RingbusTopic = %q, want %q", got, want)
		}
		var seen []string
		_, err := d.On("watermill.orders.*", dispatcher.Handle(func(ctx context.Context, env *watermillbus.Envelope) error {
			seen = append(seen, env.Topic()+"/"+env.Message().UUID)
			return nil
		}))
		if err != nil {
			t.Fatalf("On: %v", err)
		}
		ps := newClient(t, bus)
		publish(t, ps, "orders.created", "1")
		publish(t, ps, "payments.created", "2")
		drain(t, d)
		if want := []string{"orders.created/1"}; !slices.Equal(seen, want) {
			t.Errorf("ringbus handler saw %v, want %v", seen, want)
		}
	})
}

// TestSlowConsumerHoldsOnlyItsTopic checks the slow-consumer policy: a
// subscription that does not read fills its buffer, the delivery of its
// topic waits, and other topics go on, on the other worker.
func TestSlowConsumerHoldsOnlyItsTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps, err := watermillbus.New(watermillbus.Config{
			DispatcherOptions: []dispatcher.Option{dispatcher.WithWorkers(2)},
			SubscriberBuffer:  1,
		})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		defer ps.Close()
		slow := subscribe(t, ps, context.Background(), "slow")
		fast := subscribe(t, ps, context.Background(), "fast")
		// One held by the consumer's send, one in the buffer, the third
		// makes the handler wait; the rest wait in the queue.
		publish(t, ps, "slow", "s1", "s2", "s3", "s4")
		synctest.Wait()
		publish(t, ps, "fast", "f1", "f2")
		recvAck(t, fast, "f1")
		recvAck(t, fast, "f2")
		for _, want := range []string{"s1", "s2", "s3", "s4"} {
			recvAck(t, slow, want)
		}
	})
}
