package dispatcher_test

// A soak of Run: producers, workers, retries, panics and dead letters,
// with every (event, subscriber) pair accounted for.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// The soak subscribers, by index.
const (
	soakOK      = iota // always succeeds
	soakFlaky          // fails by payload: always, on the first call only (a panic), or on the first two
	soakPanicky        // panics on every call for some payloads
	soakSubs
)

var soakNames = [soakSubs]string{"ok", "flaky", "panicky"}

// soakOutcome is what subscriber s does with payload p on call attempt.
// It returns nil, an error, or "panic".
func soakOutcome(s, p, attempt int) (err error, panics bool) {
	switch s {
	case soakFlaky:
		switch {
		case p%7 == 0:
			return fmt.Errorf("flaky: payload %d always fails (attempt %d)", p, attempt), false
		case p%11 == 0:
			return nil, attempt == 1
		case p%13 == 0 && attempt < 3:
			return fmt.Errorf("flaky: payload %d fails on attempt %d", p, attempt), false
		}
	case soakPanicky:
		if p%1009 == 0 {
			return nil, true
		}
	}
	return nil, false
}

// soakExpect is the exact outcome of subscriber s on payload p when no
// retry finds the retry queue full: calls, failures, whether it ends as a
// dead letter.
func soakExpect(s, p int) (calls, failures int, dead bool) {
	for attempt := 1; attempt <= 3; attempt++ {
		err, panics := soakOutcome(s, p, attempt)
		if err == nil && !panics {
			return attempt, attempt - 1, false
		}
	}
	return 3, 3, true
}

// soakSub is one subscriber's own accounting.
type soakSub struct {
	ok       []atomic.Uint32 // successful calls, by payload
	perCall  []atomic.Uint32 // calls, by payload
	calls    atomic.Uint64
	failures atomic.Uint64
	retries  atomic.Uint64 // calls with Attempt > 1
	inflight []atomic.Int32
}

// runSoak runs events events through 8 producers (Block), 4 workers and 3
// subscribers with retries, panics and dead letters, then Shutdown, and
// checks that every (event, subscriber) pair is delivered exactly once or
// dead-lettered exactly once and that Stats agrees with the handlers' own
// counts.
func runSoak(t *testing.T, events int) {
	t.Helper()
	const producers, workers, nkeys = 8, 4, 32
	ctx := context.Background()
	d := newDispatcher(t, dispatcher.WithWorkers(workers), dispatcher.WithCapacity(1024), dispatcher.WithOverflow(dispatcher.Block),
		dispatcher.WithRetry(3, nil), dispatcher.WithDeadLetterLimit(events+1))
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	var concErrs, attemptErrs atomic.Int64
	subs := make([]*soakSub, soakSubs)
	for s := range soakSubs {
		ss := &soakSub{ok: make([]atomic.Uint32, events), perCall: make([]atomic.Uint32, events), inflight: make([]atomic.Int32, nkeys)}
		subs[s] = ss
		subscribe(t, d, "soak.>", func(hctx context.Context, e dispatcher.Event) error {
			p := e.Payload.(int)
			ss.calls.Add(1)
			if n := ss.perCall[p].Add(1); int(n) != e.Attempt {
				attemptErrs.Add(1)
			}
			if e.Attempt > 1 {
				ss.retries.Add(1)
			}
			if e.Key != "" {
				k := &ss.inflight[p%nkeys]
				if k.Add(1) != 1 {
					concErrs.Add(1)
				}
				defer k.Add(-1)
			}
			err, panics := soakOutcome(s, p, e.Attempt)
			if panics {
				ss.failures.Add(1)
				panic(fmt.Sprintf("%s: payload %d, attempt %d", soakNames[s], p, e.Attempt))
			}
			if err != nil {
				ss.failures.Add(1)
				return err
			}
			ss.ok[p].Add(1)
			return nil
		}, dispatcher.WithName(soakNames[s]))
	}

	start := time.Now()
	wait := startRun(t, ctx, d)
	accepted := make([]uint64, producers)
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for pr := range producers {
		topic := fmt.Sprintf("soak.p%d", pr)
		wg.Go(func() {
			for p := pr; p < events; p += producers {
				e := dispatcher.Event{Topic: topic, Payload: p}
				if p%5 == 0 {
					e.Key = keys[p%nkeys]
				}
				if err := d.EmitEvent(ctx, e); err != nil {
					errs[pr] = fmt.Errorf("EmitEvent(payload %d): %w", p, err)
					return
				}
				accepted[pr]++
			}
		})
	}
	wg.Wait()
	emitted := time.Since(start)
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() error = %v", err)
	}
	if err := wait(); err != nil {
		t.Errorf("Run() error = %v", err)
	}
	elapsed := time.Since(start)
	var sumAccepted uint64
	for pr, err := range errs {
		if err != nil {
			t.Errorf("producer %d: %v", pr, err)
		}
		sumAccepted += accepted[pr]
	}
	if sumAccepted != uint64(events) {
		t.Fatalf("%d emits accepted, want %d", sumAccepted, events)
	}

	// Dead letters, by subscriber and payload.
	dls := d.DeadLetters()
	dead := make([][]uint8, soakSubs)
	for s := range dead {
		dead[s] = make([]uint8, events)
	}
	byName := map[string]int{}
	for s, name := range soakNames {
		byName[name] = s
	}
	early := 0 // dead letters made before the budget ran out: the retry queue was full
	badDL := 0
	for _, dl := range dls {
		s, ok := byName[dl.Subscriber]
		p, isInt := dl.Event.Payload.(int)
		if !ok || !isInt || p < 0 || p >= events {
			badDL++
			if badDL <= 5 {
				t.Errorf("dead letter for an unknown subscriber or payload: %+v", dl)
			}
			continue
		}
		dead[s][p]++
		if dl.Attempts != dl.Event.Attempt {
			t.Errorf("dead letter %s/%d: Attempts %d, Event.Attempt %d", dl.Subscriber, p, dl.Attempts, dl.Event.Attempt)
		}
		if dl.Attempts < 3 {
			early++
		}
		_, panics := soakOutcome(s, p, dl.Attempts)
		var pe *dispatcher.PanicError
		if panics != errors.As(dl.Err, &pe) {
			t.Errorf("dead letter %s/%d, attempt %d: Err = %v, want a *PanicError: %v", dl.Subscriber, p, dl.Attempts, dl.Err, panics)
		}
	}

	// Per pair: delivered exactly once, or dead-lettered exactly once.
	var sumOK, sumFail, sumRetry uint64
	for s, ss := range subs {
		var delivered, deadLettered, bad int
		var wantCalls, wantFail, wantDead uint64
		for p := range events {
			ok, dl := ss.ok[p].Load(), dead[s][p]
			delivered += int(ok)
			deadLettered += int(dl)
			if ok+uint32(dl) != 1 {
				bad++
				if bad <= 5 {
					t.Errorf("%s, payload %d: delivered %d times, dead-lettered %d times; want exactly one of them once", soakNames[s], p, ok, dl)
				}
			}
			c, f, dd := soakExpect(s, p)
			wantCalls += uint64(c)
			wantFail += uint64(f)
			if dd {
				wantDead++
			}
			// The pair's own history: a delivered pair was called until
			// its first success; a dead letter was called until its
			// budget ran out (3 calls, all failing) or until a retry found
			// the retry queue full (fewer calls, the last one failing).
			calls := int(ss.perCall[p].Load())
			switch {
			case ok == 1 && (dd || calls != c):
				bad++
				if bad <= 5 {
					t.Errorf("%s, payload %d: delivered after %d calls, want %d calls and no dead letter (always fails: %v)", soakNames[s], p, calls, c, dd)
				}
			case dl == 1 && calls == 3 && !dd:
				bad++
				if bad <= 5 {
					t.Errorf("%s, payload %d: dead letter after 3 calls, but call %d should have succeeded", soakNames[s], p, c)
				}
			case dl == 1 && calls < 3 && calls >= c:
				bad++
				if bad <= 5 {
					t.Errorf("%s, payload %d: dead letter after %d calls, but call %d should have succeeded", soakNames[s], p, calls, c)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d (event, subscriber) pairs not accounted for exactly once", soakNames[s], bad)
		}
		if delivered+deadLettered != events {
			t.Errorf("%s: emitted %d != delivered %d + dead-lettered %d + dropped 0", soakNames[s], events, delivered, deadLettered)
		}
		calls, fails, retries := ss.calls.Load(), ss.failures.Load(), ss.retries.Load()
		if calls != uint64(delivered)+fails {
			t.Errorf("%s: %d calls != %d successes + %d failures", soakNames[s], calls, delivered, fails)
		}
		if early == 0 {
			// No retry found the retry queue full: the counts are exact.
			if calls != wantCalls || fails != wantFail || uint64(deadLettered) != wantDead || retries != wantCalls-uint64(events) {
				t.Errorf("%s: calls %d, failures %d, retries %d, dead letters %d; want %d, %d, %d, %d",
					soakNames[s], calls, fails, retries, deadLettered, wantCalls, wantFail, wantCalls-uint64(events), wantDead)
			}
		}
		sumOK += uint64(delivered)
		sumFail += fails
		sumRetry += retries
		t.Logf("%s: %d calls, %d delivered, %d failures, %d retries, %d dead letters",
			soakNames[s], calls, delivered, fails, retries, deadLettered)
	}
	if early > 0 {
		t.Logf("%d dead letters were made early (retry queue full): exact per-rule counts not checked", early)
	}
	if n := attemptErrs.Load(); n > 0 {
		t.Errorf("%d handler calls had an Event.Attempt different from the pair's call count", n)
	}
	if n := concErrs.Load(); n > 0 {
		t.Errorf("%d times two calls of one subscriber ran at once for one key", n)
	}

	st := d.Stats()
	want := dispatcher.Stats{
		Emitted:      sumAccepted,
		Delivered:    sumOK,
		Failed:       sumFail,
		Retried:      sumRetry,
		DeadLettered: uint64(len(dls)),
		DeadLetters:  len(dls),
	}
	if st != want {
		t.Errorf("Stats() = %+v\nwant      %+v", st, want)
	}
	t.Logf("%d events, %d producers, %d workers: emitted in %v, shut down after %v (%.0f events/s); Stats() %+v",
		events, producers, workers, emitted.Round(time.Millisecond), elapsed.Round(time.Millisecond),
		float64(events)/elapsed.Seconds(), st)
}

// TestRunSoak: a few hundred thousand events (a tenth under -short)
// through the whole runtime. The long version is TestStressSoak, behind the
// stress build tag.
func TestRunSoak(t *testing.T) {
	runSoak(t, sizeFor(200_000, 20_000))
}
