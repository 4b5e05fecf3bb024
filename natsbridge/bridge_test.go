package natsbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// handled collects what a consumer's handler got, in the order of the
// calls.
type handled struct {
	mu  sync.Mutex
	got []order
	ch  chan order // every call, unbuffered readers wait on it
}

func newHandled(n int) *handled { return &handled{ch: make(chan order, n)} }

func (h *handled) handler() dispatcher.Handler {
	return dispatcher.Handle(func(_ context.Context, o order) error {
		h.mu.Lock()
		h.got = append(h.got, o)
		h.mu.Unlock()
		h.ch <- o
		return nil
	})
}

// wait reads n calls.
func (h *handled) wait(n int) []order {
	out := make([]order, 0, n)
	for range n {
		out = append(out, <-h.ch)
	}
	return out
}

func TestDeliveryBetweenTwoDispatchers(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{})
	// The producing dispatcher forwards orders.> to the stream.
	prod := runDispatcher(t)
	if _, err := b.Forward(prod, "orders.>"); err != nil {
		t.Fatal(err)
	}
	// The consuming dispatcher, in the same process here, through its own
	// connection, as another process would.
	nc2, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	b2, err := natsbridge.New(context.Background(), nc2, natsbridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close(context.Background())
	cons := runDispatcher(t, dispatcher.WithWorkers(4))
	h := newHandled(300)
	if _, err := cons.On("orders.*", h.handler()); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Consume(context.Background(), cons, natsbridge.ConsumerConfig{
		Durable: "workers",
		Topics:  []string{"orders.>"},
		Bind:    []natsbridge.Binding{natsbridge.Bind[order]("orders.>")},
	}); err != nil {
		t.Fatal(err)
	}
	const perKey = 100
	for n := range perKey {
		for _, key := range []string{"a", "b"} {
			if err := prod.EmitEvent(context.Background(), dispatcher.Event{Topic: "orders.placed", Key: key, Payload: order{N: n, Key: key}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publishN(t, b, "orders.paid", "c", 0, perKey) // the durable path, same key order
	got := h.wait(3 * perKey)
	next := map[string]int{}
	for _, o := range got {
		if o.N != next[o.Key] {
			t.Fatalf("key %s: got order %d, want %d (per-key order)", o.Key, o.N, next[o.Key])
		}
		next[o.Key]++
	}
	for _, k := range []string{"a", "b", "c"} {
		if next[k] != perKey {
			t.Errorf("key %s: %d orders, want %d", k, next[k], perKey)
		}
	}
}

func TestPublishHeadersAndDedupe(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{Prefix: "app", Stream: "APP"})
	ctx := context.Background()
	e := dispatcher.Event{Topic: "orders.placed", Key: "k1", Payload: order{N: 7}}
	for range 2 { // the same id twice: stored once
		if err := b.Publish(ctx, e, natsbridge.MsgID("id-7")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.JetStream().Stream(ctx, "APP")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "app.orders.placed" {
		t.Errorf("Subject = %q, want app.orders.placed", m.Subject)
	}
	for k, want := range map[string]string{jetstream.MsgIDHeader: "id-7", natsbridge.HeaderKey: "k1", natsbridge.HeaderContentType: "application/json"} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	var o order
	if err := json.Unmarshal(m.Data, &o); err != nil || o.N != 7 {
		t.Errorf("data %s: %v, %+v", m.Data, err, o)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1 (Nats-Msg-Id deduplicates)", info.State.Msgs)
	}
	for _, give := range []string{"", "a..b", "dlq.x", "a.*"} {
		err := b.Publish(ctx, dispatcher.Event{Topic: give})
		if !errors.Is(err, dispatcher.ErrBadTopic) && !errors.Is(err, natsbridge.ErrReservedTopic) {
			t.Errorf("Publish(%q) = %v, want ErrBadTopic or ErrReservedTopic", give, err)
		}
	}
}

func TestPublishAsync(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{MaxPending: 8})
	ctx := context.Background()
	const n = 500
	acks := make([]*natsbridge.AsyncAck, 0, n)
	for i := range n {
		a, err := b.PublishAsync(ctx, dispatcher.Event{Topic: "jobs.run", Payload: order{N: i}})
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}
	for i, a := range acks {
		if err := a.Wait(ctx); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	info, err := b.JetStream().Stream(ctx, natsbridge.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != n {
		t.Errorf("stream holds %d messages, want %d", got, n)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PublishAsync(ctx, dispatcher.Event{Topic: "jobs.run"}); !errors.Is(err, natsbridge.ErrClosed) {
		t.Errorf("PublishAsync after Close = %v, want ErrClosed", err)
	}
}

func TestFailureThenRedelivery(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{})
	d := runDispatcher(t)
	var mu sync.Mutex
	calls := map[int]int{}
	done := make(chan int, 20)
	if _, err := d.On("jobs.>", dispatcher.Handle(func(_ context.Context, o order) error {
		mu.Lock()
		calls[o.N]++
		c := calls[o.N]
		mu.Unlock()
		if c == 1 {
			return fmt.Errorf("first call of %d fails", o.N)
		}
		done <- o.N
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	c, err := b.Consume(context.Background(), d, natsbridge.ConsumerConfig{
		Durable: "retry",
		Bind:    []natsbridge.Binding{natsbridge.Bind[order](">")},
		Backoff: func(int) time.Duration { return time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "jobs.run", "", 0, 10)
	for range 10 {
		<-done
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for n := range 10 {
		if calls[n] != 2 {
			t.Errorf("order %d: %d calls, want 2", n, calls[n])
		}
	}
	info := ackedUpTo(t, b, "retry", 10)
	if info.AckFloor.Stream != 10 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: ack floor %d, %d pending, %d redelivered; want 10, 0, 0",
			info.AckFloor.Stream, info.NumAckPending, info.NumRedelivered)
	}
}

func TestPoisonToDeadLetterSubject(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{})
	d := runDispatcher(t)
	var calls atomic.Int32
	if _, err := d.On("jobs.>", dispatcher.Handle(func(_ context.Context, o order) error {
		calls.Add(1)
		return errors.New("poison")
	})); err != nil {
		t.Fatal(err)
	}
	dead := make(chan natsbridge.DeadLetter, 2)
	if _, err := d.On("dlq.>", dispatcher.Handle(func(_ context.Context, dl natsbridge.DeadLetter) error {
		dead <- dl
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{
		Durable:    "jobs",
		Topics:     []string{"jobs.>"},
		Bind:       []natsbridge.Binding{natsbridge.Bind[order]("jobs.>")},
		MaxDeliver: 3,
		Backoff:    func(int) time.Duration { return time.Millisecond },
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{Durable: "dead", Topics: []string{"dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "jobs.run", "k", 1, 2)
	// A payload that does not decode into order: dead at once.
	if err := b.Publish(ctx, dispatcher.Event{Topic: "jobs.bad", Payload: "not an order"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]natsbridge.DeadLetter{}
	for range 2 {
		dl := <-dead
		got[dl.Topic] = dl
	}
	run, bad := got["jobs.run"], got["jobs.bad"]
	if run.Consumer != "jobs" || run.Deliveries != 3 || run.Err == "" || run.Key != "k" {
		t.Errorf("dead letter of jobs.run = %+v, want consumer jobs, 3 deliveries, an error, key k", run)
	}
	var o order
	if err := json.Unmarshal(run.Data, &o); err != nil || o.N != 1 {
		t.Errorf("dead letter data %s: %v", run.Data, err)
	}
	if bad.Deliveries != 1 || bad.Err == "" {
		t.Errorf("dead letter of jobs.bad = %+v, want 1 delivery and a decode error", bad)
	}
	if c := calls.Load(); c != 3 {
		t.Errorf("handler called %d times, want 3 (MaxDeliver)", c)
	}
	// The dead letter is in the stream under <prefix>.dlq.<consumer>.
	st, err := b.JetStream().Stream(ctx, natsbridge.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "ringbus.dlq.jobs")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(natsbridge.HeaderError) == "" {
		t.Errorf("dead letter without %s header: %v", natsbridge.HeaderError, m.Header)
	}
}

func TestFlowControl(t *testing.T) {
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{})
	const capacity = 8
	d := runDispatcher(t, dispatcher.WithCapacity(capacity), dispatcher.WithWorkers(2))
	gate := make(chan struct{})
	var handledN atomic.Int32
	if _, err := d.On(">", dispatcher.Handle(func(_ context.Context, o order) error {
		<-gate
		handledN.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "jobs.run", "", 0, 50)
	ctx := context.Background()
	c, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{
		Durable:     "slow",
		MaxInFlight: capacity,
		Bind:        []natsbridge.Binding{natsbridge.Bind[order](">")},
	})
	if err != nil {
		t.Fatal(err)
	}
	js := b.JetStream()
	// Wait until the consumer holds all it may, then check it holds no more.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for c.InFlight() < capacity {
		<-tick.C
	}
	ci, err := js.Consumer(ctx, natsbridge.DefaultStream, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if p := ci.CachedInfo().NumAckPending; p > capacity || c.InFlight() > capacity {
		t.Errorf("%d messages pending ack, %d in flight; want at most %d", p, c.InFlight(), capacity)
	}
	if st := d.Stats(); st.Queued+st.Retrying > capacity {
		t.Errorf("dispatcher holds %d events, want at most %d", st.Queued, capacity)
	}
	close(gate)
	for handledN.Load() < 50 {
		<-tick.C
	}
}

func TestDedupeWindow(t *testing.T) {
	w := natsbridge.NewWindow(2)
	for _, give := range []struct {
		id   string
		want bool
	}{{"a", true}, {"b", true}, {"a", false}, {"c", true}, {"a", true}} {
		if got := w.Add(give.id); got != give.want {
			t.Errorf("Add(%q) = %v, want %v", give.id, got, give.want)
		}
	}
	if w.Len() != 2 || w.Contains("b") || !w.Contains("c") {
		t.Errorf("window holds %d ids, b %v, c %v; want 2, false, true", w.Len(), w.Contains("b"), w.Contains("c"))
	}

	// Through a consumer: an id the window holds is acknowledged and not
	// delivered.
	srv := startServer(t, "")
	b := newBridge(t, srv, natsbridge.Config{})
	d := runDispatcher(t)
	h := newHandled(2)
	if _, err := d.On(">", h.handler()); err != nil {
		t.Fatal(err)
	}
	win := natsbridge.NewWindow(16)
	win.Add("seen")
	ctx := context.Background()
	for i, id := range []string{"seen", "new"} {
		if err := b.Publish(ctx, dispatcher.Event{Topic: "jobs.run", Payload: order{N: i}}, natsbridge.MsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{Durable: "dd", Dedupe: win, Bind: []natsbridge.Binding{natsbridge.Bind[order](">")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.wait(1); got[0].N != 1 {
		t.Errorf("handled order %d, want 1 (0's id was seen)", got[0].N)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if f := ackedUpTo(t, b, "dd", 2).AckFloor.Stream; f != 2 { // the skipped message is acknowledged too
		t.Errorf("ack floor %d, want 2", f)
	}
	if !win.Contains("new") {
		t.Error("the window did not record the handled id")
	}
}

func TestInvalidOptions(t *testing.T) {
	ctx := context.Background()
	if _, err := natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{}); !errors.Is(err, natsbridge.ErrInvalidOption) {
		t.Errorf("StartEmbedded without Dir = %v, want ErrInvalidOption", err)
	}
	srv := startServer(t, "")
	for _, give := range []natsbridge.Config{{Stream: "a.b"}, {Prefix: "a b"}, {Replicas: 9}, {MaxPending: -1}} {
		if _, err := natsbridge.New(ctx, srv.Conn(), give); !errors.Is(err, natsbridge.ErrInvalidOption) {
			t.Errorf("New(%+v) = %v, want ErrInvalidOption", give, err)
		}
	}
	b := newBridge(t, srv, natsbridge.Config{})
	d, _ := dispatcher.New()
	for _, give := range []natsbridge.ConsumerConfig{{}, {Durable: "a.b"}, {Durable: "x", MaxInFlight: -1}} {
		if _, err := b.Consume(ctx, d, give); !errors.Is(err, natsbridge.ErrInvalidOption) {
			t.Errorf("Consume(%+v) = %v, want ErrInvalidOption", give, err)
		}
	}
	if _, err := b.Consume(ctx, d, natsbridge.ConsumerConfig{Durable: "x", Topics: []string{"a.#"}}); !errors.Is(err, dispatcher.ErrBadTopic) {
		t.Errorf("Consume with a bad topic = %v, want ErrBadTopic", err)
	}
}
