package keyq

// Entries returns how many keys have an entry in q's table, owned or idle.
// TestIdleEntriesBounded checks that idle ones are bounded.
func Entries[T any](q *Queue[T]) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.keys)
}

// IdleKeys is how many entries of keys that are not owned q keeps.
const IdleKeys = idleKeys

// acquire makes the caller the owner of k and reports true, or queues v in
// k's backlog and reports false. q.mu is held.
func (q *Queue[T]) acquire(k string, v T) bool {
	b, ok := q.keys[k]
	if ok && b.owned {
		b.Push(v)
		q.n.Add(1)
		return false
	}
	q.own(k, b)
	return true
}

// Admit admits items in order: AdmitRounds without the rounds, the
// plain admission the table and model tests drive (the dispatcher uses
// AdmitRounds). An item whose key (as key reports it) is
// empty, or free, stays in the result and its key, if any, is now owned by
// the caller; an item whose key is owned moves to the end of that key's
// backlog. It returns the items the caller may process now, in their
// original order, in items' own backing array; the vacated tail is zeroed.
//
// Admission order is the order in which keyed items are processed, so
// callers must admit the items of one key in the order they were emitted:
// the dispatcher takes a batch and admits it under one lock.
func (q *Queue[T]) Admit(items []T, key func(*T) string) []T {
	kept := items[:0]
	q.mu.Lock()
	for i := range items {
		k := key(&items[i])
		if k == "" || q.acquire(k, items[i]) {
			kept = append(kept, items[i])
		}
	}
	q.mu.Unlock()
	clear(items[len(kept):])
	return kept
}

// BigBacklogs returns how many backlogs keep storage above spareCap, and
// the bound.
func BigBacklogs[T any](q *Queue[T]) (n, bound int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.big, maxBig
}
