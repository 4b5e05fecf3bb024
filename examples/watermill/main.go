// Command watermill runs a watermill Router over the ringbus backend
// (package watermillbus): an order handler behind the PoisonQueue and
// Retry middlewares, and a handler for the poison queue.
//
// Three orders are published before the router starts; the Bus keeps them
// for the first subscription. o-1 is stored at once; o-2 fails once (a
// transient error) and Retry stores it on the second attempt; o-3 is
// malformed and fails every attempt, so PoisonQueue moves it to
// "orders.poison", where the second handler reports it. Then the router
// and the Bus close, and the program exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/ringbus/ringbus/watermillbus"
)

const (
	ordersTopic = "orders.created"
	poisonTopic = "orders.poison"
)

var (
	errTransient = errors.New("inventory service unavailable")
	errMalformed = errors.New("order has no lines")
)

func main() {
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	bus, err := watermillbus.NewBus(watermillbus.Config{})
	if err != nil {
		return err
	}
	defer bus.Close()
	// Two clients of one Bus: the service that publishes, and the
	// router's (its subscriber, and the poison queue's publisher).
	service, err := bus.PubSub()
	if err != nil {
		return err
	}
	routerClient, err := bus.PubSub()
	if err != nil {
		return err
	}

	for _, id := range []string{"o-1", "o-2", "o-3"} {
		if err := service.Publish(ordersTopic, message.NewMessage(id, []byte(id))); err != nil {
			return err
		}
	}
	fmt.Printf("published o-1, o-2, o-3 to %q (ringbus topic %q) before any subscription: the bus keeps them\n",
		ordersTopic, bus.RingbusTopic(ordersTopic))

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	poison, err := middleware.PoisonQueue(routerClient, poisonTopic)
	if err != nil {
		return err
	}
	// The first middleware is the outermost: Retry's last failure reaches
	// PoisonQueue, which publishes the message to the poison topic and
	// acks it.
	router.AddMiddleware(
		poison,
		middleware.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond, Multiplier: 2}.Middleware,
	)

	settled := make(chan string, 3) // one per order: stored or poisoned
	attempts := map[string]int{}    // only the orders handler touches it, one message at a time
	router.AddConsumerHandler("orders", ordersTopic, routerClient, func(msg *message.Message) error {
		id := msg.UUID
		attempts[id]++
		n := attempts[id]
		switch {
		case id == "o-2" && n == 1:
			fmt.Printf("orders: %s attempt %d failed: %v\n", id, n, errTransient)
			return errTransient
		case id == "o-3":
			fmt.Printf("orders: %s attempt %d failed: %v\n", id, n, errMalformed)
			return errMalformed
		}
		fmt.Printf("orders: %s attempt %d: stored\n", id, n)
		settled <- id
		return nil
	})
	router.AddConsumerHandler("poison", poisonTopic, routerClient, func(msg *message.Message) error {
		fmt.Printf("poison queue: %s from %q, reason: %s\n",
			msg.UUID, msg.Metadata.Get(middleware.PoisonedTopicKey), msg.Metadata.Get(middleware.ReasonForPoisonedKey))
		settled <- msg.UUID
		return nil
	})

	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	<-router.Running()

	for range 3 {
		select {
		case <-settled:
		case <-time.After(10 * time.Second):
			router.Close()
			return errors.New("timed out waiting for the orders")
		}
	}
	if err := router.Close(); err != nil { // closes routerClient: its subscriptions end
		return err
	}
	if err := <-runErr; err != nil {
		return err
	}
	st := bus.Dispatcher().Stats()
	fmt.Printf("router closed; ringbus emitted %d messages (3 orders + 1 poisoned) and handled %d\n", st.Emitted, st.Delivered)
	return bus.Close()
}
