//go:build !amd64 || !gc || race

package atomicx

import "sync/atomic"

// StoreRelease64 stores v at *addr with (at least) release ordering. Here
// it is sync/atomic's StoreUint64: see the package doc.
func StoreRelease64(addr *uint64, v uint64) { atomic.StoreUint64(addr, v) }

var pauseSink atomic.Int64

// Pause spins n times: on these platforms there is no pause instruction
// to issue from Go, so a loop of atomic loads stands in for it.
func Pause(n int) {
	for range n {
		pauseSink.Load()
	}
}
