// Package shardcount is a counter that many goroutines can increment at
// the same time without sharing a cache line. The benchmarks count handler
// calls with it: with one shared atomic counter they measured the counter,
// since ringbus's workers run handlers in parallel and would fight over its
// line, while a channel-based bus's workers mostly take turns.
package shardcount

import (
	"sync/atomic"
	"unsafe"
)

// shards is the number of shards: two goroutines pick the same one with a
// chance of 1 in shards.
const shards = 64

// Counter is a sharded counter; its zero value counts from 0. A goroutine's
// stack address picks its shard, so a goroutine that adds from the same
// frame every time (a worker calling a handler) always adds to the same
// shard, and two goroutines' stacks never share an address.
type Counter struct {
	shards [shards]struct {
		n atomic.Int64
		_ [120]byte // a shard per pair of cache lines
	}
}

// Add adds one.
func (c *Counter) Add() {
	var here byte
	a := uint64(uintptr(unsafe.Pointer(&here)))
	c.shards[(a*0x9e3779b97f4a7c15)>>58].n.Add(1) // Fibonacci hash: the top 6 bits
}

// Load returns the sum of the shards. Under concurrent Adds it is a
// snapshot: each shard is read once, not all at one instant.
func (c *Counter) Load() int64 {
	var n int64
	for i := range c.shards {
		n += c.shards[i].n.Load()
	}
	return n
}
