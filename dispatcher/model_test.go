package dispatcher_test

// A model-based test: random concurrent producers, subscribers that
// succeed, fail, panic, are slow, emit follow-ups and call the dispatcher
// from their handlers, subscriptions that come and go, delayed events,
// Redeliver and Flush calls, and one of six endings; then the test's own records of every Emit, every
// handler call and every OnDone are checked against Stats and DeadLetters,
// so that the counters add up exactly and nothing is lost (see check for
// the identities, and quiesce for how calls cut short by the stop of Run
// are kept countable).
//
// The plan of each case (retry budget, backoff, producers, when the end
// begins, which handler does what with which event) comes from a seed; the
// interleaving is the scheduler's. Re-run a failing case with the seed the
// test logs: go test ./dispatcher -run 'TestModel/Block/run2/close/' -md.seed=N
// (the flag after the package). Longer runs: -tags stress, TestModelStress.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

var mdSeed = flag.Uint64("md.seed", 0, "TestModel: base seed of the random plans (0: a new one each run)")

// mdScale sizes a run of the matrix.
type mdScale struct {
	rounds int // how many times the whole matrix runs, each round with its own seeds
	ops    int // operations (mostly emits) per producer
}

func TestModel(t *testing.T) {
	sc := mdScale{rounds: 1, ops: 120}
	if testing.Short() {
		sc.ops = 20
	}
	mdMatrix(t, sc)
}

// TestModelKeyedCallOutlivesClose is the smallest case of a crash TestModel
// found with the deadline and handler-close endings under Run: a handler
// call on a keyed event is still running when the dispatcher drops what is
// queued (a Shutdown whose ctx ended does not wait for the workers, nor
// does a Close called by a handler for its own worker). Event 2 waits
// behind event 1 in its key's backlog: the drop must count it without
// taking the key from the worker, whose release of the key after event 1
// must not panic (a panic there is on a worker goroutine: it kills the
// process).
func TestModelKeyedCallOutlivesClose(t *testing.T) {
	for _, tt := range []struct {
		give string
		// stop ends the dispatcher while the handler of event 1 runs
		// (inside), then lets that handler return (release).
		stop func(t *testing.T, d *dispatcher.Dispatcher, inside <-chan struct{}, release chan<- struct{})
		// closeInHandler makes the handler call Close itself.
		closeInHandler bool
	}{
		{
			give: "Shutdown whose ctx ends",
			stop: func(t *testing.T, d *dispatcher.Dispatcher, inside <-chan struct{}, release chan<- struct{}) {
				<-inside
				ctx, cancel := context.WithTimeout(context.Background(), time.Second) // fake time
				defer cancel()
				if err := d.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
				}
				close(release)
			},
		},
		{
			give:           "Close from the handler",
			closeInHandler: true,
			stop: func(t *testing.T, d *dispatcher.Dispatcher, inside <-chan struct{}, release chan<- struct{}) {
				close(release)
			},
		},
	} {
		t.Run(tt.give, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bg := context.Background()
				d, err := dispatcher.New(dispatcher.WithWorkers(1))
				if err != nil {
					t.Fatal(err)
				}
				inside, release := make(chan struct{}), make(chan struct{})
				var calls atomic.Int32
				d.On("a", func(ctx context.Context, e dispatcher.Event) error {
					if calls.Add(1) == 1 {
						close(inside)
						<-release
						if tt.closeInHandler {
							d.Close()
						}
					}
					return nil
				})
				for range 2 {
					if err := d.EmitEvent(bg, dispatcher.Event{Topic: "a", Key: "k"}); err != nil {
						t.Fatal(err)
					}
				}
				runErr := make(chan error, 1)
				go func() { runErr <- d.Run(bg) }()
				tt.stop(t, d, inside, release)
				if err := <-runErr; err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
				st := d.Stats()
				if st.Emitted != 2 || st.Delivered != 1 || st.Dropped != 1 || st.Queued != 0 {
					t.Errorf("Stats = %+v, want Emitted 2, Delivered 1, Dropped 1, Queued 0", st)
				}
			})
		})
	}
}

// mdEnd is how a case ends.
type mdEnd int

const (
	mdShutdown        mdEnd = iota // Shutdown: everything accepted is processed
	mdClose                        // Close: what is queued is dropped and counted
	mdCloseVsShutdown              // Close and Shutdown race
	mdCancelDrain                  // Run's ctx (or the driver's) ends, Drain finishes, then Shutdown
	mdDeadline                     // Shutdown with a short deadline, in a synctest bubble
	mdHandlerClose                 // a handler calls Close
	mdEnds
)

func (e mdEnd) String() string {
	return [...]string{"shutdown", "close", "close-vs-shutdown", "cancel-drain", "deadline", "handler-close"}[e]
}

var (
	mdPolicies   = []dispatcher.OverflowPolicy{dispatcher.Block, dispatcher.Reject, dispatcher.DropNewest, dispatcher.DropOldest}
	mdWorkerSets = []int{0, 1, 2, 4} // 0: no Run, a goroutine drives Tick and Drain
	mdCapacities = []int{1, 2, 8, 64}
	mdTopics     = []string{"md.a.x", "md.a.y", "md.b.x", "md.b.y"}
	mdKeys       = []string{"", "", "", "k1", "k2", "k3"}
	// No extra's pattern matches mdCutTopic (see mdEnv.quiesce).
	mdExtraPats = []string{"md.*.y", "md.b.>", "md.c.*", "*.b.x", "md.a.y"}
	mdCutTopic  = "md.a.x"
	errMdFail   = errors.New("md: handler failure")
)

// mdMatrix runs every overflow policy in every mode with every ending;
// the capacity rotates so that each (policy, mode) pair meets all four.
func mdMatrix(t *testing.T, sc mdScale) {
	base := *mdSeed
	if base == 0 {
		base = rand.Uint64() | 1
	}
	t.Logf("-md.seed=%d", base)
	for round := range sc.rounds {
		for ip, policy := range mdPolicies {
			for iw, workers := range mdWorkerSets {
				for end := range mdEnds {
					c := mdCase{
						policy:   policy,
						workers:  workers,
						end:      end,
						capacity: mdCapacities[(ip+iw+int(end)+round)%len(mdCapacities)],
						ops:      sc.ops,
						seed:     mdMix(base, uint64(round), uint64(ip), uint64(iw), uint64(end)),
					}
					mode := "step"
					if workers > 0 {
						mode = fmt.Sprintf("run%d", workers)
					}
					name := fmt.Sprintf("%v/%s/%v/cap%d", policy, mode, end, c.capacity)
					if sc.rounds > 1 {
						name = fmt.Sprintf("round%d/%s", round, name)
					}
					t.Run(name, func(t *testing.T) { mdRunCase(t, c) })
				}
			}
		}
	}
}

// mdCase is one cell of the matrix.
type mdCase struct {
	policy   dispatcher.OverflowPolicy
	workers  int // 0: no Run
	end      mdEnd
	capacity int
	ops      int
	seed     uint64
}

// mdPlan is what the seed decides for a case.
type mdPlan struct {
	Attempts  int
	Backoff   string // "nil", "zero", "ms" (k ms) or "hour" (k hours); the last two only in a bubble
	DeadLimit int    // WithDeadLetterLimit; 0: the default
	Producers int
	Early     bool // the end begins while producers still run
	Bubble    bool // the case runs inside synctest.Test
}

func mdRunCase(t *testing.T, c mdCase) {
	rng := rand.New(rand.NewPCG(c.seed, mdMix(c.seed)))
	plan := mdPlan{
		Attempts:  1 + rng.IntN(3),
		Backoff:   []string{"nil", "zero"}[rng.IntN(2)],
		Producers: 2 + rng.IntN(2),
		Early:     rng.IntN(2) == 0,
		Bubble:    c.end == mdDeadline || rng.IntN(3) == 0,
	}
	if rng.IntN(4) == 0 {
		plan.DeadLimit = 1 + rng.IntN(4)
	}
	if plan.Bubble && rng.IntN(2) == 0 {
		plan.Backoff = "ms"
	}
	if c.end == mdDeadline && rng.IntN(2) == 0 {
		plan.Backoff = "hour" // retries cannot finish before the deadline
	}
	t.Logf("case seed %d, plan %+v", c.seed, plan)
	if plan.Bubble {
		synctest.Test(t, func(t *testing.T) { mdExec(t, c, plan, rng) })
		return
	}
	mdExec(t, c, plan, rng)
}

// mdPayload identifies an emit: producer src (-1 for a handler's follow-up,
// -3 for the emits that wait for a handler's Close) and its sequence
// number; depth counts follow-up generations.
type mdPayload struct {
	src   int
	seq   uint64
	depth int
}

// mdSeen is an event as the witness subscriber saw it.
type mdSeen struct {
	topic, key string
	payload    mdPayload
}

// mdOutcome is how a handler call ends.
type mdOutcome int

const (
	mdOK     mdOutcome = iota
	mdFailed           // an error or a panic: Stats.Failed counts it
	mdCut              // an error after the stop of Run cancelled ctx: not a failure; the pair is handed back
)

// mdRunKey marks the ctx given to Run, so that a handler knows it runs
// on a worker (only there can a call be cut short).
type mdRunKey struct{}

type mdKind int

const (
	mdAlwaysOK mdKind = iota
	mdFlaky
	mdBad
)

// failUpTo returns the last attempt that fails for a pair whose hash is h
// (0: none; a large number: every call).
func (k mdKind) failUpTo(h uint64) int {
	r := h % 100
	switch k {
	case mdFlaky:
		switch {
		case r < 60:
			return 0
		case r < 80:
			return 1
		case r < 90:
			return 2
		}
		return 1 << 30
	case mdBad:
		switch {
		case r < 30:
			return 0
		case r < 60:
			return 1
		case r < 80:
			return 2
		}
		return 1 << 30
	}
	return 0
}

// mdSub is one subscription and everything its handler saw.
type mdSub struct {
	name    string
	pat     string
	idx     uint64 // for the outcome hash
	kind    mdKind
	witness bool // the first subscription, on ">": sees every fan-out first
	ordered bool // never fails: its calls are checked for order
	emits   bool // emits follow-ups
	slow    bool
	core    bool // subscribed before the first emit, never unsubscribed

	handle atomic.Pointer[dispatcher.Subscription] // extras only
	gone   atomic.Bool                             // unsubscribed (by a producer or by its own handler)
	closer bool                                    // calls Close once the end asks for it

	mu         sync.Mutex
	pairs      map[uint64]*mdPair // by event ID
	lastKey    map[string]uint64  // ordered under Run: last ID per key
	lastID     uint64             // ordered without Run: last ID
	ok, failed int
	calls      int
	cutShares  int // shares handed back by its cut calls (see check)
	retries    int // calls with Attempt > 1
}

// mdPair is one (event, subscriber) pair's calls.
type mdPair struct {
	calls    int
	last     int  // Attempt of the last call
	failed   bool // the last call failed
	cut      bool // the last call was cut short
	firstCut bool // the first call was cut short
	ok       bool // a call succeeded
}

// mdEnv is one case's dispatcher and records.
type mdEnv struct {
	c       mdCase
	plan    mdPlan
	d       *dispatcher.Dispatcher
	unit    time.Duration // the backoff's unit; 0 without a timed backoff
	hang    context.Context
	closing atomic.Bool // set before the first Shutdown or Close

	kick       chan struct{} // tells an idle Tick/Drain loop that something happened
	req        chan chan struct{}
	helperStop chan struct{}

	accepted atomic.Int64 // every Emit that returned nil, handlers' included
	errFull  atomic.Int64
	errDrop  atomic.Int64 // ErrDropped: each one counted in Stats.Dropped
	errClose atomic.Int64
	errCtx   atomic.Int64
	hClosed  atomic.Int64 // handler emits that got ErrClosed
	hseq     atomic.Uint64

	closeNow    atomic.Bool  // the closer subscriber must call Close (once: it swaps it back)
	stopping    atomic.Bool  // see quiesce
	cutMode     atomic.Bool  // while stopping, failing calls on mdCutTopic are cut short
	expectFail  atomic.Int64 // failures the handlers announced (see quiesce)
	closedByH   chan error   // the result of the closer's Close
	redelivered atomic.Int64 // the sum of Redeliver's n
	hRedeliver  atomic.Int64 // Redeliver calls from handlers
	reportedDL  atomic.Int64 // HandlerErrors returned by Tick and Drain
	ops         atomic.Int64
	halfAt      int64
	halfway     chan struct{}

	mu        sync.Mutex
	problems  []string
	events    map[uint64]mdSeen // by ID, recorded by the witness
	hAccepted map[mdPayload]bool
	// OnDone: for each emit that asked, whether it was accepted, and what
	// done got.
	doneWanted map[mdPayload]bool
	dones      map[mdPayload][]error
	delayed    map[mdPayload]bool // emitted with After: out of ID order when due
	flushes    atomic.Int64       // Flush calls that returned nil and were checked
	ending     chan struct{}      // closed once stopping or closing is first set
	endingOnce sync.Once

	subsMu    sync.Mutex
	subs      []*mdSub
	byName    map[string]*mdSub
	live      []*mdSub // extras subscribed now
	nextExtra int
}

func (env *mdEnv) problem(format string, args ...any) {
	env.mu.Lock()
	defer env.mu.Unlock()
	if len(env.problems) < 30 {
		env.problems = append(env.problems, fmt.Sprintf(format, args...))
	}
}

// mdExec runs one case: on the test's goroutine, or as a bubble's root.
func mdExec(t *testing.T, c mdCase, plan mdPlan, rng *rand.Rand) {
	bg := context.Background()
	env := &mdEnv{
		c:          c,
		plan:       plan,
		kick:       make(chan struct{}, 1),
		req:        make(chan chan struct{}),
		helperStop: make(chan struct{}),
		halfway:    make(chan struct{}),
		closedByH:  make(chan error, 1),
		events:     make(map[uint64]mdSeen),
		hAccepted:  make(map[mdPayload]bool),
		doneWanted: make(map[mdPayload]bool),
		dones:      make(map[mdPayload][]error),
		delayed:    make(map[mdPayload]bool),
		ending:     make(chan struct{}),
		byName:     make(map[string]*mdSub),
	}
	var backoff func(int) time.Duration
	switch plan.Backoff {
	case "zero":
		backoff = func(int) time.Duration { return 0 }
	case "ms":
		env.unit = time.Millisecond
	case "hour":
		env.unit = time.Hour
	}
	if env.unit > 0 {
		unit := env.unit
		backoff = func(k int) time.Duration { return time.Duration(k) * unit }
	}
	opts := []dispatcher.Option{
		dispatcher.WithCapacity(c.capacity),
		dispatcher.WithOverflow(c.policy),
		dispatcher.WithRetry(plan.Attempts, backoff),
	}
	if c.workers > 0 {
		opts = append(opts, dispatcher.WithWorkers(c.workers))
	}
	if plan.DeadLimit > 0 {
		opts = append(opts, dispatcher.WithDeadLetterLimit(plan.DeadLimit))
	}
	d, err := dispatcher.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	env.d = d

	// A hang is reported, with every goroutine's stack, instead of waiting
	// for the test binary's timeout: in a bubble after a fake time no
	// legitimate wait reaches, otherwise a little before the test's own
	// deadline (-timeout), which is no bound of this test's choosing.
	var stopHang context.CancelFunc
	if plan.Bubble {
		env.hang, stopHang = context.WithTimeout(bg, 1000*time.Hour)
	} else if dl, ok := t.Deadline(); ok {
		env.hang, stopHang = context.WithDeadline(bg, dl.Add(-time.Until(dl)/10))
	} else {
		env.hang, stopHang = context.WithCancel(bg)
	}
	defer stopHang()

	// The core subscriptions, before anything is emitted. The witness comes
	// first, so it is the first call of every fan-out.
	core := []*mdSub{
		{name: "w", pat: ">", kind: mdAlwaysOK, witness: true, ordered: true},
		{name: "k", pat: "md.>", kind: mdAlwaysOK, ordered: true, slow: true, closer: true},
		{name: "f", pat: "md.*.x", kind: mdFlaky, emits: true},
		{name: "e", pat: "md.a.>", kind: mdBad, emits: true, slow: true},
	}
	for i, s := range core {
		s.idx, s.core = uint64(i+1), true
		env.register(s)
		if _, err := d.On(s.pat, env.handler(s), dispatcher.WithName(s.name)); err != nil {
			t.Fatalf("On(%q): %v", s.pat, err)
		}
	}

	// The handshake partner of slow handlers.
	helperDone := make(chan struct{})
	go func() {
		defer close(helperDone)
		for {
			select {
			case r := <-env.req:
				r <- struct{}{}
			case <-env.helperStop:
				return
			}
		}
	}()

	// The consumer: Run, or a goroutine driving Tick and Drain.
	runBase := bg // the driver's ctx without Run: its handlers never run on a worker
	if c.workers > 0 {
		runBase = context.WithValue(bg, mdRunKey{}, true)
	}
	runCtx, cancelRun := context.WithCancel(runBase)
	defer cancelRun()
	stopDriver := make(chan struct{})
	runDone := make(chan struct{})
	var runErr error
	if c.workers > 0 {
		go func() {
			defer close(runDone)
			runErr = d.Run(runCtx)
		}()
	} else {
		drng := rand.New(rand.NewPCG(mdMix(c.seed, 77), 1))
		go func() {
			defer close(runDone)
			env.drive(runCtx, stopDriver, drng)
		}()
	}

	// The producers.
	prods := newGoGroup()
	prodSeqs := make([][]uint64, plan.Producers)
	env.halfAt = max(1, int64(plan.Producers*c.ops/2))
	for pid := range plan.Producers {
		prng := rand.New(rand.NewPCG(mdMix(c.seed, 1000+uint64(pid)), 2))
		prods.Go(func() { prodSeqs[pid] = env.produce(pid, prng) })
	}
	prods.started()
	if plan.Early {
		env.wait(t, "producers (half their work)", env.halfway)
	} else {
		env.wait(t, "producers", prods.done)
	}

	// The end.
	complete := false // everything accepted must have been processed
	ranOut := false   // runDone was waited for by the ending
	switch c.end {
	case mdShutdown:
		env.closing.Store(true)
		env.markEnding()
		if err := env.call(t, "Shutdown", func() error { return d.Shutdown(bg) }); err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
		complete = true
	case mdClose:
		env.quiesce(t, true)
		env.closing.Store(true)
		env.markEnding()
		if err := env.call(t, "Close", d.Close); err != nil && !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close = %v, want nil or ErrDropped", err)
		}
	case mdCloseVsShutdown:
		env.quiesce(t, true)
		env.closing.Store(true)
		env.markEnding()
		shut := make(chan error, 1)
		go func() { shut <- d.Shutdown(bg) }()
		if rng.IntN(2) == 0 {
			runtime.Gosched()
		}
		if err := env.call(t, "Close (racing Shutdown)", d.Close); err != nil && !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close = %v, want nil or ErrDropped", err)
		}
		if err := env.call(t, "Shutdown (racing Close)", func() error { return <-shut }); err != nil {
			t.Errorf("Shutdown racing Close = %v, want nil", err)
		}
	case mdCancelDrain:
		env.quiesce(t, true)
		cancelRun()
		env.wait(t, "Run (or the driver) after its ctx was cancelled", runDone)
		env.stopping.Store(false)
		ranOut = true
		if c.workers > 0 && !errors.Is(runErr, context.Canceled) {
			t.Errorf("Run after its ctx was cancelled = %v, want context.Canceled", runErr)
		}
		if c.workers > 0 && rng.IntN(2) == 0 {
			// Run again on what the first left, and stop it again.
			ctx2, cancel2 := context.WithCancel(context.WithValue(bg, mdRunKey{}, true))
			run2 := make(chan error, 1)
			go func() { run2 <- d.Run(ctx2) }()
			for i := 0; i < 20 && d.Stats().Queued > 0; i++ {
				env.yield()
			}
			env.quiesce(t, true)
			cancel2()
			if err := env.call(t, "the second Run", func() error { return <-run2 }); !errors.Is(err, context.Canceled) {
				t.Errorf("second Run after its ctx was cancelled = %v, want context.Canceled", err)
			}
			env.stopping.Store(false)
		}
		env.finishByDrain(t, prods.done)
		if st := d.Stats(); st.Queued != 0 || st.Retrying != 0 || st.Scheduled != 0 {
			t.Errorf("after Drain finished: Queued = %d, Retrying = %d, Scheduled = %d, want 0, 0, 0", st.Queued, st.Retrying, st.Scheduled)
		}
		env.closing.Store(true)
		env.markEnding()
		if err := env.call(t, "Shutdown after Drain", func() error { return d.Shutdown(bg) }); err != nil {
			t.Errorf("Shutdown after Drain = %v, want nil", err)
		}
		complete = true
	case mdDeadline:
		env.quiesce(t, true)
		env.closing.Store(true)
		env.markEnding()
		ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond) // fake time
		err := env.call(t, "Shutdown with a deadline", func() error { return d.Shutdown(ctx) })
		cancel()
		switch {
		case err == nil:
			complete = true
		case errors.Is(err, context.DeadlineExceeded):
		default:
			t.Errorf("Shutdown with a deadline = %v, want nil or DeadlineExceeded", err)
		}
	case mdHandlerClose:
		// The closer subscriber calls Close from its next call; emit until
		// the dispatcher is closed, so that it gets one.
		env.quiesce(t, false) // no call may wait for the cancel: the closer needs a worker
		env.closing.Store(true)
		env.markEnding()
		env.closeNow.Store(true)
		err := env.call(t, "emits until a handler's Close", func() error {
			for seq := uint64(1); ; seq++ {
				p := mdPayload{src: -3, seq: seq}
				err := d.Emit(bg, "md.z", p)
				switch {
				case err == nil:
					env.accepted.Add(1) // checked like a handler's emit
					env.mu.Lock()
					env.hAccepted[p] = true
					env.mu.Unlock()
					env.kickConsumer()
					env.yield()
				case errors.Is(err, dispatcher.ErrClosed):
					return nil
				case errors.Is(err, dispatcher.ErrFull):
					env.yield()
				case errors.Is(err, dispatcher.ErrDropped):
					env.errDrop.Add(1)
					env.yield()
				default:
					return err
				}
			}
		})
		if err != nil {
			t.Errorf("Emit while waiting for a handler's Close: %v", err)
		}
		err = env.call(t, "the handler's Close", func() error { return <-env.closedByH })
		if err != nil && !errors.Is(err, dispatcher.ErrDropped) {
			t.Errorf("Close from a handler = %v, want nil or ErrDropped", err)
		}
	}

	env.wait(t, "producers", prods.done)
	close(stopDriver)
	if !ranOut {
		env.wait(t, "Run (or the driver)", runDone)
		// Run may find the dispatcher closed when its goroutine starts late.
		if c.workers > 0 && runErr != nil && !errors.Is(runErr, dispatcher.ErrClosed) {
			t.Errorf("Run = %v, want nil (or ErrClosed if it started after the end)", runErr)
		}
	}

	// After the end, the dispatcher stays closed, and stopping is idempotent.
	if err := d.Emit(bg, "md.a.x", mdPayload{src: -2}); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Emit after the end = %v, want ErrClosed", err)
	}
	if _, err := d.Tick(bg); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Tick after the end = %v, want ErrClosed", err)
	}
	if _, err := d.Redeliver(bg); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Redeliver after the end = %v, want ErrClosed", err)
	}
	if err := d.Run(bg); !errors.Is(err, dispatcher.ErrClosed) {
		t.Errorf("Run after the end = %v, want ErrClosed", err)
	}
	if err := env.call(t, "second Close", d.Close); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := env.call(t, "second Shutdown", func() error { return d.Shutdown(bg) }); err != nil {
		t.Errorf("second Shutdown = %v, want nil", err)
	}

	close(env.helperStop)
	env.wait(t, "the handshake helper", helperDone)

	env.check(t, complete, prodSeqs)
}

// quiesce prepares a stop of Run that cancels the workers' ctx (Run's ctx,
// Close, Shutdown's ctx), so that every handler call is a failure or cut
// short for sure, never a race between the two. A call that returns an
// error after the cancel is cut short (not a failure: the pair is handed
// back), one that returns before it is a failure, and which one the
// dispatcher saw is not observable from outside. So:
//
//   - A failing handler announces the failure (expectFail) and then reads
//     stopping; quiesce sets stopping and then waits until Stats.Failed
//     reaches expectFail. Either the handler read stopping as set, or
//     quiesce saw its announcement and waits for the dispatcher to count
//     it, which happens before the ctx is cancelled (sequentially
//     consistent atomics: the two cannot both miss each other).
//   - A handler that reads stopping as set withdraws its announcement.
//     With cut, on mdCutTopic a core subscriber waits for ctx.Done and
//     then returns its error: cut short for sure. Otherwise it succeeds.
//
// Without Run nothing is cut short and quiesce does nothing.
func (env *mdEnv) quiesce(t *testing.T, cut bool) {
	t.Helper()
	if env.c.workers == 0 {
		return
	}
	env.cutMode.Store(cut)
	env.stopping.Store(true)
	env.markEnding()
	for env.d.Stats().Failed != uint64(env.expectFail.Load()) {
		if env.hang.Err() != nil {
			t.Fatalf("waiting for announced failures to be counted hung: Failed %d, announced %d; goroutines:\n%s",
				env.d.Stats().Failed, env.expectFail.Load(), allStacks())
		}
		env.yield()
	}
}

// wait waits for ch, or reports what hung with every goroutine's stack.
func (env *mdEnv) wait(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-env.hang.Done():
		t.Fatalf("%s hung; goroutines:\n%s", what, allStacks())
	}
}

// call runs f on a goroutine of its own and waits for it like wait.
func (env *mdEnv) call(t *testing.T, what string, f func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-env.hang.Done():
		t.Fatalf("%s hung; goroutines:\n%s", what, allStacks())
		return nil
	}
}

// yield lets the consumers run: in a bubble by waiting for fake time (a
// goroutine that only yields would keep the bubble's clock from moving,
// and a handler waiting for it from returning), else by yielding.
func (env *mdEnv) yield() {
	if !env.plan.Bubble {
		runtime.Gosched()
		return
	}
	tm := time.NewTimer(time.Millisecond)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-env.hang.Done():
	}
}

func (env *mdEnv) register(s *mdSub) {
	s.pairs = make(map[uint64]*mdPair)
	s.lastKey = make(map[string]uint64)
	env.subs = append(env.subs, s)
	env.byName[s.name] = s
}

func (env *mdEnv) kickConsumer() {
	select {
	case env.kick <- struct{}{}:
	default:
	}
}

// produce runs one producer's operations and returns the sequence numbers
// of its accepted emits, in emit order.
func (env *mdEnv) produce(pid int, rng *rand.Rand) []uint64 {
	d := env.d
	bg := context.Background()
	cancelled, cancel := context.WithCancel(bg)
	cancel()
	var accepted []uint64
	var seq uint64
	var last dispatcher.Stats
	for range env.c.ops {
		switch r := rng.IntN(100); {
		case r < 4:
			n, err := d.Redeliver(bg)
			switch {
			case err == nil:
				env.redelivered.Add(int64(n))
			case errors.Is(err, dispatcher.ErrClosed) && env.closing.Load():
				if n != 0 {
					env.problem("Redeliver = %d, %v: want 0 with an error", n, err)
				}
			default:
				env.problem("Redeliver: unexpected error %v", err)
			}
		case r < 10:
			env.subscribeExtra(rng)
		case r < 16:
			env.unsubscribeExtra(rng)
		case r < 21 && env.c.workers > 0 && env.c.end != mdCancelDrain && dispatcher.Running(d) && !env.stopping.Load() && !env.closing.Load():
			// Under Run only: without it Flush would take the queue from
			// the ending's own Drain (TestFlush* test that).
			env.flush(pid, accepted)
		case r < 19:
			// The counters only grow, and Emitted counts every Emit that
			// already returned nil.
			a := env.accepted.Load()
			st := d.Stats()
			if st.Emitted < uint64(a) {
				env.problem("Stats.Emitted = %d after %d emits returned nil", st.Emitted, a)
			}
			if st.Emitted < last.Emitted || st.Delivered < last.Delivered || st.Failed < last.Failed ||
				st.Retried < last.Retried || st.DeadLettered < last.DeadLettered || st.Dropped < last.Dropped {
				env.problem("Stats went backwards: %+v after %+v", st, last)
			}
			if st.Queued < 0 || st.Retrying < 0 || st.DeadLetters < 0 {
				env.problem("Stats gauges below zero: %+v", st)
			}
			last = st
		default:
			seq++
			p := mdPayload{src: pid, seq: seq}
			topic := mdTopics[rng.IntN(len(mdTopics))]
			key := mdKeys[rng.IntN(len(mdKeys))]
			ctx := bg
			if env.c.policy == dispatcher.Block && rng.IntN(10) == 0 {
				ctx = cancelled // accepted if there is room, else ctx's error
			}
			var err error
			if key == "" && rng.IntN(2) == 0 {
				err = d.Emit(ctx, topic, p)
			} else {
				// ID and Attempt are the dispatcher's: these are ignored.
				e := dispatcher.Event{ID: 999, Attempt: 7, Topic: topic, Key: key, Payload: p}
				var opts []dispatcher.EmitOption
				if rng.IntN(8) == 0 {
					// Real time outside a bubble: short enough not to
					// slow the case down.
					delay := time.Duration(1+rng.IntN(3)) * time.Millisecond
					if !env.plan.Bubble {
						delay = time.Duration(1+rng.IntN(50)) * time.Microsecond
					}
					opts = append(opts, dispatcher.After(delay))
					env.mu.Lock()
					env.delayed[p] = true
					env.mu.Unlock()
				}
				if rng.IntN(2) == 0 {
					err = d.EmitEvent(ctx, e, opts...)
				} else {
					env.mu.Lock()
					env.doneWanted[p] = false // known before done may run
					env.mu.Unlock()
					err = d.EmitEvent(ctx, e, append(opts, dispatcher.OnDone(func(err error) { env.done(p, err) }))...)
					env.mu.Lock()
					env.doneWanted[p] = err == nil
					env.mu.Unlock()
				}
			}
			if err == nil {
				env.accepted.Add(1)
				accepted = append(accepted, seq)
			} else {
				env.emitFailed("producer", err, ctx == cancelled)
			}
		}
		if env.ops.Add(1) == env.halfAt {
			close(env.halfway)
		}
		env.kickConsumer()
	}
	return accepted
}

// emitFailed counts an emit's error, and reports one the policy does not
// allow.
func (env *mdEnv) emitFailed(who string, err error, ctxDone bool) {
	pol := env.c.policy
	switch {
	case errors.Is(err, dispatcher.ErrFull):
		env.errFull.Add(1)
		if pol != dispatcher.Reject && !(pol == dispatcher.Block && who == "handler") {
			env.problem("%s emit under %v: %v", who, pol, err)
		}
	case errors.Is(err, dispatcher.ErrDropped):
		env.errDrop.Add(1)
		if pol != dispatcher.DropNewest {
			env.problem("%s emit under %v: %v", who, pol, err)
		}
	case errors.Is(err, dispatcher.ErrClosed):
		env.errClose.Add(1)
		if who == "handler" {
			env.hClosed.Add(1)
		}
		if !env.closing.Load() {
			env.problem("%s emit got ErrClosed before any Shutdown or Close", who)
		}
	case errors.Is(err, context.Canceled) && ctxDone && pol == dispatcher.Block:
		env.errCtx.Add(1)
	default:
		env.problem("%s emit under %v: unexpected error %v", who, pol, err)
	}
}

func (env *mdEnv) subscribeExtra(rng *rand.Rand) {
	env.subsMu.Lock()
	defer env.subsMu.Unlock()
	if len(env.live) >= 4 {
		return
	}
	env.nextExtra++
	s := &mdSub{
		name: fmt.Sprintf("x%d", env.nextExtra),
		pat:  mdExtraPats[rng.IntN(len(mdExtraPats))],
		idx:  uint64(100 + env.nextExtra),
		kind: []mdKind{mdAlwaysOK, mdFlaky, mdBad, mdBad}[rng.IntN(4)],
		slow: rng.IntN(2) == 0,
	}
	env.register(s)
	h, err := env.d.On(s.pat, env.handler(s), dispatcher.WithName(s.name))
	if err != nil {
		env.problem("On(%q): %v", s.pat, err)
		return
	}
	s.handle.Store(h)
	env.live = append(env.live, s)
}

func (env *mdEnv) unsubscribeExtra(rng *rand.Rand) {
	env.subsMu.Lock()
	defer env.subsMu.Unlock()
	if len(env.live) == 0 {
		return
	}
	i := rng.IntN(len(env.live))
	s := env.live[i]
	s.gone.Store(true)
	s.handle.Load().Unsubscribe()
	if rng.IntN(3) == 0 {
		s.handle.Load().Unsubscribe() // idempotent
	}
	env.live = append(env.live[:i], env.live[i+1:]...)
}

// handler returns s's handler: it checks the event, records the call,
// maybe emits a follow-up, maybe is slow, and succeeds, fails or panics as
// the hash of (seed, subscriber, event, attempt) says.
func (env *mdEnv) handler(s *mdSub) dispatcher.Handler {
	return func(ctx context.Context, e dispatcher.Event) error {
		p, _ := e.Payload.(mdPayload)
		env.checkEvent(s, e, p)
		h := mdMix(env.c.seed, s.idx, e.ID, uint64(e.Attempt))
		env.fromHandler(ctx, s, h)
		if s.emits && p.depth < 2 && h%3 == 0 {
			env.emitFollowUp(ctx, e, p, h)
		}
		if s.slow {
			env.beSlow(ctx, h)
		}
		out := mdOK
		panics := false
		if e.Attempt <= s.kind.failUpTo(mdMix(env.c.seed, s.idx, e.ID)) {
			out, panics = mdFailed, h%4 < 2
			if !panics && ctx.Value(mdRunKey{}) != nil {
				// An error under Run: a failure, unless the stop of Run
				// cancelled ctx first (then the call is cut short). See
				// quiesce for the handshake that makes it one or the other.
				env.expectFail.Add(1)
				if env.stopping.Load() {
					env.expectFail.Add(-1)
					out = mdOK
					if env.cutMode.Load() && s.core && e.Topic == mdCutTopic {
						out = mdCut
					}
				}
			} else {
				env.expectFail.Add(1) // a panic, or no Run: always a failure
			}
		}
		env.record(s, e, out)
		switch {
		case out == mdOK:
			return nil
		case out == mdCut:
			<-ctx.Done() // the error comes after the cancel: the call is cut short for sure
		case panics && h%4 == 0:
			panic(fmt.Errorf("%w: %s panicked on event %d", errMdFail, s.name, e.ID))
		case panics:
			panic("md: " + s.name + " panicked")
		}
		return fmt.Errorf("%w: %s on event %d, attempt %d", errMdFail, s.name, e.ID, e.Attempt)
	}
}

// checkEvent records a fan-out (the witness) or compares the event with
// the witness's record of it: every call belongs to an event whose fan-out
// began, and carries that event's topic, key and payload.
func (env *mdEnv) checkEvent(s *mdSub, e dispatcher.Event, p mdPayload) {
	if _, ok := e.Payload.(mdPayload); !ok {
		env.problem("%s: event %d has payload %T", s.name, e.ID, e.Payload)
	}
	if !mdMatches(s.pat, e.Topic) {
		env.problem("%s (%s) got event %d on topic %q", s.name, s.pat, e.ID, e.Topic)
	}
	seen := mdSeen{topic: e.Topic, key: e.Key, payload: p}
	env.mu.Lock()
	defer env.mu.Unlock()
	if s.witness {
		if e.Attempt != 1 {
			env.problemLocked("witness got event %d with Attempt %d", e.ID, e.Attempt)
		}
		if _, dup := env.events[e.ID]; dup {
			env.problemLocked("event %d fanned out twice", e.ID)
		}
		env.events[e.ID] = seen
		return
	}
	w, ok := env.events[e.ID]
	switch {
	case !ok:
		env.problemLocked("%s got event %d, whose fan-out the witness never saw", s.name, e.ID)
	case w != seen:
		env.problemLocked("%s got event %d as %+v, the witness as %+v", s.name, e.ID, seen, w)
	}
}

func (env *mdEnv) problemLocked(format string, args ...any) {
	if len(env.problems) < 30 {
		env.problems = append(env.problems, fmt.Sprintf(format, args...))
	}
}

// record checks a call against the pair's history and counts it. The calls
// of one pair never overlap: a retry is queued after the failed call
// returned, a redelivery after the pair became a dead letter.
func (env *mdEnv) record(s *mdSub, e dispatcher.Event, out mdOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr := s.pairs[e.ID]
	first := pr == nil
	switch {
	case pr == nil:
		if e.Attempt != 1 {
			env.problem("%s: first call for event %d has Attempt %d", s.name, e.ID, e.Attempt)
		}
		pr = &mdPair{}
		s.pairs[e.ID] = pr
	case pr.ok:
		env.problem("%s: event %d called again (Attempt %d) after it succeeded", s.name, e.ID, e.Attempt)
	case pr.cut:
		if e.Attempt != pr.last {
			env.problem("%s: event %d called with Attempt %d after a call with Attempt %d was cut short", s.name, e.ID, e.Attempt, pr.last)
		}
	case !pr.failed:
		env.problem("%s: event %d called again while its last call was in progress", s.name, e.ID)
	case e.Attempt == 1: // a redelivery
	case e.Attempt != pr.last+1:
		env.problem("%s: event %d called with Attempt %d after Attempt %d", s.name, e.ID, e.Attempt, pr.last)
	}
	if e.Attempt < 1 || e.Attempt > env.plan.Attempts {
		env.problem("%s: event %d called with Attempt %d, budget %d", s.name, e.ID, e.Attempt, env.plan.Attempts)
	}
	if e.Attempt > 1 {
		s.retries++
	}
	pr.calls++
	s.calls++
	pr.last, pr.failed, pr.cut = e.Attempt, out == mdFailed, out == mdCut
	switch out {
	case mdFailed:
		s.failed++
	case mdCut:
		// cutShort hands back a share for the cut subscriber and for each
		// active one after it in the fan-out: on mdCutTopic, after f only
		// e (no extra matches it), and f's first call is always its
		// fan-out's (w and k before it never fail).
		s.cutShares++
		if first {
			pr.firstCut = true
			if s.name == "f" {
				s.cutShares++
			}
		}
	default:
		s.ok++
		pr.ok = true
	}
	if !s.ordered {
		return
	}
	if p, _ := e.Payload.(mdPayload); env.isDelayed(p) {
		return // it takes its place in the order when it is due
	}
	switch {
	case env.c.workers == 0:
		// Without Run the queue is one FIFO.
		if e.ID <= s.lastID {
			env.problem("%s: event %d after event %d without Run (global FIFO)", s.name, e.ID, s.lastID)
		}
		s.lastID = e.ID
	case e.Key != "":
		if last := s.lastKey[e.Key]; e.ID <= last {
			env.problem("%s: key %s: event %d after event %d", s.name, e.Key, e.ID, last)
		}
		s.lastKey[e.Key] = e.ID
	}
}

// fromHandler makes the calls a handler may make: Close (the closer, when
// the end asks), Unsubscribe of itself (extras), Redeliver, and the calls
// that must refuse (a nested Tick, Shutdown).
func (env *mdEnv) fromHandler(ctx context.Context, s *mdSub, h uint64) {
	d := env.d
	// Not a sync.Once: a second caller would wait inside its handler for
	// the first, whose Close waits for the second's worker.
	if s.closer && env.closeNow.CompareAndSwap(true, false) {
		env.closedByH <- d.Close()
	}
	switch r := h >> 32 % 64; {
	case !s.core && r < 3:
		if sub := s.handle.Load(); sub != nil {
			s.gone.Store(true)
			sub.Unsubscribe()
		}
	case s.name == "f" && r < 4 && env.hRedeliver.Add(1) <= 4:
		// A budget: a redelivered pair that always fails calls its
		// handler again, which could redeliver again, for ever.
		n, err := d.Redeliver(ctx)
		// Queued, with or without an error: a ctx that ends during the
		// choice leaves the ones chosen so far queued (see RedeliverIf).
		env.redelivered.Add(int64(n))
		ctxEnded := ctx.Err() != nil && errors.Is(err, ctx.Err())
		switch {
		case err == nil:
		case n != 0 && !ctxEnded:
			env.problem("Redeliver from a handler = %d, %v: want 0 with an error other than ctx's", n, err)
		case errors.Is(err, dispatcher.ErrClosed) && env.closing.Load():
		case ctxEnded: // Run's ctx ended, or Close cancelled it
		default:
			env.problem("Redeliver from a handler: unexpected error %v", err)
		}
	case s.name == "e" && r < 2:
		n, err := d.Tick(ctx)
		if n != 0 || !(errors.Is(err, dispatcher.ErrRunning) || errors.Is(err, dispatcher.ErrClosed) && env.closing.Load()) {
			env.problem("Tick from a handler = %d, %v; want ErrRunning", n, err)
		}
	case s.name == "e" && r < 4:
		if err := d.Shutdown(ctx); !errors.Is(err, dispatcher.ErrRunning) {
			env.problem("Shutdown from a handler = %v, want ErrRunning", err)
		}
	case s.name == "e" && r < 6:
		if err := d.Flush(ctx); !errors.Is(err, dispatcher.ErrRunning) {
			env.problem("Flush from a handler = %v, want ErrRunning", err)
		}
	}
}

// markEnding tells Flush calls that the end began (see flush).
func (env *mdEnv) markEnding() { env.endingOnce.Do(func() { close(env.ending) }) }

func (env *mdEnv) isDelayed(p mdPayload) bool {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.delayed[p]
}

// flush calls Flush under Run and checks that every event producer pid
// emitted with OnDone before the call (accepted lists its seqs) is
// finished when it returns nil. A stop that begins meanwhile may end it:
// then nothing is checked.
func (env *mdEnv) flush(pid int, accepted []uint64) {
	ctx, cancel := context.WithCancel(env.hang)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// The stop of Run hands Flush to the caller's goroutine, where it
		// would compete with the ending's Drain: it ends Flush instead.
		select {
		case <-stop:
		case <-env.ending:
			cancel()
		}
	}()
	err := env.d.Flush(ctx)
	switch {
	case err == nil && !env.stopping.Load() && !env.closing.Load():
		env.mu.Lock()
		defer env.mu.Unlock()
		for _, seq := range accepted {
			p := mdPayload{src: pid, seq: seq}
			if env.doneWanted[p] && len(env.dones[p]) == 0 {
				env.problemLocked("producer %d: Flush returned before emit %d was finished", pid, seq)
			}
		}
		env.flushes.Add(1)
	case err == nil:
	case errors.Is(err, dispatcher.ErrClosed) && env.closing.Load():
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
	case errors.Is(err, dispatcher.ErrRunning) && env.stopping.Load():
	default:
		env.problem("producer %d: Flush = %v", pid, err)
	}
}

// done is an OnDone callback: it must not block, so it only records.
func (env *mdEnv) done(p mdPayload, err error) {
	env.mu.Lock()
	env.dones[p] = append(env.dones[p], err)
	env.mu.Unlock()
}

func (env *mdEnv) emitFollowUp(ctx context.Context, e dispatcher.Event, p mdPayload, h uint64) {
	np := mdPayload{src: -1, seq: env.hseq.Add(1), depth: p.depth + 1}
	topic := []string{"md.c.x", "md.c.y"}[h>>8%2]
	err := env.d.EmitEvent(ctx, dispatcher.Event{Topic: topic, Key: e.Key, Payload: np})
	if err != nil {
		env.emitFailed("handler", err, false)
		return
	}
	env.accepted.Add(1)
	env.mu.Lock()
	env.hAccepted[np] = true
	env.mu.Unlock()
}

// beSlow keeps the handler busy without sleeping: a handshake with another
// goroutine, a few yields, or, in a bubble, a wait for fake time that ends
// early with ctx.
func (env *mdEnv) beSlow(ctx context.Context, h uint64) {
	switch h >> 16 % 6 {
	case 0:
		r := make(chan struct{}, 1)
		select {
		case env.req <- r:
			<-r
		case <-env.helperStop:
		}
	case 1:
		for range 5 {
			runtime.Gosched()
		}
	case 2:
		if env.plan.Bubble {
			tm := time.NewTimer(time.Duration(1+h>>24%25) * time.Millisecond)
			select {
			case <-tm.C:
			case <-ctx.Done():
				tm.Stop()
			}
		}
	}
}

// drive is the consumer without Run: Tick and Drain (with a random limit)
// until stopped, waiting for a kick when there is nothing to do.
func (env *mdEnv) drive(ctx context.Context, stop <-chan struct{}, rng *rand.Rand) {
	d := env.d
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		var n int
		var err error
		if rng.IntN(2) == 0 {
			n, err = d.Tick(ctx)
		} else {
			n, err = d.Drain(ctx, rng.IntN(6))
		}
		if env.stepErr("driver", err, ctx) {
			return
		}
		if n > 0 {
			continue
		}
		st := d.Stats()
		if st.Queued > 0 {
			continue
		}
		if st.Retrying > 0 && env.unit == 0 {
			continue // retries without backoff are due at once
		}
		if !env.idle(st, stop, ctx.Done()) {
			return
		}
	}
}

// idle waits for a kick, for the backoff's unit of (fake) time when
// retries wait, or for stop or done; it reports false for the last two.
func (env *mdEnv) idle(st dispatcher.Stats, stop, done <-chan struct{}) bool {
	var due <-chan time.Time
	switch {
	case st.Retrying > 0 && env.unit > 0:
		tm := time.NewTimer(env.unit) // fake time: a bubble
		defer tm.Stop()
		due = tm.C
	case st.Scheduled > 0:
		tm := time.NewTimer(time.Millisecond) // delayed events come due
		defer tm.Stop()
		due = tm.C
	}
	select {
	case <-env.kick:
	case <-due:
	case <-stop:
		return false
	case <-done:
		return false
	}
	return true
}

// finishByDrain drains on the caller's goroutine until the producers are
// done and nothing is queued or waiting to be retried.
func (env *mdEnv) finishByDrain(t *testing.T, prodsDone <-chan struct{}) {
	t.Helper()
	d := env.d
	bg := context.Background()
	for {
		n, err := d.Drain(bg, 0)
		if env.stepErr("finishing Drain", err, bg) {
			t.Errorf("finishing Drain stopped: %v", err)
			return
		}
		done := false // before Stats: a producer still running may emit after it
		select {
		case <-prodsDone:
			done = true
		default:
		}
		st := d.Stats()
		if done && st.Queued == 0 && st.Retrying == 0 && st.Scheduled == 0 {
			return
		}
		if n > 0 || st.Queued > 0 || (st.Retrying > 0 && env.unit == 0) {
			continue
		}
		stop := prodsDone
		if done {
			stop = nil // only kicks and retries' backoff now
		}
		if !env.idle(st, stop, env.hang.Done()) && env.hang.Err() != nil {
			t.Fatalf("finishing Drain: waiting for producers hung; stats %+v; goroutines:\n%s", d.Stats(), allStacks())
		}
	}
}

// stepErr checks the error of a Tick or Drain and reports whether the
// caller must stop (ErrClosed, or its ctx ended). The handler failures it
// joins are counted and checked.
func (env *mdEnv) stepErr(who string, err error, ctx context.Context) (stop bool) {
	if err == nil {
		return false
	}
	var walk func(error)
	walk = func(err error) {
		var he *dispatcher.HandlerError
		switch {
		case errors.As(err, &he) && err == error(he):
			env.reportedDL.Add(1)
			if he.Attempt < 1 || he.Attempt > env.plan.Attempts || !mdOurFailure(he.Err) {
				env.problem("%s: bad HandlerError %v", who, he)
			}
		case errors.Is(err, dispatcher.ErrClosed) && !isJoin(err):
			stop = true
			if !env.closing.Load() {
				env.problem("%s: ErrClosed before any Shutdown or Close", who)
			}
		case errors.Is(err, context.Canceled) && !isJoin(err) && ctx.Err() != nil:
			stop = true
		case errors.Is(err, dispatcher.ErrRunning) && env.closing.Load():
			// The only other owner of the queue here is Shutdown's drain,
			// and Tick's doc says: after Shutdown or Close, ErrClosed.
			stop = true
			env.problem("%s racing Shutdown got %v; want ErrClosed (Shutdown began before its drain took the queue)", who, err)
		case isJoin(err):
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				walk(e)
			}
		default:
			stop = true
			env.problem("%s: unexpected error %v", who, err)
		}
	}
	walk(err)
	return stop
}

// mdOurFailure reports whether err is what the handlers fail with: an
// error wrapping errMdFail, or a panic.
func mdOurFailure(err error) bool {
	var pe *dispatcher.PanicError
	if errors.As(err, &pe) {
		if s, ok := pe.Value.(string); ok {
			return strings.HasPrefix(s, "md: ") && len(pe.Stack) > 0
		}
		return errors.Is(err, errMdFail) && len(pe.Stack) > 0
	}
	return errors.Is(err, errMdFail)
}

// check compares the records with Stats and DeadLetters once every
// goroutine has stopped.
//
// Where Stats.Dropped is counted (emit.go, deliver.go, batch.go,
// pending.go, via dropJobs or directly): an Emit under DropNewest that
// returns ErrDropped (never accepted); a DropOldest eviction (an accepted
// event, never processed); the discard of queued jobs by Close, by a
// Shutdown whose ctx ended, and by a consumer that stops after Close
// (pending.clear, handBack), each job a fresh event or a pair job (a
// retry, a redelivery or a share handed back by a call cut short); a pair
// job taken for a subscriber that left (process, cutShort); and a dead
// letter evicted by the bound. A job is counted once, where it ends. So,
// exactly:
//
//	Dropped == ErrDropped returns
//	         + fresh events dropped     Emitted - events whose fan-out began (the witness saw)
//	         + pair jobs dropped        pair jobs made - pair jobs called
//	         + dead letters evicted     DeadLettered - len(DeadLetters()) - sum of Redeliver's n
//
//	pair jobs made   = (Failed - DeadLettered)   a failure queues a retry or is a dead letter
//	                 + sum of Redeliver's n
//	                 + shares of cut calls        counted by the cut handler (see record)
//	pair jobs called = handler calls - fan-out calls
//	fan-out calls    = (event, subscriber) pairs called - pairs of e whose first call
//	                   came from the share of f's cut fan-out call
//
// Each term must be >= 0. Stats has a single Dropped counter, so the terms
// cannot be checked one by one; a job lost or counted twice anywhere
// breaks the sum. What makes the shares countable is quiesce: calls are
// cut short only on mdCutTopic, whose fan-out has no extra subscriber.
func (env *mdEnv) check(t *testing.T, complete bool, prodSeqs [][]uint64) {
	t.Helper()
	env.mu.Lock()
	problems := env.problems
	env.mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}

	d := env.d
	st := d.Stats()
	dls := d.DeadLetters()

	var ok, failed, retries, calls, pairs, shares, goneFailed int64
	for _, s := range env.subs {
		ok += int64(s.ok)
		failed += int64(s.failed)
		retries += int64(s.retries)
		calls += int64(s.calls)
		pairs += int64(len(s.pairs))
		shares += int64(s.cutShares)
		if s.gone.Load() {
			goneFailed += int64(s.failed)
		}
	}
	// e's first call for an event whose fan-out was cut short at f came
	// from f's share, not from the fan-out.
	var eFromShare int64
	if f, e := env.byName["f"], env.byName["e"]; f != nil && e != nil {
		for id, pr := range f.pairs {
			if pr.firstCut && e.pairs[id] != nil {
				eFromShare++
			}
		}
	}
	if got, want := int64(st.Emitted), env.accepted.Load(); got != want {
		t.Errorf("Stats.Emitted = %d, want %d (Emits that returned nil)", got, want)
	}
	if got := int64(st.Delivered); got != ok {
		t.Errorf("Stats.Delivered = %d, want %d (calls that returned nil)", got, ok)
	}
	if got := int64(st.Failed); got != failed {
		t.Errorf("Stats.Failed = %d, want %d (calls that failed or panicked)", got, failed)
	}
	if got := int64(st.Retried); got != retries {
		t.Errorf("Stats.Retried = %d, want %d (calls with Attempt > 1)", got, retries)
	}
	if complete {
		// Every job that left the ring was published as finished.
		if n := dispatcher.Outstanding(d); n != 0 {
			t.Errorf("after a complete end: Flush's ledger counts %d jobs outside the ring, want 0", n)
		}
	}
	if st.Queued != 0 || st.Retrying != 0 || st.Scheduled != 0 {
		t.Errorf("after the end: Queued = %d, Retrying = %d, Scheduled = %d, want 0, 0, 0", st.Queued, st.Retrying, st.Scheduled)
	}
	if st.DeadLetters != len(dls) {
		t.Errorf("Stats.DeadLetters = %d, len(DeadLetters()) = %d", st.DeadLetters, len(dls))
	}
	if n := env.reportedDL.Load(); n > int64(st.DeadLettered) {
		t.Errorf("Tick and Drain reported %d dead-lettered failures, Stats.DeadLettered = %d", n, st.DeadLettered)
	}
	limit := dispatcher.DefaultDeadLetterLimit
	if env.plan.DeadLimit > 0 {
		limit = env.plan.DeadLimit
	}
	if len(dls) > limit {
		t.Errorf("len(DeadLetters()) = %d, above the limit %d", len(dls), limit)
	}

	// The accounting identity (see above).
	env.mu.Lock()
	events := env.events
	hAccepted := env.hAccepted
	env.mu.Unlock()
	redelivered := env.redelivered.Load()
	freshDropped := int64(st.Emitted) - int64(len(events))
	pairJobs := failed - int64(st.DeadLettered) + redelivered + shares
	pairCalls := calls - (pairs - eFromShare)
	pairDropped := pairJobs - pairCalls
	evicted := int64(st.DeadLettered) - int64(len(dls)) - redelivered
	terms := fmt.Sprintf("ErrDropped %d + fresh %d + pair jobs %d (made %d = retries %d + redeliveries %d + shares %d; called %d) + evicted dead letters %d",
		env.errDrop.Load(), freshDropped, pairDropped, pairJobs, failed-int64(st.DeadLettered), redelivered, shares, pairCalls, evicted)
	t.Logf("stats %+v; emits: accepted %d, ErrFull %d, ErrDropped %d, ErrClosed %d (handlers %d), ctx %d; Tick/Drain reported %d dead letters; dropped: %s",
		st, env.accepted.Load(), env.errFull.Load(), env.errDrop.Load(), env.errClose.Load(), env.hClosed.Load(), env.errCtx.Load(),
		env.reportedDL.Load(), terms)
	if freshDropped < 0 || pairDropped < 0 || evicted < 0 || failed < int64(st.DeadLettered) {
		t.Errorf("negative drop term: %s", terms)
	}
	if want := env.errDrop.Load() + freshDropped + pairDropped + evicted; int64(st.Dropped) != want {
		t.Errorf("Stats.Dropped = %d, want %d = %s", st.Dropped, want, terms)
	}
	if int(st.DeadLettered) <= limit && evicted != 0 {
		t.Errorf("%d dead letters evicted, but only %d were made (limit %d)", evicted, st.DeadLettered, limit)
	}
	if complete {
		if env.c.policy != dispatcher.DropOldest && freshDropped != 0 {
			t.Errorf("after a complete Shutdown: %d accepted events were never processed (%s)", freshDropped, terms)
		}
		// Only the subscribers that left may lose pair jobs (each of
		// theirs comes from one of their failures: extras are never cut).
		if pairDropped > goneFailed {
			t.Errorf("after a complete Shutdown: %d pair jobs dropped, but unsubscribed handlers failed only %d times (%s)",
				pairDropped, goneFailed, terms)
		}
		if env.hClosed.Load() != 0 {
			t.Errorf("after a complete Shutdown: %d handler emits got ErrClosed (a handler ran after the ring closed)", env.hClosed.Load())
		}
	}

	// Events: IDs 1..Emitted; every processed event was accepted, once; the
	// IDs of one producer's accepted events follow its emit order.
	idOf := make(map[mdPayload]uint64, len(events))
	for id, e := range events {
		if id < 1 || id > st.Emitted {
			t.Errorf("event ID %d outside 1..%d", id, st.Emitted)
		}
		if prev, dup := idOf[e.payload]; dup {
			t.Errorf("payload %+v processed as events %d and %d", e.payload, prev, id)
		}
		idOf[e.payload] = id
	}
	acceptedSet := make(map[mdPayload]bool)
	for pid, seqs := range prodSeqs {
		var last uint64
		for _, seq := range seqs {
			p := mdPayload{src: pid, seq: seq}
			acceptedSet[p] = true
			id, ok := idOf[p]
			if !ok {
				if complete && env.c.policy != dispatcher.DropOldest {
					t.Errorf("producer %d's accepted emit %d was never processed", pid, seq)
				}
				continue
			}
			if id <= last {
				t.Errorf("producer %d: emit %d got ID %d after ID %d", pid, seq, id, last)
			}
			last = id
		}
	}
	for p := range hAccepted {
		acceptedSet[p] = true
		if _, ok := idOf[p]; !ok && complete && env.c.policy != dispatcher.DropOldest {
			t.Errorf("a handler's accepted emit %+v was never processed", p)
		}
	}
	for p, id := range idOf {
		if !acceptedSet[p] {
			t.Errorf("event %d (%+v) was processed, but its Emit did not return nil", id, p)
		}
	}

	// Dead letters: each is the last failed call of its pair.
	type pairKey struct {
		sub string
		id  uint64
	}
	inDL := make(map[pairKey]bool, len(dls))
	for _, dl := range dls {
		k := pairKey{dl.Subscriber, dl.Event.ID}
		if inDL[k] {
			t.Errorf("dead letter (%s, event %d) twice", k.sub, k.id)
		}
		inDL[k] = true
		s := env.byName[dl.Subscriber]
		if s == nil {
			t.Errorf("dead letter for unknown subscriber %q", dl.Subscriber)
			continue
		}
		if !mdOurFailure(dl.Err) {
			t.Errorf("dead letter (%s, event %d): Err = %v, not the handler's failure", k.sub, k.id, dl.Err)
		}
		pr := s.pairs[dl.Event.ID]
		switch {
		case pr == nil:
			t.Errorf("dead letter (%s, event %d) for a pair never called", k.sub, k.id)
		case pr.ok || !pr.failed || pr.cut || pr.last != dl.Event.Attempt || dl.Attempts != dl.Event.Attempt:
			t.Errorf("dead letter (%s, event %d, Attempt %d, Attempts %d), but the pair's last call: %+v",
				k.sub, k.id, dl.Event.Attempt, dl.Attempts, *pr)
		}
		if w, ok := events[dl.Event.ID]; !ok || w != (mdSeen{dl.Event.Topic, dl.Event.Key, w.payload}) || dl.Event.Payload != any(w.payload) {
			t.Errorf("dead letter (%s, event %d) holds %+v, the witness saw %+v", k.sub, k.id, dl.Event, w)
		}
	}

	// OnDone: exactly once for each accepted event that asked, never for a
	// refused one. nil only when every core pair was delivered; ErrDropped
	// for an event dropped before its fan-out; each handler failure a
	// dead letter's; each final dead letter among the failures.
	for p, accepted := range env.doneWanted {
		got := env.dones[p]
		switch {
		case !accepted && len(got) != 0:
			t.Errorf("OnDone of a refused emit %+v called %d times", p, len(got))
			continue
		case !accepted:
			continue
		case len(got) != 1:
			t.Errorf("OnDone of accepted emit %+v called %d times, want once", p, len(got))
			continue
		}
		err := got[0]
		id, seen := idOf[p]
		if !seen {
			if !errors.Is(err, dispatcher.ErrDropped) {
				t.Errorf("OnDone of %+v, dropped before its fan-out: %v, want ErrDropped", p, err)
			}
			continue
		}
		failedSubs := make(map[string]bool)
		for _, leaf := range joinedLeaves(err) {
			var he *dispatcher.HandlerError
			switch {
			case errors.As(leaf, &he):
				failedSubs[he.Subscriber] = true
				if he.EventID != id || env.byName[he.Subscriber] == nil || !mdOurFailure(he.Err) {
					t.Errorf("OnDone of event %d: bad handler failure %v", id, he)
				}
			case !errors.Is(leaf, dispatcher.ErrDropped):
				t.Errorf("OnDone of event %d: unexpected error %v", id, leaf)
			}
		}
		if err == nil {
			for _, s := range env.subs {
				if pr := s.pairs[id]; s.core && mdMatches(s.pat, events[id].topic) && (pr == nil || !pr.ok) {
					t.Errorf("OnDone of event %d: nil, but %s did not deliver it", id, s.name)
				}
			}
		}
		for _, dl := range dls {
			if dl.Event.ID == id && !failedSubs[dl.Subscriber] {
				t.Errorf("OnDone of event %d: %v, which misses the dead letter of %s", id, err, dl.Subscriber)
			}
		}
	}

	// Every core subscriber got every event its pattern matches whose
	// fan-out began, and each such pair ended delivered or dead-lettered,
	// except pairs whose dead letter was evicted or whose pair job (retry,
	// redelivery, share) was dropped.
	unresolved := int64(0)
	for id, e := range events {
		for _, s := range env.subs {
			if !s.core || !mdMatches(s.pat, e.topic) {
				continue
			}
			pr := s.pairs[id]
			switch {
			case pr == nil && s.name == "e" && env.byName["f"].pairs[id] != nil && env.byName["f"].pairs[id].firstCut:
				unresolved++ // the fan-out was cut short at f, and e's share not called yet
			case pr == nil:
				t.Errorf("%s never got event %d (%s), whose fan-out began", s.name, id, e.topic)
			case !pr.ok && !inDL[pairKey{s.name, id}]:
				unresolved++
			}
		}
	}
	bound := evicted + pairDropped
	if complete {
		bound = evicted // core subscribers never leave: their retries are not dropped
	}
	if unresolved > bound {
		t.Errorf("%d (event, core subscriber) pairs neither delivered nor dead letters, but only %d dead letters were evicted or retries dropped (%s)",
			unresolved, bound, terms)
	}
}

// mdMatches is the topic rule, written out: "*" one token, ">" the rest.
func mdMatches(pattern, topic string) bool {
	ps, ts := strings.Split(pattern, "."), strings.Split(topic, ".")
	for i, p := range ps {
		if p == ">" {
			return len(ts) > i
		}
		if i >= len(ts) || (p != "*" && p != ts[i]) {
			return false
		}
	}
	return len(ps) == len(ts)
}

// mdMix hashes its arguments (splitmix64 steps).
func mdMix(vals ...uint64) uint64 {
	h := uint64(0x243f6a8885a308d3)
	for _, v := range vals {
		h ^= v
		h += 0x9e3779b97f4a7c15
		h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
		h = (h ^ h>>27) * 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}
