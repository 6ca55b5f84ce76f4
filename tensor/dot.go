package tensor

import (
	"math"
	"os"
	"sync"
)

// The inner loops of MatMul (and the dot of attention), as a set of kernels chosen once at start-up:
// the portable Go below, or assembly for the running CPU (dot_amd64.go). Every set returns the
// same values up to F32 summation order: weights are widened exactly to F32, products are
// accumulated in F32, nothing is rounded to a narrower type.

// kernels is one implementation of the inner loops.
type kernels struct {
	name string

	// dot*: Σ_k x[k]·w[k] over len(x) elements; w may be longer.
	dotF32  func(x, w []float32) float32
	dotBF16 func(x []float32, w []uint16) float32
	dotF16  func(x []float32, w []uint16) float32

	// dot4*: out[r] = Σ_k x[k]·w[r·ldw + k] for r = 0..3: four weight rows share each load of x.
	// w holds at least 3·ldw + len(x) elements.
	dot4F32  func(out *[4]float32, x, w []float32, ldw int)
	dot4BF16 func(out *[4]float32, x []float32, w []uint16, ldw int)
	dot4F16  func(out *[4]float32, x []float32, w []uint16, ldw int)
	// dot4BF16EvenOdd, where a set has one, is dot4BF16 on x permuted by evenOdd, len(x) a multiple
	// of 32: the same bits for fewer instructions per weight (the decode GEMV).
	dot4BF16EvenOdd func(out *[4]float32, x []float32, w []uint16, ldw int)
	// gemvBF16EvenOdd, where a set has one, is dot4BF16EvenOdd over the rows [0, 4q) of w (rows of
	// len(x) elements) in one call: out[r] for r < 4q, rows i, i+q, i+2q and i+3q together as
	// runGEMV takes them, each sum with the bits dot4BF16EvenOdd gives it. One token's GEMV makes
	// a call per worker instead of one per four rows, whose overhead is that of a short kernel
	// (four rows of 576 bf16 are 4.5 KB).
	gemvBF16EvenOdd func(out, x []float32, w []uint16, q int)

	// dot4x4*: out[t·4 + r] = Σ_k x[t·ldx + k]·w[r·ldw + k] over n elements, for four tokens t and
	// four weight rows r: a small batch widens each weight once for four tokens.
	dot4x4F32  func(out *[16]float32, x []float32, ldx int, w []float32, ldw, n int)
	dot4x4BF16 func(out *[16]float32, x []float32, ldx int, w []uint16, ldw, n int)
	dot4x4F16  func(out *[16]float32, x []float32, ldx int, w []uint16, ldw, n int)

	// widenBlock*: dst[i·cols + k] = src[i·lds + k] as F32 for i < rows, k < cols: a block of
	// weight rows, widened into a contiguous (rows, cols) tile.
	widenBlockF32  func(dst, src []float32, lds, rows, cols int)
	widenBlockBF16 func(dst []float32, src []uint16, lds, rows, cols int)
	widenBlockF16  func(dst []float32, src []uint16, lds, rows, cols int)

	// transpose: dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols. The GEMM packs its tokens
	// and writes its output back with it.
	transpose func(dst []float32, ldd int, src []float32, lds, rows, cols int)

	// gemm is the micro-kernel of the prefill GEMM, on a tile of gemmRows weight rows × 32 tokens:
	//
	//	c[i·ldc + t] += Σ_{k<kc} a[i·lda + k] · b[k·ldb + t]   for i < gemmRows, t < 32
	//
	// a: (gemmRows, lda) widened weights; b: (kc, ldb), of which the kernel reads 32 columns:
	// MatMul's tokens packed k-major (ldb = 32), or one panel of MatMulBackward's widened weights,
	// which lie side by side (ldb = their width); c: the tile of the transposed output,
	// (gemmRows, ldc). Unless pf is 0, the kernel may also prefetch 2·kc bytes of each of the
	// gemmRows rows at pf + i·pfStride: the weights of the next slice.
	gemm func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride int)
	// gemmHalf is gemm on the first 16 columns of b and c only: a batch's last panel of 16 tokens
	// or fewer costs half a whole one.
	gemmHalf func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, pf uintptr, pfStride int)
	gemmRows int
	// gemmFew, where a set has one, is gemm on gemmFewRows < gemmRows rows and never prefetches:
	// MatMulBackward's last rows (tokens) when they fit, so that a partial tile pads less.
	gemmFew     func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int)
	gemmFewRows int

	// attnScores*: s[j·lds + t] = scale · Σ_{e<d} q[j·d + e]·k[off[t] + e] for the queries
	// j < len(q)/d and the keys t < n: attention scores of the query heads of a token that share a
	// kv head, k a layer's cache from that kv head on and off the element offsets of the keys'
	// rows (cacheRows), with room for n rounded up to 16, every entry a row of the cache.
	attnScoresF32  func(s []float32, lds int, q []float32, d int, k []float32, off []int, n int, scale float32)
	attnScoresBF16 func(s []float32, lds int, q []float32, d int, k []uint16, off []int, n int, scale float32)
	// attnMix*: out[j·d + e] = Σ_{t<n} p[j·ldp + t]·v[off[t] + e] for the queries j < len(out)/d
	// and e < d: the values weighed by each query's probabilities, added in order of t.
	attnMixF32  func(out []float32, d int, p []float32, ldp int, v []float32, off []int, n int)
	attnMixBF16 func(out []float32, d int, p []float32, ldp int, v []uint16, off []int, n int)
	// softmaxF32: x = exp(x − max x) / Σ exp(x − max x), in place; it returns max x and 1/Σ, from
	// which expF32 recomputes every element bit for bit as expF32(x − max)·(1/Σ).
	softmaxF32 func(x []float32) (m, inv float32)
	// expF32: x = e^x, elementwise, in place.
	expF32 func(x []float32)
	// siluMulF32: out = g / (1 + e⁻ᵍ) · u, elementwise (the SwiGLU gate).
	siluMulF32 func(out, g, u []float32)

	// gemmBF16 is the GEMM tile of the bf16 compute mode (MatMulBF16), on gemmRows rows × 32
	// tokens: c[i·ldc + t] += Σ_{k<kc} a[i·lda + k]·x(k, t), with a the bf16 weight rows and the
	// tokens rounded to bf16 and packed as pairs, b[(k/2)·ldb + t] = x(k, t) | x(k+1, t)<<16; kc is
	// even. Within a call the products of each pair are added to a sum that starts at 0, element
	// k+1's first, each product exact and each sum rounded to F32 (VDPBF16PS's order); the sum is
	// then added to c. gemmHalfBF16 does the first 16 columns only.
	gemmBF16, gemmHalfBF16 func(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc int)
	// narrowBF16: dst[i] = BF16FromF32(src[i]).
	narrowBF16 func(dst []uint16, src []float32)
}

// gemmCols is the number of tokens in one packed panel and in one GEMM tile.
const gemmCols = 32

// portable is the pure-Go set: the fallback everywhere and the reference in tests.
var portable = &kernels{
	name:     "go",
	dotF32:   dotF32Go,
	dotBF16:  dotBF16Go,
	dotF16:   dotF16Go,
	dot4F32:  dot4F32Go,
	dot4BF16: dot4BF16Go,
	dot4F16:  dot4F16Go,

	dot4x4F32:  dot4x4Of(dot4F32Go),
	dot4x4BF16: dot4x4Of(dot4BF16Go),
	dot4x4F16:  dot4x4Of(dot4F16Go),

	widenBlockF32:  widenBlockGo(func(dst, src []float32) { copy(dst, src) }),
	widenBlockBF16: widenBlockGo(widenBF16Go),
	widenBlockF16:  widenBlockGo(widenF16Go),

	transpose: transposeGo,
	gemm:      gemmGo,
	gemmHalf:  gemmHalfGo,
	gemmRows:  4,

	attnScoresF32:  attnScoresF32Go,
	attnScoresBF16: attnScoresBF16Go,
	attnMixF32:     attnMixF32Go,
	attnMixBF16:    attnMixBF16Go,
	softmaxF32:     softmaxStats[float32],
	expF32:         expGo[float32],
	siluMulF32:     siluMulGo[float32],

	gemmBF16:     gemmBF16Of(4, gemmCols),
	gemmHalfBF16: gemmBF16Of(4, gemmCols/2),
	narrowBF16:   narrowBF16Go,
}

// kernelSets lists the sets this CPU can run, slowest first; kern is the one in use, the last of
// them unless the environment variable TILLER_KERNELS names another ("go", "avx2", "avx512"), which
// is how benchmarks compare them.
var (
	kernelSets = []*kernels{portable}
	kern       = portable
)

func init() {
	kernelSets = append(kernelSets, archKernels()...)
	kern = kernelSets[len(kernelSets)-1]
	if name := os.Getenv("TILLER_KERNELS"); name != "" {
		for _, k := range kernelSets {
			if k.name == name {
				kern = k
			}
		}
	}
}

// KernelName says which set of CPU kernels MatMul uses: "go", "avx2" or "avx512".
func KernelName() string { return kern.name }

// The entry points of the other ops (attention's q·k, widening a norm weight or an embedding row).
func dotF32(x, w []float32) float32         { return kern.dotF32(x, w) }
func widenBF16(dst []float32, src []uint16) { kern.widenBlockBF16(dst, src, 0, 1, len(dst)) }
func widenF16(dst []float32, src []uint16)  { kern.widenBlockF16(dst, src, 0, 1, len(dst)) }

// dotF32Go is Σ x[k]·w[k].
func dotF32Go(x, w []float32) float32 {
	w = w[:len(x)]
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(x); k += 4 {
		s0 += x[k] * w[k]
		s1 += x[k+1] * w[k+1]
		s2 += x[k+2] * w[k+2]
		s3 += x[k+3] * w[k+3]
	}
	for ; k < len(x); k++ {
		s0 += x[k] * w[k]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotBF16Go is Σ x[k]·w[k] with w in bfloat16, widened exactly.
func dotBF16Go(x []float32, w []uint16) float32 {
	w = w[:len(x)]
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(x); k += 4 {
		s0 += x[k] * F32FromBF16(w[k])
		s1 += x[k+1] * F32FromBF16(w[k+1])
		s2 += x[k+2] * F32FromBF16(w[k+2])
		s3 += x[k+3] * F32FromBF16(w[k+3])
	}
	for ; k < len(x); k++ {
		s0 += x[k] * F32FromBF16(w[k])
	}
	return (s0 + s1) + (s2 + s3)
}

// dotF16Go is Σ x[k]·w[k] with w in binary16, widened exactly.
func dotF16Go(x []float32, w []uint16) float32 {
	w = w[:len(x)]
	t := f16Table()
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(x); k += 4 {
		s0 += x[k] * t[w[k]]
		s1 += x[k+1] * t[w[k+1]]
		s2 += x[k+2] * t[w[k+2]]
		s3 += x[k+3] * t[w[k+3]]
	}
	for ; k < len(x); k++ {
		s0 += x[k] * t[w[k]]
	}
	return (s0 + s1) + (s2 + s3)
}

func dot4F32Go(out *[4]float32, x, w []float32, ldw int) {
	for r := range out {
		out[r] = dotF32Go(x, w[r*ldw:r*ldw+len(x)])
	}
}

func dot4BF16Go(out *[4]float32, x []float32, w []uint16, ldw int) {
	for r := range out {
		out[r] = dotBF16Go(x, w[r*ldw:r*ldw+len(x)])
	}
}

func dot4F16Go(out *[4]float32, x []float32, w []uint16, ldw int) {
	for r := range out {
		out[r] = dotF16Go(x, w[r*ldw:r*ldw+len(x)])
	}
}

// dot4x4Of makes a four-token kernel out of a four-row one: one call per token.
func dot4x4Of[W float32 | uint16](dot4 func(out *[4]float32, x []float32, w []W, ldw int)) func(out *[16]float32, x []float32, ldx int, w []W, ldw, n int) {
	return func(out *[16]float32, x []float32, ldx int, w []W, ldw, n int) {
		for t := range 4 {
			dot4((*[4]float32)(out[4*t:]), x[t*ldx:t*ldx+n], w, ldw)
		}
	}
}

// widenBF16Go writes src as F32 into dst.
func widenBF16Go(dst []float32, src []uint16) {
	src = src[:len(dst)]
	for k, h := range src {
		dst[k] = F32FromBF16(h)
	}
}

// widenF16Go writes src as F32 into dst.
func widenF16Go(dst []float32, src []uint16) {
	src = src[:len(dst)]
	t := f16Table()
	for k, h := range src {
		dst[k] = t[h]
	}
}

// widenBlockGo makes a portable block widen out of a row widen.
func widenBlockGo[W float32 | uint16](row func(dst []float32, src []W)) func(dst []float32, src []W, lds, rows, cols int) {
	return func(dst []float32, src []W, lds, rows, cols int) {
		for i := 0; i < rows; i++ {
			row(dst[i*cols:(i+1)*cols], src[i*lds:i*lds+cols])
		}
	}
}

func transposeGo(dst []float32, ldd int, src []float32, lds, rows, cols int) {
	for i := 0; i < rows; i++ {
		row := src[i*lds : i*lds+cols]
		for j, v := range row {
			dst[j*ldd+i] = v
		}
	}
}

// gemmGo is the portable micro-kernel, on 4 rows × 32 tokens.
func gemmGo(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, _ uintptr, _ int) {
	gemmColsGo(a, lda, b, ldb, c, ldc, kc, gemmCols)
}

func gemmHalfGo(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int, _ uintptr, _ int) {
	gemmColsGo(a, lda, b, ldb, c, ldc, kc, gemmCols/2)
}

// gemmColsGo computes 4 rows × cols tokens in sub-tiles of 2 rows × 4 tokens whose eight sums stay
// in registers over all of kc.
func gemmColsGo(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc, cols int) {
	if kc == 0 {
		return
	}
	b = b[:(kc-1)*ldb+cols]
	for i := 0; i < 4; i += 2 {
		a0 := a[i*lda : i*lda+kc]
		a1 := a[(i+1)*lda : (i+1)*lda+kc]
		c0 := c[i*ldc : i*ldc+cols]
		c1 := c[(i+1)*ldc : (i+1)*ldc+cols]
		for t := 0; t < cols; t += 4 {
			var s00, s01, s02, s03, s10, s11, s12, s13 float32
			for k, x0 := range a0 {
				x1 := a1[k]
				bk := (*[4]float32)(b[k*ldb+t:])
				s00 += x0 * bk[0]
				s01 += x0 * bk[1]
				s02 += x0 * bk[2]
				s03 += x0 * bk[3]
				s10 += x1 * bk[0]
				s11 += x1 * bk[1]
				s12 += x1 * bk[2]
				s13 += x1 * bk[3]
			}
			c0[t] += s00
			c0[t+1] += s01
			c0[t+2] += s02
			c0[t+3] += s03
			c1[t] += s10
			c1[t+1] += s11
			c1[t+2] += s12
			c1[t+3] += s13
		}
	}
}

// attnScoresF32Go is the portable scores kernel: one dot per query and key.
func attnScoresF32Go(s []float32, lds int, q []float32, d int, k []float32, off []int, n int, scale float32) {
	attnScoresGo(s, lds, q, d, k, off, n, scale, dotF32Go)
}

func attnScoresBF16Go(s []float32, lds int, q []float32, d int, k []uint16, off []int, n int, scale float32) {
	attnScoresGo(s, lds, q, d, k, off, n, scale, dotBF16Go)
}

func attnScoresGo[W float32 | uint16](s []float32, lds int, q []float32, d int, k []W, off []int, n int, scale float32, dot func(x []float32, w []W) float32) {
	for j := 0; j < len(q)/d; j++ {
		for t := range n {
			s[j*lds+t] = dot(q[j*d:(j+1)*d], k[off[t]:off[t]+d]) * scale
		}
	}
}

// attnMixF32Go is the portable mix kernel: one axpy per query and key.
func attnMixF32Go(out []float32, d int, p []float32, ldp int, v []float32, off []int, n int) {
	clear(out)
	for j := 0; j < len(out)/d; j++ {
		for t, pt := range p[j*ldp : j*ldp+n] {
			axpy(out[j*d:(j+1)*d], pt, v[off[t]:off[t]+d])
		}
	}
}

func attnMixBF16Go(out []float32, d int, p []float32, ldp int, v []uint16, off []int, n int) {
	clear(out)
	for j := 0; j < len(out)/d; j++ {
		o := out[j*d : (j+1)*d]
		for t, pt := range p[j*ldp : j*ldp+n] {
			row := v[off[t] : off[t]+d]
			for e := range o {
				o[e] += pt * F32FromBF16(row[e])
			}
		}
	}
}

// expGo is x = e^x through math.Exp, rounded to T, as softmaxStats forms its exponentials.
func expGo[T float](x []T) {
	for i, v := range x {
		x[i] = T(math.Exp(float64(v)))
	}
}

// gemmBF16Of makes the portable bf16 GEMM tile on rows rows × cols tokens, in VDPBF16PS's order
// of operations, so that it is also the reference the assembly must match bit for bit (on normal
// numbers: VDPBF16PS flushes subnormals to zero).
func gemmBF16Of(rows, cols int) func(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc int) {
	return func(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc int) {
		for i := 0; i < rows; i++ {
			ai := a[i*lda : i*lda+kc]
			ci := c[i*ldc : i*ldc+cols]
			for t := range ci {
				var sum float32
				for k := 0; k < kc; k += 2 {
					pair := b[k/2*ldb+t]
					sum += F32FromBF16(ai[k+1]) * F32FromBF16(uint16(pair>>16))
					sum += F32FromBF16(ai[k]) * F32FromBF16(uint16(pair))
				}
				ci[t] += sum
			}
		}
	}
}

func narrowBF16Go(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, f := range src {
		dst[i] = BF16FromF32(f)
	}
}

// f16Table maps every binary16 bit pattern to its F32 value: one load per element instead of the
// bit manipulation of a conversion.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		t[i] = F32FromF16(uint16(i))
	}
	return t
})

// evenOdd writes x into dst with each block of 32 elements permuted to its 16 even elements, then
// its 16 odd ones: the layout dot4BF16EvenOdd takes. len(x) is a multiple of 32.
func evenOdd(dst, x []float32) {
	dst = dst[:len(x)]
	for b := 0; b < len(x); b += 32 {
		blk, out := x[b:b+32], dst[b:b+32]
		for j := range 16 {
			out[j], out[16+j] = blk[2*j], blk[2*j+1]
		}
	}
}
