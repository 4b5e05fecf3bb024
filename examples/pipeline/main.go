// Command pipeline plays the seed note's scenario on ringbus: jobs finish
// and emit "run.finished" for several tenants; an audit log, a downstream
// trigger and a notifier react. The notifier's channel to one tenant is
// down, so that tenant's event becomes a dead letter; once the channel is
// back, Redeliver sends it again to the notifier alone.
//
// By default it runs deterministically, with Drain on main's goroutine.
// With -concurrent it runs the same handlers under Run, with several
// producers, and prints the throughput.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// RunFinished is the payload of a "run.finished" event. It is emitted as
// a value, and the handlers take it as one (Handle[RunFinished]): each
// gets its own copy, so none can change what another sees.
type RunFinished struct {
	Tenant string
	Rows   int
}

var errNotifierDown = errors.New("notifier: channel down")

// notifier fails for the tenants whose channel is down.
type notifier struct {
	mu   sync.Mutex
	down map[string]bool
	sent []string
}

func (n *notifier) handle(ctx context.Context, r RunFinished) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[r.Tenant] {
		return fmt.Errorf("%w for %s", errNotifierDown, r.Tenant)
	}
	n.sent = append(n.sent, r.Tenant)
	return nil
}

func main() {
	concurrent := flag.Bool("concurrent", false, "run with the worker pool and several producers")
	producers := flag.Int("producers", 4, "producers in -concurrent mode")
	events := flag.Int("events", 1_000_000, "events in -concurrent mode")
	workers := flag.Int("workers", 2, "workers in -concurrent mode")
	flag.Parse()
	log.SetFlags(0)
	var err error
	if *concurrent {
		err = runConcurrent(*producers, *workers, *events)
	} else {
		err = runDeterministic()
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func runDeterministic() error {
	ctx := context.Background()
	d, err := dispatcher.New()
	if err != nil {
		return err
	}
	var audit []string
	if _, err := d.On("run.*", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		audit = append(audit, fmt.Sprintf("%s:%d", r.Tenant, r.Rows))
		return nil
	}), dispatcher.WithName("audit")); err != nil {
		return err
	}
	var triggered []string
	if _, err := d.On("run.finished", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		triggered = append(triggered, r.Tenant)
		return d.Emit(ctx, "report.requested", r) // a cascade: the trigger emits
	}), dispatcher.WithName("trigger")); err != nil {
		return err
	}
	var reports []string
	if _, err := d.On("report.requested", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		reports = append(reports, r.Tenant)
		return nil
	}), dispatcher.WithName("reporter")); err != nil {
		return err
	}
	n := &notifier{down: map[string]bool{"t3": true}}
	if _, err := d.On("run.finished", dispatcher.Handle(n.handle), dispatcher.WithName("notifier")); err != nil {
		return err
	}

	for i, tenant := range []string{"t1", "t2", "t3", "t4"} {
		if err := d.Emit(ctx, "run.finished", RunFinished{Tenant: tenant, Rows: 10 * (i + 1)}); err != nil {
			return err
		}
	}
	st := d.Stats()
	fmt.Printf("emitted %d events; queued %d; handlers ran so far: %d\n", st.Emitted, st.Queued, len(audit)+len(triggered))

	processed, err := d.Drain(ctx, 0)
	fmt.Printf("drain processed %d events (4 run.finished + 4 report.requested)\n", processed)
	fmt.Printf("  audit:     %v\n", audit)
	fmt.Printf("  trigger:   %v\n", triggered)
	fmt.Printf("  reporter:  %v\n", reports)
	fmt.Printf("  notifier:  sent to %v\n", n.sent)
	fmt.Printf("  drain error: %v\n", err)
	for _, dl := range d.DeadLetters() {
		fmt.Printf("dead letter: event %d %s for %q after %d attempt(s): %v\n",
			dl.Event.ID, dl.Event.Topic, dl.Subscriber, dl.Attempts, dl.Err)
	}

	fmt.Println("the notifier's channel to t3 is back; redelivering")
	n.mu.Lock()
	delete(n.down, "t3")
	n.mu.Unlock()
	redelivered, err := d.Redeliver(ctx)
	if err != nil {
		return err
	}
	processed, err = d.Drain(ctx, 0)
	if err != nil {
		return err
	}
	fmt.Printf("redelivered %d, processed %d; notifier: sent to %v; audit still has %d entries\n",
		redelivered, processed, n.sent, len(audit))
	st = d.Stats()
	fmt.Printf("stats: emitted=%d delivered=%d failed=%d dead-lettered=%d dead letters left=%d\n",
		st.Emitted, st.Delivered, st.Failed, st.DeadLettered, st.DeadLetters)
	return d.Shutdown(ctx)
}

func runConcurrent(producers, workers, events int) error {
	ctx := context.Background()
	d, err := dispatcher.New(dispatcher.WithWorkers(workers), dispatcher.WithCapacity(4096))
	if err != nil {
		return err
	}
	var audited, triggered atomic.Int64
	n := &notifier{down: map[string]bool{"t3": true}}
	var notified, notifyFailed atomic.Int64
	d.On("run.*", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		audited.Add(1)
		return nil
	}), dispatcher.WithName("audit"))
	d.On("run.finished", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		triggered.Add(1)
		return nil
	}), dispatcher.WithName("trigger"))
	d.On("run.finished", dispatcher.Handle(func(ctx context.Context, r RunFinished) error {
		if n.down[r.Tenant] { // read-only in this mode
			notifyFailed.Add(1)
			return errNotifierDown
		}
		notified.Add(1)
		return nil
	}), dispatcher.WithName("notifier"))

	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()

	runs := []RunFinished{{"t1", 10}, {"t2", 20}, {"t3", 30}, {"t4", 40}}
	// Each value boxed once: an any that holds a value cannot be changed,
	// so emitting it again and again shares it safely and copies nothing.
	payloads := make([]any, len(runs))
	for i, r := range runs {
		payloads[i] = r
	}
	start := time.Now()
	var wg sync.WaitGroup
	per := events / producers
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				// Keyed by tenant: each tenant's runs reach each handler in order.
				t := (p + i) % len(runs)
				if err := d.EmitEvent(ctx, dispatcher.Event{Topic: "run.finished", Key: runs[t].Tenant, Payload: payloads[t]}); err != nil {
					log.Printf("emit: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := d.Shutdown(ctx); err != nil {
		return err
	}
	if err := <-runErr; err != nil {
		return err
	}
	elapsed := time.Since(start)
	st := d.Stats()
	fmt.Printf("%d producers, %d workers: %d events in %v: %.0f events/s\n",
		producers, workers, st.Emitted, elapsed.Round(time.Millisecond), float64(st.Emitted)/elapsed.Seconds())
	fmt.Printf("audit=%d trigger=%d notifier sent=%d failed=%d; dead letters kept=%d of %d (bounded)\n",
		audited.Load(), triggered.Load(), notified.Load(), notifyFailed.Load(), st.DeadLetters, st.DeadLettered)
	return nil
}
