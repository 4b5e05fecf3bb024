package natsbridge_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

type Order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// An embedded server on a directory, a durable publish, and a consumer
// that feeds a local dispatcher whose handler takes the typed payload.
// Stopped in the documented order: bridge, dispatcher, server.
func Example() {
	dir, err := os.MkdirTemp("", "natsbridge-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	srv, err := natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{Dir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Close() // last
	b, err := natsbridge.New(ctx, srv.Conn(), natsbridge.Config{})
	if err != nil {
		panic(err)
	}

	d, err := dispatcher.New()
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	d.On("orders.placed", dispatcher.Handle(func(ctx context.Context, o Order) error {
		fmt.Println("handled", o.ID, o.Total)
		close(done)
		return nil
	}))
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(context.WithoutCancel(ctx)) }()

	if _, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{
		Durable: "billing",
		Topics:  []string{"orders.>"},
		Bind:    []natsbridge.Binding{natsbridge.Bind[Order]("orders.>")},
	}); err != nil {
		panic(err)
	}
	// Returns once the stream stored it.
	if err := b.Publish(ctx, dispatcher.Event{Topic: "orders.placed", Key: "o-1", Payload: Order{ID: "o-1", Total: 42}}); err != nil {
		panic(err)
	}
	<-done

	b.Close(ctx) // stops the consumer once what it holds is acknowledged
	d.Shutdown(ctx)
	<-runErr
	// Output:
	// handled o-1 42
}
