//go:build !amd64 || race

package atomicx

import "sync/atomic"

// StoreRelease64 stores v at *addr with (at least) release ordering. Here
// it is sync/atomic's StoreUint64: see the package doc.
func StoreRelease64(addr *uint64, v uint64) { atomic.StoreUint64(addr, v) }
