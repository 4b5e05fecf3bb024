package dispatcher

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	d, err := New(WithCapacity(4))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	d.On("run.finished", func(ctx context.Context, e Event) error { got = append(got, "a"); return nil })
	d.On("run.*", func(ctx context.Context, e Event) error { got = append(got, "b"); return errors.New("boom") })
	d.Emit(ctx, "run.finished", 1)
	if len(got) != 0 {
		t.Fatal("ran")
	}
	n, err := d.Drain(ctx, 0)
	t.Log(n, err, got, d.Stats(), d.DeadLetters())
}

func TestSmokeRun(t *testing.T) {
	ctx := context.Background()
	d, _ := New(WithCapacity(64), WithWorkers(2))
	var cnt atomic.Int64
	d.On("x", func(ctx context.Context, e Event) error { cnt.Add(1); return nil })
	errc := make(chan error)
	go func() { errc <- d.Run(ctx) }()
	for i := 0; i < 10000; i++ {
		if err := d.EmitEvent(ctx, Event{Topic: "x", Key: []string{"", "k1", "k2"}[i%3]}); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Log(cnt.Load(), d.Stats())
}
