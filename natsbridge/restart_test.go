package natsbridge_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// session is one life of a consuming service: an embedded server on dir,
// a bridge, a running dispatcher and a consumer feeding it, stopped in
// the documented order by close.
type session struct {
	srv  *natsbridge.Embedded
	b    *natsbridge.Bridge
	d    *dispatcher.Dispatcher
	c    *natsbridge.Consumer
	stop func() error // the dispatcher's Shutdown and Run's return
}

func openSession(t *testing.T, dir string, cc natsbridge.ConsumerConfig, h dispatcher.Handler) *session {
	t.Helper()
	s := &session{srv: startServer(t, dir)}
	s.b = newBridge(t, s.srv, natsbridge.Config{})
	var err error
	if s.d, err = dispatcher.New(); err != nil {
		t.Fatal(err)
	}
	s.stop = startRun(s.d)
	if _, err := s.d.On(">", h); err != nil {
		t.Fatal(err)
	}
	if cc.Durable != "" {
		if s.c, err = s.b.Consume(context.Background(), s.d, cc); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// close stops the bridge (its consumer first), then the dispatcher, then
// the server.
func (s *session) close(t *testing.T) {
	t.Helper()
	if err := s.b.Close(context.Background()); err != nil {
		t.Errorf("bridge Close: %v", err)
	}
	if err := s.stop(); err != nil {
		t.Errorf("dispatcher: %v", err)
	}
	s.srv.Close()
}

func TestServerRestartResumesAfterLastAck(t *testing.T) {
	dir := t.TempDir()
	cc := natsbridge.ConsumerConfig{Durable: "w", Bind: []natsbridge.Binding{natsbridge.Bind[order](">")}}
	h := newHandled(20)
	s := openSession(t, dir, cc, h.handler())
	publishN(t, s.b, "jobs.run", "", 0, 10)
	h.wait(10)
	if err := s.c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	publishN(t, s.b, "jobs.run", "", 10, 20) // stored, not consumed yet
	s.close(t)

	s = openSession(t, dir, cc, h.handler())
	defer s.close(t)
	got := h.wait(10)
	// Unkeyed events run on several workers: compare them in order of N.
	slices.SortFunc(got, func(a, b order) int { return a.N - b.N })
	for i, o := range got {
		if o.N != 10+i {
			t.Fatalf("after the restart, the calls got orders %v, want 10 to 19: the consumer resumes after its last ack", got)
		}
	}
	if err := s.c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if extra := len(h.ch); extra != 0 {
		t.Errorf("%d more calls after the restart, want none", extra)
	}
}

func TestShutdownOrderLosesNothing(t *testing.T) {
	dir := t.TempDir()
	const n, inFlight = 200, 16
	cc := natsbridge.ConsumerConfig{
		Durable:     "w",
		MaxInFlight: inFlight,
		AckWait:     300 * time.Millisecond, // what a stopped fetch leaves comes back soon
		Bind:        []natsbridge.Binding{natsbridge.Bind[order](">")},
	}
	gate := make(chan struct{})
	h := newHandled(2 * n)
	slow := dispatcher.Handle(func(ctx context.Context, o order) error {
		<-gate
		return h.handler()(ctx, dispatcher.Event{Payload: o})
	})
	s := openSession(t, dir, cc, slow)
	publishN(t, s.b, "jobs.run", "", 0, n)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.c.InFlight() < inFlight {
		<-tick.C
	}
	// Bridge first: Close waits until the events in flight are handled
	// and acknowledged. The gate opens while it waits.
	closed := make(chan error, 1)
	go func() { closed <- s.b.Close(context.Background()) }()
	close(gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	first := slices.Clone(h.got)
	if len(first) < inFlight {
		t.Fatalf("%d events handled before the shutdown, want at least the %d in flight", len(first), inFlight)
	}
	// The consumer fetched in stream order and settled everything it
	// fetched: its acks cover stream sequences 1 to len(first). Close
	// waits until they reached the server, which processes them
	// asynchronously; a server shut down before it did redelivers those
	// events after the restart (duplicates, as the package doc says).
	// Wait for them, so that what follows checks the restart alone.
	ackedUpTo(t, s.b, "w", uint64(len(first)))
	s.srv.Close()

	for range len(first) { // h.ch holds the first session's calls too
		<-h.ch
	}

	s = openSession(t, dir, cc, h.handler())
	defer s.close(t)
	seen := map[int]int{}
	for _, o := range first {
		seen[o.N]++
	}
	for len(seen) < n {
		o := <-h.ch
		seen[o.N]++
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("order %d handled %d times, want once: every event handled before the shutdown was acknowledged", k, c)
		}
	}
}
