package dispatcher_test

// (*Subscription).Stats, WithHandlerTiming and Histogram.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// sumSubscriptions adds the counters of subs.
func sumSubscriptions(subs []*dispatcher.Subscription) (sum dispatcher.SubscriptionStats) {
	for _, s := range subs {
		st := s.Stats()
		sum.Delivered += st.Delivered
		sum.Failed += st.Failed
		sum.Retried += st.Retried
		sum.DeadLettered += st.DeadLettered
	}
	return sum
}

// checkSubscriptionsAddUp checks that the counters of subs, every
// subscription of d, add up to d's.
func checkSubscriptionsAddUp(t *testing.T, d *dispatcher.Dispatcher, subs []*dispatcher.Subscription) {
	t.Helper()
	st, sum := d.Stats(), sumSubscriptions(subs)
	for _, c := range []struct {
		name      string
		subs, all uint64
	}{
		{"Delivered", sum.Delivered, st.Delivered},
		{"Failed", sum.Failed, st.Failed},
		{"Retried", sum.Retried, st.Retried},
		{"DeadLettered", sum.DeadLettered, st.DeadLettered},
	} {
		if c.subs != c.all {
			t.Errorf("sum of Subscription.Stats().%s = %d, Stats().%s = %d", c.name, c.subs, c.name, c.all)
		}
	}
}

// TestSubscriptionStatsAddUpUnderRun runs producers against four workers
// and subscribers that succeed, fail and retry, panic, and leave in the
// middle, with more subscribers per event than a consumer's tally
// follows; once Shutdown is done, the subscriptions' counters add up to
// the dispatcher's, and each matches what its handler saw.
func TestSubscriptionStatsAddUpUnderRun(t *testing.T) {
	ctx := context.Background()
	const producers = 4
	events := sizeFor(4000, 400)
	d := newDispatcher(t, dispatcher.WithWorkers(4), dispatcher.WithCapacity(64),
		dispatcher.WithRetry(3, nil), dispatcher.WithHandlerTiming())
	type tallyCalls struct {
		sync.Mutex
		ok, failed int
	}
	var subs []*dispatcher.Subscription
	var calls []*tallyCalls
	for i := range 7 {
		c := new(tallyCalls)
		calls = append(calls, c)
		subs = append(subs, subscribe(t, d, "load.>", func(_ context.Context, e dispatcher.Event) error {
			n := e.Payload.(int)
			fail := (i == 1 && e.Attempt == 1 && n%3 == 0) || // retried, then delivered
				(i == 2 && n%5 == 0) || // dead-lettered after 3 calls
				(i == 3 && n%7 == 0 && e.Attempt == 1) // panics once
			c.Lock()
			if fail {
				c.failed++
			} else {
				c.ok++
			}
			c.Unlock()
			switch {
			case fail && i == 3:
				panic("once")
			case fail:
				return errBoom
			}
			return nil
		}, dispatcher.WithName(fmt.Sprintf("s%d", i))))
	}
	wait := startRun(t, ctx, d)
	g := newGoGroup()
	errs := make([]error, producers)
	for p := range producers {
		g.Go(func() {
			for n := p; n < events; n += producers {
				e := dispatcher.Event{Topic: "load.x", Payload: n}
				if n%2 == 0 {
					e.Key = fmt.Sprint(n % 8)
				}
				if err := d.EmitEvent(ctx, e); err != nil {
					errs[p] = err
					return
				}
				if p == 0 && n == events/2 {
					subs[6].Unsubscribe() // counts stay
				}
			}
		})
	}
	g.started()
	recv(t, g.done, "the producers to finish")
	shutdownAfterProducers(t, ctx, d, wait, errs)
	checkSubscriptionsAddUp(t, d, subs)
	for i, s := range subs {
		st := s.Stats()
		c := calls[i]
		if st.Delivered != uint64(c.ok) || st.Failed != uint64(c.failed) {
			t.Errorf("%s: Stats() Delivered %d, Failed %d; handler saw %d successes, %d failures",
				s.Name(), st.Delivered, st.Failed, c.ok, c.failed)
		}
		if got, want := st.Durations.Count(), st.Delivered+st.Failed; got != want {
			t.Errorf("%s: Durations.Count() = %d, want %d (every call)", s.Name(), got, want)
		}
	}
	// Two retries each, unless the retry queue (bounded by the capacity)
	// was full: then the pair became a dead letter sooner.
	if st := subs[2].Stats(); st.DeadLettered == 0 || st.Retried == 0 || st.Retried > 2*st.DeadLettered {
		t.Errorf("s2: DeadLettered %d, Retried %d: want some dead letters, two retries each at most", st.DeadLettered, st.Retried)
	}
	if st := d.Stats(); st.Emitted != uint64(events) {
		t.Errorf("Stats().Emitted = %d, want %d", st.Emitted, events)
	}
}

// TestSubscriptionStatsDrain checks each counter against a known run of
// Drain, and that Stats works after Unsubscribe.
func TestSubscriptionStatsDrain(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithRetry(2, nil))
	ok := subscribe(t, d, "a.*", func(context.Context, dispatcher.Event) error { return nil })
	flaky := subscribe(t, d, "a.*", func(_ context.Context, e dispatcher.Event) error {
		if e.Topic == "a.bad" || e.Attempt == 1 {
			return errBoom
		}
		return nil
	})
	emitTopics(t, d, "a.1", "a.2", "a.bad")
	drainIgnoringFailures(t, d)
	flaky.Unsubscribe()
	for _, tt := range []struct {
		sub  *dispatcher.Subscription
		want dispatcher.SubscriptionStats
	}{
		{ok, dispatcher.SubscriptionStats{Delivered: 3}},
		{flaky, dispatcher.SubscriptionStats{Delivered: 2, Failed: 4, Retried: 3, DeadLettered: 1}},
	} {
		if got := tt.sub.Stats(); got != tt.want {
			t.Errorf("%s.Stats() = %+v, want %+v", tt.sub.Name(), got, tt.want)
		}
	}
	checkSubscriptionsAddUp(t, d, []*dispatcher.Subscription{ok, flaky})
}

// TestSubscriptionStatsAcrossDrainAndRun: the deterministic consumer and
// Run's workers count a subscription's deliveries in different places;
// Stats adds both, before, during and after a Run.
func TestSubscriptionStatsAcrossDrainAndRun(t *testing.T) {
	d := newDispatcher(t, dispatcher.WithWorkers(2))
	sub := subscribe(t, d, "c.>", func(context.Context, dispatcher.Event) error { return nil })
	check := func(when string, want uint64) {
		t.Helper()
		if got := sub.Stats().Delivered; got != want {
			t.Errorf("%s: Stats().Delivered = %d, want %d", when, got, want)
		}
		checkSubscriptionsAddUp(t, d, []*dispatcher.Subscription{sub})
	}
	emitTopics(t, d, "c.1", "c.2", "c.3")
	drain(t, d)
	check("after the first Drain", 3)

	ctx, cancel := context.WithCancel(context.Background())
	wait := startRun(t, ctx, d)
	emitTopics(t, d, "c.4", "c.5", "c.6", "c.7", "c.8")
	if err := d.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	check("after Run", 8)

	emitTopics(t, d, "c.9", "c.10")
	drain(t, d)
	check("after the second Drain", 10)
}

// TestHandlerTiming: under synctest a handler's duration is the fake
// time it waited, exactly.
func TestHandlerTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t, dispatcher.WithHandlerTiming())
		sub := subscribe(t, d, "a.b", func(_ context.Context, e dispatcher.Event) error {
			advanceClock(e.Payload.(time.Duration)) // the handler takes that long, in fake time
			return nil
		})
		untimed := newDispatcher(t)
		usub := subscribe(t, untimed, "a.b", func(context.Context, dispatcher.Event) error { return nil })
		for _, dur := range []time.Duration{time.Millisecond, 3 * time.Millisecond, 3 * time.Millisecond, time.Second} {
			emit(t, d, "a.b", dur)
			emit(t, untimed, "a.b", dur)
		}
		drain(t, d)
		drain(t, untimed)
		h := sub.Stats().Durations
		if h.Count() != 4 || h.Sum != time.Second+7*time.Millisecond || h.Max != time.Second {
			t.Errorf("Durations: Count %d, Sum %v, Max %v; want 4, 1.007s, 1s", h.Count(), h.Sum, h.Max)
		}
		if got := h.Quantile(1); got != time.Second {
			t.Errorf("Quantile(1) = %v, want the max, 1s", got)
		}
		if got := h.Quantile(0.5); got < 2*time.Millisecond || got > 4*time.Millisecond {
			t.Errorf("Quantile(0.5) = %v, want within the bucket of 3ms, (2.1ms, 4.2ms]", got)
		}
		if got := usub.Stats().Durations; got.Count() != 0 {
			t.Errorf("without WithHandlerTiming: Durations.Count() = %d, want 0", got.Count())
		}
	})
}

func TestHistogramBuckets(t *testing.T) {
	for _, tt := range []struct {
		give time.Duration
		want int // bucket
	}{
		{0, 0}, {1, 0}, {1024, 0}, {1025, 1}, {2048, 1}, {2049, 2},
		{time.Millisecond, 10}, {time.Second, 20}, {1 << 40, dispatcher.HistogramBuckets - 2},
		{1<<40 + 1, dispatcher.HistogramBuckets - 1}, {time.Duration(1<<63 - 1), dispatcher.HistogramBuckets - 1},
	} {
		var h dispatcher.Histogram
		h.Counts[tt.want] = 1
		lo := time.Duration(0)
		if tt.want > 0 {
			lo = dispatcher.HistogramBound(tt.want - 1)
		}
		if !(tt.give > lo || tt.give == 0) || tt.give > dispatcher.HistogramBound(tt.want) {
			t.Errorf("%v: not in bucket %d, (%v, %v]", tt.give, tt.want, lo, dispatcher.HistogramBound(tt.want))
		}
	}
	for i := 1; i < dispatcher.HistogramBuckets; i++ {
		if dispatcher.HistogramBound(i) <= dispatcher.HistogramBound(i-1) {
			t.Errorf("HistogramBound(%d) = %v, not above HistogramBound(%d) = %v", i, dispatcher.HistogramBound(i), i-1, dispatcher.HistogramBound(i-1))
		}
	}
}

func TestHistogramQuantile(t *testing.T) {
	var h dispatcher.Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Errorf("empty histogram: Quantile %v, Mean %v, Count %d; want zeros", h.Quantile(0.5), h.Mean(), h.Count())
	}
	// 100 durations in bucket 10 ((512µs, 1.048ms]), Max 1ms.
	h.Counts[10] = 100
	h.Sum = 100 * 900 * time.Microsecond
	h.Max = time.Millisecond
	lo := dispatcher.HistogramBound(9)
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{
		{-1, lo}, {0, lo}, {0.5, lo + (time.Millisecond-lo)/2}, {1, time.Millisecond}, {2, time.Millisecond},
	} {
		if got := h.Quantile(tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := h.Mean(); got != 900*time.Microsecond {
		t.Errorf("Mean() = %v, want 900µs", got)
	}
}

// TestSubscriptionStatsLargeFanoutsOnAlternatingTopics: a fan-out to more
// subscribers than the tally's slots is counted per position in the list
// match returned, and two topics whose lists are built in the same scratch
// memory, of the same length, take turns in one batch. Each subscription
// must get its own count: publishing the counts of one list only after the
// other had been built over it would credit one topic's calls to the other
// topic's subscribers.
func TestSubscriptionStatsLargeFanoutsOnAlternatingTopics(t *testing.T) {
	d := newDispatcher(t)
	var subs []*dispatcher.Subscription
	calls := map[string]int{}
	for _, topic := range []string{"a", "b"} {
		// Three exact patterns and two wildcards: the list is merged in
		// scratch, five long for both topics.
		for i, pattern := range []string{"f." + topic, "f." + topic, "f." + topic, "*." + topic, "*." + topic} {
			name := fmt.Sprintf("%s%d", topic, i)
			subs = append(subs, subscribe(t, d, pattern, func(context.Context, dispatcher.Event) error {
				calls[name]++
				return nil
			}, dispatcher.WithName(name)))
		}
	}
	const rounds = 3
	for range rounds {
		emitTopics(t, d, "f.a", "f.b")
	}
	emit(t, d, "f.a", nil) // "a" gets one more, so the counts differ
	if n := drain(t, d); n != 2*rounds+1 {
		t.Fatalf("Drain processed %d events, want %d", n, 2*rounds+1)
	}
	for _, s := range subs {
		if got, want := s.Stats().Delivered, uint64(calls[s.Name()]); got != want {
			t.Errorf("%s: Stats().Delivered = %d, its handler was called %d times", s.Name(), got, want)
		}
	}
	if calls["a0"] != rounds+1 || calls["b0"] != rounds {
		t.Errorf("calls = %v, want %d per a-subscriber and %d per b-subscriber", calls, rounds+1, rounds)
	}
	checkSubscriptionsAddUp(t, d, subs)
}
