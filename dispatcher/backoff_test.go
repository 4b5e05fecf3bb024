package dispatcher_test

// The backoff helpers: their delays, their bounds, and retries that follow
// them on synctest's fake clock.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// A Backoff is what WithRetry takes.
var _ func(int) time.Duration = dispatcher.Backoff(nil)

func TestConstantBackoff(t *testing.T) {
	tests := []struct {
		give    time.Duration
		attempt int
		want    time.Duration
	}{
		{time.Second, 1, time.Second},
		{time.Second, 2, time.Second},
		{time.Second, 100, time.Second},
		{time.Second, 0, time.Second},
		{0, 1, 0},
		{math.MaxInt64, math.MaxInt, math.MaxInt64},
	}
	for _, tt := range tests {
		if got := dispatcher.ConstantBackoff(tt.give)(tt.attempt); got != tt.want {
			t.Errorf("ConstantBackoff(%v)(%d) = %v, want %v", tt.give, tt.attempt, got, tt.want)
		}
	}
}

func TestExponentialBackoff(t *testing.T) {
	const maxDuration = time.Duration(math.MaxInt64)
	tests := []struct {
		initial, max time.Duration
		attempt      int
		want         time.Duration
	}{
		{time.Second, time.Minute, 1, time.Second},
		{time.Second, time.Minute, 2, 2 * time.Second},
		{time.Second, time.Minute, 3, 4 * time.Second},
		{time.Second, time.Minute, 6, 32 * time.Second},
		{time.Second, time.Minute, 7, time.Minute}, // 64s, capped
		{time.Second, time.Minute, 8, time.Minute},
		{time.Second, 4 * time.Second, 3, 4 * time.Second}, // exactly the cap
		{time.Second, 5 * time.Second, 3, 4 * time.Second},
		{time.Second, 5 * time.Second, 4, 5 * time.Second},
		{time.Second, time.Second, 1, time.Second}, // initial == max: constant
		{time.Second, time.Second, 5, time.Second},
		{time.Second, time.Minute, 0, time.Second}, // below 1 counts as 1
		{time.Second, time.Minute, -3, time.Second},
		// No overflow, however large the attempt.
		{time.Second, time.Minute, 63, time.Minute},
		{time.Second, time.Minute, 64, time.Minute},
		{time.Second, time.Minute, 100, time.Minute},
		{time.Second, time.Minute, math.MaxInt, time.Minute},
		{1, maxDuration, 63, 1 << 62}, // the largest power of two below the cap
		{1, maxDuration, 64, maxDuration},
		{3, maxDuration, 62, 3 << 61},
		{3, maxDuration, 63, maxDuration},
		{time.Second, maxDuration, 100, maxDuration},
	}
	for _, tt := range tests {
		if got := dispatcher.ExponentialBackoff(tt.initial, tt.max)(tt.attempt); got != tt.want {
			t.Errorf("ExponentialBackoff(%v, %v)(%d) = %v, want %v", tt.initial, tt.max, tt.attempt, got, tt.want)
		}
	}
}

func TestBackoffWithJitterBounds(t *testing.T) {
	samples := 10000
	if testing.Short() {
		samples = 1000
	}
	tests := []struct {
		name     string
		b        dispatcher.Backoff
		fraction float64
		attempt  int
		lo, hi   time.Duration // every delay is in [lo, hi]
	}{
		{"exponential/1", dispatcher.ExponentialBackoff(time.Second, 8*time.Second), 0.25, 1, 750 * time.Millisecond, 1250 * time.Millisecond},
		{"exponential/3", dispatcher.ExponentialBackoff(time.Second, 8*time.Second), 0.25, 3, 3 * time.Second, 5 * time.Second},
		{"exponential/capped", dispatcher.ExponentialBackoff(time.Second, 8*time.Second), 0.25, 100, 6 * time.Second, 10 * time.Second},
		{"constant/full", dispatcher.ConstantBackoff(time.Second), 1, 1, 0, 2 * time.Second},
		{"constant/small", dispatcher.ConstantBackoff(time.Second), 0.01, 1, 990 * time.Millisecond, 1010 * time.Millisecond},
		{"saturates", dispatcher.ConstantBackoff(math.MaxInt64), 1, 1, 0, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b.WithJitter(tt.fraction)
			lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
			for range samples {
				d := b(tt.attempt)
				if d < tt.lo || d > tt.hi {
					t.Fatalf("WithJitter(%v)(%d) = %v, want it in [%v, %v]", tt.fraction, tt.attempt, d, tt.lo, tt.hi)
				}
				lo, hi = min(lo, d), max(hi, d)
			}
			// The delays spread over the range: with this many samples,
			// none in the lowest or the highest tenth of it has a
			// probability below 1e-45.
			tenth := (tt.hi - tt.lo) / 10
			if lo > tt.lo+tenth || hi < tt.hi-tenth {
				t.Errorf("WithJitter(%v)(%d) ranged over [%v, %v] in %d samples, want close to [%v, %v]",
					tt.fraction, tt.attempt, lo, hi, samples, tt.lo, tt.hi)
			}
		})
	}
}

func TestBackoffWithJitterKeepsDelaysOfZeroOrLess(t *testing.T) {
	for _, give := range []time.Duration{0, -time.Second} {
		b := dispatcher.Backoff(func(int) time.Duration { return give }).WithJitter(1)
		if got := b(1); got != give {
			t.Errorf("WithJitter(1) of a delay of %v = %v, want it unchanged", give, got)
		}
	}
}

func TestBackoffWithJitterZeroIsTheSameBackoff(t *testing.T) {
	b := dispatcher.ExponentialBackoff(time.Second, time.Minute)
	j := b.WithJitter(0)
	for attempt := range 10 {
		if got, want := j(attempt), b(attempt); got != want {
			t.Errorf("WithJitter(0)(%d) = %v, want %v", attempt, got, want)
		}
	}
}

func TestBackoffBadValuesPanic(t *testing.T) {
	tests := []struct {
		name string
		give func()
		want string
	}{
		{"ConstantBackoff(-1s)", func() { dispatcher.ConstantBackoff(-time.Second) },
			"dispatcher: ConstantBackoff(-1s): want a delay of 0 or more"},
		{"ExponentialBackoff(0, 1s)", func() { dispatcher.ExponentialBackoff(0, time.Second) },
			"dispatcher: ExponentialBackoff(0s, 1s): want 0 < initial <= max"},
		{"ExponentialBackoff(-1s, 1s)", func() { dispatcher.ExponentialBackoff(-time.Second, time.Second) },
			"dispatcher: ExponentialBackoff(-1s, 1s): want 0 < initial <= max"},
		{"ExponentialBackoff(2s, 1s)", func() { dispatcher.ExponentialBackoff(2*time.Second, time.Second) },
			"dispatcher: ExponentialBackoff(2s, 1s): want 0 < initial <= max"},
		{"WithJitter(-0.1)", func() { dispatcher.ConstantBackoff(time.Second).WithJitter(-0.1) },
			"dispatcher: WithJitter(-0.1): want a fraction in [0, 1]"},
		{"WithJitter(1.5)", func() { dispatcher.ConstantBackoff(time.Second).WithJitter(1.5) },
			"dispatcher: WithJitter(1.5): want a fraction in [0, 1]"},
		{"WithJitter(NaN)", func() { dispatcher.ConstantBackoff(time.Second).WithJitter(math.NaN()) },
			"dispatcher: WithJitter(NaN): want a fraction in [0, 1]"},
		{"nil WithJitter", func() { dispatcher.Backoff(nil).WithJitter(0.5) },
			"dispatcher: WithJitter on a nil Backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg := fmt.Sprint(r); r == nil || !strings.Contains(msg, tt.want) {
					t.Errorf("%s panicked with %v, want %q", tt.name, r, tt.want)
				}
			}()
			tt.give()
		})
	}
}

// TestRetryFollowsExponentialBackoff: with WithRetry(4,
// ExponentialBackoff(1s, 4s)), a handler that keeps failing is called at
// 0s, then retried 1s, 2s and 4s after each failure, not a nanosecond
// earlier; then it is a dead letter.
func TestRetryFollowsExponentialBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		fail := errors.New("fail")
		d := newDispatcher(t, dispatcher.WithRetry(4, dispatcher.ExponentialBackoff(time.Second, 4*time.Second)))
		calls := timedCalls{start: time.Now()}
		subscribe(t, d, "t", func(_ context.Context, e dispatcher.Event) error {
			calls.record(e)
			return fail
		})
		emit(t, d, "t", nil)
		if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
			t.Fatalf("Drain(0) at 0s = %d, %v, want 1, nil", n, err)
		}
		for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
			attempt := i + 2
			advanceClock(wait - 1)
			if n, err := d.Drain(ctx, 0); n != 0 || err != nil {
				t.Errorf("Drain(0) 1ns before retry %d is due = %d, %v, want 0, nil", attempt, n, err)
			}
			advanceClock(1)
			n, err := d.Drain(ctx, 0)
			if last := attempt == 4; n != 1 || (err != nil) != last || (last && !errors.Is(err, fail)) {
				t.Errorf("Drain(0) when retry %d is due = %d, %v, want 1 and, on the last, the handler's error", attempt, n, err)
			}
		}
		checkCalls(t, "calls at fake times", &calls.log, "1#1@0s", "1#2@1s", "1#3@3s", "1#4@7s")
		if st := d.Stats(); st.Failed != 4 || st.Retried != 3 || st.DeadLettered != 1 || st.Retrying != 0 {
			t.Errorf("Stats() = %+v, want Failed 4, Retried 3, DeadLettered 1, nothing retrying", st)
		}
	})
}

// TestRetryWithJitterWithinBounds is how the doc of WithJitter says to test
// a jittered backoff: the retry is not due before the shortest delay, and
// is due at the longest.
func TestRetryWithJitterWithinBounds(t *testing.T) {
	for range 20 { // 20 draws of the jitter
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			b := dispatcher.ConstantBackoff(time.Second).WithJitter(0.5) // 0.5s to 1.5s
			d := newDispatcher(t, dispatcher.WithRetry(2, b))
			var calls timedCalls
			calls.start = time.Now()
			subscribe(t, d, "t", calls.failingFirstCall())
			emit(t, d, "t", nil)
			if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
				t.Fatalf("Drain(0) at 0s = %d, %v, want 1, nil", n, err)
			}
			advanceClock(500*time.Millisecond - 1)
			if n, _ := d.Drain(ctx, 0); n != 0 {
				t.Errorf("Drain(0) before the shortest delay = %d, want 0", n)
			}
			advanceClock(time.Second + 1) // at 1.5s, the longest
			if n, err := d.Drain(ctx, 0); n != 1 || err != nil {
				t.Errorf("Drain(0) at the longest delay = %d, %v, want 1, nil", n, err)
			}
			if st := d.Stats(); st.Delivered != 1 || st.Retried != 1 {
				t.Errorf("Stats() = %+v, want Delivered 1, Retried 1", st)
			}
		})
	}
}
