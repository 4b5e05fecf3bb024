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
	deadLetterLimit int
	policy          policy    // every subscription's, unless On overrides it
	obs             *observer // WithLogger, WithObserver, WithHandlerTiming, WithPropagator; nil: none (see observe.go)
}

// policy is how a subscription's handler calls are made and failed calls
// retried. New sets the default; On's options override it per
// subscription.
type policy struct {
	attempts   int
	backoff    func(attempt int) time.Duration
	retrySet   bool // WithRetry given (On: replaces New's)
	timeout    time.Duration
	timeoutSet bool
	middleware []Middleware // the first is the outermost
}

// An Option configures a Dispatcher in New. An option given a bad value
// makes New return an error wrapping ErrInvalidOption.
type Option interface {
	applyDispatcher(c *config) error
}

// A SubscribeOption configures one subscription made by On. An option given
// a bad value makes On return an error wrapping ErrInvalidOption.
type SubscribeOption interface {
	applySubscription(c *subConfig) error
}

// A PolicyOption is both an Option and a SubscribeOption: given to New it
// sets the default of every subscription, given to On it sets that
// subscription's own (WithRetry, WithTimeout, WithMiddleware).
type PolicyOption interface {
	Option
	SubscribeOption
}

// optionFunc is an Option of New only.
type optionFunc func(*config) error

func (f optionFunc) applyDispatcher(c *config) error { return f(c) }

// subscribeFunc is a SubscribeOption of On only.
type subscribeFunc func(*subConfig) error

func (f subscribeFunc) applySubscription(c *subConfig) error { return f(c) }

// policyFunc sets part of a policy: New's default or one subscription's.
type policyFunc func(*policy) error

func (f policyFunc) applyDispatcher(c *config) error { return f(&c.policy) }

func (f policyFunc) applySubscription(c *subConfig) error { return f(&c.policy) }

// WithCapacity sets how many events the queue holds: n rounded up to a
// power of two, between 1 and MaxCapacity. Default 1024. The queue is
// allocated by New, 64 bytes per event on 64-bit platforms.
//
// The same bound applies, separately, to retries waiting for their backoff,
// and under Run to keyed events a worker has taken from the queue that wait
// behind an earlier event of their key.
func WithCapacity(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 || n > MaxCapacity {
			return fmt.Errorf("%w: WithCapacity(%d): want 1..%d", ErrInvalidOption, n, MaxCapacity)
		}
		c.capacity = n
		return nil
	})
}

// WithWorkers sets how many worker goroutines Run starts, between 1 and
// MaxWorkers. Default runtime.GOMAXPROCS(0) (at most MaxWorkers).
func WithWorkers(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 || n > MaxWorkers {
			return fmt.Errorf("%w: WithWorkers(%d): want 1..%d", ErrInvalidOption, n, MaxWorkers)
		}
		c.workers = n
		return nil
	})
}

// WithOverflow sets what Emit does when the queue is full. Default Block.
func WithOverflow(p OverflowPolicy) Option {
	return optionFunc(func(c *config) error {
		if p < Block || p > DropOldest {
			return fmt.Errorf("%w: WithOverflow(%v)", ErrInvalidOption, p)
		}
		c.overflow = p
		return nil
	})
}

// WithRetry sets the retry budget: attempts is the total number of handler
// calls per (event, subscriber), the first call included, so 1 means no
// retry. After call number k fails, call k+1 is due backoff(k) later; a nil
// backoff retries at the next Tick, or at once under Run. Default: 1
// attempt. A failure wrapped by Permanent, and every ErrPayloadType
// failure, is never retried.
//
// Given to New it is every subscription's default; given to On it replaces
// that default for the subscription.
func WithRetry(attempts int, backoff func(attempt int) time.Duration) PolicyOption {
	return policyFunc(func(p *policy) error {
		if attempts < 1 {
			return fmt.Errorf("%w: WithRetry(%d, ...): want at least 1 attempt", ErrInvalidOption, attempts)
		}
		p.attempts, p.backoff, p.retrySet = attempts, backoff, true
		return nil
	})
}

// WithTimeout gives each handler call a ctx whose deadline is d after the
// call starts. A call that returns an error after its deadline passed is a
// failure like any other (retried within the budget); a handler that
// ignores its ctx is not stopped. d must be positive. Default: no deadline.
//
// Given to New it is every subscription's default; given to On it replaces
// that default for the subscription.
func WithTimeout(d time.Duration) PolicyOption {
	return policyFunc(func(p *policy) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithTimeout(%v): want a positive duration", ErrInvalidOption, d)
		}
		p.timeout, p.timeoutSet = d, true
		return nil
	})
}

// Middleware wraps a handler: it returns a Handler that calls next (or not)
// with code around it, to log, measure, trace or recover.
type Middleware func(next Handler) Handler

// WithMiddleware wraps handlers in mw, the first given outermost. Given to
// New, it wraps every subscription's handler; given to On, that
// subscription's only, inside New's middleware. The wrapping is done once,
// by On; a dispatcher without middleware pays nothing for it.
func WithMiddleware(mw ...Middleware) PolicyOption {
	return policyFunc(func(p *policy) error {
		for i, m := range mw {
			if m == nil {
				return fmt.Errorf("%w: WithMiddleware: middleware %d is nil", ErrInvalidOption, i)
			}
		}
		p.middleware = append(p.middleware[:len(p.middleware):len(p.middleware)], mw...)
		return nil
	})
}

// WithDeadLetterLimit bounds how many dead letters the dispatcher keeps. When
// a new one would exceed the limit, the oldest is discarded and counted in
// Stats.Dropped. Default 1024.
func WithDeadLetterLimit(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: WithDeadLetterLimit(%d): want at least 1", ErrInvalidOption, n)
		}
		c.deadLetterLimit = n
		return nil
	})
}

func newConfig(opts []Option) (config, error) {
	c := config{
		capacity:        DefaultCapacity,
		workers:         min(runtime.GOMAXPROCS(0), MaxWorkers),
		overflow:        Block,
		deadLetterLimit: DefaultDeadLetterLimit,
		policy:          policy{attempts: 1},
	}
	for _, o := range opts {
		if o == nil {
			return c, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := o.applyDispatcher(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

type subConfig struct {
	name   string
	policy policy // only what On's options set
}

// WithName names the subscription. The name appears in dead letters and
// handler errors, and must be unique among the active subscriptions.
// Default: the pattern and a sequence number, such as "run.finished#3".
func WithName(name string) SubscribeOption {
	return subscribeFunc(func(c *subConfig) error {
		if name == "" {
			return fmt.Errorf("%w: WithName(\"\")", ErrInvalidOption)
		}
		c.name = name
		return nil
	})
}

// effective returns the policy of a subscription with sub's settings over
// the dispatcher's defaults.
func (c *config) effective(sub policy) policy {
	p := c.policy
	if sub.retrySet {
		p.attempts, p.backoff = sub.attempts, sub.backoff
	}
	if sub.timeoutSet {
		p.timeout = sub.timeout
	}
	p.middleware = append(p.middleware[:len(p.middleware):len(p.middleware)], sub.middleware...)
	return p
}
