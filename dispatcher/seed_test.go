package dispatcher_test

// The seed note's two pytest tests and its "mini exercise" (drain_safe with
// dead letters), ported to ringbus with the same intent: producers only
// emit, processing happens in Drain/Tick, and one bad handler never stops
// the others.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

// seedRunFinished is the seed's event data: tenant=..., rows=...
type seedRunFinished struct {
	Tenant string
	Rows   int
}

// seedRunJob is the seed's run_job: a pipeline run that emits.
func seedRunJob(t *testing.T, d *dispatcher.Dispatcher, tenant string, rows int) {
	t.Helper()
	if err := d.Emit(context.Background(), "run.finished", seedRunFinished{Tenant: tenant, Rows: rows}); err != nil {
		t.Fatalf("Emit(run.finished) error = %v", err)
	}
}

// seedListeners are the seed's two listeners: audit and trigger_downstream.
type seedListeners struct {
	auditLog  []seedRunFinished
	triggered []string
}

func (s *seedListeners) audit(_ context.Context, e seedRunFinished) error {
	s.auditLog = append(s.auditLog, e)
	return nil
}

func (s *seedListeners) triggerDownstream(_ context.Context, e seedRunFinished) error {
	s.triggered = append(s.triggered, fmt.Sprintf("%s:%d", e.Tenant, e.Rows))
	return nil
}

// test_event_queue_and_handlers
func TestSeedEventQueueAndHandlers(t *testing.T) {
	d := mustNewDispatcher(t)
	var s seedListeners
	mustSubscribe(t, d, "run.finished", dispatcher.Handle(s.audit))
	mustSubscribe(t, d, "run.finished", dispatcher.Handle(s.triggerDownstream))

	seedRunJob(t, d, "t1", 3)
	if len(s.auditLog) != 0 || len(s.triggered) != 0 {
		t.Fatalf("after emit: audit log %v, triggered %v, want both empty (not processed yet)", s.auditLog, s.triggered)
	}

	n, err := d.Drain(context.Background(), 0)
	if n != 1 || err != nil {
		t.Fatalf("Drain(0) = %d, %v, want 1, nil", n, err)
	}
	if len(s.auditLog) != 1 || s.auditLog[len(s.auditLog)-1].Tenant != "t1" {
		t.Errorf("audit log = %+v, want its last entry for tenant t1", s.auditLog)
	}
	if !slices.Equal(s.triggered, []string{"t1:3"}) {
		t.Errorf("triggered = %q, want [\"t1:3\"]", s.triggered)
	}
}

// test_backpressure_limit
func TestSeedBackpressureLimit(t *testing.T) {
	d := mustNewDispatcher(t)
	var s seedListeners
	mustSubscribe(t, d, "run.finished", dispatcher.Handle(s.audit))

	seedRunJob(t, d, "t2", 1)
	seedRunJob(t, d, "t3", 2)
	n, err := d.Drain(context.Background(), 1)
	if n != 1 || err != nil {
		t.Fatalf("Drain(1) = %d, %v, want 1, nil", n, err)
	}
	// Stricter than the seed's len(audit_log) >= 1: exactly the oldest.
	if want := []seedRunFinished{{"t2", 1}}; !slices.Equal(s.auditLog, want) {
		t.Errorf("audit log after Drain(1) = %+v, want %+v", s.auditLog, want)
	}
	if q := d.Stats().Queued; q != 1 {
		t.Errorf("Stats().Queued after Drain(1) = %d, want 1", q)
	}
	if n := mustDrain(t, d); n != 1 {
		t.Errorf("Drain(0) = %d, want 1", n)
	}
	if want := []seedRunFinished{{"t2", 1}, {"t3", 2}}; !slices.Equal(s.auditLog, want) {
		t.Errorf("audit log after Drain(0) = %+v, want %+v", s.auditLog, want)
	}
}

// The mini exercise: drain_safe wraps each handler call, appends failures
// to dead_letters and continues with the others. In ringbus every Drain is
// safe; the test is the exercise's: one handler raises (here: returns an
// error, or panics), the other still runs, and the event appears in the
// dead letters.
func TestSeedSafeDrainDeadLetters(t *testing.T) {
	errDown := errors.New("downstream unavailable")
	tests := []struct {
		name string
		give func(context.Context, seedRunFinished) error
	}{
		{"error", func(context.Context, seedRunFinished) error { return errDown }},
		{"panic", func(context.Context, seedRunFinished) error { panic(errDown) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustNewDispatcher(t)
			var s seedListeners
			mustSubscribe(t, d, "run.finished", dispatcher.Handle(tt.give), dispatcher.WithName("trigger"))
			mustSubscribe(t, d, "run.finished", dispatcher.Handle(s.audit), dispatcher.WithName("audit"))

			seedRunJob(t, d, "t1", 3)
			seedRunJob(t, d, "t2", 5)
			n, err := d.Drain(context.Background(), 0)
			if n != 2 {
				t.Errorf("Drain(0) = %d, want 2", n)
			}
			if !errors.Is(err, errDown) {
				t.Errorf("Drain(0) error = %v, want it to report %v", err, errDown)
			}
			if want := []seedRunFinished{{"t1", 3}, {"t2", 5}}; !slices.Equal(s.auditLog, want) {
				t.Errorf("audit log = %+v, want %+v (the other handler still runs)", s.auditLog, want)
			}

			dls := d.DeadLetters()
			if len(dls) != 2 {
				t.Fatalf("len(DeadLetters()) = %d, want 2", len(dls))
			}
			for i, want := range []seedRunFinished{{"t1", 3}, {"t2", 5}} {
				dl := dls[i]
				if dl.Event.Payload != want || dl.Subscriber != "trigger" || !errors.Is(dl.Err, errDown) {
					t.Errorf("DeadLetters()[%d] = %+v, want %+v from trigger failing with %v", i, dl, want, errDown)
				}
			}
			var pe *dispatcher.PanicError
			if isPanic := errors.As(dls[0].Err, &pe); isPanic != (tt.name == "panic") {
				t.Errorf("DeadLetters()[0].Err is a *PanicError: %v, want %v", isPanic, tt.name == "panic")
			}
		})
	}
}
