package dispatcher_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/ringbus/ringbus/dispatcher"
)

// Emit only queues; Drain runs the handlers on the caller's goroutine.
func Example() {
	ctx := context.Background()
	d, err := dispatcher.New()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	d.On("run.finished", func(ctx context.Context, e dispatcher.Event) error {
		fmt.Printf("handled event %d (%s): %v\n", e.ID, e.Topic, e.Payload)
		return nil
	})

	d.Emit(ctx, "run.finished", "tenant t1")
	d.Emit(ctx, "run.finished", "tenant t2")
	fmt.Println("queued:", d.Stats().Queued)

	n, err := d.Drain(ctx, 0)
	fmt.Println("drained:", n, err)
	// Output:
	// queued: 2
	// handled event 1 (run.finished): tenant t1
	// handled event 2 (run.finished): tenant t2
	// drained: 2 <nil>
}

// RunFinished is the payload of the examples' "run.finished" events.
type RunFinished struct {
	Tenant string
	Rows   int
}

// Handle adapts a function of a typed payload; a payload of another type
// fails the call with ErrPayloadType instead of panicking.
func Example_typedHandlers() {
	ctx := context.Background()
	d, _ := dispatcher.New()
	defer d.Close()

	d.On("run.finished", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		fmt.Printf("tenant %s: %d rows\n", r.Tenant, r.Rows)
		return nil
	}), dispatcher.WithName("report"))

	d.Emit(ctx, "run.finished", RunFinished{Tenant: "t1", Rows: 3})
	d.Emit(ctx, "run.finished", "not a RunFinished")

	n, err := d.Drain(ctx, 0)
	fmt.Println("drained:", n)
	fmt.Println("payload type error:", errors.Is(err, dispatcher.ErrPayloadType))
	for _, dl := range d.DeadLetters() {
		fmt.Printf("dead letter: event %d for %s\n", dl.Event.ID, dl.Subscriber)
	}
	// Output:
	// tenant t1: 3 rows
	// drained: 2
	// payload type error: true
	// dead letter: event 2 for report
}

// "*" matches exactly one token, ">" one or more at the end. For each
// event, the handlers run in subscription order.
func Example_wildcards() {
	ctx := context.Background()
	d, _ := dispatcher.New()
	defer d.Close()

	for _, pattern := range []string{"run.finished", "run.*", "run.>", "*.failed"} {
		d.On(pattern, func(ctx context.Context, e dispatcher.Event) error {
			fmt.Printf("%-12s <- %s\n", pattern, e.Topic)
			return nil
		})
	}

	for _, topic := range []string{"run.finished", "run.step.done", "job.failed", "run"} {
		d.Emit(ctx, topic, nil)
	}
	d.Drain(ctx, 0)

	_, err := d.On("run.a*", func(context.Context, dispatcher.Event) error { return nil })
	fmt.Println("bad pattern:", errors.Is(err, dispatcher.ErrBadTopic))
	// Output:
	// run.finished <- run.finished
	// run.*        <- run.finished
	// run.>        <- run.finished
	// run.>        <- run.step.done
	// *.failed     <- job.failed
	// bad pattern: true
}

// A failing or panicking handler does not stop the others: its (event,
// subscriber) pair becomes a dead letter, and Redeliver queues it again
// for that subscriber only.
func Example_deadLetters() {
	ctx := context.Background()
	d, _ := dispatcher.New()
	defer d.Close()

	up := false
	d.On("order.created", func(ctx context.Context, e dispatcher.Event) error {
		fmt.Printf("billing: order %v\n", e.Payload)
		return nil
	}, dispatcher.WithName("billing"))
	d.On("order.created", func(ctx context.Context, e dispatcher.Event) error {
		if !up {
			panic("mail server down")
		}
		fmt.Printf("mail: order %v (attempt %d)\n", e.Payload, e.Attempt)
		return nil
	}, dispatcher.WithName("mail"))

	d.Emit(ctx, "order.created", 42)
	_, err := d.Drain(ctx, 0)
	var pe *dispatcher.PanicError
	if errors.As(err, &pe) {
		fmt.Println("panic reported:", pe.Value)
	}
	for _, dl := range d.DeadLetters() {
		fmt.Printf("dead letter: event %d, %s, after %d attempt(s): %v\n",
			dl.Event.ID, dl.Subscriber, dl.Attempts, dl.Err)
	}

	up = true
	n, _ := d.Redeliver(ctx)
	fmt.Println("redelivered:", n)
	d.Drain(ctx, 0)
	fmt.Println("dead letters left:", len(d.DeadLetters()))
	// Output:
	// billing: order 42
	// panic reported: mail server down
	// dead letter: event 1, mail, after 1 attempt(s): dispatcher: handler panicked: mail server down
	// redelivered: 1
	// mail: order 42 (attempt 1)
	// dead letters left: 0
}

// WithRetry(3, nil) calls a failing handler up to 3 times; with a nil
// backoff each retry runs at the next Tick. (With a backoff, retries wait
// on the time package: tests advance testing/synctest's fake clock.)
func Example_retries() {
	ctx := context.Background()
	d, _ := dispatcher.New(dispatcher.WithRetry(3, nil))
	defer d.Close()

	d.On("sync", func(ctx context.Context, e dispatcher.Event) error {
		if e.Attempt < 3 {
			fmt.Printf("attempt %d: fails\n", e.Attempt)
			return errors.New("flaky")
		}
		fmt.Printf("attempt %d: ok\n", e.Attempt)
		return nil
	})
	d.Emit(ctx, "sync", nil)

	for tick := 1; ; tick++ {
		n, err := d.Tick(ctx)
		if n == 0 {
			break
		}
		fmt.Printf("tick %d: %d processed, err %v\n", tick, n, err)
	}
	st := d.Stats()
	fmt.Printf("delivered %d, failed %d, retried %d, dead letters %d\n",
		st.Delivered, st.Failed, st.Retried, st.DeadLettered)
	// Output:
	// attempt 1: fails
	// tick 1: 1 processed, err <nil>
	// attempt 2: fails
	// tick 2: 1 processed, err <nil>
	// attempt 3: ok
	// tick 3: 1 processed, err <nil>
	// delivered 1, failed 2, retried 2, dead letters 0
}
