package dispatcher_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// A reminder sent a while after the event that calls for it: the event is
// accepted now and handled when it is due. Flush waits for it (without Run
// it processes on the caller's goroutine). In tests, testing/synctest's
// fake clock makes the wait instant.
func ExampleAfter() {
	ctx := context.Background()
	d, err := dispatcher.New()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	d.On("reminder.due", func(ctx context.Context, e dispatcher.Event) error {
		fmt.Println("remind:", e.Payload)
		return nil
	})

	start := time.Now()
	err = d.EmitEvent(ctx, dispatcher.Event{Topic: "reminder.due", Payload: "renew the certificate"},
		dispatcher.After(20*time.Millisecond))
	fmt.Println("emitted:", err, "scheduled:", d.Stats().Scheduled)

	if err := d.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("waited at least 20ms:", time.Since(start) >= 20*time.Millisecond)
	// Output:
	// emitted: <nil> scheduled: 1
	// remind: renew the certificate
	// waited at least 20ms: true
}

// A batch job under Run: it emits its work, then Flush waits until every
// event emitted so far is handled, and the dispatcher stays open for the
// next batch.
func ExampleDispatcher_Flush() {
	ctx := context.Background()
	d, err := dispatcher.New(dispatcher.WithWorkers(4))
	if err != nil {
		fmt.Println(err)
		return
	}
	var done atomic.Int64
	d.On("invoice.render", func(ctx context.Context, e dispatcher.Event) error {
		done.Add(1)
		return nil
	})
	run := make(chan error, 1)
	go func() { run <- d.Run(ctx) }()

	for batch := 1; batch <= 2; batch++ {
		for i := range 100 {
			d.Emit(ctx, "invoice.render", i)
		}
		if err := d.Flush(ctx); err != nil {
			fmt.Println(err)
		}
		fmt.Printf("batch %d: %d invoices rendered\n", batch, done.Load())
	}

	fmt.Println("Shutdown:", d.Shutdown(ctx))
	<-run // nil, or ErrClosed if the goroutine started after the Shutdown
	// Output:
	// batch 1: 100 invoices rendered
	// batch 2: 200 invoices rendered
	// Shutdown: <nil>
}
