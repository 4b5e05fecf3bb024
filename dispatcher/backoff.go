package dispatcher

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff says how long to wait before a retry: after call number attempt
// (1 for the first call) failed, the next call is due Backoff(attempt)
// later. A delay of zero or less retries at once under Run, or at the next
// Tick or Drain. A Backoff is a func(int) time.Duration, so it is what
// WithRetry takes, and any function of that shape converts to one:
//
//	dispatcher.WithRetry(5, dispatcher.ExponentialBackoff(100*time.Millisecond, 10*time.Second).WithJitter(0.2))
//	dispatcher.WithRetry(3, dispatcher.Backoff(myDelay).WithJitter(0.1))
//
// The dispatcher calls it on the goroutine that saw the failure, possibly
// from several goroutines at once, and waits the delay with the time
// package (timers, never a sleep), so tests run retries on the fake clock
// of testing/synctest. A Backoff that panics fails the pair as a dead
// letter, with the panic in its error.
//
// The constructors panic when given values that make no sense (a negative
// delay, a cap below the first delay, a jitter fraction outside [0, 1]):
// such values are programming errors, fixed where the policy is written,
// not conditions to handle at run time, and they are caught the first time
// the code runs, as regexp.MustCompile catches a bad pattern.
type Backoff func(attempt int) time.Duration

// ConstantBackoff waits d before every retry. d must not be negative;
// ConstantBackoff(0) retries at once under Run, and at the next Tick or
// Drain.
func ConstantBackoff(d time.Duration) Backoff {
	if d < 0 {
		panic(fmt.Sprintf("dispatcher: ConstantBackoff(%v): want a delay of 0 or more", d))
	}
	return func(int) time.Duration { return d }
}

// ExponentialBackoff doubles the delay after each failed call, from
// initial up to max: the retry after call number attempt waits
// initial * 2^(attempt-1), or max when that is more. So
// ExponentialBackoff(time.Second, time.Minute) waits 1s, 2s, 4s, ..., 32s,
// then 1m for every later retry. Any attempt is safe: the doubling never
// overflows, and an attempt below 1 counts as 1.
//
// It panics unless 0 < initial <= max. Add jitter with WithJitter, so that
// the retries of many pairs that failed together spread out instead of
// hitting the recovering service at the same instant.
func ExponentialBackoff(initial, max time.Duration) Backoff {
	if initial <= 0 || initial > max {
		panic(fmt.Sprintf("dispatcher: ExponentialBackoff(%v, %v): want 0 < initial <= max", initial, max))
	}
	return func(attempt int) time.Duration {
		shift := 0
		if attempt > 1 {
			shift = attempt - 1
		}
		// initial<<shift <= max exactly when initial <= max>>shift; at a
		// shift of 63 or more, initial (at least 1ns) is past any max.
		if shift >= 63 || initial > max>>shift {
			return max
		}
		return initial << shift
	}
}

// WithJitter returns a Backoff that scales each of b's delays by a random
// factor in [1-fraction, 1+fraction]: WithJitter(0.2) turns a delay of 10s
// into one between 8s and 12s. fraction must be in [0, 1] (it panics
// otherwise, and on a nil b); WithJitter(0) returns b itself. The jitter
// applies after b's cap, as in most retry libraries:
// ExponentialBackoff(time.Second, 30*time.Second).WithJitter(0.1) waits
// 27s to 33s once capped. For a hard ceiling c, cap b at c/(1+fraction).
// The result never overflows (it saturates at the largest Duration), and a
// delay of zero or less is returned unchanged.
//
// The factor comes from math/rand/v2's global source, which is safe for
// concurrent use and seeded at random: the delays are not reproducible.
// The waiting itself still goes through the time package, so a test under
// testing/synctest stays deterministic about when retries wake as long as
// it uses no jitter (or WithJitter(0), as a configuration might). With
// jitter, test the bounds: after a failure, advance the fake clock to just
// below the shortest possible delay and check that a Drain runs no retry,
// then to the longest and check that it runs it.
func (b Backoff) WithJitter(fraction float64) Backoff {
	if b == nil {
		panic("dispatcher: WithJitter on a nil Backoff")
	}
	if !(fraction >= 0 && fraction <= 1) { // NaN fails both
		panic(fmt.Sprintf("dispatcher: WithJitter(%v): want a fraction in [0, 1]", fraction))
	}
	if fraction == 0 {
		return b
	}
	return func(attempt int) time.Duration {
		d := b(attempt)
		if d <= 0 {
			return d
		}
		// rand.Float64 is in [0, 1), so the factor is in
		// [1-fraction, 1+fraction); float64(math.MaxInt64) is 2^63.
		j := float64(d) * (1 - fraction + 2*fraction*rand.Float64())
		if j >= math.MaxInt64 {
			return math.MaxInt64
		}
		return time.Duration(j)
	}
}
