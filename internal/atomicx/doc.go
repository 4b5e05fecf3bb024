// Package atomicx has the two things sync/atomic lacks for the ring's hot
// path: a store with release ordering only, StoreRelease, and the
// processor's spin-wait hint, Pause, for the wait after a lost CAS.
//
// sync/atomic's stores are sequentially consistent. On amd64 that makes
// every Store an XCHG, a locked instruction that also waits for the core's
// store buffer to drain: when the stores before it missed the cache (a
// ring slot another core just read), the XCHG waits for them. A hand-off
// from one writer to readers that load with sync/atomic needs less: that
// the writes before the store are visible to whoever loads the stored
// value. On amd64 (x86-TSO) a plain MOV gives exactly that, and
// StoreRelease is one, written in assembly so that the compiler, which
// cannot see into it, cannot move earlier writes past it.
//
// Elsewhere, and under the race detector (which must see the hand-off to
// know that the writes before it happen before the reader's), StoreRelease
// is atomic.Uint64's Store; on arm64 that is already a release-only STLR.
//
// Use it only where a release store is enough: one writer publishing a
// value that readers load with sync/atomic (a ring slot's sequence number,
// a count only its owner writes). It gives no ordering with later loads (a
// store and a later load of another address may be reordered on amd64), so
// it cannot stand in for Store in a protocol like "store my flag, then load
// yours".
//
// Pause is the PAUSE instruction on amd64, and a loop of loads elsewhere
// and under the race detector.
//
// Why each exists at all, measured against its sync/atomic stand-in in the
// same run, is in internal/ring/BENCHMARKS.md.
package atomicx
