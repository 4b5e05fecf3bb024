package natsbridge

import "sync"

// Window remembers the last n message ids it was given: a bounded set
// for deduplication. Delivery through the bridge is at-least-once, so a
// handler may see an event again (an acknowledgement lost, a process that
// died after its handlers ran, a publish repeated after the stream's
// Duplicates window). A Window given to ConsumerConfig.Dedupe makes the
// consumer acknowledge, without delivering it again, a message whose id
// it settled successfully among the last n. It lives in memory: it
// does not see what another process, or this one before a restart,
// handled. Handlers whose side effects must happen once still make them
// idempotent (keyed by something in the payload) or record them in the
// same transaction as their effect. A Window is safe for concurrent use.
type Window struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string // the ids in arrival order; next is the oldest once full
	next int
}

// NewWindow returns a Window that remembers the last n ids (n >= 1).
func NewWindow(n int) *Window {
	n = max(n, 1)
	return &Window{ids: make(map[string]struct{}, n), ring: make([]string, 0, n)}
}

// Contains reports whether id is among the remembered ids.
func (w *Window) Contains(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.ids[id]
	return ok
}

// Add remembers id, forgetting the oldest id when the window is full. It
// reports whether id was new.
func (w *Window) Add(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.ids[id]; ok {
		return false
	}
	if len(w.ring) < cap(w.ring) {
		w.ring = append(w.ring, id)
	} else {
		delete(w.ids, w.ring[w.next])
		w.ring[w.next] = id
		w.next = (w.next + 1) % len(w.ring)
	}
	w.ids[id] = struct{}{}
	return true
}

// Len returns how many ids the window holds.
func (w *Window) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ids)
}
