//go:build amd64 && !purego

package tensor

import "golang.org/x/sys/cpu"

// archKernels returns the assembly kernel sets (dot_amd64.s) this CPU runs, slowest first.
// cpu.X86 also checks that the OS saves the Y and Z registers.
func archKernels() []*kernels {
	// AVX2 has too few registers for a 4×4 tile with its operands: it runs its four-row kernel
	// once per token.
	avx2.dot4x4F32 = dot4x4Of(avx2.dot4F32)
	avx2.dot4x4BF16 = dot4x4Of(avx2.dot4BF16)
	avx2.dot4x4F16 = dot4x4Of(avx2.dot4F16)
	// Attention and the exp-based ops have AVX-512 kernels only; AVX2 runs the portable ones.
	avx2.attnScoresF32, avx2.attnScoresBF16 = portable.attnScoresF32, portable.attnScoresBF16
	avx2.attnMixF32, avx2.attnMixBF16 = portable.attnMixF32, portable.attnMixBF16
	avx2.softmaxF32, avx2.expF32, avx2.siluMulF32 = portable.softmaxF32, portable.expF32, portable.siluMulF32
	avx2.gemmBF16, avx2.gemmHalfBF16 = gemmBF16Of(6, gemmCols), gemmBF16Of(6, gemmCols/2)
	avx2.narrowBF16 = portable.narrowBF16
	if !cpu.X86.HasAVX512BF16 {
		// The bf16 compute mode without VDPBF16PS: right, but no faster than the exact GEMM.
		avx512.gemmBF16, avx512.gemmHalfBF16 = gemmBF16Of(12, gemmCols), gemmBF16Of(12, gemmCols/2)
	}
	var sets []*kernels
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C {
		sets = append(sets, avx2)
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512DQ {
		sets = append(sets, avx512)
	}
	return sets
}

// The wrappers below check the slice bounds the assembly relies on, so a wrong length panics in Go
// instead of reading past a buffer.

var avx512 = &kernels{
	name:     "avx512",
	dotF32:   func(x, w []float32) float32 { return dot1Z(x, w, dotF32AVX512) },
	dotBF16:  func(x []float32, w []uint16) float32 { return dot1Z(x, w, dotBF16AVX512) },
	dotF16:   func(x []float32, w []uint16) float32 { return dot1Z(x, w, dotF16AVX512) },
	dot4F32:  func(out *[4]float32, x, w []float32, ldw int) { dot4Z(out, x, w, ldw, dot4F32AVX512) },
	dot4BF16: func(out *[4]float32, x []float32, w []uint16, ldw int) { dot4Z(out, x, w, ldw, dot4BF16AVX512) },
	dot4F16:  func(out *[4]float32, x []float32, w []uint16, ldw int) { dot4Z(out, x, w, ldw, dot4F16AVX512) },
	dot4BF16EvenOdd: func(out *[4]float32, x []float32, w []uint16, ldw int) {
		if len(x)%32 != 0 {
			panic("tensor: dot4BF16EvenOdd of a length not a multiple of 32")
		}
		dot4Z(out, x, w, ldw, dot4BF16EvenOddAVX512)
	},
	gemvBF16EvenOdd: func(out, x []float32, w []uint16, q int) {
		if len(x)%32 != 0 {
			panic("tensor: gemvBF16EvenOdd of a length not a multiple of 32")
		}
		out = out[:4*q]
		if len(x) == 0 || q == 0 {
			clear(out)
			return
		}
		w = w[:4*q*len(x)]
		gemvBF16EvenOddAVX512(&x[0], &w[0], len(x), q, &out[0])
	},
	dot4x4F32: func(out *[16]float32, x []float32, ldx int, w []float32, ldw, n int) {
		dot4x4Z(out, x, ldx, w, ldw, n, dot4x4F32AVX512)
	},
	dot4x4BF16: func(out *[16]float32, x []float32, ldx int, w []uint16, ldw, n int) {
		dot4x4Z(out, x, ldx, w, ldw, n, dot4x4BF16AVX512)
	},
	dot4x4F16: func(out *[16]float32, x []float32, ldx int, w []uint16, ldw, n int) {
		dot4x4Z(out, x, ldx, w, ldw, n, dot4x4F16AVX512)
	},
	widenBlockF32: func(dst, src []float32, lds, rows, cols int) {
		widenBlock(dst, src, lds, rows, cols, widenBlockF32AVX512)
	},
	widenBlockBF16: func(dst []float32, src []uint16, lds, rows, cols int) {
		widenBlock(dst, src, lds, rows, cols, widenBlockBF16AVX512)
	},
	widenBlockF16: func(dst []float32, src []uint16, lds, rows, cols int) {
		widenBlock(dst, src, lds, rows, cols, widenBlockF16AVX512)
	},
	gemm: func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride int) {
		c = c[:11*ldc+gemmCols]
		if kc == 0 {
			return
		}
		a = a[:11*lda+kc]
		b = b[:(kc-1)*ldb+gemmCols]
		gemm12x32AVX512(&a[0], lda, &b[0], ldb, &c[0], ldc, kc, pf, pfStride)
	},
	gemmHalf: func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride int) {
		c = c[:11*ldc+gemmCols/2]
		if kc == 0 {
			return
		}
		a = a[:11*lda+kc]
		b = b[:(kc-1)*ldb+gemmCols/2]
		gemm12x16AVX512(&a[0], lda, &b[0], ldb, &c[0], ldc, kc, pf, pfStride)
	},
	gemmFew: func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int) {
		c = c[:5*ldc+gemmCols]
		if kc == 0 {
			return
		}
		a = a[:5*lda+kc]
		b = b[:(kc-1)*ldb+gemmCols]
		gemm6x32AVX512(&a[0], lda, &b[0], ldb, &c[0], ldc, kc)
	},
	gemmFewRows: 6,
	transpose:   transposeZ,
	gemmRows:    12,

	attnScoresF32: func(s []float32, lds int, q []float32, d int, k []float32, off []int, n int, scale float32) {
		attnScoresZ(s, lds, q, d, k, off, n, scale, attnScoresF32Go, attnScoresF32AVX512)
	},
	attnScoresBF16: func(s []float32, lds int, q []float32, d int, k []uint16, off []int, n int, scale float32) {
		attnScoresZ(s, lds, q, d, k, off, n, scale, attnScoresBF16Go, attnScoresBF16AVX512)
	},
	attnMixF32: func(out []float32, d int, p []float32, ldp int, v []float32, off []int, n int) {
		attnMixZ(out, d, p, ldp, v, off, n, attnMixF32Go, &attnMixF32AVX512)
	},
	attnMixBF16: func(out []float32, d int, p []float32, ldp int, v []uint16, off []int, n int) {
		attnMixZ(out, d, p, ldp, v, off, n, attnMixBF16Go, &attnMixBF16AVX512)
	},
	softmaxF32: func(x []float32) (m, inv float32) {
		if len(x) == 0 {
			return 0, 0
		}
		return softmaxF32AVX512(&x[0], len(x))
	},
	expF32: func(x []float32) {
		if len(x) > 0 {
			expF32AVX512(&x[0], len(x))
		}
	},
	siluMulF32: func(out, g, u []float32) {
		if len(g) > 0 {
			out, u = out[:len(g)], u[:len(g)]
			siluMulF32AVX512(&out[0], &g[0], &u[0], len(g))
		}
	},
	gemmBF16: func(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc int) {
		gemmBF16Z(a, lda, b, ldb, c, ldc, kc, gemmCols, gemm12x32BF16AVX512)
	},
	gemmHalfBF16: func(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc int) {
		gemmBF16Z(a, lda, b, ldb, c, ldc, kc, gemmCols/2, gemm12x16BF16AVX512)
	},
	narrowBF16: func(dst []uint16, src []float32) {
		if len(src) > 0 {
			dst = dst[:len(src)]
			narrowBF16AVX512(&dst[0], &src[0], len(src))
		}
	},
}

// gemmBF16Z checks the bounds of a bf16 GEMM tile of 12 rows × cols tokens and runs f.
func gemmBF16Z(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc, cols int, f func(a *uint16, lda int, b *uint32, ldb int, c *float32, ldc, kc int)) {
	if kc%2 != 0 {
		panic("tensor: bf16 GEMM over an odd depth")
	}
	c = c[:11*ldc+cols]
	if kc == 0 {
		return
	}
	a = a[:11*lda+kc]
	b = b[:(kc/2-1)*ldb+cols]
	f(&a[0], lda, &b[0], ldb, &c[0], ldc, kc)
}

// attnScoresZ runs an AVX-512 scores kernel, which takes rows of a multiple of 16 elements; other
// head sizes run the portable kernel. The kernel reads off for whole blocks of 16 keys and
// trusts every offset to be a row of k (cacheRows makes them so).
func attnScoresZ[W float32 | uint16](s []float32, lds int, q []float32, d int, k []W, off []int, n int, scale float32,
	slow func(s []float32, lds int, q []float32, d int, k []W, off []int, n int, scale float32),
	f func(s *float32, lds int, q *float32, nq int, k *W, off *int, n, d int, scale float32)) {
	nq := len(q) / max(d, 1)
	if n == 0 || nq == 0 {
		return
	}
	if d%16 != 0 {
		slow(s, lds, q, d, k, off, n, scale)
		return
	}
	_ = s[(nq-1)*lds+n-1]
	_ = off[roundKeys(n)-1]
	_ = k[d-1]
	f(&s[0], lds, &q[0], nq, &k[0], &off[0], n, d, scale)
}

// attnMixZ runs the AVX-512 mix kernels (rows of a multiple of 16 elements; others run the
// portable kernel) on up to four queries at a time, with the trust in off of attnScoresZ.
func attnMixZ[W float32 | uint16](out []float32, d int, p []float32, ldp int, v []W, off []int, n int,
	slow func(out []float32, d int, p []float32, ldp int, v []W, off []int, n int),
	f *[4]func(out, p *float32, ldp int, v *W, off *int, n, d int)) {
	nq := len(out) / max(d, 1)
	if nq == 0 {
		return
	}
	if d%16 != 0 || n == 0 {
		slow(out, d, p, ldp, v, off, n)
		return
	}
	_ = p[(nq-1)*ldp+n-1]
	_ = off[n-1]
	_ = v[d-1]
	for j := 0; j < nq; j += 4 {
		q := min(4, nq-j)
		_ = out[(j+q)*d-1]
		f[q-1](&out[j*d], &p[j*ldp], ldp, &v[0], &off[0], n, d)
	}
}

// The mix kernels for one to four queries.
var (
	attnMixF32AVX512  = [4]func(out, p *float32, ldp int, v *float32, off *int, n, d int){attnMixF32Q1AVX512, attnMixF32Q2AVX512, attnMixF32Q3AVX512, attnMixF32Q4AVX512}
	attnMixBF16AVX512 = [4]func(out, p *float32, ldp int, v *uint16, off *int, n, d int){attnMixBF16Q1AVX512, attnMixBF16Q2AVX512, attnMixBF16Q3AVX512, attnMixBF16Q4AVX512}
)

var avx2 = &kernels{
	name: "avx2",
	dotF32: func(x, w []float32) float32 {
		body := len(x) &^ 15
		return dot1Z(x[:body], w, dotF32AVX2) + dotF32Go(x[body:], w[body:])
	},
	dotBF16: func(x []float32, w []uint16) float32 {
		body := len(x) &^ 15
		return dot1Z(x[:body], w, dotBF16AVX2) + dotBF16Go(x[body:], w[body:])
	},
	dotF16: func(x []float32, w []uint16) float32 {
		body := len(x) &^ 15
		return dot1Z(x[:body], w, dotF16AVX2) + dotF16Go(x[body:], w[body:])
	},
	dot4F32: func(out *[4]float32, x, w []float32, ldw int) {
		body := len(x) &^ 15
		dot4Z(out, x[:body], w, ldw, dot4F32AVX2)
		for r := range out {
			out[r] += dotF32Go(x[body:], w[r*ldw+body:r*ldw+len(x)])
		}
	},
	dot4BF16: func(out *[4]float32, x []float32, w []uint16, ldw int) {
		body := len(x) &^ 15
		dot4Z(out, x[:body], w, ldw, dot4BF16AVX2)
		for r := range out {
			out[r] += dotBF16Go(x[body:], w[r*ldw+body:r*ldw+len(x)])
		}
	},
	dot4F16: func(out *[4]float32, x []float32, w []uint16, ldw int) {
		body := len(x) &^ 15
		dot4Z(out, x[:body], w, ldw, dot4F16AVX2)
		for r := range out {
			out[r] += dotF16Go(x[body:], w[r*ldw+body:r*ldw+len(x)])
		}
	},
	widenBlockF32: func(dst, src []float32, lds, rows, cols int) {
		widenBlock(dst, src, lds, rows, cols, widenBlockF32AVX2)
	},
	widenBlockBF16: func(dst []float32, src []uint16, lds, rows, cols int) {
		widenBlock(dst, src, lds, rows, cols, widenBlockBF16AVX2)
	},
	widenBlockF16: func(dst []float32, src []uint16, lds, rows, cols int) {
		widenBlock(dst, src, lds, rows, cols, widenBlockF16AVX2)
	},
	gemm: func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride int) {
		gemm6Y(a, lda, b, ldb, c, ldc, kc, pf, pfStride, 2)
	},
	gemmHalf: func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride int) {
		gemm6Y(a, lda, b, ldb, c, ldc, kc, pf, pfStride, 1)
	},
	transpose: transposeZ,
	gemmRows:  6,
}

// gemm6Y runs the AVX2 micro-kernel on 16·halves columns.
func gemm6Y(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride, halves int) {
	c = c[:5*ldc+16*halves]
	if kc == 0 {
		return
	}
	a = a[:5*lda+kc]
	b = b[:(kc-1)*ldb+16*halves]
	gemm6AVX2(&a[0], lda, &b[0], ldb, &c[0], ldc, kc, pf, pfStride, halves)
}

func dot1Z[W float32 | uint16](x []float32, w []W, f func(x *float32, w *W, n int) float32) float32 {
	if len(x) == 0 {
		return 0
	}
	w = w[:len(x)]
	return f(&x[0], &w[0], len(x))
}

func dot4Z[W float32 | uint16](out *[4]float32, x []float32, w []W, ldw int, f func(x *float32, w *W, ldw, n int, out *[4]float32)) {
	if len(x) == 0 {
		*out = [4]float32{}
		return
	}
	w = w[:3*ldw+len(x)]
	f(&x[0], &w[0], ldw, len(x), out)
}

func dot4x4Z[W float32 | uint16](out *[16]float32, x []float32, ldx int, w []W, ldw, n int, f func(x *float32, ldx int, w *W, ldw, n int, out *[16]float32)) {
	if n == 0 {
		*out = [16]float32{}
		return
	}
	x = x[:3*ldx+n]
	w = w[:3*ldw+n]
	f(&x[0], ldx, &w[0], ldw, n, out)
}

// transposeZ does the whole 8×8 blocks in assembly (AVX2, which every AVX-512 CPU has) and the
// edges in Go.
func transposeZ(dst []float32, ldd int, src []float32, lds, rows, cols int) {
	if rows == 0 || cols == 0 {
		return
	}
	r8, c8 := rows&^7, cols&^7
	if r8 > 0 && c8 > 0 {
		_ = src[(r8-1)*lds+c8-1]
		_ = dst[(c8-1)*ldd+r8-1]
		transposeAVX2(&dst[0], ldd, &src[0], lds, r8, c8)
	}
	if c8 < cols {
		transposeGo(dst[c8*ldd:], ldd, src[c8:], lds, rows, cols-c8)
	}
	if r8 < rows && c8 > 0 {
		transposeGo(dst[r8:], ldd, src[r8*lds:], lds, rows-r8, c8)
	}
}

func widenBlock[W float32 | uint16](dst []float32, src []W, lds, rows, cols int, f func(dst *float32, src *W, lds, rows, cols int)) {
	if rows == 0 || cols == 0 {
		return
	}
	dst = dst[:rows*cols]
	src = src[:(rows-1)*lds+cols]
	f(&dst[0], &src[0], lds, rows, cols)
}

//go:noescape
func dotF32AVX512(x, w *float32, n int) float32

//go:noescape
func dotBF16AVX512(x *float32, w *uint16, n int) float32

//go:noescape
func dotF16AVX512(x *float32, w *uint16, n int) float32

//go:noescape
func dot4F32AVX512(x, w *float32, ldw, n int, out *[4]float32)

//go:noescape
func dot4BF16AVX512(x *float32, w *uint16, ldw, n int, out *[4]float32)

//go:noescape
func dot4F16AVX512(x *float32, w *uint16, ldw, n int, out *[4]float32)

//go:noescape
func dot4BF16EvenOddAVX512(x *float32, w *uint16, ldw, n int, out *[4]float32)

//go:noescape
func gemvBF16EvenOddAVX512(x *float32, w *uint16, n, q int, out *float32)

//go:noescape
func dot4x4F32AVX512(x *float32, ldx int, w *float32, ldw, n int, out *[16]float32)

//go:noescape
func dot4x4BF16AVX512(x *float32, ldx int, w *uint16, ldw, n int, out *[16]float32)

//go:noescape
func dot4x4F16AVX512(x *float32, ldx int, w *uint16, ldw, n int, out *[16]float32)

//go:noescape
func widenBlockF32AVX512(dst, src *float32, lds, rows, cols int)

//go:noescape
func widenBlockBF16AVX512(dst *float32, src *uint16, lds, rows, cols int)

//go:noescape
func widenBlockF16AVX512(dst *float32, src *uint16, lds, rows, cols int)

//go:noescape
func gemm12x32AVX512(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int, pf uintptr, pfStride int)

//go:noescape
func gemm6x32AVX512(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int)

//go:noescape
func gemm12x16AVX512(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int, pf uintptr, pfStride int)

//go:noescape
func dotF32AVX2(x, w *float32, n int) float32

//go:noescape
func dotBF16AVX2(x *float32, w *uint16, n int) float32

//go:noescape
func dotF16AVX2(x *float32, w *uint16, n int) float32

//go:noescape
func dot4F32AVX2(x, w *float32, ldw, n int, out *[4]float32)

//go:noescape
func dot4BF16AVX2(x *float32, w *uint16, ldw, n int, out *[4]float32)

//go:noescape
func dot4F16AVX2(x *float32, w *uint16, ldw, n int, out *[4]float32)

//go:noescape
func widenBlockF32AVX2(dst, src *float32, lds, rows, cols int)

//go:noescape
func widenBlockBF16AVX2(dst *float32, src *uint16, lds, rows, cols int)

//go:noescape
func widenBlockF16AVX2(dst *float32, src *uint16, lds, rows, cols int)

//go:noescape
func transposeAVX2(dst *float32, ldd int, src *float32, lds, rows, cols int)

//go:noescape
func gemm6AVX2(a *float32, lda int, b *float32, ldb int, c *float32, ldc, kc int, pf uintptr, pfStride, halves int)

//go:noescape
func attnScoresF32AVX512(s *float32, lds int, q *float32, nq int, k *float32, off *int, n, d int, scale float32)

//go:noescape
func attnScoresBF16AVX512(s *float32, lds int, q *float32, nq int, k *uint16, off *int, n, d int, scale float32)

//go:noescape
func attnMixF32Q1AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)

//go:noescape
func attnMixF32Q2AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)

//go:noescape
func attnMixF32Q3AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)

//go:noescape
func attnMixF32Q4AVX512(out, p *float32, ldp int, v *float32, off *int, n, d int)

//go:noescape
func attnMixBF16Q1AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)

//go:noescape
func attnMixBF16Q2AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)

//go:noescape
func attnMixBF16Q3AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)

//go:noescape
func attnMixBF16Q4AVX512(out, p *float32, ldp int, v *uint16, off *int, n, d int)

//go:noescape
func softmaxF32AVX512(x *float32, n int) (m, inv float32)

//go:noescape
func expF32AVX512(x *float32, n int)

//go:noescape
func siluMulF32AVX512(out, gate, u *float32, n int)

//go:noescape
func gemm12x32BF16AVX512(a *uint16, lda int, b *uint32, ldb int, c *float32, ldc, kc int)

//go:noescape
func gemm12x16BF16AVX512(a *uint16, lda int, b *uint32, ldb int, c *float32, ldc, kc int)

//go:noescape
func narrowBF16AVX512(dst *uint16, src *float32, n int)
