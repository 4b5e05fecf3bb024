package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"golang.org/x/sync/errgroup"
)

// The linearizability tests record concurrent histories of TryPush, TryPop
// and TryPopN and ask porcupine whether some order of the calls, each taking
// effect at one instant between its call and its return, explains every
// result under fifoModel, the sequential bounded FIFO queue.

type linKind int

const (
	linPush linKind = iota
	linPop
	linPopN
)

type linInput struct {
	kind  linKind
	value int // push: the value, unique within a history
	k     int // popN: len(dst)
}

type linOutput struct {
	ok     bool   // push: TryPush's result; pop: TryPop's ok
	values []int  // pop: the value if ok; popN: dst[:n]
	first  uint64 // popN: the position of values[0]
}

// fifoState is a queue's contents and its next pop position. Step never
// modifies a state, as porcupine requires: it builds a new one.
type fifoState struct {
	head  uint64
	items []int
}

// fifoModel is the sequential specification of a queue that holds up to
// capacity values: a push fails if and only if the queue is full, a pop
// fails if and only if it is empty and otherwise returns the oldest value.
// TryPopN returns the oldest values, at least one unless the queue is
// empty; it may return fewer than it could, because a pop stops at a slot
// whose push has not finished writing.
func fifoModel(capacity int) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return fifoState{} },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(fifoState), input.(linInput), output.(linOutput)
			switch in.kind {
			case linPush:
				if len(s.items) == capacity {
					return !out.ok, s
				}
				if !out.ok {
					return false, s
				}
				return true, fifoState{head: s.head, items: append(slices.Clip(s.items), in.value)}
			case linPop:
				if len(s.items) == 0 {
					return !out.ok, s
				}
				if !out.ok || out.values[0] != s.items[0] {
					return false, s
				}
				return true, fifoState{head: s.head + 1, items: s.items[1:]}
			default:
				n := len(out.values)
				if out.first != s.head || n > in.k || n > len(s.items) ||
					(n == 0) != (len(s.items) == 0) || !slices.Equal(out.values, s.items[:n]) {
					return false, s
				}
				return true, fifoState{head: s.head + uint64(n), items: s.items[n:]}
			}
		},
		Equal: func(a, b any) bool {
			x, y := a.(fifoState), b.(fifoState)
			return x.head == y.head && slices.Equal(x.items, y.items)
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linInput), output.(linOutput)
			switch in.kind {
			case linPush:
				return fmt.Sprintf("TryPush(%d) = %v", in.value, out.ok)
			case linPop:
				return fmt.Sprintf("TryPop() = %v, %v", out.values, out.ok)
			default:
				return fmt.Sprintf("TryPopN(len %d) = %v at %d", in.k, out.values, out.first)
			}
		},
	}
}

// recordHistory runs clients goroutines that each make ops random calls on
// q and returns every call as a porcupine.Operation. Timestamps come from
// one atomic counter read just before each call and just after it returns,
// so they order calls exactly as they happened: if a call returned before
// another was made, its Return is below the other's Call.
func recordHistory(q queue[int], clients, ops int, seed uint64) ([]porcupine.Operation, error) {
	var clock atomic.Int64
	var mu sync.Mutex
	var history []porcupine.Operation
	var g errgroup.Group
	for c := range clients {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			mine := make([]porcupine.Operation, 0, ops)
			dst := make([]int, 3)
			for i := range ops {
				var in linInput
				var out linOutput
				var call int64
				switch x := rng.IntN(100); {
				case x < 45:
					in = linInput{kind: linPush, value: c*ops + i}
					call = clock.Add(1)
					out.ok = q.TryPush(in.value)
				case x < 80:
					in = linInput{kind: linPop}
					call = clock.Add(1)
					var v int
					v, out.ok = q.TryPop()
					if out.ok {
						out.values = []int{v}
					}
				default:
					in = linInput{kind: linPopN, k: 1 + rng.IntN(len(dst))}
					call = clock.Add(1)
					var n int
					n, out.first = q.TryPopN(dst[:in.k])
					out.values = slices.Clone(dst[:n])
				}
				ret := clock.Add(1)
				mine = append(mine, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
			}
			mu.Lock()
			history = append(history, mine...)
			mu.Unlock()
			return nil
		})
	}
	return history, g.Wait()
}

// checkTimeout bounds one porcupine check. Histories of 40 calls check in
// well under a millisecond; the bound only keeps a pathological history
// from hanging the test. A check that hits it returns Unknown, which is
// not a violation found, so it does not fail the test on its own.
const checkTimeout = 10 * time.Second

type linResults struct {
	ok, illegal, unknown int
	illegalSingle        int // illegal among the single-client histories
}

// checkHistories records histories on rings from newQ, with capacities 1
// to 4 in turn, and checks each one. The first history of every capacity is
// made by a single client, so it is the same sequence of calls on each run.
func checkHistories(t *testing.T, histories int, newQ func(capacity int) queue[int]) linResults {
	t.Helper()
	var res linResults
	for h := range histories {
		q := newQ(1 + h%4)
		clients := 4
		if h < 4 {
			clients = 1
		}
		history, err := recordHistory(q, clients, 40/clients, uint64(h))
		if err != nil {
			t.Fatal(err)
		}
		switch porcupine.CheckOperationsTimeout(fifoModel(q.Cap()), history, checkTimeout) {
		case porcupine.Ok:
			res.ok++
		case porcupine.Illegal:
			res.illegal++
			if clients == 1 {
				res.illegalSingle++
			}
		default:
			res.unknown++
		}
	}
	return res
}

func TestLinearizable(t *testing.T) {
	histories := 200
	if testing.Short() {
		histories = 40
	}
	for _, impl := range impls {
		t.Run("impl="+impl, func(t *testing.T) {
			procs(t, 4)
			res := checkHistories(t, histories, func(capacity int) queue[int] {
				return newQueue[int](impl, capacity)
			})
			if res.illegal > 0 {
				t.Errorf("%d of %d histories are not linearizable", res.illegal, histories)
			}
			if res.unknown > 0 {
				t.Logf("%d of %d histories timed out after %v unchecked", res.unknown, histories, checkTimeout)
			}
			if res.ok == 0 {
				t.Errorf("no history was checked: %+v", res)
			}
		})
	}
}

// TestLinearizableCatchesBrokenRings runs the same check on rings that are
// wrong on purpose, to show that it can fail. Each broken ring gets a
// single-client history that breaks the model for certain, so detection
// does not depend on scheduling.
func TestLinearizableCatchesBrokenRings(t *testing.T) {
	histories := 40
	broken := []struct {
		name string
		new  func(capacity int) queue[int]
	}{
		{name: "lifo", new: func(capacity int) queue[int] { return newLIFO(capacity) }},
		{name: "overfull", new: func(capacity int) queue[int] { return newOverfull(capacity) }},
	}
	for _, b := range broken {
		t.Run("impl="+b.name, func(t *testing.T) {
			procs(t, 4)
			res := checkHistories(t, histories, b.new)
			if res.illegalSingle == 0 {
				t.Errorf("porcupine found no single-client history illegal, want at least one: %+v", res)
			}
			t.Logf("%d of %d histories illegal, %d of them single-client", res.illegal, histories, res.illegalSingle)
		})
	}
}

// lifoRing is broken: its pops return the newest value, not the oldest.
// Any history with two pushes and then a pop, one after the other, shows it.
type lifoRing struct {
	mu       sync.Mutex
	items    []int
	capacity int
	popped   uint64
	closed   bool
}

func newLIFO(capacity int) *lifoRing {
	return &lifoRing{capacity: newRef[int](capacity).Cap()}
}

func (q *lifoRing) TryPush(v int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.items) == q.capacity {
		return false
	}
	q.items = append(q.items, v)
	return true
}

func (q *lifoRing) TryPop() (int, bool) {
	var dst [1]int
	n, _ := q.TryPopN(dst[:])
	return dst[0], n == 1
}

func (q *lifoRing) TryPopN(dst []int) (int, uint64) { return q.TryPopShare(dst, 1) }

func (q *lifoRing) TryPopShare(dst []int, parts int) (int, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	parts = max(parts, 1)
	dst = dst[:(min(len(dst), len(q.items))+parts-1)/parts]
	first := q.popped
	n := 0
	for n < len(dst) && len(q.items) > 0 {
		dst[n] = q.items[len(q.items)-1]
		q.items = q.items[:len(q.items)-1]
		n++
	}
	q.popped += uint64(n)
	return n, first
}

func (q *lifoRing) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

func (q *lifoRing) Ready() bool { return q.Len() > 0 }

func (q *lifoRing) Cap() int { return q.capacity }

func (q *lifoRing) Pushed() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popped + uint64(len(q.items))
}

func (q *lifoRing) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
}

func (q *lifoRing) Reopen() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = false
}

func (q *lifoRing) Closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// overfullRing is broken: it is FIFO but takes one value more than its
// Cap, so a push that should fail on a full ring succeeds.
type overfullRing struct {
	*refRing[int]
	capacity int
}

func newOverfull(capacity int) *overfullRing {
	c := newRef[int](capacity).Cap()
	return &overfullRing{refRing: newRef[int](2 * c), capacity: c}
}

func (q *overfullRing) TryPush(v int) bool {
	if q.Len() > q.capacity { // one too many: should be >=
		return false
	}
	return q.refRing.TryPush(v)
}

func (q *overfullRing) Cap() int { return q.capacity }
