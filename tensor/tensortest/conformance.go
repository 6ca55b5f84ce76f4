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

// Run runs every op of the suite against b.
func Run(t *testing.T, b tensor.Backend, tol Tolerance) {
	t.Run("Embedding", func(t *testing.T) { testEmbedding(t, b, tol) })
	t.Run("RMSNorm", func(t *testing.T) { testRMSNorm(t, b, tol) })
	t.Run("MatMul", func(t *testing.T) { testMatMul(t, b, tol) })
	t.Run("RoPE", func(t *testing.T) { testRoPE(t, b, tol) })
	t.Run("Attention", func(t *testing.T) { testAttention(t, b, tol) })
	t.Run("SiLUMul", func(t *testing.T) { testSiLUMul(t, b, tol) })
	t.Run("Add", func(t *testing.T) { testAdd(t, b, tol) })
	t.Run("Softmax", func(t *testing.T) { testSoftmax(t, b, tol) })
}

var dtypes = []tensor.DType{tensor.F32, tensor.BF16, tensor.F16}

// random fills a new tensor with N(0, scale²) values, rounded to dtype.
func random(rng *rand.Rand, dt tensor.DType, scale float64, shape ...int) *tensor.Tensor {
	v := make([]float32, numel(shape))
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return tensor.FromF32(v, shape...).Convert(dt)
}

// poisoned makes an F32 tensor full of NaN.
func poisoned(shape ...int) *tensor.Tensor {
	t := tensor.New(tensor.F32, shape...)
	for i := range t.F32() {
		t.F32()[i] = float32(math.NaN())
	}
	return t
}

// on uploads host tensors to the backend under test; back downloads a result into a fresh host
// tensor. On the CPU both are free; on a device they make the suite test the kernels themselves.
type on struct{ b tensor.Backend }

func (o on) up(t *tensor.Tensor) *tensor.Tensor { return o.b.Upload(t) }

func (o on) back(t *tensor.Tensor) []float32 {
	h := tensor.New(t.DType, t.Shape...)
	o.b.Download(h, t)
	return h.F32()
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func f64(t *tensor.Tensor) []float64 {
	v := t.ToF32()
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// Compare fails t when got and want differ beyond tol anywhere, printing the worst element and the
// first few mismatches. NaN in got always fails.
func Compare(t testing.TB, what string, got []float32, want []float64, tol Tolerance) {
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
			what, bad, len(got), tol.Atol, tol.Rtol, worst, got[worst], want[worst], first)
	}
}

func testEmbedding(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, dt := range dtypes {
		table := random(rng, dt, 1, 37, 45)
		ids := []int32{3, 0, 36, 3, 17}
		o := on{b}
		dst := o.up(poisoned(len(ids), 45))
		b.Embedding(dst, o.up(table), ids)
		ref := f64(table)
		want := make([]float64, 0, len(ids)*45)
		for _, id := range ids {
			want = append(want, ref[int(id)*45:(int(id)+1)*45]...)
		}
		Compare(t, fmt.Sprintf("embedding %s", dt), o.back(dst), want, Tolerance{})
	}
}

func testRMSNorm(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, dt := range dtypes {
		for _, shape := range [][2]int{{1, 45}, {7, 67}, {3, 4096}} {
			n, d := shape[0], shape[1]
			x := random(rng, tensor.F32, 3, n, d)
			w := random(rng, dt, 1, d)
			const eps = 1e-5
			o := on{b}
			dst, xd, wd := o.up(poisoned(n, d)), o.up(x), o.up(w)
			b.RMSNorm(dst, xd, wd, eps)
			xs, ws := f64(x), f64(w)
			want := make([]float64, n*d)
			for i := 0; i < n; i++ {
				var ss float64
				for k := 0; k < d; k++ {
					ss += xs[i*d+k] * xs[i*d+k]
				}
				s := 1 / math.Sqrt(ss/float64(d)+eps)
				for k := 0; k < d; k++ {
					want[i*d+k] = xs[i*d+k] * s * ws[k]
				}
			}
			Compare(t, fmt.Sprintf("rmsnorm %s %v", dt, shape), o.back(dst), want, tol)
			// In place, as the model uses it for the final norm.
			b.RMSNorm(xd, xd, wd, eps)
			Compare(t, fmt.Sprintf("rmsnorm in place %s %v", dt, shape), o.back(xd), want, tol)
		}
	}
}

func testMatMul(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, dt := range dtypes {
		for _, s := range [][3]int{{1, 67, 45}, {5, 67, 45}, {1, 1, 1}, {33, 130, 70}, {2, 4096, 64}} {
			n, in, out := s[0], s[1], s[2]
			for _, withBias := range []bool{false, true} {
				x := random(rng, tensor.F32, 1, n, in)
				w := random(rng, dt, 1/math.Sqrt(float64(in)), out, in)
				var bias, biasd *tensor.Tensor
				o := on{b}
				if withBias {
					bias = random(rng, dt, 1, out)
					biasd = o.up(bias)
				}
				dst := o.up(poisoned(n, out))
				b.MatMul(dst, o.up(x), o.up(w), biasd)
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
				Compare(t, fmt.Sprintf("matmul %s n=%d in=%d out=%d bias=%v", dt, n, in, out, withBias), o.back(dst), want, tol)
			}
		}
	}
}

func testRoPE(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(4, 4))
	const n, heads, d = 5, 3, 20
	x := random(rng, tensor.F32, 1, n, heads, d)
	pos := []int32{0, 1, 7, 300, 131071}
	invFreq := make([]float32, d/2)
	for i := range invFreq {
		invFreq[i] = float32(math.Pow(500000, -float64(2*i)/d))
	}
	xs := f64(x)
	o := on{b}
	xd := o.up(x)
	b.RoPE(xd, pos, invFreq)
	want := make([]float64, len(xs))
	for i := 0; i < n; i++ {
		for h := 0; h < heads; h++ {
			row := xs[(i*heads+h)*d : (i*heads+h+1)*d]
			out := want[(i*heads+h)*d : (i*heads+h+1)*d]
			for k := 0; k < d/2; k++ {
				// The angle is an F32 product, as Hugging Face forms it; the rest is exact.
				a := float64(invFreq[k] * float32(pos[i]))
				out[k] = row[k]*math.Cos(a) - row[k+d/2]*math.Sin(a)
				out[k+d/2] = row[k+d/2]*math.Cos(a) + row[k]*math.Sin(a)
			}
		}
	}
	Compare(t, "rope", o.back(xd), want, tol)
}

// testAttention stores keys and values for three sequences of different lengths in a paged cache
// with small blocks, then attends from a batch that mixes a prefill of one sequence with single
// decode tokens of the others.
func testAttention(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(5, 5))
	const heads, kvHeads, d, layers = 6, 2, 12, 2
	o := on{b}
	kv := tensor.NewKVCache(b, layers, kvHeads, d, 3, 40)
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
	for s, n := range lens {
		if err := kv.Reserve(s, n); err != nil {
			t.Fatal(err)
		}
		k := random(rng, tensor.F32, 1, n, kvHeads, d)
		v := random(rng, tensor.F32, 1, n, kvHeads, d)
		keys[s], vals[s] = f64(k), f64(v)
		// Earlier positions go in through an earlier StoreKV; the batch stores its own below.
		var ps, ss []int32
		for p := 0; p < n; p++ {
			ps, ss = append(ps, int32(p)), append(ss, int32(s))
		}
		b.StoreKV(kv, layer, o.up(k), o.up(v), ss, ps)
	}
	q := random(rng, tensor.F32, 1, len(seq), heads, d)
	dst := o.up(poisoned(len(seq), heads*d))
	b.Attention(dst, o.up(q), kv, layer, seq, pos)
	qs := f64(q)
	want := make([]float64, len(seq)*heads*d)
	for i := range seq {
		s, p := int(seq[i]), int(pos[i])
		for h := 0; h < heads; h++ {
			g := h / (heads / kvHeads)
			qh := qs[(i*heads+h)*d : (i*heads+h+1)*d]
			scores := make([]float64, p+1)
			m := math.Inf(-1)
			for j := 0; j <= p; j++ {
				kj := keys[s][(j*kvHeads+g)*d : (j*kvHeads+g+1)*d]
				for e := range qh {
					scores[j] += qh[e] * kj[e]
				}
				scores[j] /= math.Sqrt(d)
				m = math.Max(m, scores[j])
			}
			var sum float64
			for j := range scores {
				scores[j] = math.Exp(scores[j] - m)
				sum += scores[j]
			}
			out := want[(i*heads+h)*d : (i*heads+h+1)*d]
			for j := range scores {
				vj := vals[s][(j*kvHeads+g)*d : (j*kvHeads+g+1)*d]
				for e := range out {
					out[e] += scores[j] / sum * vj[e]
				}
			}
		}
	}
	Compare(t, "attention", o.back(dst), want, tol)
}

func testSiLUMul(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(6, 6))
	gate := random(rng, tensor.F32, 4, 3, 67)
	up := random(rng, tensor.F32, 1, 3, 67)
	gate.F32()[0], gate.F32()[1] = 80, -80 // saturated tails: silu(80) = 80, silu(−80) ≈ 0
	o := on{b}
	dst := o.up(poisoned(3, 67))
	b.SiLUMul(dst, o.up(gate), o.up(up))
	gs, us := f64(gate), f64(up)
	want := make([]float64, len(gs))
	for i := range gs {
		want[i] = gs[i] / (1 + math.Exp(-gs[i])) * us[i]
	}
	Compare(t, "silu·mul", o.back(dst), want, tol)
}

func testAdd(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(7, 7))
	a := random(rng, tensor.F32, 1, 5, 45)
	c := random(rng, tensor.F32, 1, 5, 45)
	o := on{b}
	dst, ad, cd := o.up(poisoned(5, 45)), o.up(a), o.up(c)
	b.Add(dst, ad, cd)
	as, cs := f64(a), f64(c)
	want := make([]float64, len(as))
	for i := range as {
		want[i] = as[i] + cs[i]
	}
	Compare(t, "add", o.back(dst), want, tol)
	b.Add(ad, ad, cd) // in place, as the residual stream is updated
	Compare(t, "add in place", o.back(ad), want, tol)
}

func testSoftmax(t *testing.T, b tensor.Backend, tol Tolerance) {
	rng := rand.New(rand.NewPCG(8, 8))
	x := random(rng, tensor.F32, 5, 4, 67)
	x.F32()[0] = 1000 // would overflow exp without subtracting the maximum
	xs := f64(x)
	o := on{b}
	xd := o.up(x)
	b.Softmax(xd)
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
	Compare(t, "softmax", o.back(xd), want, tol)
}
