package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// WithLogger logs the lifecycle at Info and each dead letter and each
// dropped event at Warn, with the event's attributes; delivered events
// are never logged. (The time is left out here to keep the output fixed.)
func ExampleWithLogger() {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	d, _ := dispatcher.New(dispatcher.WithLogger(logger), dispatcher.WithRetry(2, nil))
	defer d.Close()
	d.On("invoice.*", func(ctx context.Context, e dispatcher.Event) error {
		if e.Topic == "invoice.corrupt" {
			return errors.New("no amount")
		}
		return nil
	}, dispatcher.WithName("billing"))

	d.Emit(ctx, "invoice.created", 1)
	d.EmitEvent(ctx, dispatcher.Event{Topic: "invoice.corrupt", Key: "inv-7"})
	d.Drain(ctx, 0)
	// Output:
	// level=WARN msg="dispatcher: dead letter" topic=invoice.corrupt key=inv-7 event_id=2 attempt=2 subscriber=billing error="no amount"
	// level=INFO msg="dispatcher: closed" discarded=0
}

// WithObserver is told of failures, dead letters and drops on the
// goroutine that saw them: here, a count of dead letters per subscriber,
// as a metrics library would keep it.
func ExampleWithObserver() {
	ctx := context.Background()
	deadBySub := map[string]int{} // Drain runs on this goroutine: no lock needed here
	d, _ := dispatcher.New(dispatcher.WithObserver(dispatcher.Observer{
		DeadLettered: func(ctx context.Context, dl dispatcher.DeadLetter) {
			deadBySub[dl.Subscriber]++
		},
		Dropped: func(ctx context.Context, dr dispatcher.Drop) {
			fmt.Printf("dropped event %d (%s): %s\n", dr.Event.ID, dr.Event.Topic, dr.Reason)
		},
	}), dispatcher.WithCapacity(2), dispatcher.WithOverflow(dispatcher.DropOldest))
	defer d.Close()
	d.On("mail.send", func(ctx context.Context, e dispatcher.Event) error {
		return errors.New("smtp: 550")
	}, dispatcher.WithName("mailer"))

	for i := range 3 {
		d.Emit(ctx, "mail.send", i)
	}
	d.Drain(ctx, 0)
	fmt.Println("dead letters:", deadBySub)
	// Output:
	// dropped event 1 (mail.send): oldest
	// dead letters: map[mailer:2]
}

// requestID is a ctx key of the application's.
type requestID struct{}

// requestIDs carries the request ID of the emitter's ctx to the handlers.
type requestIDs struct{}

func (requestIDs) Extract(ctx context.Context) any {
	if id, ok := ctx.Value(requestID{}).(string); ok {
		return id
	}
	return nil
}

func (requestIDs) Inject(ctx context.Context, id any) context.Context {
	return context.WithValue(ctx, requestID{}, id)
}

// WithPropagator carries chosen values of the emitter's ctx to the
// handlers' ctx; the emitter's ctx itself does not cross the queue, so
// the request may end (and its ctx be cancelled) before the handlers run.
func ExampleWithPropagator() {
	d, _ := dispatcher.New(dispatcher.WithPropagator(requestIDs{}))
	defer d.Close()
	d.On("order.placed", func(ctx context.Context, e dispatcher.Event) error {
		fmt.Printf("order %v, request %v, ctx err %v\n", e.Payload, ctx.Value(requestID{}), ctx.Err())
		return nil
	})

	req, cancel := context.WithCancel(context.WithValue(context.Background(), requestID{}, "req-42"))
	d.Emit(req, "order.placed", 1001)
	cancel() // the request is over

	d.Drain(context.Background(), 0)
	// Output:
	// order 1001, request req-42, ctx err <nil>
}

// Each subscription counts its calls; with WithHandlerTiming it also keeps
// a histogram of their durations.
func ExampleSubscription_Stats() {
	ctx := context.Background()
	d, _ := dispatcher.New(dispatcher.WithHandlerTiming(), dispatcher.WithRetry(3, nil))
	defer d.Close()
	sub, _ := d.On("report.build", func(ctx context.Context, e dispatcher.Event) error {
		if e.Attempt == 1 {
			return errors.New("busy")
		}
		return nil
	})

	for i := range 10 {
		d.Emit(ctx, "report.build", i)
	}
	d.Drain(ctx, 0)
	st := sub.Stats()
	fmt.Printf("delivered %d, failed %d, retried %d, dead-lettered %d\n", st.Delivered, st.Failed, st.Retried, st.DeadLettered)
	fmt.Println("calls timed:", st.Durations.Count())
	fmt.Println("p99 under a minute:", st.Durations.Quantile(0.99) < time.Minute)
	// Output:
	// delivered 10, failed 10, retried 10, dead-lettered 0
	// calls timed: 20
	// p99 under a minute: true
}
