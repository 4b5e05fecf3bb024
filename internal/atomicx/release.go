//go:build !amd64 || !gc || race || ringbus_noasm

package atomicx

import "sync/atomic"

// StoreRelease stores v into *a with (at least) release ordering. Here it
// is a.Store(v): see the package doc.
func StoreRelease(a *atomic.Uint64, v uint64) { a.Store(v) }
