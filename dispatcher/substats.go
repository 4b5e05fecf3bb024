package dispatcher

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/ringbus/ringbus/internal/atomicx"
)

// SubscriptionStats is a snapshot of one subscription's counters. Summed
// over every subscription (those unsubscribed included), the counters are
// Stats' Delivered, Failed, Retried and DeadLettered.
type SubscriptionStats struct {
	Delivered    uint64 // handler calls that returned nil
	Failed       uint64 // handler calls that returned an error or panicked
	Retried      uint64 // retry calls made
	DeadLettered uint64 // events that became dead letters of this subscription
	// Durations holds the durations of the handler calls, failed ones
	// included, when New was given WithHandlerTiming; else it is empty.
	Durations Histogram
}

// Stats returns a snapshot of the subscription's counters. They are
// published as Stats' are (see Dispatcher.Stats): Delivered once per
// batch of a consumer, so while events flow it may lag the calls made by
// up to a batch per worker. It works after Unsubscribe, and keeps what
// was counted.
func (s *Subscription) Stats() SubscriptionStats {
	c := &s.s.c
	st := SubscriptionStats{
		Delivered:    c.delivered.Load() + c.stepDelivered.Load(),
		Failed:       c.failed.Load(),
		Retried:      c.retried.Load(),
		DeadLettered: c.deadLettered.Load(),
	}
	for i := range s.s.hist {
		s.s.hist[i].addTo(&st.Durations)
	}
	return st
}

// subCounters are one subscription's counters. Every consumer adds to
// them, so they sit on their own cache lines, away from the subscriber's
// fields that every call reads (see subscriber): the padding before is
// in subscriber, the padding after keeps the next allocation off them.
// Delivered, the one that grows with every event, is split in two and
// added once per batch per subscriber (see tally): workers add to
// delivered; the deterministic consumer, which never runs at the same
// time as a worker or another of its kind, is the only writer of
// stepDelivered and stores the sum with a plain release store, no
// read-modify-write. The others are added at each failure or retry.
type subCounters struct {
	delivered     atomic.Uint64
	stepDelivered atomic.Uint64
	failed        atomic.Uint64
	retried       atomic.Uint64
	deadLettered  atomic.Uint64
	_             [cacheLinePad - 40]byte
}

// tallySlots is how many subscribers a consumer's tally follows at once
// outside a large fan-out (see tally).
const tallySlots = 4

// tally counts a consumer's successful calls per subscriber during a
// batch, so that the subscribers' counters are written once per batch,
// not once per call: every consumer writes them, and an atomic add per
// call would move their cache lines between cores at every call. Only the
// consumer's goroutine touches it. Its subscribers outlive a batch, like
// match's last answer, and are forgotten with it (see proc.forgetMatch).
//
// A fan-out to more than tallySlots subscribers is counted apart, in fanN,
// one count per subscriber of the fan-out's list (fan, an answer of
// match), so that no call of it adds to a counter: fanN[i] counts fan[i].
// Invariants: fanN's elements up to its capacity are zero when fanAny is
// false; fan is the list last counted, and its contents do not change
// while counts for it are pending, since match publishes them before it
// builds a new answer in the memory fan may share (see proc.match).
type tally struct {
	subs   [tallySlots]*subscriber
	n      [tallySlots]uint64
	next   int  // the slot to evict on a miss, round robin
	others bool // a slot other than the first may hold a count

	fan    []*subscriber
	fanN   []uint64
	fanAny bool
}

// countDelivered counts a successful call of s: in p's delivered, which
// Stats reads, and in the tally, which s's counters read; flush publishes
// both. The first slot is checked inline: a single subscriber per topic,
// the common case, costs a compare and an increment.
func (p *proc) countDelivered(s *subscriber) {
	p.delivered++
	if p.tally.subs[0] == s {
		p.tally.n[0]++
		return
	}
	// A call of a large fan-out in progress: p.fan is set only during a
	// fan-out's calls, and the call is of p.fan[p.fanAt] (process sets
	// them; process, cutShort's caller and unwind clear p.fan).
	if f := p.fan; len(f) > tallySlots {
		p.countFan(f)
		return
	}
	p.tallyOther(s)
}

// countFan counts a successful call of f[p.fanAt], f being the fan-out in
// progress.
func (p *proc) countFan(f []*subscriber) {
	t := &p.tally
	if len(t.fan) != len(f) || &t.fan[0] != &f[0] {
		p.flushFan()
		t.fan = f
		if cap(t.fanN) < len(f) {
			t.fanN = make([]uint64, len(f))
		}
		t.fanN = t.fanN[:len(f)]
	}
	t.fanN[p.fanAt]++
	t.fanAny = true
}

// tallyOther counts a successful call of s, which is not in the first
// slot: in its slot, or in one it takes, publishing what the evicted
// subscriber had.
func (p *proc) tallyOther(s *subscriber) {
	t := &p.tally
	t.others = true
	for i := 1; i < tallySlots; i++ {
		if t.subs[i] == s {
			t.n[i]++
			return
		}
	}
	i := t.next
	t.next = (i + 1) % tallySlots
	if old := t.subs[i]; old != nil && t.n[i] > 0 {
		p.addDelivered(old, t.n[i])
	}
	t.subs[i], t.n[i] = s, 1
}

// flushTally publishes the tally's counts. It keeps the subscribers, so
// that the next batch of the same topics finds them in their slots.
func (p *proc) flushTally() {
	t := &p.tally
	used := 1 // one subscriber per topic: the first slot is all there is
	if t.others {
		used, t.others = tallySlots, false
	}
	for i := range used {
		if t.n[i] > 0 { // then subs[i] is set
			p.addDelivered(t.subs[i], t.n[i])
			t.n[i] = 0
		}
	}
	p.flushFan()
}

// flushFan publishes the counts of the large fan-out last counted.
func (p *proc) flushFan() {
	t := &p.tally
	if !t.fanAny {
		return
	}
	t.fanAny = false
	for i, n := range t.fanN {
		if n > 0 {
			p.addDelivered(t.fan[i], n)
			t.fanN[i] = 0
		}
	}
}

// addDelivered adds n successful calls to s's counters (see subCounters).
func (p *proc) addDelivered(s *subscriber, n uint64) {
	if p.worker {
		s.c.delivered.Add(n)
		return
	}
	c := &s.c.stepDelivered
	atomicx.StoreRelease(c, c.Load()+n)
}

// forgetTally drops the tally's subscribers, publishing any count left
// (flush has published them when a batch ends). fanN's storage is kept,
// all zero.
func (p *proc) forgetTally() {
	p.flushTally()
	p.tally = tally{fanN: p.tally.fanN[:0]}
}

// WithHandlerTiming measures every handler call (its middleware and the
// Observer's WrapHandler included) into a per-subscription duration
// histogram, read with (*Subscription).Stats. It costs two clock reads per
// call, which a dispatcher without it does not make. Default: off.
func WithHandlerTiming() Option {
	return optionFunc(func(c *config) error {
		c.observe().timing = true
		return nil
	})
}

// timedInvoke is invoke that records the call's duration in s's histogram
// shard of consumer p.
func (p *proc) timedInvoke(s *subscriber, j *job) error {
	start := time.Now()
	p.callStart = start // for a call that panics (see afterPanic)
	err := p.invoke(s, &j.ev, j.tr)
	s.hist[p.idx].record(time.Since(start))
	return err
}

// HistogramBuckets is the number of buckets of a Histogram.
const HistogramBuckets = 32

// histMinShift is the log2 of the first bucket's bound in nanoseconds:
// 1024ns. Call durations shorter than a microsecond are not told apart.
const histMinShift = 10

// Histogram counts durations in fixed buckets whose bounds double: bucket
// 0 holds durations up to 1.024µs, bucket i those above HistogramBound(i-1)
// and up to HistogramBound(i) = 2^(10+i) ns, and the last bucket (from
// about 18 minutes) everything longer. Doubling bounds keep the relative
// error of a quantile under a factor of two at any scale, with a fixed,
// small size and no allocation.
type Histogram struct {
	Counts [HistogramBuckets]uint64
	Sum    time.Duration // of every duration counted
	Max    time.Duration // the longest counted
}

// HistogramBound returns the upper bound of bucket i of a Histogram
// (inclusive); for the last bucket, the largest Duration.
func HistogramBound(i int) time.Duration {
	if i >= HistogramBuckets-1 {
		return math.MaxInt64
	}
	return time.Duration(1) << (histMinShift + i)
}

// histBucket returns the bucket of a duration.
func histBucket(d time.Duration) int {
	if d <= 1<<histMinShift {
		return 0
	}
	return min(bits.Len64(uint64(d-1))-histMinShift, HistogramBuckets-1)
}

// Count returns how many durations h counted.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Mean returns the mean duration, or 0 when h is empty.
func (h *Histogram) Mean() time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return h.Sum / time.Duration(n)
}

// Quantile returns an estimate of the q-quantile (0.5 for the median,
// 0.99 for the 99th percentile; q is clamped to [0, 1]) by linear
// interpolation within its bucket, never above Max; 0 when h is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(n) // how many durations lie at or below the answer
	var below float64
	for i, c := range h.Counts {
		if c == 0 || below+float64(c) < rank {
			below += float64(c)
			continue
		}
		lo, hi := time.Duration(0), min(HistogramBound(i), h.Max)
		if i > 0 {
			lo = HistogramBound(i - 1)
		}
		if hi < lo {
			hi = lo
		}
		return lo + time.Duration(float64(hi-lo)*(rank-below)/float64(c))
	}
	return h.Max
}

// histShard is one consumer's part of a subscriber's histogram. Only that
// consumer writes it, so its counts are published with release stores,
// not read-modify-writes; readers (Subscription.Stats) load them. The
// padding keeps the next shard, another consumer's, off its cache lines.
type histShard struct {
	counts [HistogramBuckets]atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
	_      [cacheLinePad]byte
}

// record counts d. Only the shard's consumer calls it.
func (h *histShard) record(d time.Duration) {
	d = max(d, 0)
	c := &h.counts[histBucket(d)]
	atomicx.StoreRelease(c, c.Load()+1)
	atomicx.StoreRelease(&h.sum, h.sum.Load()+uint64(d))
	if uint64(d) > h.max.Load() {
		atomicx.StoreRelease(&h.max, uint64(d))
	}
}

// addTo adds the shard's counts to dst.
func (h *histShard) addTo(dst *Histogram) {
	for i := range h.counts {
		dst.Counts[i] += h.counts[i].Load()
	}
	dst.Sum += time.Duration(h.sum.Load())
	dst.Max = max(dst.Max, time.Duration(h.max.Load()))
}
