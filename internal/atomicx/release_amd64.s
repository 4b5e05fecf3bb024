//go:build amd64 && gc && !race

#include "textflag.h"

// func StoreRelease64(addr *uint64, v uint64)
//
// A plain MOVQ: on amd64 a store is never reordered with an earlier load or
// store, so it already has release semantics, without XCHG's full barrier.
TEXT ·StoreRelease64(SB), NOSPLIT, $0-16
	MOVQ addr+0(FP), AX
	MOVQ v+8(FP), BX
	MOVQ BX, 0(AX)
	RET

// func Pause(n int)
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
