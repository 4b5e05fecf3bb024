//go:build amd64 && gc && !race && !ringbus_noasm

#include "textflag.h"

// func StoreRelease(a *atomic.Uint64, v uint64)
//
// A plain MOVQ: on amd64 a store is never reordered with an earlier load or
// store, so it already has release semantics, without XCHG's full barrier.
TEXT ·StoreRelease(SB), NOSPLIT, $0-16
	MOVQ a+0(FP), AX
	MOVQ v+8(FP), BX
	MOVQ BX, 0(AX)
	RET

// func Pause(n int)
//
// n PAUSE instructions: the spin-wait hint, which idles the core's pipeline
// for a while and, under a hypervisor, lets it see that the vCPU spins.
TEXT ·Pause(SB), NOSPLIT, $0-8
	MOVQ n+0(FP), AX
	TESTQ AX, AX
	JLE done
loop:
	PAUSE
	DECQ AX
	JNZ loop
done:
	RET
