package dispatcher_test

// What the observing options cost on the paths every event takes.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
)

// benchObserveOptions are the configurations BenchmarkObserve compares:
// none; a logger and an observer, which see nothing while every call
// succeeds; handler timing; a propagator whose value the emitters' ctx
// does not hold (obs=prop-unused) and one it holds (obs=prop-carried: a
// tracker per event, an Inject per call).
var benchObserveOptions = []struct {
	name string
	opts []dispatcher.Option
}{
	{"none", nil},
	{"logger", []dispatcher.Option{dispatcher.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}},
	{"observer", []dispatcher.Option{dispatcher.WithObserver(dispatcher.Observer{
		HandlerFailed: func(context.Context, dispatcher.Failure) {},
		DeadLettered:  func(context.Context, dispatcher.DeadLetter) {},
		Dropped:       func(context.Context, dispatcher.Drop) {},
	})}},
	{"timing", []dispatcher.Option{dispatcher.WithHandlerTiming()}},
	{"prop-unused", []dispatcher.Option{dispatcher.WithPropagator(benchProp{})}},
	{"prop-carried", []dispatcher.Option{dispatcher.WithPropagator(benchProp{})}},
}

type benchPropKey struct{}

// benchProp carries the value under benchPropKey; Inject returns ctx as it
// is, so that what is measured is the dispatcher's part.
type benchProp struct{}

func (benchProp) Extract(ctx context.Context) any                   { return ctx.Value(benchPropKey{}) }
func (benchProp) Inject(ctx context.Context, _ any) context.Context { return ctx }

// BenchmarkObserve: one op is one event emitted and delivered to one
// subscriber, by Emit and Drain in batches of 64 (mode=drain), or under
// Run with two workers as BenchmarkThroughput with one producer
// (mode=run), for each configuration of benchObserveOptions.
func BenchmarkObserve(b *testing.B) {
	const batch = 64
	p := new(benchPayload)
	for _, tt := range benchObserveOptions {
		ctx := context.Background()
		if tt.name == "prop-carried" {
			ctx = context.WithValue(ctx, benchPropKey{}, "trace")
		}
		b.Run(fmt.Sprintf("mode=drain/obs=%s", tt.name), func(b *testing.B) {
			d := newDispatcher(b, append([]dispatcher.Option{dispatcher.WithCapacity(batch)}, tt.opts...)...)
			subscribe(b, d, benchTopic, func(context.Context, dispatcher.Event) error { return nil })
			benchEmitDrainBatches(b, d, batch, func() error { return d.Emit(ctx, benchTopic, p) })
		})
		b.Run(fmt.Sprintf("mode=run/obs=%s", tt.name), func(b *testing.B) {
			benchThroughputCtx(b, ctx, startBenchRunningWith(tt.opts...), 1, 1)
		})
	}
}
