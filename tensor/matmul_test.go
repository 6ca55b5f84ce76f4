package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// matmulShapes are (out, in) pairs: the odd 45×67, single rows and columns, no inputs at all
// (dst = bias), no outputs, and one big enough that a worker's rows span several GEMM row blocks
// and in spans several depth slices (matmulRows, matmulDepth).
var matmulShapes = [][2]int{{45, 67}, {1, 1}, {3, 17}, {7, 0}, {0, 5}, {263, 531}}

// matmulBatches are the batch sizes: decode, the GEMV for a few tokens (a 4×4 tile and a
// remainder), a partial GEMM panel on both sides of matmulPanel, a whole panel and a GEMV tail,
// a whole panel and a half panel (from matmulHalfPanel to 16 tokens past it, with a GEMV tail
// just below), and past matmulTokens so the panels split into groups (with a tail that joins the
// GEMM).
var matmulBatches = []int{1, 2, 5, 11, matmulPanel - 1, matmulPanel, 32, 33,
	32 + matmulHalfPanel - 1, 32 + matmulHalfPanel, 44, 48, 65, 316}

// matmulCase is one MatMul's inputs and its f64 reference.
type matmulCase struct {
	n, in, out int
	x, wv, b   []float32 // x: (n, in); wv: the exact weight values, (out, in); b: (out) or nil
	w          *Tensor
	want, abs  []float64 // (n, out): Σ_k x·w + b and Σ_k |x·w| + |b|
}

// newMatmulCase makes a case with weights of dtype dt. With exact, every value is a small integer
// (coordinates folded into [-16, 16]), so every sum is exact in F32; otherwise reals.
func newMatmulCase(r *rand.Rand, dt DType, n, out, in int, bias, exact bool) *matmulCase {
	c := &matmulCase{n: n, in: in, out: out}
	if exact {
		c.x = make([]float32, n*in)
		for i := range c.x {
			c.x[i] = float32((i/in*7+i%in*3)%33 - 16) // token i/in, feature i%in
		}
		c.wv = intValues(r, out*in, 16)
	} else {
		c.x = realValues(r, n*in, 2)
		c.wv = realValues(r, out*in, 0.5)
	}
	c.w = FromF32(c.wv, out, in).Convert(dt)
	copy(c.wv, c.w.ToF32()) // the exact values of the rounded weights
	if bias {
		if exact {
			c.b = intValues(r, out, 100)
		} else {
			c.b = realValues(r, out, 1)
		}
	}
	c.want = make([]float64, n*out)
	c.abs = make([]float64, n*out)
	for t := 0; t < n; t++ {
		for o := 0; o < out; o++ {
			s, a := ref64(c.x[t*in:(t+1)*in], c.wv[o*in:(o+1)*in])
			if c.b != nil {
				s += float64(c.b[o])
				a += math.Abs(float64(c.b[o]))
			}
			c.want[t*out+o], c.abs[t*out+o] = s, a
		}
	}
	return c
}

// run computes the case with backend b into a poisoned destination.
func (c *matmulCase) run(b *CPU) []float32 {
	dst := poisoned(c.n * c.out)
	var bias *Tensor
	if c.b != nil {
		bias = FromF32(c.b, c.out)
	}
	b.MatMul(FromF32(dst, c.n, c.out), FromF32(c.x, c.n, c.in), c.w, bias)
	return dst
}

// check compares got with the reference. The tolerance is dotTol for in+1 terms (the bias is one
// more addition); with exact data it is zero.
func (c *matmulCase) check(t *testing.T, name string, got []float32, exact bool) {
	t.Helper()
	worst, worstExcess, bad := -1, 0.0, 0
	for i, g := range got {
		tol := 0.0
		if !exact {
			tol = dotTol(c.in+1, c.abs[i], c.want[i])
		}
		d := math.Abs(float64(g) - c.want[i])
		if !(d <= tol) {
			if bad < 3 {
				t.Errorf("%s: dst[%d] (token %d, row %d) = %v, want %v (tol %g)", name, i, i/c.out, i%c.out, g, c.want[i], tol)
			}
			bad++
			if excess := d - tol; worst < 0 || excess > worstExcess || math.IsNaN(d) {
				worst, worstExcess = i, excess
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d wrong; worst dst[%d] (token %d, row %d) = %v, want %v",
			name, bad, len(got), worst, worst/c.out, worst%c.out, got[worst], c.want[worst])
	}
}

func TestMatMul(t *testing.T) {
	// The cases and their f64 references are made once and run with every kernel set and thread count.
	type named struct {
		name  string
		c     *matmulCase
		exact bool
	}
	var cases []named
	r := rand.New(rand.NewPCG(9, 10))
	for _, wk := range weightKinds {
		for _, s := range matmulShapes {
			for _, n := range matmulBatches {
				for _, bias := range []bool{false, true} {
					for _, exact := range []bool{true, false} {
						name := fmt.Sprintf("%s n=%d out=%d in=%d bias=%v exact=%v", wk.dt, n, s[0], s[1], bias, exact)
						cases = append(cases, named{name, newMatmulCase(r, wk.dt, n, s[0], s[1], bias, exact), exact})
					}
				}
			}
		}
	}
	forKernels(t, func(t *testing.T, k *kernels) {
		useKernels(t, k)
		for _, threads := range []int{1, 2, 3} {
			b := NewCPU(threads)
			t.Cleanup(b.Close)
			for _, c := range cases {
				name := fmt.Sprintf("threads=%d %s", threads, c.name)
				got := c.c.run(b)
				c.c.check(t, name, got, c.exact)
				// The same call again must give the same bits: nothing depends on the state a
				// previous call left behind.
				again := c.c.run(b)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(again[i]) {
						t.Fatalf("%s: second run differs at %d: %v then %v", name, i, got[i], again[i])
					}
				}
			}
		}
	})
}

// TestMatMulShared checks that x and dst may be views into larger buffers at odd offsets (as a
// model's activations are), and that MatMul writes nothing outside dst.
func TestMatMulShared(t *testing.T) {
	forKernels(t, func(t *testing.T, k *kernels) {
		useKernels(t, k)
		r := rand.New(rand.NewPCG(11, 12))
		b := NewCPU(2)
		defer b.Close()
		for _, n := range []int{1, 3, 40} {
			c := newMatmulCase(r, BF16, n, 45, 67, true, true)
			xbuf := append(append([]float32{7}, c.x...), 9)
			dbuf := poisoned(n*c.out + 2)
			b.MatMul(FromF32(dbuf[1:1+n*c.out], n, c.out), FromF32(xbuf[1:1+n*c.in], n, c.in), c.w, FromF32(c.b, c.out))
			c.check(t, fmt.Sprintf("n=%d", n), dbuf[1:1+n*c.out], true)
			if dbuf[0] == dbuf[0] || dbuf[len(dbuf)-1] == dbuf[len(dbuf)-1] {
				t.Fatalf("n=%d: wrote outside dst", n)
			}
		}
	})
}

// TestMatMulBadShapes checks that shape mismatches panic.
func TestMatMulBadShapes(t *testing.T) {
	b := NewCPU(1)
	defer b.Close()
	for _, c := range []struct {
		name          string
		dst, x, w, bs *Tensor
	}{
		{"in", New(F32, 2, 3), New(F32, 2, 4), New(BF16, 3, 5), nil},
		{"out", New(F32, 2, 4), New(F32, 2, 5), New(BF16, 3, 5), nil},
		{"tokens", New(F32, 3, 3), New(F32, 2, 5), New(BF16, 3, 5), nil},
		{"bias", New(F32, 2, 3), New(F32, 2, 5), New(BF16, 3, 5), New(F32, 4)},
		{"dtype", New(F32, 2, 3), New(F32, 2, 5), New(I32, 3, 5), nil},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", c.name)
				}
			}()
			b.MatMul(c.dst, c.x, c.w, c.bs)
		}()
	}
}

// MatMulShared gives each product exactly what MatMul (MatMulBF16) gives it alone, bit for bit:
// one to four products of different widths, weight dtypes and biases, at every batch size, the
// workers' split falling inside and across products.
func TestMatMulSharedInput(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	const in = 66
	widths := []int{45, 3, 17, 100}
	dts := []DType{BF16, F32, F16, BF16}
	forKernels(t, func(t *testing.T, k *kernels) {
		useKernels(t, k)
		for _, threads := range []int{1, 2, 3} {
			b := NewCPU(threads)
			t.Cleanup(b.Close)
			for _, n := range matmulBatches {
				x := FromF32(realValues(r, n*in, 2), n, in)
				for parts := 1; parts <= maxShared; parts++ {
					for _, bf16 := range []bool{false, true} {
						var ps []Product
						for i := range parts {
							w := FromF32(realValues(r, widths[i]*in, 0.5), widths[i], in).Convert(dts[i])
							var bias *Tensor
							if i%2 == 1 {
								bias = FromF32(realValues(r, widths[i], 1), widths[i])
							}
							ps = append(ps, Product{FromF32(poisoned(n*widths[i]), n, widths[i]), w, bias})
						}
						b.MatMulShared(x, bf16, ps...)
						for i, p := range ps {
							want := New(F32, n, widths[i])
							if bf16 {
								b.MatMulBF16(want, x, p.W, p.Bias)
							} else {
								b.MatMul(want, x, p.W, p.Bias)
							}
							for e, v := range p.Dst.F32() {
								if math.Float32bits(v) != math.Float32bits(want.F32()[e]) {
									t.Fatalf("threads=%d n=%d parts=%d bf16=%v: product %d element %d = %v, alone %v", threads, n, parts, bf16, i, e, v, want.F32()[e])
								}
							}
						}
					}
				}
			}
		}
	})
}
