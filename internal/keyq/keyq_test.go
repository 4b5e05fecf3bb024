package keyq_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ringbus/ringbus/internal/keyq"
)

// item is the payload of every test: keyOf reports key, id tells items
// apart, and seq numbers the items of one key in emission order (the model
// test only).
type item struct {
	key string
	id  int
	seq int
}

func keyOf(it *item) string { return it.key }

// batch returns one item per key, with the ids first, first+1, ...
func batch(first int, keys ...string) []item {
	b := make([]item, len(keys))
	for i, k := range keys {
		b[i] = item{key: k, id: first + i}
	}
	return b
}

// ids returns the ids of its, in order.
func ids(its []item) []int {
	var out []int
	for _, it := range its {
		out = append(out, it.id)
	}
	return out
}

// pick returns the items of b with the given ids, which index b.
func pick(b []item, ids []int) []item {
	var out []item
	for _, id := range ids {
		out = append(out, b[id])
	}
	return out
}

// drain releases k, which must be owned, until it is free and returns the
// ids Release handed back, in order.
func drain(t *testing.T, q *keyq.Queue[item], k string) []int {
	t.Helper()
	var got []int
	for range q.Len() + 1 {
		next, ok := q.Release(k)
		if !ok {
			if next != (item{}) {
				t.Errorf("Release(%q) = %+v, false, want the zero item", k, next)
			}
			return got
		}
		if next.key != k {
			t.Errorf("Release(%q) returned item %d of key %q", k, next.id, next.key)
		}
		got = append(got, next.id)
	}
	t.Errorf("Release(%q) still returns items after %v", k, got)
	return got
}

func wantState(t *testing.T, q *keyq.Queue[item], wantLen, wantOwned int, wantFull bool) {
	t.Helper()
	if got := q.Len(); got != wantLen {
		t.Errorf("Len() = %d, want %d", got, wantLen)
	}
	if got := q.Owned(); got != wantOwned {
		t.Errorf("Owned() = %d, want %d", got, wantOwned)
	}
	if got := q.Full(); got != wantFull {
		t.Errorf("Full() = %t, want %t", got, wantFull)
	}
}

// wantReleasePanic checks that Release(k) panics with a keyq message that
// names k.
func wantReleasePanic(t *testing.T, q *keyq.Queue[item], k string) {
	t.Helper()
	r := func() (r any) {
		defer func() { r = recover() }()
		q.Release(k)
		return nil
	}()
	switch s, ok := r.(string); {
	case r == nil:
		t.Errorf("Release(%q) returned, want a panic", k)
	case !ok || !strings.HasPrefix(s, "keyq: ") || !strings.HasSuffix(s, ": "+k):
		t.Errorf("Release(%q) panicked with %#v, want a keyq panic naming the key", k, r)
	}
}

func TestAdmit(t *testing.T) {
	tests := []struct {
		name        string
		limit       int
		owned       []string // keys owned before the Admit under test
		give        []string // keys of the admitted items, ids 0, 1, ...
		want        []int    // ids of the items Admit keeps, in order
		wantBacklog map[string][]int
		wantOwned   int
		wantFull    bool
	}{
		{name: "none", limit: 4},
		{
			name:  "unkeyed items are kept",
			limit: 4,
			give:  []string{"", "", ""},
			want:  []int{0, 1, 2},
		},
		{
			name:        "unkeyed items are kept while keys are owned",
			limit:       4,
			owned:       []string{"a"},
			give:        []string{"", "a", ""},
			want:        []int{0, 2},
			wantBacklog: map[string][]int{"a": {1}},
			wantOwned:   1,
		},
		{
			name:      "first item of a free key is kept",
			limit:     4,
			give:      []string{"a"},
			want:      []int{0},
			wantOwned: 1,
		},
		{
			name:        "later items of the key wait in order",
			limit:       4,
			give:        []string{"a", "a", "a", "a"},
			want:        []int{0},
			wantBacklog: map[string][]int{"a": {1, 2, 3}},
			wantOwned:   1,
		},
		{
			name:        "every item of an owned key waits",
			limit:       4,
			owned:       []string{"a"},
			give:        []string{"a", "b", "a"},
			want:        []int{1},
			wantBacklog: map[string][]int{"a": {0, 2}},
			wantOwned:   2,
		},
		{
			name:        "kept items keep their order",
			limit:       8,
			give:        []string{"a", "", "b", "a", "c", "", "b", "c", "d"},
			want:        []int{0, 1, 2, 4, 5, 8},
			wantBacklog: map[string][]int{"a": {3}, "b": {6}, "c": {7}},
			wantOwned:   4,
		},
		{
			name:        "below the limit",
			limit:       3,
			give:        []string{"a", "a", "a"},
			want:        []int{0},
			wantBacklog: map[string][]int{"a": {1, 2}},
			wantOwned:   1,
		},
		{
			name:        "at the limit",
			limit:       2,
			give:        []string{"a", "a", "a"},
			want:        []int{0},
			wantBacklog: map[string][]int{"a": {1, 2}},
			wantOwned:   1,
			wantFull:    true,
		},
		{
			name:        "over the limit, counted across keys",
			limit:       2,
			give:        []string{"a", "b", "a", "b", "b"},
			want:        []int{0, 1},
			wantBacklog: map[string][]int{"a": {2}, "b": {3, 4}},
			wantOwned:   2,
			wantFull:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := keyq.New[item](tt.limit)
			if kept := q.Admit(batch(100, tt.owned...), keyOf); len(kept) != len(tt.owned) {
				t.Fatalf("Admit(%q) kept %v, want every item", tt.owned, ids(kept))
			}
			give := batch(0, tt.give...)
			got := q.Admit(give, keyOf)
			if want := pick(batch(0, tt.give...), tt.want); !slices.Equal(got, want) {
				t.Errorf("Admit(%q) = %+v, want %+v", tt.give, got, want)
			}
			if len(got) > 0 && &got[0] != &give[0] {
				t.Errorf("Admit(%q) returned a new array, want the items' own", tt.give)
			}
			for i := len(got); i < len(give); i++ {
				if give[i] != (item{}) {
					t.Errorf("Admit(%q) left items[%d] = %+v, want the zero item", tt.give, i, give[i])
				}
			}
			wantLen := 0
			for _, b := range tt.wantBacklog {
				wantLen += len(b)
			}
			wantState(t, q, wantLen, tt.wantOwned, tt.wantFull)

			keys := slices.Concat(tt.owned, tt.give)
			slices.Sort(keys)
			for _, k := range slices.Compact(keys) {
				if k == "" {
					continue
				}
				if got := drain(t, q, k); !slices.Equal(got, tt.wantBacklog[k]) {
					t.Errorf("backlog of %q = %v, want %v", k, got, tt.wantBacklog[k])
				}
			}
			wantState(t, q, 0, 0, false)
		})
	}
}

func TestRelease(t *testing.T) {
	q := keyq.New[item](2)
	if got := q.Admit(batch(0, "a", "a", "b", "a", "b"), keyOf); !slices.Equal(ids(got), []int{0, 2}) {
		t.Fatalf("Admit kept %v, want [0 2]", ids(got))
	}
	wantState(t, q, 3, 2, true)
	steps := []struct {
		give      string
		want      int // id of the returned item, or -1 for none
		wantLen   int
		wantOwned int
		wantFull  bool
	}{
		{give: "a", want: 1, wantLen: 2, wantOwned: 2, wantFull: true},
		{give: "b", want: 4, wantLen: 1, wantOwned: 2},
		{give: "a", want: 3, wantLen: 0, wantOwned: 2},
		{give: "a", want: -1, wantLen: 0, wantOwned: 1},
		{give: "b", want: -1, wantLen: 0, wantOwned: 0},
	}
	for i, s := range steps {
		next, ok := q.Release(s.give)
		switch {
		case s.want < 0 && (ok || next != item{}):
			t.Errorf("step %d: Release(%q) = %+v, %t, want the zero item, false", i, s.give, next, ok)
		case s.want >= 0 && (!ok || next != item{key: s.give, id: s.want}):
			t.Errorf("step %d: Release(%q) = %+v, %t, want item %d, true", i, s.give, next, ok, s.want)
		}
		wantState(t, q, s.wantLen, s.wantOwned, s.wantFull)
	}

	// A freed key is free: its next item is kept, the one after waits.
	if got := q.Admit(batch(10, "a", "a"), keyOf); !slices.Equal(ids(got), []int{10}) {
		t.Errorf("Admit after release kept %v, want [10]", ids(got))
	}
	if got := drain(t, q, "a"); !slices.Equal(got, []int{11}) {
		t.Errorf("backlog of %q = %v, want [11]", "a", got)
	}
	wantState(t, q, 0, 0, false)
}

func TestReleaseUnownedPanics(t *testing.T) {
	tests := []struct {
		name  string
		setup func(q *keyq.Queue[item])
		give  string
	}{
		{"never owned", func(q *keyq.Queue[item]) { q.Admit(batch(0, "b"), keyOf) }, "a"},
		{"unkeyed", func(q *keyq.Queue[item]) { q.Admit(batch(0, ""), keyOf) }, ""},
		{"released", func(q *keyq.Queue[item]) {
			q.Admit(batch(0, "a"), keyOf)
			q.Release("a")
		}, "a"},
		{"abandoned", func(q *keyq.Queue[item]) {
			q.Admit(batch(0, "a", "a"), keyOf)
			q.Abandon("a", nil)
		}, "a"},
		{"reset", func(q *keyq.Queue[item]) {
			q.Admit(batch(0, "a", "a"), keyOf)
			q.Reset(nil)
		}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := keyq.New[item](4)
			tt.setup(q)
			owned := q.Owned()
			wantReleasePanic(t, q, tt.give)
			// The panic must leave the Queue unlocked and unchanged.
			wantState(t, q, 0, owned, false)
			if got := q.Admit(batch(0, "c"), keyOf); len(got) != 1 {
				t.Errorf("Admit after the panic kept %v, want [0]", ids(got))
			}
		})
	}
}

func TestAbandon(t *testing.T) {
	tests := []struct {
		name      string
		admit     []string // keys admitted first, ids 0, 1, ...
		dst       []int    // ids of the items already in dst (key "x")
		give      string   // the key to abandon
		want      []int    // ids in the returned dst
		wantLen   int
		wantOwned int
	}{
		{
			name:      "backlog appended in order",
			admit:     []string{"a", "a", "b", "a", "b"},
			dst:       []int{100, 101},
			give:      "a",
			want:      []int{100, 101, 1, 3},
			wantLen:   1,
			wantOwned: 1,
		},
		{
			name:      "nil dst",
			admit:     []string{"a", "a", "a"},
			give:      "a",
			want:      []int{1, 2},
			wantLen:   0,
			wantOwned: 0,
		},
		{
			name:      "owned without backlog",
			admit:     []string{"a", "b", "b"},
			dst:       []int{100},
			give:      "a",
			want:      []int{100},
			wantLen:   1,
			wantOwned: 1,
		},
		{
			name:      "unowned key does nothing",
			admit:     []string{"a", "a"},
			dst:       []int{100},
			give:      "z",
			want:      []int{100},
			wantLen:   1,
			wantOwned: 1,
		},
		{
			name:      "empty key does nothing",
			admit:     []string{"", "a", "a"},
			give:      "",
			wantLen:   1,
			wantOwned: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := keyq.New[item](8)
			q.Admit(batch(0, tt.admit...), keyOf)
			var dst []item
			for _, id := range tt.dst {
				dst = append(dst, item{key: "x", id: id})
			}
			before := slices.Clone(dst)
			got := q.Abandon(tt.give, dst)
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("Abandon(%q, %v) = %v, want %v", tt.give, tt.dst, ids(got), tt.want)
			}
			if !slices.Equal(got[:len(before)], before) {
				t.Errorf("Abandon(%q, %v) changed dst's items to %+v", tt.give, tt.dst, got[:len(before)])
			}
			for _, it := range got[len(before):] {
				if it.key != tt.give {
					t.Errorf("Abandon(%q) returned item %d of key %q", tt.give, it.id, it.key)
				}
			}
			wantState(t, q, tt.wantLen, tt.wantOwned, false)
			if tt.give == "" || !slices.Contains(tt.admit, tt.give) {
				return
			}
			// The key is free: its next item is kept.
			if got := q.Admit(batch(10, tt.give, tt.give), keyOf); !slices.Equal(ids(got), []int{10}) {
				t.Errorf("Admit after Abandon kept %v, want [10]", ids(got))
			}
			if got := drain(t, q, tt.give); !slices.Equal(got, []int{11}) {
				t.Errorf("backlog of %q = %v, want [11]", tt.give, got)
			}
		})
	}
}

func TestReset(t *testing.T) {
	tests := []struct {
		name  string
		admit []string // keys admitted first, ids 0, 1, ...
		want  map[string][]int
	}{
		{name: "empty"},
		{name: "owned without backlog", admit: []string{"a", "", "b"}},
		{
			name:  "backlogs",
			admit: []string{"a", "a", "b", "", "b", "b", "c", "a", "d"},
			want:  map[string][]int{"a": {1, 7}, "b": {4, 5}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := keyq.New[item](2)
			q.Admit(batch(0, tt.admit...), keyOf)
			dst := []item{{key: "x", id: 100}}
			got := q.Reset(dst)
			if len(got) == 0 || got[0] != dst[0] {
				t.Fatalf("Reset([100]) = %v, want 100 first", ids(got))
			}
			// Backlogs come one after the other in no set order, each
			// oldest first: compare them key by key.
			byKey := make(map[string][]int)
			for _, it := range got[1:] {
				byKey[it.key] = append(byKey[it.key], it.id)
			}
			for k := range byKey {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("Reset returned %v of key %q, want none", byKey[k], k)
				}
			}
			for k, want := range tt.want {
				if !slices.Equal(byKey[k], want) {
					t.Errorf("Reset returned %v of key %q, want %v", byKey[k], k, want)
				}
			}
			wantState(t, q, 0, 0, false)
			for _, k := range tt.admit {
				if k != "" {
					wantReleasePanic(t, q, k)
				}
			}
			// Every key is free again, and the Queue works as new.
			if got := q.Admit(batch(10, "a", "b", "a"), keyOf); !slices.Equal(ids(got), []int{10, 11}) {
				t.Errorf("Admit after Reset kept %v, want [10 11]", ids(got))
			}
			if got := q.Reset(nil); !slices.Equal(ids(got), []int{12}) {
				t.Errorf("second Reset(nil) = %v, want [12]", ids(got))
			}
			wantState(t, q, 0, 0, false)
		})
	}
}

// failures reports through t what goroutines other than the test's find
// wrong (they may call t.Errorf, never t.Fatal), the first few only, so
// that a broken invariant does not print one line per item.
type failures struct {
	t  *testing.T
	mu sync.Mutex
	n  int
}

const maxFailures = 10

func (f *failures) add(format string, args ...any) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n++; f.n <= maxFailures {
		f.t.Errorf(format, args...)
	}
}

func (f *failures) report() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n > maxFailures {
		f.t.Errorf("and %d more failures", f.n-maxFailures)
	}
}

// modelDeadline bounds a model run that has lost an item or an ownership,
// so that the bug shows up as an error instead of a test that hangs until
// the go test timeout. The stress sizes under -race on two shared cores
// need more than a minute (about 44k items a second with 32 goroutines),
// so it is generous: it catches a run that stopped, not a slow one.
const modelDeadline = 10 * time.Minute

// modelConfig shapes one run of the model.
type modelConfig struct {
	producers   int
	consumers   int
	perProducer int // items each producer emits
	maxBatch    int // items per Admit, 1..maxBatch
	keys        int // keyed items pick one of keys keys; some items are unkeyed
	limit       int
}

// runModel uses a Queue as the dispatcher does, from many goroutines.
//
// Producers emit batches of items with random keys and admit each batch
// under the shared take lock, so admission order per key is emission
// order; they wait while the Queue is Full, and hand the kept items (and
// so the ownership of their keys) to the consumers through work.
// Consumers process an item, then Release its key and either process the
// next item themselves or hand it on through work; now and then one
// Abandons the key instead and admits what it got back again (under the
// take lock, so no newer item of the key can overtake them).
//
// It checks that every item is processed exactly once, the items of a key
// in emission order and never two at a time, that Admit keeps Len within
// the limit plus one batch, and that nothing is left at the end.
func runModel(t *testing.T, cfg modelConfig) {
	t.Helper()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)

	keys := make([]string, cfg.keys+1) // keys[0] is "": unkeyed
	index := make(map[string]int, cfg.keys)
	for i := 1; i < len(keys); i++ {
		keys[i] = fmt.Sprintf("k%d", i)
		index[keys[i]] = i
	}
	total := cfg.producers * cfg.perProducer

	q := keyq.New[item](cfg.limit)
	errs := &failures{t: t}
	var (
		take    sync.Mutex // the dispatcher's: held while emitting and admitting
		nextSeq = make([]int, len(keys))
		nextID  int

		busy      = make([]atomic.Bool, len(keys))  // an item of the key is in progress
		wantSeq   = make([]atomic.Int64, len(keys)) // seq of the key's next item to process
		processed = make([]atomic.Int32, total)     // by id: times processed
		count     atomic.Int64
		done      = make(chan struct{}) // closed when count reaches total
		stop      = make(chan struct{}) // closed when the test gives up waiting
		work      = make(chan item, cfg.consumers)
	)

	process := func(it item, rng *rand.Rand) {
		if n := processed[it.id].Add(1); n != 1 {
			errs.add("item %d (key %q, seq %d) processed %d times", it.id, it.key, it.seq, n)
		}
		if it.key != "" {
			k := index[it.key]
			if !busy[k].CompareAndSwap(false, true) {
				errs.add("key %q: seq %d started while another item of the key is in progress", it.key, it.seq)
			}
			if want := wantSeq[k].Load(); int64(it.seq) != want {
				errs.add("key %q: processed seq %d, want %d", it.key, it.seq, want)
			}
			wantSeq[k].Store(int64(it.seq) + 1)
			if rng.IntN(4) == 0 {
				runtime.Gosched() // widens the window in which a second owner would show
			}
			busy[k].Store(false)
		}
		if count.Add(1) == int64(total) {
			close(done)
		}
	}

	var g errgroup.Group
	for p := range cfg.producers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(seed, uint64(p)))
			b := make([]item, 0, cfg.maxBatch)
			for left := cfg.perProducer; left > 0; {
				take.Lock()
				if q.Full() {
					take.Unlock()
					select {
					case <-stop:
						return nil
					default:
						runtime.Gosched()
						continue
					}
				}
				b = b[:min(left, 1+rng.IntN(cfg.maxBatch))]
				left -= len(b)
				for i := range b {
					k := rng.IntN(len(keys))
					b[i] = item{key: keys[k], id: nextID, seq: nextSeq[k]}
					nextID++
					nextSeq[k]++
				}
				kept := q.Admit(b, keyOf)
				// Only Admit adds to Len, and every Admit runs under take:
				// Len was below the limit and can only have dropped since.
				if n := q.Len(); n > cfg.limit-1+len(b) {
					errs.add("Len() = %d after admitting %d items below the limit %d", n, len(b), cfg.limit)
				}
				take.Unlock()
				for _, it := range kept {
					select {
					case work <- it:
					case <-stop:
						return nil
					}
				}
			}
			return nil
		})
	}
	for c := range cfg.consumers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(seed, uint64(cfg.producers+c)))
			var back []item
			for {
				var it item
				select {
				case it = <-work:
				case <-done:
					return nil
				case <-stop:
					return nil
				}
				for held := true; held; {
					process(it, rng)
					if it.key == "" {
						break
					}
					var ok bool
					if rng.IntN(8) == 0 {
						take.Lock()
						back = q.Abandon(it.key, back[:0])
						n := len(back)
						kept := q.Admit(back, keyOf)
						take.Unlock()
						if n > 0 && len(kept) != 1 {
							errs.add("key %q: admitting its %d abandoned items kept %d, want 1", it.key, n, len(kept))
						}
						if ok = len(kept) > 0; ok {
							it = kept[0]
						}
					} else {
						it, ok = q.Release(it.key)
					}
					if !ok {
						break
					}
					if rng.IntN(2) == 0 {
						select {
						case work <- it: // hands the item and its key on
							held = false
						default:
						}
					}
				}
			}
		})
	}

	deadline := time.NewTimer(modelDeadline)
	defer deadline.Stop()
	select {
	case <-done:
	case <-deadline.C:
		errs.add("gave up after %v with %d of %d items processed, Len() = %d, Owned() = %d",
			modelDeadline, count.Load(), total, q.Len(), q.Owned())
	}
	close(stop)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	errs.report()

	if nextID != total {
		t.Errorf("producers emitted %d items, want %d", nextID, total)
	}
	bad := 0
	for id := range processed {
		if n := processed[id].Load(); n != 1 && bad < maxFailures {
			t.Errorf("item %d processed %d times, want once", id, n)
			bad++
		}
	}
	for k := 1; k < len(keys); k++ {
		if got, want := wantSeq[k].Load(), int64(nextSeq[k]); got != want {
			t.Errorf("key %q: processed up to seq %d, want %d", keys[k], got, want)
		}
	}
	if n := q.Len(); n != 0 {
		t.Errorf("Len() = %d at the end, want 0", n)
	}
	if n := q.Owned(); n != 0 {
		t.Errorf("Owned() = %d at the end, want 0", n)
	}
}

// procs sets GOMAXPROCS for the rest of the test and restores it after.
func procs(t *testing.T, n int) {
	t.Helper()
	prev := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// modelShapes are the shapes every model run covers: a few hot keys whose
// backlogs keep the Queue Full, and many keys that are mostly free.
var modelShapes = []struct {
	keys, limit int
}{
	{keys: 4, limit: 8},
	{keys: 64, limit: 1024},
}

func TestModel(t *testing.T) {
	perProducer := 2_000
	if testing.Short() {
		perProducer = 200
	}
	testModel(t, 8, perProducer)
}

// testModel runs the model with workers producers and as many consumers
// at 1, 2 and 4 procs, for each of modelShapes. It stops at the first
// failed run: a run that lost an item fails only at modelDeadline.
func testModel(t *testing.T, workers, perProducer int) {
	for _, gomaxprocs := range []int{1, 2, 4} {
		ok := t.Run(fmt.Sprintf("procs=%d", gomaxprocs), func(t *testing.T) {
			procs(t, gomaxprocs)
			for _, s := range modelShapes {
				ok := t.Run(fmt.Sprintf("keys=%d/limit=%d", s.keys, s.limit), func(t *testing.T) {
					runModel(t, modelConfig{
						producers:   workers,
						consumers:   workers,
						perProducer: perProducer,
						maxBatch:    16,
						keys:        s.keys,
						limit:       s.limit,
					})
				})
				if !ok {
					return
				}
			}
		})
		if !ok {
			return
		}
	}
}

// steady returns a Queue and a func that admits size items over nkeys
// keys, round robin, and releases every key until it is free: one round of
// a steady load, leaving the Queue empty.
func steady(nkeys, size int) (*keyq.Queue[item], func()) {
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	tmpl := make([]item, size)
	for i := range tmpl {
		tmpl[i] = item{key: keys[i%nkeys], id: i}
	}
	q := keyq.New[item](size)
	b := make([]item, size)
	return q, func() {
		copy(b, tmpl)
		for _, it := range q.Admit(b, keyOf) {
			for ok := true; ok; _, ok = q.Release(it.key) {
			}
		}
	}
}

// TestAdmitReleaseAllocs: once the backlogs, the spare list and the map
// have grown to a steady load, Admit and Release allocate nothing (keyOf
// itself allocates nothing).
func TestAdmitReleaseAllocs(t *testing.T) {
	for _, tt := range []struct{ nkeys, size int }{
		{1, 128},
		{64, 128},
		{1, 1024}, // a hot key: its backlog outgrows spareCap at each burst
	} {
		t.Run(fmt.Sprintf("keys=%d/items=%d", tt.nkeys, tt.size), func(t *testing.T) {
			q, round := steady(tt.nkeys, tt.size)
			for range 10 {
				round()
			}
			if got := testing.AllocsPerRun(1000, round); got != 0 {
				t.Errorf("Admit and Release of %d items over %d keys: %v allocations, want 0", tt.size, tt.nkeys, got)
			}
			wantState(t, q, 0, 0, false)
		})
	}
}

// TestBigBacklogsBounded: the backlogs that keep storage above spareCap
// when their key is released are at most a few; the others drop theirs,
// and Reset forgets them all.
func TestBigBacklogsBounded(t *testing.T) {
	const burst = 300 // above spareCap
	q := keyq.New[item](16 * burst)
	_, bound := keyq.BigBacklogs(q)
	for k := range bound + 3 {
		key := fmt.Sprintf("k%d", k)
		items := make([]item, burst+1)
		for i := range items {
			items[i] = item{key: key, id: i}
		}
		if kept := q.Admit(items, keyOf); len(kept) != 1 {
			t.Fatalf("key %s: Admit kept %d items, want 1", key, len(kept))
		}
		for ok := true; ok; _, ok = q.Release(key) {
		}
		if n, _ := keyq.BigBacklogs(q); n != min(k+1, bound) {
			t.Fatalf("after %d keys with a burst: %d big backlogs, want %d", k+1, n, min(k+1, bound))
		}
	}
	q.Reset(nil)
	if n, _ := keyq.BigBacklogs(q); n != 0 {
		t.Errorf("after Reset: %d big backlogs, want 0", n)
	}
}

// BenchmarkAdmitRelease admits 64 items over keys keys and releases every
// key until it is free; ns/item is per admitted item.
func BenchmarkAdmitRelease(b *testing.B) {
	const size = 64
	for _, nkeys := range []int{1, 64} {
		b.Run(fmt.Sprintf("keys=%d", nkeys), func(b *testing.B) {
			_, round := steady(nkeys, size)
			b.ReportAllocs()
			for b.Loop() {
				round()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/item")
		})
	}
}

// TestTakeBacklogs: the backlogs are taken in order, the keys stay owned,
// and their owners release them as usual, finding nothing more.
func TestTakeBacklogs(t *testing.T) {
	q := keyq.New[string](8)
	kept := q.Admit([]string{"a1", "a2", "b1", "a3", "b2"}, func(s *string) string { return (*s)[:1] })
	if want := []string{"a1", "b1"}; !slices.Equal(kept, want) {
		t.Fatalf("Admit kept %q, want %q", kept, want)
	}
	got := q.TakeBacklogs(nil)
	slices.Sort(got)
	if want := []string{"a2", "a3", "b2"}; !slices.Equal(got, want) {
		t.Errorf("TakeBacklogs = %q, want %q", got, want)
	}
	if q.Len() != 0 || q.Owned() != 2 {
		t.Errorf("after TakeBacklogs: Len %d, Owned %d; want 0 and 2", q.Len(), q.Owned())
	}
	for _, k := range []string{"a", "b"} {
		if next, ok := q.Release(k); ok {
			t.Errorf("Release(%q) = %q, true; want nothing left", k, next)
		}
	}
	if q.Owned() != 0 {
		t.Errorf("Owned() = %d after the releases, want 0", q.Owned())
	}
}
