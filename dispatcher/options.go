package dispatcher

import (
	"fmt"
	"runtime"
	"time"
)

// OverflowPolicy says what Emit does when the queue is full.
type OverflowPolicy int

const (
	// Block waits for room until the emitter's ctx ends, then returns the
	// ctx's error. An Emit from inside a handler never waits: it returns
	// ErrFull instead (see the package doc). Block is the default.
	Block OverflowPolicy = iota
	// Reject returns ErrFull at once and keeps nothing.
	Reject
	// DropNewest discards the new event, counts it in Stats.Dropped and
	// returns ErrDropped.
	DropNewest
	// DropOldest evicts the oldest queued event, counts it in
	// Stats.Dropped, and accepts the new one: Emit returns nil.
	DropOldest
)

// String returns the policy's name, such as "Block".
func (p OverflowPolicy) String() string {
	switch p {
	case Block:
		return "Block"
	case Reject:
		return "Reject"
	case DropNewest:
		return "DropNewest"
	case DropOldest:
		return "DropOldest"
	}
	return fmt.Sprintf("OverflowPolicy(%d)", int(p))
}

// Defaults of the options.
const (
	DefaultCapacity        = 1024
	DefaultDeadLetterLimit = 1024
	// MaxCapacity is the largest WithCapacity: the ring is allocated up
	// front, 64 bytes per event on 64-bit platforms, so 1 GiB here.
	MaxCapacity = 1 << 24
	// MaxWorkers is the largest WithWorkers. Each worker keeps buffers
	// for a batch of events (about 20 KiB).
	MaxWorkers = 4096
)

type config struct {
	capacity        int
	workers         int
	overflow        OverflowPolicy
	attempts        int
	backoff         func(attempt int) time.Duration
	deadLetterLimit int
}

// An Option configures a Dispatcher in New. An option given a bad value
// makes New return an error wrapping ErrInvalidOption.
type Option func(*config) error

// WithCapacity sets how many events the queue holds: n rounded up to a
// power of two, between 1 and MaxCapacity. Default 1024. The queue is
// allocated by New, 64 bytes per event on 64-bit platforms.
//
// The same bound applies, separately, to retries waiting for their backoff,
// and under Run to keyed events a worker has taken from the queue that wait
// behind an earlier event of their key.
func WithCapacity(n int) Option {
	return func(c *config) error {
		if n < 1 || n > MaxCapacity {
			return fmt.Errorf("%w: WithCapacity(%d): want 1..%d", ErrInvalidOption, n, MaxCapacity)
		}
		c.capacity = n
		return nil
	}
}

// WithWorkers sets how many worker goroutines Run starts, between 1 and
// MaxWorkers. Default runtime.GOMAXPROCS(0) (at most MaxWorkers).
func WithWorkers(n int) Option {
	return func(c *config) error {
		if n < 1 || n > MaxWorkers {
			return fmt.Errorf("%w: WithWorkers(%d): want 1..%d", ErrInvalidOption, n, MaxWorkers)
		}
		c.workers = n
		return nil
	}
}

// WithOverflow sets what Emit does when the queue is full. Default Block.
func WithOverflow(p OverflowPolicy) Option {
	return func(c *config) error {
		if p < Block || p > DropOldest {
			return fmt.Errorf("%w: WithOverflow(%v)", ErrInvalidOption, p)
		}
		c.overflow = p
		return nil
	}
}

// WithRetry sets the retry budget: attempts is the total number of handler
// calls per (event, subscriber), the first call included, so 1 means no
// retry. After call number k fails, call k+1 is due backoff(k) later; a nil
// backoff retries at the next Tick, or at once under Run. Default: 1
// attempt.
func WithRetry(attempts int, backoff func(attempt int) time.Duration) Option {
	return func(c *config) error {
		if attempts < 1 {
			return fmt.Errorf("%w: WithRetry(%d, ...): want at least 1 attempt", ErrInvalidOption, attempts)
		}
		c.attempts = attempts
		c.backoff = backoff
		return nil
	}
}

// WithDeadLetterLimit bounds how many dead letters the dispatcher keeps. When
// a new one would exceed the limit, the oldest is discarded and counted in
// Stats.Dropped. Default 1024.
func WithDeadLetterLimit(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: WithDeadLetterLimit(%d): want at least 1", ErrInvalidOption, n)
		}
		c.deadLetterLimit = n
		return nil
	}
}

func newConfig(opts []Option) (config, error) {
	c := config{
		capacity:        DefaultCapacity,
		workers:         min(runtime.GOMAXPROCS(0), MaxWorkers),
		overflow:        Block,
		attempts:        1,
		deadLetterLimit: DefaultDeadLetterLimit,
	}
	for _, o := range opts {
		if o == nil {
			return c, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := o(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// A SubscribeOption configures one subscription made by On.
type SubscribeOption func(*subConfig) error

type subConfig struct {
	name string
}

// WithName names the subscription. The name appears in dead letters and
// handler errors. Default: the pattern and a sequence number, such as
// "run.finished#3".
func WithName(name string) SubscribeOption {
	return func(c *subConfig) error {
		if name == "" {
			return fmt.Errorf("%w: WithName(\"\")", ErrInvalidOption)
		}
		c.name = name
		return nil
	}
}
