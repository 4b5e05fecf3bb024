//go:build amd64 && gc && !race

package atomicx

// StoreRelease64 stores v at *addr with release ordering: a goroutine that
// loads v from *addr with sync/atomic sees every write made before the
// store. See the package doc and release_amd64.s.
//
//go:noescape
func StoreRelease64(addr *uint64, v uint64)

// Pause executes n PAUSE instructions: a spin-wait hint that yields the
// core's pipeline to its SMT sibling and avoids the memory-order mis-
// speculation a tight load loop causes when the awaited line changes.
//
//go:noescape
func Pause(n int)
