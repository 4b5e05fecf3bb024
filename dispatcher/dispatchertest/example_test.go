package dispatchertest_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

// exampleTB stands in for the *testing.T of a test in these examples,
// which have none: it prints what a test would report.
type exampleTB struct{ ctx context.Context }

func (exampleTB) Helper()                           {}
func (exampleTB) Errorf(format string, args ...any) { fmt.Printf("FAIL: "+format+"\n", args...) }
func (exampleTB) Fatalf(format string, args ...any) { fmt.Printf("FATAL: "+format+"\n", args...) }
func (exampleTB) Cleanup(func())                    {}
func (tb exampleTB) Context() context.Context       { return tb.ctx }

// Order is the payload of the examples' "order.placed" events.
type Order struct {
	ID    string
	Total int
}

// Settle follows cascades (a handler that emits) to the end, and the
// Recorder hands back what each topic carried.
func ExampleSettle() {
	ctx := context.Background()
	t := exampleTB{ctx} // a test's t
	d := dispatchertest.New(t)
	var rec dispatchertest.Recorder
	d.On("order.placed", dispatcher.Handle(func(ctx context.Context, o Order) error {
		return d.Emit(ctx, "invoice.due", o.Total)
	}))
	d.On("order.placed", rec.Handle)
	d.On("invoice.due", rec.Handle)

	d.Emit(ctx, "order.placed", Order{ID: "o-1", Total: 30})
	d.Emit(ctx, "order.placed", Order{ID: "o-2", Total: 12})
	n, err := dispatchertest.Settle(t, d)
	fmt.Println("processed:", n, err)
	fmt.Println("orders:", dispatchertest.Payloads[Order](t, &rec, "order.placed"))
	fmt.Println("invoices:", dispatchertest.Payloads[int](t, &rec, "invoice.due"))
	// Output:
	// processed: 4 <nil>
	// orders: [{o-1 30} {o-2 12}]
	// invoices: [30 12]
}

// Wrap records only the events its handler handled: the failed first call
// is not there, its retry is.
func ExampleRecorder_Wrap() {
	ctx := context.Background()
	t := exampleTB{ctx}
	d := dispatchertest.New(t, dispatcher.WithRetry(2, nil))
	var rec dispatchertest.Recorder
	d.On("mail.send", rec.Wrap(func(ctx context.Context, e dispatcher.Event) error {
		if e.Attempt == 1 {
			return errors.New("smtp: try later")
		}
		return nil
	}))
	d.Emit(ctx, "mail.send", "welcome")
	dispatchertest.Settle(t, d)
	for _, e := range rec.Events("mail.send") {
		fmt.Printf("event %d %v handled at attempt %d\n", e.ID, e.Payload, e.Attempt)
	}
	// Output:
	// event 1 welcome handled at attempt 2
}

// Under Run, Wait blocks until the workers have recorded the events.
func ExampleRecorder_Wait() {
	ctx := context.Background()
	d, _ := dispatcher.New(dispatcher.WithWorkers(2))
	var rec dispatchertest.Recorder
	d.On("job.done", rec.Handle)
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()

	for i := range 10 {
		d.Emit(ctx, "job.done", i)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	fmt.Println("wait:", rec.Wait(wctx, "job.done", 10))
	fmt.Println("shutdown:", d.Shutdown(ctx), <-runErr)
	fmt.Println("recorded:", rec.Len("job.done"))
	// Output:
	// wait: <nil>
	// shutdown: <nil> <nil>
	// recorded: 10
}

// NoDeadLetters, called as a test starts, fails the test at its end if
// dead letters are left, with each one described. Here the example's
// stand-in for t runs the check at once.
func ExampleFormatDeadLetters() {
	ctx := context.Background()
	t := exampleTB{ctx}
	d := dispatchertest.New(t)
	d.On("order.placed", dispatcher.Handle(func(ctx context.Context, o Order) error {
		if o.Total < 0 {
			return dispatcher.Permanent(fmt.Errorf("order %s: negative total %d", o.ID, o.Total))
		}
		return nil
	}), dispatcher.WithName("billing"))
	d.EmitEvent(ctx, dispatcher.Event{Topic: "order.placed", Key: "o-9", Payload: Order{ID: "o-9", Total: -5}})
	dispatchertest.Settle(t, d)
	fmt.Print(dispatchertest.FormatDeadLetters(d.DeadLetters()))
	// Output:
	//   event 1 "order.placed" key "o-9" for subscriber "billing" after 1 attempt(s): order o-9: negative total -5
	//     payload (dispatchertest_test.Order): {ID:o-9 Total:-5}
}
