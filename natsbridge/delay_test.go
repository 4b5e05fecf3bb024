package natsbridge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// arrival is one event a consuming dispatcher handled, and when.
type arrival struct {
	e   dispatcher.Event
	raw natsbridge.Raw
	at  time.Time
}

// TestDelayedPublish runs on the wall clock: the server schedules the
// event with its own timers, which a synctest bubble cannot drive. It
// asserts lower bounds only.
func TestDelayedPublish(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{})
	d := runDispatcher(t)
	got := make(chan arrival, 10)
	if _, err := d.On(">", func(_ context.Context, e dispatcher.Event) error {
		got <- arrival{e: e, raw: e.Payload.(natsbridge.Raw), at: time.Now()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w := natsbridge.NewWindow(10)
	// Every topic: the schedule's subject matches the filter too.
	c, err := b.Consume(context.Background(), d, natsbridge.ConsumerConfig{Durable: "all", Dedupe: w})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	due := time.Now().Add(time.Second)
	later := dispatcher.Event{Topic: "reminders.send", Key: "user-7", Payload: "later"}
	if err := b.Publish(ctx, later, natsbridge.At(due), natsbridge.MsgID("reminder-1")); err != nil {
		t.Fatalf("Publish At %v: %v", due, err)
	}
	now := dispatcher.Event{Topic: "reminders.send", Key: "user-8", Payload: "now"}
	if err := b.Publish(ctx, now, natsbridge.After(-time.Second), natsbridge.MsgID("reminder-2")); err != nil {
		t.Fatalf("Publish After a negative delay: %v", err)
	}

	var arrivals []arrival
	for len(arrivals) < 2 {
		select {
		case a := <-got:
			arrivals = append(arrivals, a)
		case <-ctx.Done():
			t.Fatalf("%d events arrived before %v", len(arrivals), ctx.Err())
		}
	}
	if err := c.Stop(ctx); err != nil { // every message fetched so far is settled
		t.Fatal(err)
	}
	select {
	case a := <-got:
		t.Fatalf("a third event reached the handler: %s %v", a.e.Topic, a.raw.Header)
	default:
	}

	first, second := arrivals[0], arrivals[1]
	if first.e.Key != "user-8" || second.e.Key != "user-7" {
		t.Fatalf("keys in arrival order %q, %q: want the past-due event first, then the delayed one", first.e.Key, second.e.Key)
	}
	if s := first.raw.Header.Get(jetstream.SchedulerHeader); s != "" {
		t.Errorf("the past-due event came through schedule %q, want a plain publish", s)
	}
	if second.at.Before(due) {
		t.Errorf("the delayed event arrived at %v, %v before its due time", second.at, due.Sub(second.at))
	}
	whole := due.Truncate(time.Second).Add(time.Second) // due has a fraction, almost surely
	t.Logf("the delayed event arrived %v after its due time, %v after the whole second it was scheduled at",
		second.at.Sub(due), second.at.Sub(whole))
	for _, a := range arrivals {
		if a.e.Topic != "reminders.send" {
			t.Errorf("topic %q, want reminders.send", a.e.Topic)
		}
	}
	if s := second.raw.Header.Get(jetstream.SchedulerHeader); s != "ringbus._sched.reminder-1" {
		t.Errorf("the delayed event's %s = %q, want its schedule's subject", jetstream.SchedulerHeader, s)
	}
	if id := second.raw.Header.Get(natsbridge.HeaderMsgID); id != "reminder-1" {
		t.Errorf("the delayed event's %s = %q, want reminder-1", natsbridge.HeaderMsgID, id)
	}
	if string(second.raw.Data) != `"later"` {
		t.Errorf("the delayed event's data = %s", second.raw.Data)
	}
	for _, id := range []string{"reminder-1", "reminder-2"} {
		if !w.Contains(id) {
			t.Errorf("the Dedupe window lacks %q", id)
		}
	}
	if w.Len() != 2 {
		t.Errorf("the Dedupe window holds %d ids, want 2 (a schedule is not remembered)", w.Len())
	}
	st, err := b.JetStream().Stream(ctx, natsbridge.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, "ringbus._sched.>"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("a schedule is left after it fired: %v", err)
	}
}

// TestDelayedExistingStream: a stream made without AllowMsgSchedules (by
// an earlier version of the bridge, or by hand) gets it when New updates
// its configuration; the server refuses only to turn it off.
func TestDelayedExistingStream(t *testing.T) {
	srv := startServer(t, "")
	ctx := context.Background()
	js, err := jetstream.New(srv.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: natsbridge.DefaultStream, Subjects: []string{"ringbus.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	b := newBridge(t, srv, natsbridge.Config{})
	st, err := js.Stream(ctx, natsbridge.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; !cfg.AllowMsgSchedules || !cfg.AllowRollup {
		t.Fatalf("after New: AllowMsgSchedules %v, AllowRollup %v, want both", cfg.AllowMsgSchedules, cfg.AllowRollup)
	}
	e := dispatcher.Event{Topic: "jobs.nightly", Key: "k", Payload: 1}
	if err := b.Publish(ctx, e, natsbridge.After(time.Hour), natsbridge.MsgID("nightly")); err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "ringbus._sched.nightly")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.ScheduleTargetHeader); got != "ringbus.jobs.nightly" {
		t.Errorf("%s = %q, want ringbus.jobs.nightly", jetstream.ScheduleTargetHeader, got)
	}
	at, err := time.Parse("@at "+time.RFC3339, m.Header.Get(jetstream.ScheduleHeader))
	if err != nil {
		t.Fatal(err)
	}
	if at.Nanosecond() != 0 || at.Before(time.Now().Add(time.Hour-time.Minute)) {
		t.Errorf("schedule at %v: want a whole second, an hour from now", at)
	}

	// The server refuses to turn schedules off again.
	_, err = natsbridge.New(ctx, srv.Conn(), natsbridge.Config{Configure: func(c *jetstream.StreamConfig) {
		c.AllowMsgSchedules = false
	}})
	if err == nil {
		t.Error("New with AllowMsgSchedules off over a stream that has it: no error")
	}
}

func TestDelayedRefused(t *testing.T) {
	srv := startServer(t, "")
	ctx := context.Background()
	e := dispatcher.Event{Topic: "jobs.run", Payload: 1}

	off := newBridge(t, srv, natsbridge.Config{Stream: "OFF", Prefix: "off", Configure: func(c *jetstream.StreamConfig) {
		c.AllowMsgSchedules = false
	}})
	if err := off.Publish(ctx, e, natsbridge.After(time.Minute)); !errors.Is(err, natsbridge.ErrSchedule) {
		t.Errorf("a delay on a stream without schedules: %v, want ErrSchedule", err)
	}
	if err := off.Publish(ctx, e, natsbridge.At(time.Now().Add(-time.Minute))); err != nil {
		t.Errorf("a past due time on a stream without schedules: %v, want no error (no delay)", err)
	}
	if err := off.Publish(ctx, e, natsbridge.At(time.Time{})); err != nil {
		t.Errorf("At the zero time on a stream without schedules: %v, want no error (no delay)", err)
	}

	// Under interest retention, a consumer's ack of a schedule message
	// (which it skips) could delete the schedule before it fires.
	interest := newBridge(t, srv, natsbridge.Config{Stream: "INTEREST", Prefix: "interest", Configure: func(c *jetstream.StreamConfig) {
		c.Retention = jetstream.InterestPolicy
	}})
	if err := interest.Publish(ctx, e, natsbridge.After(time.Minute)); !errors.Is(err, natsbridge.ErrSchedule) {
		t.Errorf("a delay on a stream with interest retention: %v, want ErrSchedule", err)
	}
	if err := interest.Publish(ctx, e); err != nil {
		t.Errorf("an undelayed publish on a stream with interest retention: %v", err)
	}

	aged := newBridge(t, srv, natsbridge.Config{Stream: "AGED", Prefix: "aged", Configure: func(c *jetstream.StreamConfig) {
		c.MaxAge = time.Hour
	}})
	if err := aged.Publish(ctx, e, natsbridge.After(2*time.Hour)); !errors.Is(err, natsbridge.ErrSchedule) {
		t.Errorf("a delay beyond MaxAge: %v, want ErrSchedule", err)
	}
	if err := aged.Publish(ctx, e, natsbridge.After(time.Minute)); err != nil {
		t.Errorf("a delay within MaxAge: %v", err)
	}

	b := newBridge(t, srv, natsbridge.Config{})
	if err := b.Publish(ctx, dispatcher.Event{Topic: "_sched.x"}); !errors.Is(err, natsbridge.ErrReservedTopic) {
		t.Errorf("Publish to _sched.x: %v, want ErrReservedTopic", err)
	}
	d, err := dispatcher.New()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{Durable: "s", Topics: []string{"_sched.>"}}); !errors.Is(err, natsbridge.ErrReservedTopic) {
		t.Errorf("Consume _sched.>: %v, want ErrReservedTopic", err)
	}
}
