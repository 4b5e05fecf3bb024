// Command pipeline plays the seed note's scenario on ringbus: jobs finish
// and emit "run.finished" for several tenants; an audit log, a downstream
// trigger and a notifier react.
//
// First, deterministically, with Drain on main's goroutine: the
// notifier's channel to one tenant is down, so that tenant's event
// becomes a dead letter; once the channel is back, Redeliver sends it
// again to the notifier alone.
//
// Then the same handlers run under Run, with several producers, for
// -duration: a progress line shows events per second, the queue, the
// retries waiting and the dead letters while it runs (redrawn in place on
// a terminal, a line a second otherwise), and a summary follows. There the
// notifier's channel flaps: one call in 1000 fails and its retry goes
// through; one event in 100000 has an address the channel rejects, and
// becomes a dead letter at once.
//
// -concurrent runs the second part alone. main_test.go tests the
// handlers, and benchmarks them for several worker counts and capacities
// with package dispatchertest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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

var (
	errNotifierDown = errors.New("notifier: channel down")
	errBadAddress   = errors.New("notifier: address rejected")
)

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
	concurrent := flag.Bool("concurrent", false, "run only the second part: the worker pool and several producers")
	producers := flag.Int("producers", 4, "producers in the concurrent part")
	workers := flag.Int("workers", 2, "workers in the concurrent part")
	duration := flag.Duration("duration", 2*time.Second, "how long the producers emit in the concurrent part")
	events := flag.Int("events", 0, "stop the producers after this many events in all (0: -duration alone)")
	flag.Parse()
	log.SetFlags(0)
	cfg := loadConfig{producers: *producers, workers: *workers, duration: *duration, events: *events}
	if err := run(*concurrent, cfg); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(concurrentOnly bool, cfg loadConfig) error {
	if !concurrentOnly {
		if err := runDeterministic(); err != nil {
			return err
		}
		fmt.Println()
	}
	return runConcurrent(cfg, os.Stdout, isTerminal(os.Stdout))
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

// Which events the notifier fails in the concurrent part, by event ID.
const (
	flapEvery       = 1000   // an event whose ID is a multiple fails its first call
	badAddressEvery = 100000 // an event whose ID is 7 past a multiple fails for good
	retryBackoff    = 20 * time.Millisecond
)

// fleet is the concurrent part's handlers; its counters are safe for
// concurrent use.
type fleet struct {
	audited, triggered, notified, notifyFailed atomic.Int64
}

// subscribe subscribes f's handlers to d: the audit log, the trigger and
// the notifier, whose calls are retried (3 calls in all, retryBackoff
// apart).
func (f *fleet) subscribe(d *dispatcher.Dispatcher) error {
	subs := []struct {
		pattern, name string
		h             dispatcher.Handler
		opts          []dispatcher.SubscribeOption
	}{
		{"run.*", "audit", dispatcher.Handle(func(context.Context, RunFinished) error {
			f.audited.Add(1)
			return nil
		}), nil},
		{"run.finished", "trigger", dispatcher.Handle(func(context.Context, RunFinished) error {
			f.triggered.Add(1)
			return nil
		}), nil},
		{"run.finished", "notifier", dispatcher.HandleEvent(f.notify),
			[]dispatcher.SubscribeOption{dispatcher.WithRetry(3, dispatcher.ConstantBackoff(retryBackoff))}},
	}
	for _, s := range subs {
		if _, err := d.On(s.pattern, s.h, append(s.opts, dispatcher.WithName(s.name))...); err != nil {
			return err
		}
	}
	return nil
}

// notify is the notifier over a flapping channel.
func (f *fleet) notify(_ context.Context, e dispatcher.Event, r RunFinished) error {
	switch {
	case e.ID%badAddressEvery == 7:
		f.notifyFailed.Add(1)
		return dispatcher.Permanent(fmt.Errorf("%w: %s's address on event %d", errBadAddress, r.Tenant, e.ID))
	case e.ID%flapEvery == 0 && e.Attempt == 1:
		f.notifyFailed.Add(1)
		return fmt.Errorf("%w for %s (flapping)", errNotifierDown, r.Tenant)
	}
	f.notified.Add(1)
	return nil
}

// runs are the concurrent part's payloads, each boxed once: an any that
// holds a value cannot be changed, so emitting it again and again shares
// it safely and copies nothing.
var runs = func() []any {
	out := make([]any, 0, 4)
	for _, r := range []RunFinished{{"t1", 10}, {"t2", 20}, {"t3", 30}, {"t4", 40}} {
		out = append(out, r)
	}
	return out
}()

// runEvent returns the i-th event of the concurrent part: keyed by tenant,
// so each tenant's runs reach each handler in order.
func runEvent(i int) dispatcher.Event {
	p := runs[i%len(runs)]
	return dispatcher.Event{Topic: "run.finished", Key: p.(RunFinished).Tenant, Payload: p}
}

// loadConfig is the concurrent part's flags.
type loadConfig struct {
	producers, workers int
	duration           time.Duration
	events             int // 0: no limit
}

func runConcurrent(cfg loadConfig, out io.Writer, tty bool) error {
	ctx := context.Background()
	d, err := dispatcher.New(dispatcher.WithWorkers(cfg.workers), dispatcher.WithCapacity(4096))
	if err != nil {
		return err
	}
	var f fleet
	if err := f.subscribe(d); err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()

	fmt.Fprintf(out, "%d producers, %d workers, for %v:\n", cfg.producers, cfg.workers, cfg.duration)
	start := time.Now()
	prog := startProgress(d, out, tty)
	produce(ctx, d, cfg, start.Add(cfg.duration))
	err = d.Shutdown(ctx)
	// A Run whose goroutine starts after Shutdown finds the dispatcher
	// closed (ErrClosed): Shutdown did the work on this goroutine, and
	// nothing was lost.
	if rerr := <-runErr; err == nil && !errors.Is(rerr, dispatcher.ErrClosed) {
		err = rerr
	}
	elapsed := time.Since(start)
	prog.stop()
	if err != nil {
		return err
	}

	st := d.Stats()
	fmt.Fprintf(out, "%d events in %v: %.0f events/s\n", st.Emitted, elapsed.Round(time.Millisecond), float64(st.Emitted)/elapsed.Seconds())
	fmt.Fprintf(out, "audit=%d trigger=%d notifier sent=%d failed=%d retried=%d; dead letters=%d\n",
		f.audited.Load(), f.triggered.Load(), f.notified.Load(), f.notifyFailed.Load(), st.Retried, st.DeadLetters)
	for i, dl := range d.DeadLetters() {
		if i == 3 {
			fmt.Fprintf(out, "  ... and %d more\n", st.DeadLetters-i)
			break
		}
		fmt.Fprintf(out, "  dead letter: event %d for %q after %d attempt(s): %v\n", dl.Event.ID, dl.Subscriber, dl.Attempts, dl.Err)
	}
	return nil
}

// produce emits runEvents from cfg.producers goroutines, each its share
// of the indexes, until the deadline passes or cfg.events were emitted,
// and returns when they all have stopped.
func produce(ctx context.Context, d *dispatcher.Dispatcher, cfg loadConfig, deadline time.Time) {
	var wg sync.WaitGroup
	for p := range cfg.producers {
		wg.Go(func() {
			for i := p; cfg.events == 0 || i < cfg.events; i += cfg.producers {
				if (i/cfg.producers)%256 == 0 && time.Now().After(deadline) {
					return // the clock read once every 256 emits
				}
				if err := d.EmitEvent(ctx, runEvent(i)); err != nil {
					log.Printf("emit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}
