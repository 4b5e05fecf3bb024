package dispatcher_test

// New and its options.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

func TestNewRejectsBadOptionValues(t *testing.T) {
	tests := []struct {
		name string
		give dispatcher.Option
	}{
		{"WithCapacity(0)", dispatcher.WithCapacity(0)},
		{"WithCapacity(-1)", dispatcher.WithCapacity(-1)},
		{"WithCapacity(1<<30+1)", dispatcher.WithCapacity(1<<30 + 1)},
		{"WithWorkers(0)", dispatcher.WithWorkers(0)},
		{"WithWorkers(-1)", dispatcher.WithWorkers(-1)},
		{"WithOverflow(9)", dispatcher.WithOverflow(dispatcher.OverflowPolicy(9))},
		{"WithOverflow(-1)", dispatcher.WithOverflow(dispatcher.OverflowPolicy(-1))},
		{"WithRetry(0,nil)", dispatcher.WithRetry(0, nil)},
		{"WithRetry(-1,nil)", dispatcher.WithRetry(-1, nil)},
		{"WithDeadLetterLimit(0)", dispatcher.WithDeadLetterLimit(0)},
		{"WithDeadLetterLimit(-1)", dispatcher.WithDeadLetterLimit(-1)},
		{"nil option", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := dispatcher.New(tt.give)
			if !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("New(%s) error = %v, want ErrInvalidOption", tt.name, err)
			}
			if d != nil {
				t.Errorf("New(%s) returned a dispatcher with its error", tt.name)
			}
			// A bad option among good ones is still refused.
			_, err = dispatcher.New(dispatcher.WithCapacity(8), tt.give, dispatcher.WithWorkers(1))
			if !errors.Is(err, dispatcher.ErrInvalidOption) {
				t.Errorf("New(good, %s, good) error = %v, want ErrInvalidOption", tt.name, err)
			}
		})
	}
}

func TestNewAcceptsGoodOptionValues(t *testing.T) {
	tests := []struct {
		name string
		give []dispatcher.Option
	}{
		{"no options", nil},
		{"WithCapacity(1)", []dispatcher.Option{dispatcher.WithCapacity(1)}},
		{"WithCapacity(1000)", []dispatcher.Option{dispatcher.WithCapacity(1000)}},
		{"WithWorkers(1)", []dispatcher.Option{dispatcher.WithWorkers(1)}},
		{"WithWorkers(64)", []dispatcher.Option{dispatcher.WithWorkers(64)}},
		{"Block", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.Block)}},
		{"Reject", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.Reject)}},
		{"DropNewest", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.DropNewest)}},
		{"DropOldest", []dispatcher.Option{dispatcher.WithOverflow(dispatcher.DropOldest)}},
		{"WithRetry(1,nil)", []dispatcher.Option{dispatcher.WithRetry(1, nil)}},
		{"WithRetry(5,backoff)", []dispatcher.Option{dispatcher.WithRetry(5, func(int) time.Duration { return 0 })}},
		{"WithDeadLetterLimit(1)", []dispatcher.Option{dispatcher.WithDeadLetterLimit(1)}},
		{"all", []dispatcher.Option{
			dispatcher.WithCapacity(16), dispatcher.WithWorkers(2),
			dispatcher.WithOverflow(dispatcher.Reject), dispatcher.WithRetry(2, nil),
			dispatcher.WithDeadLetterLimit(4),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDispatcher(t, tt.give...)
			var l callLog
			subscribe(t, d, "a", l.handler("h", nil))
			emitTopics(t, d, "a")
			if n := drain(t, d); n != 1 {
				t.Errorf("Drain(0) = %d, want 1", n)
			}
			checkCalls(t, "after Drain", &l, "h:1")
		})
	}
}

func TestWithCapacityRoundsUpToPowerOfTwo(t *testing.T) {
	tests := []struct {
		give int
		want int
	}{
		{give: 1, want: 1},
		{give: 2, want: 2},
		{give: 3, want: 4},
		{give: 4, want: 4},
		{give: 5, want: 8},
		{give: 100, want: 128},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.give), func(t *testing.T) {
			ctx := context.Background()
			// No Close in a cleanup and no Drain until the queue proved
			// to hold want events: a ring that overwrites an unconsumed
			// slot makes both spin forever, and this test must fail, not
			// hang the package.
			d, err := dispatcher.New(dispatcher.WithCapacity(tt.give), dispatcher.WithOverflow(dispatcher.Reject))
			if err != nil {
				t.Fatalf("New(WithCapacity(%d)) error = %v", tt.give, err)
			}
			var l callLog
			subscribe(t, d, "a", l.handler("h", nil))
			for i := range tt.want {
				if err := d.Emit(ctx, "a", i); err != nil {
					t.Fatalf("WithCapacity(%d): Emit #%d error = %v, want nil", tt.give, i+1, err)
				}
			}
			if err := d.Emit(ctx, "a", tt.want); !errors.Is(err, dispatcher.ErrFull) {
				t.Fatalf("WithCapacity(%d): Emit #%d error = %v, want ErrFull (the queue holds %d)", tt.give, tt.want+1, err, tt.want)
			}
			if got := d.Stats().Queued; got != tt.want {
				t.Errorf("WithCapacity(%d): Stats().Queued = %d, want %d", tt.give, got, tt.want)
			}
			if n := drain(t, d); n != tt.want {
				t.Errorf("WithCapacity(%d): Drain(0) = %d, want %d", tt.give, n, tt.want)
			}
			if got := len(l.get()); got != tt.want {
				t.Errorf("WithCapacity(%d): %d handler calls, want %d", tt.give, got, tt.want)
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close() error = %v", err)
			}
		})
	}
}

// TestOptionBounds: WithCapacity and WithWorkers have upper bounds
// (2^24 events at most, 4096 workers) and New rejects values beyond them
// with an error wrapping ErrInvalidOption that names the option. A
// rejected value is followed by another bad option, which makes a New that
// wrongly accepts the first fail on the second instead of allocating, say,
// a ring of 2^30 slots: the test then sees an error that names the wrong
// option.
func TestOptionBounds(t *testing.T) {
	stop := dispatcher.WithDeadLetterLimit(0) // invalid
	tests := []struct {
		name   string
		give   dispatcher.Option
		option string // named by the error; "" when the value is accepted
	}{
		{"WithCapacity(1<<20)", dispatcher.WithCapacity(1 << 20), ""},
		{"WithCapacity(1<<25)", dispatcher.WithCapacity(1 << 25), "WithCapacity"},
		{"WithCapacity(1<<30)", dispatcher.WithCapacity(1 << 30), "WithCapacity"},
		{"WithWorkers(4096)", dispatcher.WithWorkers(4096), ""},
		{"WithWorkers(100000)", dispatcher.WithWorkers(100000), "WithWorkers"},
		{"WithWorkers(1<<30)", dispatcher.WithWorkers(1 << 30), "WithWorkers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.option == "" {
				d, err := dispatcher.New(tt.give)
				if err != nil {
					t.Fatalf("New(%s) error = %v, want nil", tt.name, err)
				}
				_ = d.Close()
				return
			}
			var err error
			if p := panicValue(func() { _, err = dispatcher.New(tt.give, stop) }); p != nil {
				t.Fatalf("New(%s, ...) panicked: %v", tt.name, p)
			}
			if !errors.Is(err, dispatcher.ErrInvalidOption) || !strings.Contains(fmt.Sprint(err), tt.option) {
				t.Errorf("New(%s, WithDeadLetterLimit(0)) error = %v, want ErrInvalidOption for %s", tt.name, err, tt.option)
			}
		})
	}
}
