package natsbridge_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// The benchmarks compare the bridge with raw nats.go JetStream doing the
// same work on the same embedded server in the same run: encode the
// payload as JSON, publish it with a Nats-Msg-Id on the same subject and
// wait for the stream's ack (Publish); publish asynchronously, consume
// with a durable pull consumer, decode and acknowledge every message
// (RoundTrip). See BENCHMARKS.md.

// benchServer is an embedded server and a bridge on it, for one
// sub-benchmark.
func benchServer(b *testing.B) (*natsbridge.Embedded, *natsbridge.Bridge) {
	srv := startServer(b, "")
	br := newBridge(b, srv, natsbridge.Config{})
	return srv, br
}

// rawMsg is what raw nats.go sends for o with key: the message the
// bridge would build, by hand.
func rawMsg(b *testing.B, o order, key string) *nats.Msg {
	data, err := json.Marshal(o)
	if err != nil {
		b.Fatal(err)
	}
	m := &nats.Msg{Subject: "ringbus.bench.run", Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
	m.Header.Set(natsbridge.HeaderKey, key)
	return m
}

func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=bridge", func(b *testing.B) {
		_, br := benchServer(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e := dispatcher.Event{Topic: "bench.run", Key: "k", Payload: order{N: i, Key: "k"}}
			if err := br.Publish(ctx, e); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("impl=raw", func(b *testing.B) {
		_, br := benchServer(b)
		js := br.JetStream()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := js.PublishMsg(ctx, rawMsg(b, order{N: i, Key: "k"}, "k")); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// The round trips use b.N, not b.Loop: each iteration only starts an
// event on its way, and the time that counts ends when the last one was
// consumed and acknowledged, after the loop.
func BenchmarkRoundTrip(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=bridge", func(b *testing.B) {
		_, br := benchServer(b)
		d := runDispatcher(b, dispatcher.WithWorkers(2))
		var got atomic.Int64
		done := make(chan struct{})
		want := int64(b.N)
		if _, err := d.On(">", dispatcher.Handle(func(_ context.Context, o order) error {
			if got.Add(1) == want {
				close(done)
			}
			return nil
		})); err != nil {
			b.Fatal(err)
		}
		c, err := br.Consume(ctx, d, natsbridge.ConsumerConfig{
			Durable: "bench",
			Bind:    []natsbridge.Binding{natsbridge.Bind[order](">")},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			e := dispatcher.Event{Topic: "bench.run", Key: "k" + strconv.Itoa(i%8), Payload: order{N: i}}
			if _, err := br.PublishAsync(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		b.StopTimer()
		if err := c.Stop(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("impl=raw", func(b *testing.B) {
		srv, br := benchServer(b)
		js, err := jetstream.New(srv.Conn(), jetstream.WithPublishAsyncMaxPending(natsbridge.DefaultMaxPending))
		if err != nil {
			b.Fatal(err)
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, br.Stream(), jetstream.ConsumerConfig{
			Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "ringbus.>",
		})
		if err != nil {
			b.Fatal(err)
		}
		var got atomic.Int64
		done := make(chan struct{})
		want := int64(b.N)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			var o order
			if err := json.Unmarshal(m.Data(), &o); err != nil {
				panic(err)
			}
			if m.Ack() == nil && got.Add(1) == want {
				close(done)
			}
		}, jetstream.PullMaxMessages(dispatcher.DefaultCapacity))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := js.PublishMsgAsync(rawMsg(b, order{N: i}, "k"+strconv.Itoa(i%8))); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		b.StopTimer()
		cc.Drain()
		<-cc.Closed()
	})
}

// BenchmarkPublishDelay compares, in one run, Publish of an event with
// no delay and of one delayed by an hour (its schedule stored; it does
// not fire during the benchmark).
func BenchmarkPublishDelay(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		opts []natsbridge.PublishOption
	}{
		{"delay=none", nil},
		{"delay=1h", []natsbridge.PublishOption{natsbridge.After(time.Hour)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			_, br := benchServer(b)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				e := dispatcher.Event{Topic: "bench.run", Key: "k", Payload: order{N: i, Key: "k"}}
				if err := br.Publish(ctx, e, bc.opts...); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
