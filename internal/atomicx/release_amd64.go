//go:build amd64 && gc && !race && !ringbus_noasm

package atomicx

import "sync/atomic"

// StoreRelease stores v into *a with release ordering: a goroutine that
// loads v from *a sees every write made before the store. See the package
// doc and release_amd64.s, which writes the word at offset 0 of *a: an
// atomic.Uint64 is its uint64 and zero-size fields only (the test checks
// that a.Load returns what StoreRelease stored).
//
//go:noescape
func StoreRelease(a *atomic.Uint64, v uint64)

// Pause executes n PAUSE instructions, the processor's spin-wait hint (see
// release_amd64.s). It has no memory effect.
//
//go:noescape
func Pause(n int)
