//go:build amd64 && !purego

#include "textflag.h"

// func readAVX2(p0, p1, p2, p3 *byte, lines, step int) uint64
//
// Reads lines cache lines at each of p0..p3, one from each in turn, moving every pointer step
// bytes after each: with the pointers at the quarters of a buffer and step 64 these are four
// streams side by side; with the pointers 64 bytes apart and step 256, one stream. 32-byte loads
// are folded by XOR so that none can be skipped.
TEXT ·readAVX2(SB), NOSPLIT, $0-56
	MOVQ  p0+0(FP), SI
	MOVQ  p1+8(FP), DI
	MOVQ  p2+16(FP), R8
	MOVQ  p3+24(FP), R9
	MOVQ  lines+32(FP), CX
	MOVQ  step+40(FP), DX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	TESTQ CX, CX
	JZ    done

loop:
	VPXOR (SI), Y0, Y0
	VPXOR 32(SI), Y0, Y0
	VPXOR (DI), Y1, Y1
	VPXOR 32(DI), Y1, Y1
	VPXOR (R8), Y2, Y2
	VPXOR 32(R8), Y2, Y2
	VPXOR (R9), Y3, Y3
	VPXOR 32(R9), Y3, Y3
	ADDQ  DX, SI
	ADDQ  DX, DI
	ADDQ  DX, R8
	ADDQ  DX, R9
	DECQ  CX
	JNZ   loop

done:
	VPXOR        Y1, Y0, Y0
	VPXOR        Y3, Y2, Y2
	VPXOR        Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPXOR        X1, X0, X0
	VPSHUFD      $0x4e, X0, X1
	VPXOR        X1, X0, X0
	VMOVQ        X0, ret+48(FP)
	VZEROUPPER
	RET

// func fmaAVX512(iters int) float32
//
// Runs iters × 16 independent 16-lane FMAs (512 FLOPs a step in registers, nothing from memory):
// the arithmetic ceiling of one core for F32 with AVX-512.
TEXT ·fmaAVX512(SB), NOSPLIT, $0-12
	MOVQ         iters+0(FP), CX
	VPXORD       Z0, Z0, Z0
	VPXORD       Z1, Z1, Z1
	VPXORD       Z2, Z2, Z2
	VPXORD       Z3, Z3, Z3
	VPXORD       Z4, Z4, Z4
	VPXORD       Z5, Z5, Z5
	VPXORD       Z6, Z6, Z6
	VPXORD       Z7, Z7, Z7
	VPXORD       Z8, Z8, Z8
	VPXORD       Z9, Z9, Z9
	VPXORD       Z10, Z10, Z10
	VPXORD       Z11, Z11, Z11
	VPXORD       Z12, Z12, Z12
	VPXORD       Z13, Z13, Z13
	VPXORD       Z14, Z14, Z14
	VPXORD       Z15, Z15, Z15
	VPXORD       Z16, Z16, Z16
	VPXORD       Z17, Z17, Z17
	TESTQ        CX, CX
	JZ           done

loop:
	VFMADD231PS Z16, Z17, Z0
	VFMADD231PS Z16, Z17, Z1
	VFMADD231PS Z16, Z17, Z2
	VFMADD231PS Z16, Z17, Z3
	VFMADD231PS Z16, Z17, Z4
	VFMADD231PS Z16, Z17, Z5
	VFMADD231PS Z16, Z17, Z6
	VFMADD231PS Z16, Z17, Z7
	VFMADD231PS Z16, Z17, Z8
	VFMADD231PS Z16, Z17, Z9
	VFMADD231PS Z16, Z17, Z10
	VFMADD231PS Z16, Z17, Z11
	VFMADD231PS Z16, Z17, Z12
	VFMADD231PS Z16, Z17, Z13
	VFMADD231PS Z16, Z17, Z14
	VFMADD231PS Z16, Z17, Z15
	DECQ        CX
	JNZ         loop

done:
	VADDPS Z1, Z0, Z0
	VMOVSS X0, ret+8(FP)
	VZEROUPPER
	RET

// func fmaAVX2(iters int) float32
//
// The AVX2 form: iters × 12 independent 8-lane FMAs (192 FLOPs a step).
TEXT ·fmaAVX2(SB), NOSPLIT, $0-12
	MOVQ        iters+0(FP), CX
	VXORPS      Y0, Y0, Y0
	VXORPS      Y1, Y1, Y1
	VXORPS      Y2, Y2, Y2
	VXORPS      Y3, Y3, Y3
	VXORPS      Y4, Y4, Y4
	VXORPS      Y5, Y5, Y5
	VXORPS      Y6, Y6, Y6
	VXORPS      Y7, Y7, Y7
	VXORPS      Y8, Y8, Y8
	VXORPS      Y9, Y9, Y9
	VXORPS      Y10, Y10, Y10
	VXORPS      Y11, Y11, Y11
	VXORPS      Y14, Y14, Y14
	VXORPS      Y15, Y15, Y15
	TESTQ       CX, CX
	JZ          done

loop:
	VFMADD231PS Y14, Y15, Y0
	VFMADD231PS Y14, Y15, Y1
	VFMADD231PS Y14, Y15, Y2
	VFMADD231PS Y14, Y15, Y3
	VFMADD231PS Y14, Y15, Y4
	VFMADD231PS Y14, Y15, Y5
	VFMADD231PS Y14, Y15, Y6
	VFMADD231PS Y14, Y15, Y7
	VFMADD231PS Y14, Y15, Y8
	VFMADD231PS Y14, Y15, Y9
	VFMADD231PS Y14, Y15, Y10
	VFMADD231PS Y14, Y15, Y11
	DECQ        CX
	JNZ         loop

done:
	VADDPS Y1, Y0, Y0
	VMOVSS X0, ret+8(FP)
	VZEROUPPER
	RET
