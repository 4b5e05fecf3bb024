// Package fifo is a slice-backed first-in first-out queue for the
// dispatcher's side queues and per-key backlogs.
package fifo

// Queue is a FIFO queue of T backed by one slice that it reuses: popping
// zeroes the vacated slot, so the queue keeps no popped value reachable,
// and pushing onto a full slice whose front was consumed slides the live
// values down instead of growing. The zero value is an empty queue. A
// Queue is not safe for concurrent use.
type Queue[T any] struct {
	buf  []T // buf[head:] are the queued values, oldest first
	head int
}

// Len returns the number of queued values.
func (q *Queue[T]) Len() int { return len(q.buf) - q.head }

// Push appends v.
func (q *Queue[T]) Push(v T) {
	if q.head > 0 && len(q.buf) == cap(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, v)
}

// Pop removes and returns the oldest value. It panics on an empty queue.
func (q *Queue[T]) Pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return v
}

// Items returns the queued values, oldest first. The slice aliases the
// queue: it is valid until the next Push, Pop or Reset, and the caller may
// reorder its elements in place (the dispatcher sorts its carry list so).
func (q *Queue[T]) Items() []T { return q.buf[q.head:] }

// Reset empties the queue and releases its storage, so that nothing it held
// stays reachable and a burst does not pin a large slice.
func (q *Queue[T]) Reset() {
	clear(q.buf)
	q.buf, q.head = nil, 0
}
