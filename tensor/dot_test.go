package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Every kernel set this CPU runs is checked against two references:
//
//   - exact: x and w hold small integers, so every product and every partial sum is an integer
//     below 2²⁴ and F32 arithmetic is exact in any summation order. Got must equal the sum bit for
//     bit; a dropped, doubled or misplaced element cannot hide inside a tolerance.
//   - real: random reals against an f64 sum, with the tolerance below.
//
// The tolerance for a dot of n terms: every implementation sums each term through at most n/4 + 8
// F32 additions (the portable code keeps 4 running sums; the assembly 16 or 32 lanes, then a
// tree), each adding at most one rounding of u = 2⁻²⁴ relative to the running magnitude, which is
// bounded by Σ|x_k·w_k|. So |got − want| ≤ atol + rtol·|want| with atol = (n/4 + 8)·u·Σ|x_k·w_k|
// and rtol = u for the final rounding; widening is exact and adds nothing.

const unit = 1.0 / (1 << 24)

// dotTol is the tolerance of an F32 dot of the given terms against their f64 sum.
func dotTol(n int, absSum, want float64) float64 {
	return (float64(n)/4+8)*unit*absSum + unit*math.Abs(want)
}

// forKernels runs f as a subtest once for every kernel set this CPU runs.
func forKernels(t *testing.T, f func(t *testing.T, k *kernels)) {
	t.Helper()
	for _, k := range kernelSets {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// useKernels makes k the set MatMul uses until the test ends.
func useKernels(t *testing.T, k *kernels) {
	t.Helper()
	old := kern
	kern = k
	t.Cleanup(func() { kern = old })
}

// dotLengths are the lengths every row kernel is tried on: empty, shorter than one vector, the
// edges of the 8-, 16-, 32- and 64-element steps, and a long odd one.
var dotLengths = []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 4099}

// weightKinds are the three weight dtypes.
type weightKind struct{ dt DType }

var weightKinds = []weightKind{{F32}, {BF16}, {F16}}

// weights holds one row set in a dtype plus its exact F32 values.
type weights struct {
	dt  DType
	f32 []float32
	u16 []uint16
	val []float32 // the value of every element, widened exactly
}

func newWeights(dt DType, vals []float32) *weights {
	w := &weights{dt: dt, val: make([]float32, len(vals))}
	switch dt {
	case F32:
		w.f32 = append([]float32(nil), vals...)
		copy(w.val, vals)
	case BF16:
		w.u16 = make([]uint16, len(vals))
		for i, v := range vals {
			w.u16[i] = BF16FromF32(v)
			w.val[i] = F32FromBF16(w.u16[i])
		}
	case F16:
		w.u16 = make([]uint16, len(vals))
		for i, v := range vals {
			w.u16[i] = F16FromF32(v)
			w.val[i] = F32FromF16(w.u16[i])
		}
	}
	return w
}

// from returns the weights starting at element off, which misaligns them by off elements.
func (w *weights) from(off int) *weights {
	s := &weights{dt: w.dt, val: w.val[off:]}
	if w.f32 != nil {
		s.f32 = w.f32[off:]
	}
	if w.u16 != nil {
		s.u16 = w.u16[off:]
	}
	return s
}

func (w *weights) dot(k *kernels, x []float32) float32 {
	switch w.dt {
	case F32:
		return k.dotF32(x, w.f32)
	case BF16:
		return k.dotBF16(x, w.u16)
	default:
		return k.dotF16(x, w.u16)
	}
}

func (w *weights) dot4(k *kernels, out *[4]float32, x []float32, ldw int) {
	switch w.dt {
	case F32:
		k.dot4F32(out, x, w.f32, ldw)
	case BF16:
		k.dot4BF16(out, x, w.u16, ldw)
	default:
		k.dot4F16(out, x, w.u16, ldw)
	}
}

// intValues returns n random small integers in [-lim, lim].
func intValues(r *rand.Rand, n, lim int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.IntN(2*lim+1) - lim)
	}
	return v
}

func realValues(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((r.Float64()*2 - 1) * scale)
	}
	return v
}

// ref64 is Σ x[k]·w[k] in f64 and Σ|x[k]·w[k]|.
func ref64(x, w []float32) (sum, abs float64) {
	for k := range x {
		p := float64(x[k]) * float64(w[k])
		sum += p
		abs += math.Abs(p)
	}
	return sum, abs
}

// poisoned returns n NaNs: any element a kernel fails to write stays NaN.
func poisoned(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

func TestDotExact(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, wk := range weightKinds {
			for _, n := range dotLengths {
				// 64² · 4099 < 2²⁴: every partial sum is an exact integer.
				x := intValues(r, n+3, 64)
				w := newWeights(wk.dt, intValues(r, n+3, 64))
				for off := 0; off < 3; off++ { // misalign x and w by 0, 4, 8 bytes (f32) or 0, 2, 4 (16-bit)
					xs, ws := x[off:off+n], w.from(2-off)
					want, _ := ref64(xs, ws.val[:n])
					if got := ws.dot(k, xs); float64(got) != want {
						t.Fatalf("%s n=%d off=%d: got %v, want %v exactly", wk.dt, n, off, got, want)
					}
				}
			}
		}
	})
}

func TestDotReal(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, wk := range weightKinds {
			for _, n := range dotLengths {
				x := realValues(r, n, 3)
				w := newWeights(wk.dt, realValues(r, n, 0.5))
				want, abs := ref64(x, w.val)
				got := w.dot(k, x)
				ref := w.dot(portable, x)
				if d := math.Abs(float64(got) - want); !(d <= dotTol(n, abs, want)) {
					t.Errorf("%s n=%d: got %v, f64 %v, |diff| %g > tol %g", wk.dt, n, got, want, d, dotTol(n, abs, want))
				}
				if d := math.Abs(float64(got) - float64(ref)); !(d <= 2*dotTol(n, abs, want)) {
					t.Errorf("%s n=%d: got %v, portable %v", wk.dt, n, got, ref)
				}
			}
		}
	})
}

// TestDotExtreme checks values at the ends of the F32 range: huge products that stay finite,
// subnormal products (which must not be flushed to zero), subnormal weights, and Inf and NaN,
// which must propagate as IEEE arithmetic says whatever the summation order.
func TestDotExtreme(t *testing.T) {
	const n = 37
	cases := []struct {
		name string
		x, w func(k int) float32 // w is rounded to the dtype
		want func(got float32, sum, abs float64) bool
	}{
		{"huge", func(k int) float32 { return 1e19 * float32(k%3+1) }, func(k int) float32 { return -1e17 * float32(k%5+1) },
			func(got float32, sum, abs float64) bool { return math.Abs(float64(got)-sum) <= dotTol(n, abs, sum) }},
		{"subnormal products", func(k int) float32 { return 1e-35 * float32(k%4+1) }, func(k int) float32 { return 1e-5 },
			func(got float32, sum, abs float64) bool {
				return got != 0 && math.Abs(float64(got)-sum) <= dotTol(n, abs, sum)+n*0x1p-149
			}},
		{"subnormal weights", func(k int) float32 { return 1e30 }, func(k int) float32 {
			if k == 5 {
				return math.Float32frombits(1 << 16) // the smallest positive subnormal bf16 (and f16 rounds it to 0)
			}
			return 0
		}, func(got float32, sum, abs float64) bool {
			return float64(got) == sum || math.Abs(float64(got)-sum) <= dotTol(n, abs, sum)
		}},
		{"+inf weight", func(k int) float32 { return float32(k + 1) }, func(k int) float32 {
			if k == 20 {
				return float32(math.Inf(1))
			}
			return 1
		}, func(got float32, _, _ float64) bool { return math.IsInf(float64(got), 1) }},
		{"-inf x", func(k int) float32 {
			if k == 36 {
				return float32(math.Inf(-1))
			}
			return 1
		}, func(k int) float32 { return 2 }, func(got float32, _, _ float64) bool { return math.IsInf(float64(got), -1) }},
		{"inf·0", func(k int) float32 {
			if k == 3 {
				return 0
			}
			return 1
		}, func(k int) float32 {
			if k == 3 {
				return float32(math.Inf(1))
			}
			return 1
		}, func(got float32, _, _ float64) bool { return got != got }},
		{"nan weight", func(k int) float32 { return 1 }, func(k int) float32 {
			if k == 33 {
				return float32(math.NaN())
			}
			return 1
		}, func(got float32, _, _ float64) bool { return got != got }},
		{"+inf and -inf", func(k int) float32 { return 1 }, func(k int) float32 {
			switch k {
			case 1:
				return float32(math.Inf(1))
			case 30:
				return float32(math.Inf(-1))
			}
			return 1
		}, func(got float32, _, _ float64) bool { return got != got }},
	}
	forKernels(t, func(t *testing.T, k *kernels) {
		for _, c := range cases {
			for _, wk := range weightKinds {
				x, wv := make([]float32, n), make([]float32, n)
				for i := range x {
					x[i], wv[i] = c.x(i), c.w(i)
				}
				w := newWeights(wk.dt, wv)
				if wk.dt == F16 && c.name == "huge" {
					continue // 1e17 overflows binary16
				}
				sum, abs := ref64(x, w.val)
				if got := w.dot(k, x); !c.want(got, sum, abs) {
					t.Errorf("%s %s: got %v, f64 sum %v", c.name, wk.dt, got, sum)
				}
				var four [4]float32
				w4 := newWeights(wk.dt, append(append(append(append([]float32(nil), wv...), wv...), wv...), wv...))
				w4.dot4(k, &four, x, n)
				for r, got := range four {
					if !c.want(got, sum, abs) {
						t.Errorf("%s %s dot4 row %d: got %v, f64 sum %v", c.name, wk.dt, r, got, sum)
					}
				}
			}
		}
	})
}

func TestDot4(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		r := rand.New(rand.NewPCG(5, 6))
		for _, wk := range weightKinds {
			for _, n := range dotLengths {
				for _, pad := range []int{0, 1, 5} { // row stride n+pad, so rows start misaligned too
					ldw := n + pad
					x := intValues(r, n+1, 64)[1:] // misaligned by one element
					w := newWeights(wk.dt, intValues(r, 1+3*ldw+n, 64)).from(1)
					out := [4]float32{float32(math.NaN()), float32(math.NaN()), float32(math.NaN()), float32(math.NaN())}
					w.dot4(k, &out, x, ldw)
					for row := range out {
						want, _ := ref64(x, w.val[row*ldw:row*ldw+n])
						if float64(out[row]) != want {
							t.Fatalf("%s n=%d ldw=%d row %d: got %v, want %v exactly", wk.dt, n, ldw, row, out[row], want)
						}
					}
					// Reals against f64 and against the portable kernel.
					xr := realValues(r, n, 2)
					wr := newWeights(wk.dt, realValues(r, 3*ldw+n, 1))
					var ref [4]float32
					w.dot4(k, &out, x, ldw)
					wr.dot4(k, &out, xr, ldw)
					wr.dot4(portable, &ref, xr, ldw)
					for row := range out {
						want, abs := ref64(xr, wr.val[row*ldw:row*ldw+n])
						tol := dotTol(n, abs, want)
						if d := math.Abs(float64(out[row]) - want); !(d <= tol) {
							t.Errorf("%s n=%d row %d: got %v, f64 %v, |diff| %g > %g", wk.dt, n, row, out[row], want, d, tol)
						}
						if d := math.Abs(float64(out[row] - ref[row])); !(d <= 2*tol) {
							t.Errorf("%s n=%d row %d: got %v, portable %v", wk.dt, n, row, out[row], ref[row])
						}
					}
				}
			}
		}
	})
}

// TestDot4BF16EvenOdd checks the decode GEMV's bf16 kernel on a permuted x against dot4BF16 on x
// itself, bit for bit: reals of every magnitude, where any change in the order of the F32
// additions would show, at every length it takes and with misaligned rows; and evenOdd's layout.
func TestDot4BF16EvenOdd(t *testing.T) {
	x := make([]float32, 64)
	for i := range x {
		x[i] = float32(i)
	}
	perm := make([]float32, 64)
	evenOdd(perm, x)
	for b := range 2 {
		for j := range 16 {
			if perm[32*b+j] != float32(32*b+2*j) || perm[32*b+16+j] != float32(32*b+2*j+1) {
				t.Fatalf("evenOdd: block %d: %v", b, perm[32*b:32*b+32])
			}
		}
	}
	forKernels(t, func(t *testing.T, k *kernels) {
		if k.dot4BF16EvenOdd == nil {
			t.Skipf("%s has no dot4BF16EvenOdd (the GEMV uses dot4BF16)", k.name)
		}
		r := rand.New(rand.NewPCG(7, 8))
		for _, n := range []int{32, 64, 96, 576, 2048, 8192} {
			for _, pad := range []int{0, 1, 7} {
				ldw := n + pad
				xr := realValues(r, n, 3)
				for i := range xr {
					xr[i] *= float32(math.Ldexp(1, r.IntN(40)-20))
				}
				w := newWeights(BF16, realValues(r, 1+3*ldw+n, 1)).from(1)
				xp := make([]float32, n)
				evenOdd(xp, xr)
				var got, want [4]float32
				k.dot4BF16EvenOdd(&got, xp, w.u16, ldw)
				k.dot4BF16(&want, xr, w.u16, ldw)
				for row := range got {
					if math.Float32bits(got[row]) != math.Float32bits(want[row]) {
						t.Fatalf("n=%d ldw=%d row %d: got %v, dot4BF16 %v", n, ldw, row, got[row], want[row])
					}
				}
			}
		}
	})
}

// TestGEMVBF16EvenOdd checks the one-call decode GEMV against dot4BF16EvenOdd quad by quad, bit for
// bit, over widths and quarter sizes (q = 1 is four rows), with every output outside [0, 4q)
// left untouched.
func TestGEMVBF16EvenOdd(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		if k.gemvBF16EvenOdd == nil {
			t.Skipf("%s has no gemvBF16EvenOdd (the GEMV calls dot4BF16EvenOdd a quad at a time)", k.name)
		}
		r := rand.New(rand.NewPCG(9, 10))
		for _, n := range []int{32, 96, 576, 2048} {
			for _, q := range []int{1, 2, 5, 36} {
				xr := realValues(r, n, 3)
				for i := range xr {
					xr[i] *= float32(math.Ldexp(1, r.IntN(40)-20))
				}
				xp := make([]float32, n)
				evenOdd(xp, xr)
				w := newWeights(BF16, realValues(r, 4*q*n, 1))
				got := poisoned(4*q + 1)
				k.gemvBF16EvenOdd(got[:4*q], xp, w.u16, q)
				for i := range q {
					var want [4]float32
					k.dot4BF16EvenOdd(&want, xp, w.u16[i*n:], q*n)
					for row := range 4 {
						if g := got[i+row*q]; math.Float32bits(g) != math.Float32bits(want[row]) {
							t.Fatalf("n=%d q=%d: row %d = %v, dot4BF16EvenOdd %v", n, q, i+row*q, g, want[row])
						}
					}
				}
				if last := got[4*q]; !math.IsNaN(float64(last)) {
					t.Fatalf("n=%d q=%d: wrote past row 4q (%v)", n, q, last)
				}
			}
		}
	})
}
func (w *weights) dot4x4(k *kernels, out *[16]float32, x []float32, ldx, ldw, n int) {
	switch w.dt {
	case F32:
		k.dot4x4F32(out, x, ldx, w.f32, ldw, n)
	case BF16:
		k.dot4x4BF16(out, x, ldx, w.u16, ldw, n)
	default:
		k.dot4x4F16(out, x, ldx, w.u16, ldw, n)
	}
}

// TestDot4x4 checks the four-token, four-row kernel: exact on integers, every length, token and row
// strides wider than n and misaligned; and on reals against f64 and the portable kernel.
func TestDot4x4(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		r := rand.New(rand.NewPCG(13, 14))
		for _, wk := range weightKinds {
			for _, n := range dotLengths {
				ldx, ldw := n+3, n+1
				x := intValues(r, 1+3*ldx+n, 64)[1:]
				w := newWeights(wk.dt, intValues(r, 1+3*ldw+n, 64)).from(1)
				out := [16]float32(poisoned(16))
				w.dot4x4(k, &out, x, ldx, ldw, n)
				for i, got := range out {
					tok, row := i/4, i%4
					want, _ := ref64(x[tok*ldx:tok*ldx+n], w.val[row*ldw:row*ldw+n])
					if float64(got) != want {
						t.Fatalf("%s n=%d: token %d row %d = %v, want %v exactly", wk.dt, n, tok, row, got, want)
					}
				}
				xr := realValues(r, 3*ldx+n, 2)
				wr := newWeights(wk.dt, realValues(r, 3*ldw+n, 1))
				var ref [16]float32
				wr.dot4x4(k, &out, xr, ldx, ldw, n)
				wr.dot4x4(portable, &ref, xr, ldx, ldw, n)
				for i, got := range out {
					tok, row := i/4, i%4
					want, abs := ref64(xr[tok*ldx:tok*ldx+n], wr.val[row*ldw:row*ldw+n])
					tol := dotTol(n, abs, want)
					if d := math.Abs(float64(got) - want); !(d <= tol) {
						t.Errorf("%s n=%d token %d row %d: got %v, f64 %v, |diff| %g > %g", wk.dt, n, tok, row, got, want, d, tol)
					}
					if d := math.Abs(float64(got - ref[i])); !(d <= 2*tol) {
						t.Errorf("%s n=%d token %d row %d: got %v, portable %v", wk.dt, n, tok, row, got, ref[i])
					}
				}
			}
		}
	})
}

// TestWidenBlock checks every one of the 65536 bit patterns, as single rows of every length and as
// blocks of rows with a wider source stride: widening is exact, so the bits must match the portable
// conversion (NaNs only as NaNs: hardware f16 conversion quiets signalling NaNs), and nothing is
// written past the block.
func TestWidenBlock(t *testing.T) {
	src := make([]uint16, 1<<16+3)
	for i := range src {
		src[i] = uint16(i - 1)
	}
	srcF32 := make([]float32, len(src))
	for i := range srcF32 {
		srcF32[i] = math.Float32frombits(uint32(i) * 0x9e3779b9) // every exponent, NaNs and Infs included
	}
	type shape struct{ lds, rows, cols int }
	var shapes []shape
	for _, n := range append(dotLengths, 1<<16) {
		shapes = append(shapes, shape{0, 1, n})
	}
	shapes = append(shapes, shape{1000, 65, 999}, shape{259, 250, 256}, shape{40, 7, 33}, shape{8, 3, 0})
	forKernels(t, func(t *testing.T, k *kernels) {
		for _, c := range []struct {
			name string
			f    func(dst []float32, off int, s shape)
			ref  func(i int) float32
		}{
			{"bf16", func(dst []float32, off int, s shape) { k.widenBlockBF16(dst, src[off:], s.lds, s.rows, s.cols) },
				func(i int) float32 { return F32FromBF16(src[i]) }},
			{"f16", func(dst []float32, off int, s shape) { k.widenBlockF16(dst, src[off:], s.lds, s.rows, s.cols) },
				func(i int) float32 { return F32FromF16(src[i]) }},
			{"f32", func(dst []float32, off int, s shape) { k.widenBlockF32(dst, srcF32[off:], s.lds, s.rows, s.cols) },
				func(i int) float32 { return srcF32[i] }},
		} {
			for _, s := range shapes {
				for off := 1; off < 3; off++ { // misaligned source and destination
					n := s.rows * s.cols
					buf := poisoned(n + 3)
					dst := buf[off : off+n]
					c.f(dst, off, s)
					for i, got := range dst {
						at := off + i/max(s.cols, 1)*s.lds + i%max(s.cols, 1)
						want := c.ref(at)
						if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
							t.Fatalf("%s %+v off=%d: element %d = %v (%#08x), want %v (%#08x)",
								c.name, s, off, i, got, math.Float32bits(got), want, math.Float32bits(want))
						}
					}
					if v := buf[off+n]; v == v {
						t.Fatalf("%s %+v: wrote past the end", c.name, s)
					}
				}
			}
		}
	})
}

// TestTranspose checks the transpose on every size around the 8×8 blocks, with strides wider than
// the block, and that it writes exactly the transposed elements.
func TestTranspose(t *testing.T) {
	sizes := []int{0, 1, 7, 8, 9, 16, 17, 33}
	forKernels(t, func(t *testing.T, k *kernels) {
		for _, rows := range sizes {
			for _, cols := range sizes {
				lds, ldd := cols+3, rows+5
				src := make([]float32, rows*lds)
				for i := range src {
					src[i] = float32(i/lds*1000 + i%lds) // row·1000 + column
				}
				dst := poisoned(max(cols*ldd, 1))
				k.transpose(dst, ldd, src, lds, rows, cols)
				for i, got := range dst {
					j, r := i/ldd, i%ldd
					if r >= rows || j >= cols {
						if got == got {
							t.Fatalf("%d×%d: wrote %v at dst[%d], outside the block", rows, cols, got, i)
						}
						continue
					}
					if want := float32(r*1000 + j); got != want {
						t.Fatalf("%d×%d: dst[%d] (column %d, row %d) = %v, want %v", rows, cols, i, j, r, got, want)
					}
				}
			}
		}
	})
}

// TestGEMMKernel checks the micro-kernel alone on exact integer data, the whole panel (gemm), the
// half (gemmHalf, which must leave the other 16 columns alone) and the few rows (gemmFew, where the
// set has it): every kc including 0, strides wider than the tile (b's as MatMulBackward's
// side-by-side panels make them), and that it accumulates into c and touches nothing outside the
// tile.
func TestGEMMKernel(t *testing.T) {
	type variant struct {
		name       string
		rows, cols int
		gemm       func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int)
	}
	forKernels(t, func(t *testing.T, k *kernels) {
		r := rand.New(rand.NewPCG(7, 8))
		variants := []variant{
			{"gemm", k.gemmRows, gemmCols, func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int) {
				k.gemm(a, lda, b, ldb, c, ldc, kc, 0, 0)
			}},
			{"gemmHalf", k.gemmRows, gemmCols / 2, func(a []float32, lda int, b []float32, ldb int, c []float32, ldc, kc int) {
				k.gemmHalf(a, lda, b, ldb, c, ldc, kc, 0, 0)
			}},
		}
		if k.gemmFew != nil {
			variants = append(variants, variant{"gemmFew", k.gemmFewRows, gemmCols, k.gemmFew})
		}
		for _, v := range variants {
			mr, cols := v.rows, v.cols
			for _, kc := range []int{0, 1, 2, 3, 15, 16, 17, 100, 256} {
				for _, ldb := range []int{gemmCols, gemmCols + 7, 8 * gemmCols} {
					lda, ldc := kc+3, gemmCols+5
					a := intValues(r, mr*lda, 16)
					b := intValues(r, kc*ldb, 16)
					c := intValues(r, mr*ldc, 1000)
					want := append([]float32(nil), c...)
					for i := range mr {
						for tk := range cols {
							var s float64
							for p := range kc {
								s += float64(a[i*lda+p]) * float64(b[p*ldb+tk])
							}
							want[i*ldc+tk] += float32(s)
						}
					}
					v.gemm(a, lda, b, ldb, c[:(mr-1)*ldc+cols], ldc, kc)
					for i := range c {
						if c[i] != want[i] {
							t.Fatalf("%s kc=%d ldb=%d: c[%d] (row %d, col %d) = %v, want %v",
								v.name, kc, ldb, i, i/ldc, i%ldc, c[i], want[i])
						}
					}
				}
			}
		}
	})
}

// The kernels on the machine at hand, so a log shows what was tested.
func TestKernelSets(t *testing.T) {
	var names []string
	for _, k := range kernelSets {
		names = append(names, k.name)
	}
	t.Logf("kernel sets: %v; in use: %s", names, KernelName())
}
