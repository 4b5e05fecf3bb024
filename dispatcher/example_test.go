package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

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
	d.Emit(ctx, "run.finished", &RunFinished{Tenant: "t2", Rows: 5}) // a pointer: not a RunFinished

	n, err := d.Drain(ctx, 0)
	fmt.Println("drained:", n)
	fmt.Println("payload type error:", errors.Is(err, dispatcher.ErrPayloadType))
	for _, dl := range d.DeadLetters() {
		fmt.Printf("dead letter: event %d for %s after %d attempt(s): %v\n", dl.Event.ID, dl.Subscriber, dl.Attempts, dl.Err)
	}
	// Output:
	// tenant t1: 3 rows
	// drained: 2
	// payload type error: true
	// dead letter: event 2 for report after 1 attempt(s): dispatcher: payload type mismatch: event 2 (run.finished) has payload *dispatcher_test.RunFinished, handler wants dispatcher_test.RunFinished: emit a value or use Handle[*dispatcher_test.RunFinished]
}

// HandleEvent gives the handler the event with its typed payload: its ID,
// Key and Attempt, here to tell a retry from a first call.
func ExampleHandleEvent() {
	ctx := context.Background()
	d, _ := dispatcher.New(dispatcher.WithRetry(2, nil))
	defer d.Close()

	d.On("order.paid", dispatcher.HandleEvent(func(ctx context.Context, e dispatcher.Event, o Order) error {
		if e.Attempt > 1 {
			fmt.Printf("event %d (key %s), attempt %d: look the charge up before charging again\n", e.ID, e.Key, e.Attempt)
		}
		fmt.Printf("event %d (key %s), attempt %d: charge %s %d cents\n", e.ID, e.Key, e.Attempt, o.Customer, o.Cents)
		if e.Attempt == 1 {
			return errors.New("payment gateway timeout")
		}
		return nil
	}))

	d.EmitEvent(ctx, dispatcher.Event{Topic: "order.paid", Key: "ann", Payload: Order{Customer: "ann", Cents: 1250}})
	n, err := d.Drain(ctx, 0)
	fmt.Println("drained:", n, err)
	// Output:
	// event 1 (key ann), attempt 1: charge ann 1250 cents
	// event 1 (key ann), attempt 2: look the charge up before charging again
	// event 1 (key ann), attempt 2: charge ann 1250 cents
	// drained: 2 <nil>
}

// Order is the payload of the examples' "order.*" events.
type Order struct {
	Customer string
	Cents    int
}

// Mail is the payload of the service example's "mail.send" events.
type Mail struct{ To string }

type ctxKey string

// The recipe for a service (see "Running in a service" in the package
// doc): Run on a ctx that a signal does not cancel, and on the signal a
// Shutdown with a deadline. The example cancels its ctx itself where a
// service would get SIGTERM. The handler's ctx is Run's: it keeps the
// values of the ctx Run was given, not those of the emitter's ctx, and
// the signal does not cancel it.
func Example_service() {
	// In a service:
	//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, stop := context.WithCancel(context.WithValue(context.Background(), ctxKey("service"), "mailer"))
	defer stop()

	d, err := dispatcher.New(dispatcher.WithWorkers(2), dispatcher.WithTimeout(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	var (
		mu      sync.Mutex
		report  []string
		started = make(chan struct{}) // event 1's call has begun
		release = make(chan struct{}) // event 1's call may end
	)
	d.On("mail.send", dispatcher.HandleEvent(func(ctx context.Context, e dispatcher.Event, m Mail) error {
		if e.ID == 1 {
			close(started)
			<-release // in flight when the signal comes
		}
		mu.Lock()
		defer mu.Unlock()
		report = append(report, fmt.Sprintf("event %d: mail to %s sent; handler ctx: err %v, service %v, request %v",
			e.ID, m.To, ctx.Err(), ctx.Value(ctxKey("service")), ctx.Value(ctxKey("request"))))
		return nil
	}), dispatcher.WithName("mailer"))

	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(context.WithoutCancel(ctx)) }()

	// Requests emit with their own ctx; its values stay on this side.
	rctx := context.WithValue(ctx, ctxKey("request"), "r-42")
	for _, to := range []string{"ann", "bob", "cy"} {
		if err := d.Emit(rctx, "mail.send", Mail{To: to}); err != nil {
			fmt.Println("emit:", err)
		}
	}

	<-started
	stop() // SIGTERM
	<-ctx.Done()
	close(release)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", d.Shutdown(sctx)) // waits for the in-flight call and the queue
	fmt.Println("run:", <-runErr)
	fmt.Println("emit after shutdown:", d.Emit(context.Background(), "mail.send", Mail{To: "dee"}))

	slices.Sort(report)
	for _, line := range report {
		fmt.Println(line)
	}
	st := d.Stats()
	fmt.Printf("emitted %d, delivered %d, dropped %d\n", st.Emitted, st.Delivered, st.Dropped)
	// Output:
	// shutdown: <nil>
	// run: <nil>
	// emit after shutdown: dispatcher: closed
	// event 1: mail to ann sent; handler ctx: err <nil>, service mailer, request <nil>
	// event 2: mail to bob sent; handler ctx: err <nil>, service mailer, request <nil>
	// event 3: mail to cy sent; handler ctx: err <nil>, service mailer, request <nil>
	// emitted 3, delivered 3, dropped 0
}

// ExponentialBackoff doubles the delay from initial up to its cap.
func ExampleExponentialBackoff() {
	b := dispatcher.ExponentialBackoff(100*time.Millisecond, 2*time.Second)
	for attempt := 1; attempt <= 7; attempt++ {
		fmt.Printf("after call %d fails: wait %v\n", attempt, b(attempt))
	}
	fmt.Println("after call 1000 fails: wait", b(1000))

	d, err := dispatcher.New(dispatcher.WithRetry(5, b)) // a Backoff is what WithRetry takes
	fmt.Println(err)
	d.Close()
	// Output:
	// after call 1 fails: wait 100ms
	// after call 2 fails: wait 200ms
	// after call 3 fails: wait 400ms
	// after call 4 fails: wait 800ms
	// after call 5 fails: wait 1.6s
	// after call 6 fails: wait 2s
	// after call 7 fails: wait 2s
	// after call 1000 fails: wait 2s
	// <nil>
}

// ConstantBackoff waits the same delay before every retry.
func ExampleConstantBackoff() {
	b := dispatcher.ConstantBackoff(time.Second)
	fmt.Println(b(1), b(2), b(10))
	// Output:
	// 1s 1s 1s
}

// WithJitter spreads the delays at random around the backoff's: the
// values differ from run to run, their bounds do not.
func ExampleBackoff_WithJitter() {
	b := dispatcher.ExponentialBackoff(time.Second, 30*time.Second).WithJitter(0.2)
	for _, attempt := range []int{1, 2, 10} {
		base := dispatcher.ExponentialBackoff(time.Second, 30*time.Second)(attempt)
		lo, hi := base*8/10, base*12/10
		d := b(attempt)
		fmt.Printf("after call %d fails: between %v and %v: %v\n", attempt, lo, hi, lo <= d && d <= hi)
	}
	// Output:
	// after call 1 fails: between 800ms and 1.2s: true
	// after call 2 fails: between 1.6s and 2.4s: true
	// after call 10 fails: between 24s and 36s: true
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
