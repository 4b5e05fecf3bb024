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
