//go:build !amd64 || !gc || race || ringbus_noasm

package atomicx

import "sync/atomic"

// StoreRelease stores v into *a with (at least) release ordering. Here it
// is a.Store(v): see the package doc.
func StoreRelease(a *atomic.Uint64, v uint64) { a.Store(v) }

// Pause spins n times. Go has no portable spin-wait hint, so here a loop of
// atomic loads of a word nobody writes stands in for one: its cache line
// stays shared by every core and the loop adds no traffic.
func Pause(n int) {
	for range n {
		pauseSink.Load()
	}
}

var pauseSink atomic.Uint64
