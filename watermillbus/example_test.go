package watermillbus_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/watermillbus"
)

func Example() {
	ps, err := watermillbus.New(watermillbus.Config{})
	if err != nil {
		panic(err)
	}
	defer ps.Close()

	// Published before anyone subscribed: kept for the first subscription.
	if err := ps.Publish("orders.created", message.NewMessage("o-1", []byte(`{"total":42}`))); err != nil {
		panic(err)
	}
	msgs, err := ps.Subscribe(context.Background(), "orders.created")
	if err != nil {
		panic(err)
	}
	msg := <-msgs
	fmt.Println(msg.UUID, string(msg.Payload))
	msg.Nack() // the same message comes again
	msg = <-msgs
	fmt.Println(msg.UUID, "again")
	msg.Ack()
	// Output:
	// o-1 {"total":42}
	// o-1 again
}

// A Bus over a dispatcher that the caller drives with Drain, as a test
// does: Publish only queues, and Drain hands the messages to the
// subscriptions.
func ExampleBus_drain() {
	d, err := dispatcher.New()
	if err != nil {
		panic(err)
	}
	bus, err := watermillbus.NewBus(watermillbus.Config{Dispatcher: d})
	if err != nil {
		panic(err)
	}
	defer bus.Close()
	ps, err := bus.PubSub()
	if err != nil {
		panic(err)
	}
	msgs, err := ps.Subscribe(context.Background(), "jobs")
	if err != nil {
		panic(err)
	}
	for _, id := range []string{"j-1", "j-2"} {
		if err := ps.Publish("jobs", message.NewMessage(id, nil)); err != nil {
			panic(err)
		}
	}
	fmt.Println("queued:", d.Stats().Queued)
	n, err := d.Drain(context.Background(), 0)
	fmt.Println("drained:", n, err)
	for range 2 {
		msg := <-msgs
		fmt.Println("received:", msg.UUID)
		msg.Ack()
	}
	// Output:
	// queued: 2
	// drained: 2 <nil>
	// received: j-1
	// received: j-2
}
