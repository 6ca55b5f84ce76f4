// Package tensortest is the conformance suite every tensor.Backend must pass: each op against a
// float64 reference written here, independently of any backend, on random inputs of odd shapes,
// with outputs poisoned beforehand so that unwritten elements show.
package tensortest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// Tolerance is a mixed bound: |got − want| <= Atol + Rtol·|want|.
type Tolerance struct{ Atol, Rtol float64 }

// F32 suits a backend that computes in float32: the error is summation order and rounding over at
// most a few thousand terms of unit size, far under 1e-4 relative.
var F32 = Tolerance{Atol: 1e-5, Rtol: 1e-4}

// F64 suits a backend that computes in float64 (the CPU with F64 activations) against the float64
// reference here: the two differ only in summation order and in the rounding of exp, cos and sin,
// so over at most a few thousand terms of unit size the error is a few hundred ulps of 2⁻⁵³
// relative to the sum of |terms| — under 1e-12 for the sizes of this suite, where F32 would
// already be off by 1e-7.
var F64 = Tolerance{Atol: 1e-12, Rtol: 1e-12}

// Run runs every op of the suite against b with F32 activations.
func Run(t *testing.T, b tensor.Backend, tol Tolerance) { RunDType(t, b, tensor.F32, tol) }

// BF16Inputs suits matrix products that round x to bfloat16 before multiplying, as tensor-core
// GEMMs do (the weights are exact): each product then carries a relative error of up to 2⁻⁹, and
// over `in` terms of random sign the sum's error grows like √in · 2⁻⁹ · rms(x·w) ≈ 2⁻⁹ ≈ 2e-3 of
// the unit-variance outputs of this suite; 1e-2 leaves room for the tails.
var BF16Inputs = Tolerance{Atol: 1e-2, Rtol: 1e-2}

// RunMatMulTolerance is Run with its own bound for MatMul, for a backend whose matrix products
// round x (a GPU's tensor cores) while every other op computes in F32.
func RunMatMulTolerance(t *testing.T, b tensor.Backend, tol, matmul Tolerance) {
	s := suite{b: b, act: tensor.F32, tol: tol, matmulTol: &matmul}
	s.run(t)
}

// RunDType runs every op of the suite against b with activations (and the KV cache) of dtype act:
// F32, or F64 for a backend that computes in F64 (tensor.CPU). Weights keep their own dtypes.
// The references are float64 computations on the inputs exactly as the backend sees them; with F64
// activations RoPE's angle is the exact product pos·invFreq rather than F32's rounded one.
func RunDType(t *testing.T, b tensor.Backend, act tensor.DType, tol Tolerance) {
	suite{b: b, act: act, tol: tol}.run(t)
}

func (s suite) run(t *testing.T) {
	t.Run("Embedding", s.testEmbedding)
	t.Run("RMSNorm", s.testRMSNorm)
	t.Run("MatMul", s.testMatMul)
	t.Run("RoPE", s.testRoPE)
	t.Run("Attention", s.testAttention)
	t.Run("SiLUMul", s.testSiLUMul)
	t.Run("Add", s.testAdd)
	t.Run("Softmax", s.testSoftmax)
}

// suite is one run of the suite: the backend under test, the activation dtype and the tolerance.
type suite struct {
	b   tensor.Backend
	act tensor.DType
	tol Tolerance

	matmulTol *Tolerance // MatMul's bound when it differs from tol
}

// weightDTypes are the weight dtypes every op takes; with F64 activations F64 tables and weights
// too (the model gathers rows of its own activations with Embedding).
func (s suite) weightDTypes() []tensor.DType {
	if s.act == tensor.F64 {
		return []tensor.DType{tensor.F32, tensor.BF16, tensor.F16, tensor.F64}
	}
	return []tensor.DType{tensor.F32, tensor.BF16, tensor.F16}
}

// random fills a new tensor with N(0, scale²) values, rounded to dtype.
func random(rng *rand.Rand, dt tensor.DType, scale float64, shape ...int) *tensor.Tensor {
	v := make([]float64, numel(shape))
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return tensor.FromF64(v, shape...).Convert(dt)
}

// activation is random in the activation dtype.
func (s suite) activation(rng *rand.Rand, scale float64, shape ...int) *tensor.Tensor {
	return random(rng, s.act, scale, shape...)
}

// poisoned makes an activation tensor full of NaN.
func (s suite) poisoned(shape ...int) *tensor.Tensor {
	v := make([]float64, numel(shape))
	for i := range v {
		v[i] = math.NaN()
	}
	return tensor.FromF64(v, shape...).Convert(s.act)
}

// up uploads host tensors to the backend under test; back downloads a result into a fresh host
// tensor. On the CPU both are free; on a device they make the suite test the kernels themselves.
func (s suite) up(t *tensor.Tensor) *tensor.Tensor { return s.b.Upload(t) }

func (s suite) back(t *tensor.Tensor) []float64 {
	h := tensor.New(t.DType, t.Shape...)
	s.b.Download(h, t)
	return h.ToF64()
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func f64(t *tensor.Tensor) []float64 { return t.ToF64() }

// Compare fails t when got and want differ beyond tol anywhere, printing the worst element and the
// first few mismatches. NaN in got always fails.
func Compare[F float32 | float64](t testing.TB, what string, got []F, want []float64, tol Tolerance) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst, worstErr, bad := -1, 0.0, 0
	var first []string
	for i := range got {
		g := float64(got[i])
		err := math.Abs(g - want[i])
		if math.IsNaN(g) || err > tol.Atol+tol.Rtol*math.Abs(want[i]) {
			bad++
			if len(first) < 5 {
				first = append(first, fmt.Sprintf("[%d] got %g want %g", i, g, want[i]))
			}
			if math.IsNaN(g) || err > worstErr {
				worst, worstErr = i, err
				if math.IsNaN(g) {
					worstErr = math.Inf(1)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values off (tolerance %g + %g·|want|); worst [%d] got %g want %g; first: %v",
			what, bad, len(got), tol.Atol, tol.Rtol, worst, float64(got[worst]), want[worst], first)
	}
}

func (s suite) testEmbedding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, dt := range s.weightDTypes() {
		table := random(rng, dt, 1, 37, 45)
		ids := []int32{3, 0, 36, 3, 17}
		dst := s.up(s.poisoned(len(ids), 45))
		s.b.Embedding(dst, s.up(table), ids)
		ref := f64(table)
		want := make([]float64, 0, len(ids)*45)
		for _, id := range ids {
			want = append(want, ref[int(id)*45:(int(id)+1)*45]...)
		}
		Compare(t, fmt.Sprintf("embedding %s", dt), s.back(dst), want, Tolerance{})
	}
}

func (s suite) testRMSNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, dt := range s.weightDTypes() {
		for _, shape := range [][2]int{{1, 45}, {7, 67}, {3, 4096}} {
			n, d := shape[0], shape[1]
			x := s.activation(rng, 3, n, d)
			w := random(rng, dt, 1, d)
			const eps = 1e-5
			dst, xd, wd := s.up(s.poisoned(n, d)), s.up(x), s.up(w)
			s.b.RMSNorm(dst, xd, wd, eps)
			xs, ws := f64(x), f64(w)
			want := make([]float64, n*d)
			for i := 0; i < n; i++ {
				var ss float64
				for k := 0; k < d; k++ {
					ss += xs[i*d+k] * xs[i*d+k]
				}
				r := 1 / math.Sqrt(ss/float64(d)+float64(float32(eps)))
				for k := 0; k < d; k++ {
					want[i*d+k] = xs[i*d+k] * r * ws[k]
				}
			}
			Compare(t, fmt.Sprintf("rmsnorm %s %v", dt, shape), s.back(dst), want, s.tol)
			// In place, as the model uses it for the final norm.
			s.b.RMSNorm(xd, xd, wd, eps)
			Compare(t, fmt.Sprintf("rmsnorm in place %s %v", dt, shape), s.back(xd), want, s.tol)
		}
	}
}

func (s suite) testMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, dt := range s.weightDTypes() {
		// Shapes that reach every path a device backend may take: one token and a few (GEMV, with
		// and without 16-byte rows, x in one chunk of shared memory or several), and many tokens
		// (GEMM: tensor-core tiles with ragged edges in every dimension, and the plain tiles).
		for _, sh := range [][3]int{{1, 67, 45}, {5, 67, 45}, {1, 1, 1}, {33, 130, 70}, {2, 4096, 64},
			{3, 264, 33}, {8, 264, 40}, {2, 4104, 24}, {3, 2051, 5}, {40, 264, 136}, {130, 136, 200}} {
			n, in, out := sh[0], sh[1], sh[2]
			for _, withBias := range []bool{false, true} {
				x := s.activation(rng, 1, n, in)
				w := random(rng, dt, 1/math.Sqrt(float64(in)), out, in)
				var bias, biasd *tensor.Tensor
				if withBias {
					bias = random(rng, dt, 1, out)
					biasd = s.up(bias)
				}
				dst := s.up(s.poisoned(n, out))
				s.b.MatMul(dst, s.up(x), s.up(w), biasd)
				xs, ws := f64(x), f64(w)
				want := make([]float64, n*out)
				for i := 0; i < n; i++ {
					for r := 0; r < out; r++ {
						var sum float64
						for k := 0; k < in; k++ {
							sum += xs[i*in+k] * ws[r*in+k]
						}
						if bias != nil {
							sum += f64(bias)[r]
						}
						want[i*out+r] = sum
					}
				}
				tol := s.tol
				if s.matmulTol != nil {
					tol = *s.matmulTol
				}
				Compare(t, fmt.Sprintf("matmul %s n=%d in=%d out=%d bias=%v", dt, n, in, out, withBias), s.back(dst), want, tol)
			}
		}
	}
}

func (s suite) testRoPE(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const n, heads, d = 5, 3, 20
	x := s.activation(rng, 1, n, heads, d)
	pos := []int32{0, 1, 7, 300, 131071}
	invFreq := make([]float32, d/2)
	for i := range invFreq {
		invFreq[i] = float32(math.Pow(500000, -float64(2*i)/d))
	}
	xs := f64(x)
	xd := s.up(x)
	s.b.RoPE(xd, pos, invFreq)
	want := make([]float64, len(xs))
	for i := 0; i < n; i++ {
		for h := 0; h < heads; h++ {
			row := xs[(i*heads+h)*d : (i*heads+h+1)*d]
			out := want[(i*heads+h)*d : (i*heads+h+1)*d]
			for k := 0; k < d/2; k++ {
				// In F32 the angle is an F32 product, as Hugging Face forms it; in F64 the exact
				// product. The rest is exact.
				a := float64(invFreq[k] * float32(pos[i]))
				if s.act == tensor.F64 {
					a = float64(invFreq[k]) * float64(pos[i])
				}
				out[k] = row[k]*math.Cos(a) - row[k+d/2]*math.Sin(a)
				out[k+d/2] = row[k+d/2]*math.Cos(a) + row[k]*math.Sin(a)
			}
		}
	}
	Compare(t, "rope", s.back(xd), want, s.tol)
}

// testAttention stores keys and values for three sequences of different lengths in a paged cache
// with small blocks, then attends from a batch that mixes a prefill of one sequence with single
// decode tokens of the others; with an odd head size and with 64 (where a CPU runs its vector
// kernels).
func (s suite) testAttention(t *testing.T) {
	for _, d := range []int{12, 64} {
		t.Run(fmt.Sprintf("head_dim=%d", d), func(t *testing.T) { s.attention(t, s.act, d) })
	}
}

// RunAttentionCache checks Attention over a KV cache of dtype cache with F32 activations (a CPU
// backend's BF16 cache): against the float64 reference on the keys and values as the cache holds
// them, rounded to its dtype.
func RunAttentionCache(t *testing.T, b tensor.Backend, cache tensor.DType, tol Tolerance) {
	s := suite{b: b, act: tensor.F32, tol: tol}
	for _, d := range []int{12, 64} {
		t.Run(fmt.Sprintf("head_dim=%d", d), func(t *testing.T) { s.attention(t, cache, d) })
	}
}

func (s suite) attention(t *testing.T, cache tensor.DType, d int) {
	rng := rand.New(rand.NewPCG(5, uint64(d)))
	const heads, kvHeads, layers = 6, 2, 2
	kv := tensor.NewKVCacheOf(s.b, cache, layers, kvHeads, d, 3, 40)
	lens := []int{5, 11, 1} // positions per sequence after this batch
	var seq, pos []int32
	// Sequences 1 and 2 are decode steps after earlier tokens; sequence 0 is a whole prompt.
	for p := 0; p < lens[0]; p++ {
		seq, pos = append(seq, 0), append(pos, int32(p))
	}
	seq, pos = append(seq, 1, 2), append(pos, int32(lens[1]-1), int32(lens[2]-1))
	// Keys and values of every position of every sequence, as the reference sees them.
	keys := make([][]float64, 3)
	vals := make([][]float64, 3)
	const layer = 1
	for sq, n := range lens {
		if err := kv.Reserve(sq, n); err != nil {
			t.Fatal(err)
		}
		k := s.activation(rng, 1, n, kvHeads, d)
		v := s.activation(rng, 1, n, kvHeads, d)
		keys[sq], vals[sq] = f64(k.Convert(cache)), f64(v.Convert(cache))
		// Earlier positions go in through an earlier StoreKV; the batch stores its own below.
		var ps, ss []int32
		for p := 0; p < n; p++ {
			ps, ss = append(ps, int32(p)), append(ss, int32(sq))
		}
		s.b.StoreKV(kv, layer, s.up(k), s.up(v), ss, ps)
	}
	q := s.activation(rng, 1, len(seq), heads, d)
	dst := s.up(s.poisoned(len(seq), heads*d))
	s.b.Attention(dst, s.up(q), kv, layer, seq, pos)
	qs := f64(q)
	want := make([]float64, len(seq)*heads*d)
	for i := range seq {
		sq, p := int(seq[i]), int(pos[i])
		for h := 0; h < heads; h++ {
			g := h / (heads / kvHeads)
			qh := qs[(i*heads+h)*d : (i*heads+h+1)*d]
			scores := make([]float64, p+1)
			m := math.Inf(-1)
			for j := 0; j <= p; j++ {
				kj := keys[sq][(j*kvHeads+g)*d : (j*kvHeads+g+1)*d]
				for e := range qh {
					scores[j] += qh[e] * kj[e]
				}
				scores[j] /= math.Sqrt(float64(d))
				m = math.Max(m, scores[j])
			}
			var sum float64
			for j := range scores {
				scores[j] = math.Exp(scores[j] - m)
				sum += scores[j]
			}
			out := want[(i*heads+h)*d : (i*heads+h+1)*d]
			for j := range scores {
				vj := vals[sq][(j*kvHeads+g)*d : (j*kvHeads+g+1)*d]
				for e := range out {
					out[e] += scores[j] / sum * vj[e]
				}
			}
		}
	}
	Compare(t, "attention", s.back(dst), want, s.tol)
}

func (s suite) testSiLUMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	gv := f64(random(rng, tensor.F32, 4, 3, 67))
	gv[0], gv[1] = 80, -80 // saturated tails: silu(80) = 80, silu(−80) ≈ 0
	gate := tensor.FromF64(gv, 3, 67).Convert(s.act)
	up := s.activation(rng, 1, 3, 67)
	dst := s.up(s.poisoned(3, 67))
	s.b.SiLUMul(dst, s.up(gate), s.up(up))
	gs, us := f64(gate), f64(up)
	want := make([]float64, len(gs))
	for i := range gs {
		want[i] = gs[i] / (1 + math.Exp(-gs[i])) * us[i]
	}
	Compare(t, "silu·mul", s.back(dst), want, s.tol)
}

func (s suite) testAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	a := s.activation(rng, 1, 5, 45)
	c := s.activation(rng, 1, 5, 45)
	dst, ad, cd := s.up(s.poisoned(5, 45)), s.up(a), s.up(c)
	s.b.Add(dst, ad, cd)
	as, cs := f64(a), f64(c)
	want := make([]float64, len(as))
	for i := range as {
		want[i] = as[i] + cs[i]
	}
	Compare(t, "add", s.back(dst), want, s.tol)
	s.b.Add(ad, ad, cd) // in place, as the residual stream is updated
	Compare(t, "add in place", s.back(ad), want, s.tol)
}

func (s suite) testSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	xv := f64(random(rng, tensor.F32, 5, 4, 67))
	xv[0] = 1000 // would overflow exp without subtracting the maximum
	x := tensor.FromF64(xv, 4, 67).Convert(s.act)
	xs := f64(x)
	xd := s.up(x)
	s.b.Softmax(xd)
	want := make([]float64, len(xs))
	for i := 0; i < 4; i++ {
		row := xs[i*67 : (i+1)*67]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(v - m)
		}
		for k, v := range row {
			want[i*67+k] = math.Exp(v-m) / sum
		}
	}
	Compare(t, "softmax", s.back(xd), want, s.tol)
}
