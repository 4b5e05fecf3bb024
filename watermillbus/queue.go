package watermillbus

// fifo is an unbounded FIFO of envelopes; its bound is the caller's (a
// subscription's buffer limit, a topic's backlog limit). It is not safe
// for concurrent use: its owner's mutex guards it.
type fifo struct {
	buf  []*Envelope
	head int // buf[:head] were popped and cleared
}

func (q *fifo) len() int { return len(q.buf) - q.head }

func (q *fifo) push(e ...*Envelope) { q.buf = append(q.buf, e...) }

// pop removes and returns the oldest envelope; the queue must not be empty.
func (q *fifo) pop() *Envelope {
	e := q.buf[q.head]
	q.buf[q.head] = nil // keep no message alive
	q.head++
	switch {
	case q.head == len(q.buf):
		q.buf, q.head = q.buf[:0], 0
	case q.head >= 1024 && 2*q.head >= len(q.buf):
		// Mostly popped: move the rest to the front so that the slice
		// does not grow forever under a steady flow.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	return e
}

// take empties the queue and returns what it held, oldest first.
func (q *fifo) take() []*Envelope {
	s := q.buf[q.head:]
	q.buf, q.head = nil, 0
	return s
}
