package dispatcher

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/internal/topic"
)

// subscriber is one registration made by On. It is immutable but for
// active.
type subscriber struct {
	name     string
	seq      uint64  // subscription order: unique, ascending in On order
	h        Handler // the handler, wrapped in its middleware
	pat      topic.Pattern
	attempts int // the retry budget (WithRetry)
	backoff  func(attempt int) time.Duration
	timeout  time.Duration // each call's deadline (WithTimeout); 0: none
	active   atomic.Bool   // cleared by Unsubscribe
	hist     []histShard   // WithHandlerTiming's, one shard per consumer (proc.idx); else nil

	// Written by every consumer: away from the fields above, which every
	// call reads (see subCounters).
	_ [cacheLinePad]byte
	c subCounters
}

// subIndex answers "which subscribers match this topic". It is immutable:
// On and Unsubscribe build a new one and swap it in, so consumers match
// without locks.
type subIndex = topic.Index[*subscriber]

func newSubIndex(subs []*subscriber) *subIndex {
	list := make([]topic.Sub[*subscriber], len(subs))
	for i, s := range subs {
		list[i] = topic.Sub[*subscriber]{Pattern: s.pat, Seq: s.seq, Value: s}
	}
	return topic.NewIndex(list)
}

// Subscription is the handle On returns.
type Subscription struct {
	d *Dispatcher
	s *subscriber
}

// Name returns the subscription's name (WithName, or the generated one).
func (s *Subscription) Name() string { return s.s.name }

// Unsubscribe removes the subscription: events processed after it returns
// are not delivered to its handler, and its pending retries are discarded
// when they come due (counted in Stats.Dropped then). A call already in
// progress finishes. Its name becomes free for a new subscription. It is
// safe to call more than once, and from a handler.
func (s *Subscription) Unsubscribe() {
	d := s.d
	d.subMu.Lock()
	defer d.subMu.Unlock()
	if !s.s.active.Swap(false) {
		return
	}
	// A new slice: the old one may still back the index, and must not
	// keep the removed subscriber reachable in its spare capacity either.
	d.subList = slices.DeleteFunc(slices.Clone(d.subList), func(x *subscriber) bool { return x == s.s })
	d.subs.Store(newSubIndex(d.subList))
}

// On subscribes h to every topic that pattern matches: a topic, or a
// pattern with "*" for exactly one token and ">" as the last token for one
// or more (see the package doc for what a token may contain). For each
// event, handlers run in subscription order. A pattern that does not parse
// gets ErrBadTopic; a nil handler, a bad option or a name another active
// subscription has (WithName) get ErrInvalidOption.
func (d *Dispatcher) On(pattern string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	p, err := topic.Parse(pattern)
	if err != nil {
		return nil, badTopic(err)
	}
	if h == nil {
		return nil, fmt.Errorf("%w: On(%q): nil handler", ErrInvalidOption, pattern)
	}
	var sc subConfig
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: On(%q): nil SubscribeOption", ErrInvalidOption, pattern)
		}
		if err := o.applySubscription(&sc); err != nil {
			return nil, err
		}
	}
	// Middleware is applied before taking subMu: a constructor may call
	// On or Unsubscribe.
	pol := d.cfg.effective(sc.policy)
	for i := len(pol.middleware) - 1; i >= 0; i-- {
		h = pol.middleware[i](h)
		if h == nil {
			return nil, fmt.Errorf("%w: On(%q): middleware %d returned a nil Handler", ErrInvalidOption, pattern, i)
		}
	}
	d.subMu.Lock()
	defer d.subMu.Unlock()
	if sc.name != "" {
		for _, x := range d.subList {
			if x.name == sc.name {
				return nil, fmt.Errorf("%w: On(%q): WithName(%q): the name is taken by another subscription (dead letters name their subscriber)",
					ErrInvalidOption, pattern, sc.name)
			}
		}
	}
	d.nextSub++
	s := &subscriber{name: sc.name, seq: d.nextSub, pat: p, h: h,
		attempts: pol.attempts, backoff: pol.backoff, timeout: pol.timeout}
	if s.name == "" {
		s.name = fmt.Sprintf("%s#%d", pattern, s.seq)
	}
	if err := d.observeSub(s); err != nil {
		return nil, err
	}
	s.active.Store(true)
	d.subList = append(d.subList[:len(d.subList):len(d.subList)], s) // a copy, as in Unsubscribe
	d.subs.Store(newSubIndex(d.subList))
	return &Subscription{d: d, s: s}, nil
}

// badTopic wraps a topic parsing error in ErrBadTopic.
func badTopic(err error) error { return fmt.Errorf("%w: %w", ErrBadTopic, err) }
