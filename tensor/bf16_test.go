package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The bf16 GEMM tile of every kernel set against the portable one of the same shape, which follows
// VDPBF16PS's order of operations: bit for bit on random normal numbers, since every product of
// two bf16 is exact in F32 and the sums are rounded in the same order. Every even kc including 0,
// strides wider than the tile, accumulation into c, nothing written outside the tile.
func TestGEMMBF16Kernel(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(21, 22))
		for _, v := range []struct {
			name string
			cols int
			gemm func(a []uint16, lda int, b []uint32, ldb int, c []float32, ldc, kc int)
		}{{"gemmBF16", gemmCols, k.gemmBF16}, {"gemmHalfBF16", gemmCols / 2, k.gemmHalfBF16}} {
			mr, cols := k.gemmRows, v.cols
			ref := gemmBF16Of(mr, cols)
			for _, kc := range []int{0, 2, 6, 16, 18, 100, 256} {
				for _, ldb := range []int{gemmCols, gemmCols + 7} {
					lda, ldc := kc+6, gemmCols+5
					a := make([]uint16, mr*lda)
					for i := range a {
						a[i] = BF16FromF32(float32(rng.NormFloat64()))
					}
					b := make([]uint32, max(kc/2, 1)*ldb)
					for i := range b {
						b[i] = uint32(BF16FromF32(float32(rng.NormFloat64()))) | uint32(BF16FromF32(float32(rng.NormFloat64())))<<16
					}
					c := make([]float32, mr*ldc)
					for i := range c {
						c[i] = float32(rng.NormFloat64() * 10)
					}
					want := append([]float32(nil), c...)
					ref(a, lda, b, ldb, want, ldc, kc)
					v.gemm(a, lda, b, ldb, c[:(mr-1)*ldc+cols], ldc, kc)
					for i := range c {
						if math.Float32bits(c[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s kc=%d ldb=%d: c[%d] (row %d, col %d) = %v, want %v",
								v.name, kc, ldb, i, i/ldc, i%ldc, c[i], want[i])
						}
					}
				}
			}
		}
	})
}

// narrowBF16 rounds as BF16FromF32 does, bit for bit: ties to even both ways, the largest finite
// values rounding to infinity, infinities, NaNs of either sign (kept quiet), zeros, subnormals,
// and random values, over lengths with every tail.
func TestNarrowBF16Kernel(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(23, 24))
		special := []uint32{0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001, 0x7f7fffff, 0xff7fffff,
			0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0, 0x80000000, 1, 0x807fffff}
		for _, n := range []int{0, 1, 15, 16, 17, 40, 1000} {
			src := make([]float32, n)
			for i := range src {
				if i < len(special) {
					src[i] = math.Float32frombits(special[(i+n)%len(special)])
				} else {
					src[i] = math.Float32frombits(rng.Uint32())
				}
			}
			dst := make([]uint16, n+8)
			for i := range dst {
				dst[i] = 0xdead
			}
			k.narrowBF16(dst[:n], src)
			for i, f := range src {
				if want := BF16FromF32(f); dst[i] != want {
					t.Fatalf("n=%d: bf16(%#08x) = %#04x, want %#04x", n, math.Float32bits(f), dst[i], want)
				}
			}
			for i := n; i < len(dst); i++ {
				if dst[i] != 0xdead {
					t.Fatalf("n=%d: wrote element %d past the end", n, i)
				}
			}
		}
	})
}

// MatMulBF16 against the f64 sum of the bf16-rounded tokens times the weights (the products are
// exact, so only the F32 sums err: dotTol) on the tokens that run through the GEMM with bf16
// weights and an even width; everywhere else it must be MatMul bit for bit.
func TestMatMulBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	shapes := [][2]int{{45, 66}, {45, 67}, {1, 2}, {3, 16}, {263, 532}, {0, 4}}
	forKernels(t, func(t *testing.T, k *kernels) {
		useKernels(t, k)
		for _, threads := range []int{1, 3} {
			b := NewCPU(threads)
			t.Cleanup(b.Close)
			for _, dt := range []DType{BF16, F32} {
				for _, s := range shapes {
					for _, n := range matmulBatches {
						c := newMatmulCase(r, dt, n, s[0], s[1], n%2 == 0, false)
						name := fmt.Sprintf("threads=%d %s n=%d out=%d in=%d", threads, dt, n, s[0], s[1])
						var bias *Tensor
						if c.b != nil {
							bias = FromF32(c.b, c.out)
						}
						x := FromF32(c.x, n, c.in)
						exact := FromF32(poisoned(n*c.out), n, c.out)
						b.MatMul(exact, x, c.w, bias)
						got := FromF32(poisoned(n*c.out), n, c.out)
						b.MatMulBF16(got, x, c.w, bias)
						gemm := 0
						if dt == BF16 && c.in%2 == 0 {
							gemm = gemmTokensOf(n)
						}
						for i, g := range got.F32() {
							tok, o := i/max(c.out, 1), i%max(c.out, 1)
							if tok >= gemm {
								if math.Float32bits(g) != math.Float32bits(exact.F32()[i]) {
									t.Fatalf("%s: token %d row %d = %v, want MatMul's %v", name, tok, o, g, exact.F32()[i])
								}
								continue
							}
							var want, abs float64
							for kk := 0; kk < c.in; kk++ {
								p := float64(F32FromBF16(BF16FromF32(c.x[tok*c.in+kk]))) * float64(c.wv[o*c.in+kk])
								want += p
								abs += math.Abs(p)
							}
							if c.b != nil {
								want += float64(c.b[o])
								abs += math.Abs(float64(c.b[o]))
							}
							if tol := dotTol(c.in+1, abs, want); !(math.Abs(float64(g)-want) <= tol) {
								t.Fatalf("%s: token %d row %d = %v, want %v (tolerance %g)", name, tok, o, g, want, tol)
							}
						}
					}
				}
			}
		}
	})
}
