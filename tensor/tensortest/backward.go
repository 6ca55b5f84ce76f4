package tensortest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// RunBackward runs the activation-gradient ops of tensor.Backward and the explicit attention path
// (tensor.Pattern) on b with F32 activations, against the CPU backend in F64 on the same inputs —
// the reference whose every backward op tensor's own tests check against central finite
// differences. Gradients are added into outputs that start from random values (the ops add), and
// forward outputs are poisoned. Weight gradients are not asked for: a device backend computes
// activation gradients only.
func RunBackward(t *testing.T, b tensor.Backward, tol Tolerance) {
	s := backwardSuite{b: b, ref: tensor.NewCPU(1), tol: tol}
	t.Run("MatMulBackward", s.testMatMul)
	t.Run("RMSNormBackward", s.testRMSNorm)
	t.Run("RoPEBackward", s.testRoPE)
	t.Run("SiLUMulBackward", s.testSiLUMul)
	t.Run("EmbeddingBackward", s.testEmbedding)
	t.Run("AttentionBackward", s.testAttention)
	t.Run("Pattern", s.testPattern)
}

type backwardSuite struct {
	b   tensor.Backward
	ref *tensor.CPU // in F64
	tol Tolerance
}

// pair is an F32 input on the backend under test and its F64 copy for the reference.
type pair struct{ dev, f64 *tensor.Tensor }

func (s backwardSuite) pair(t *tensor.Tensor) pair {
	return pair{s.b.Upload(t.Convert(tensor.F32)), t.Convert(tensor.F64)}
}

func (s backwardSuite) random(rng *rand.Rand, scale float64, shape ...int) pair {
	return s.pair(random(rng, tensor.F32, scale, shape...))
}

func (s backwardSuite) back(t *tensor.Tensor) []float64 {
	h := tensor.New(t.DType, t.Shape...)
	s.b.Download(h, t)
	return h.ToF64()
}

// batch is whole sequences of the given lengths, interleaved in a shuffled order.
func batch(rng *rand.Rand, lens ...int) (seq, pos []int32) {
	for sq, n := range lens {
		for p := 0; p < n; p++ {
			seq, pos = append(seq, int32(sq)), append(pos, int32(p))
		}
	}
	rng.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i]; pos[i], pos[j] = pos[j], pos[i] })
	return seq, pos
}

func (s backwardSuite) testMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	// Shapes for every path of a device backend: tensor cores (bf16, in % 8 == 0, out % 4 == 0)
	// with one K range or several (few rows), and plain tiles (odd sizes, f32 and f16 weights).
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		for _, sh := range [][3]int{{1, 67, 45}, {5, 264, 40}, {33, 130, 70}, {33, 136, 200}, {70, 264, 1032}, {130, 136, 200}, {9, 4096, 64}} {
			n, in, out := sh[0], sh[1], sh[2]
			w := random(rng, dt, 1/math.Sqrt(float64(out)), out, in)
			dy, x, dx := s.random(rng, 1, n, out), s.random(rng, 1, n, in), s.random(rng, 1, n, in)
			s.b.MatMulBackward(dx.dev, nil, nil, dy.dev, x.dev, s.b.Upload(w))
			s.ref.MatMulBackward(dx.f64, nil, nil, dy.f64, x.f64, w)
			Compare(t, fmt.Sprintf("matmul backward %s n=%d in=%d out=%d", dt, n, in, out), s.back(dx.dev), dx.f64.F64(), s.tol)
		}
	}
}

func (s backwardSuite) testRMSNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		for _, sh := range [][2]int{{1, 45}, {7, 67}, {3, 4096}} {
			n, d := sh[0], sh[1]
			w := random(rng, dt, 1, d)
			x, dy, dx := s.random(rng, 3, n, d), s.random(rng, 1, n, d), s.random(rng, 1, n, d)
			s.b.RMSNormBackward(dx.dev, nil, dy.dev, x.dev, s.b.Upload(w), 1e-5)
			s.ref.RMSNormBackward(dx.f64, nil, dy.f64, x.f64, w, 1e-5)
			Compare(t, fmt.Sprintf("rmsnorm backward %s %v", dt, sh), s.back(dx.dev), dx.f64.F64(), s.tol)
		}
	}
}

func (s backwardSuite) testRoPE(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 23))
	const n, heads, d = 5, 3, 20
	pos := []int32{0, 1, 7, 300, 131071}
	invFreq := make([]float32, d/2)
	for i := range invFreq {
		invFreq[i] = float32(math.Pow(500000, -float64(2*i)/d))
	}
	dx := s.random(rng, 1, n, heads, d)
	s.b.RoPEBackward(dx.dev, pos, invFreq)
	// The reference in F32 on the CPU: in F64 the CPU takes the exact angle, not F32's product.
	want := tensor.FromF32(dx.f64.ToF32(), n, heads, d)
	tensor.NewCPU(1).RoPEBackward(want, pos, invFreq)
	Compare(t, "rope backward", s.back(dx.dev), want.ToF64(), s.tol)
}

func (s backwardSuite) testSiLUMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 24))
	gv := random(rng, tensor.F32, 4, 3, 67).F32()
	gv[0], gv[1], gv[2] = 80, -80, -100 // saturated tails
	gate := s.pair(tensor.FromF32(gv, 3, 67))
	up, dy := s.random(rng, 1, 3, 67), s.random(rng, 1, 3, 67)
	for _, form := range []string{"both", "dgate", "dup"} {
		dg, du := s.random(rng, 1, 3, 67), s.random(rng, 1, 3, 67)
		pick := func(p pair, on bool) (*tensor.Tensor, *tensor.Tensor) {
			if on {
				return p.dev, p.f64
			}
			return nil, nil
		}
		dgd, dgr := pick(dg, form != "dup")
		dud, dur := pick(du, form != "dgate")
		s.b.SiLUMulBackward(dgd, dud, dy.dev, gate.dev, up.dev)
		s.ref.SiLUMulBackward(dgr, dur, dy.f64, gate.f64, up.f64)
		Compare(t, "silu·mul backward dgate, "+form, s.back(dg.dev), dg.f64.F64(), s.tol)
		Compare(t, "silu·mul backward dup, "+form, s.back(du.dev), du.f64.F64(), s.tol)
	}
}

func (s backwardSuite) testEmbedding(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 25))
	for _, ids := range [][]int32{{5, 0, 36, 12, 7}, {3, 7, 3, 36, 0, 7, 7}} {
		dy, table := s.random(rng, 1, len(ids), 45), s.random(rng, 1, 37, 45)
		s.b.EmbeddingBackward(table.dev, dy.dev, ids)
		s.ref.EmbeddingBackward(table.f64, dy.f64, ids)
		Compare(t, fmt.Sprintf("embedding backward %v", ids), s.back(table.dev), table.f64.F64(), s.tol)
	}
}

// attentionCase is a batch of whole sequences and its attention shapes.
type attentionCase struct {
	lens                []int
	heads, kvHeads, dim int
}

var attentionCases = []attentionCase{{[]int{37, 5, 70}, 4, 2, 20}, {[]int{64}, 8, 2, 128}, {[]int{33, 40}, 6, 3, 48}, {[]int{1, 3}, 3, 1, 256}}

func (s backwardSuite) testAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(26, 26))
	for _, c := range attentionCases {
		seq, pos := batch(rng, c.lens...)
		n := len(seq)
		q, k, v := s.random(rng, 1, n, c.heads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim)
		dout := s.random(rng, 1, n, c.heads*c.dim)
		for _, form := range []string{"dq dk dv", "dq", "dk dv"} {
			dq, dk, dv := s.random(rng, 1, n, c.heads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim)
			var gd, gr [3]*tensor.Tensor
			for i, p := range []pair{dq, dk, dv} {
				if (i == 0 && form != "dk dv") || (i > 0 && form != "dq") {
					gd[i], gr[i] = p.dev, p.f64
				}
			}
			s.b.AttentionBackward(gd[0], gd[1], gd[2], dout.dev, q.dev, k.dev, v.dev, seq, pos)
			s.ref.AttentionBackward(gr[0], gr[1], gr[2], dout.f64, q.f64, k.f64, v.f64, seq, pos)
			what := fmt.Sprintf("attention backward lens %v heads %d/%d D=%d (%s)", c.lens, c.heads, c.kvHeads, c.dim, form)
			Compare(t, what+": dq", s.back(dq.dev), dq.f64.F64(), s.tol)
			Compare(t, what+": dk", s.back(dk.dev), dk.f64.F64(), s.tol)
			Compare(t, what+": dv", s.back(dv.dev), dv.f64.F64(), s.tol)
		}
	}
}

// testPattern: the pattern and its product with v over a paged cache holding the batch's own keys
// and values, then the backward of both on the batch.
func (s backwardSuite) testPattern(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 27))
	for _, c := range attentionCases[:3] {
		seq, pos := batch(rng, c.lens...)
		n, ctx := len(seq), 0
		for _, l := range c.lens {
			ctx = max(ctx, l)
		}
		ctx += 3 // past every position: the pattern's tail must come out zero
		q, k, v := s.random(rng, 1, n, c.heads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim)
		cache := func(b tensor.Backend, dt tensor.DType) *tensor.KVCache {
			kv := tensor.NewKVCacheOf(b, dt, 1, c.kvHeads, c.dim, 5, n)
			for sq, l := range c.lens {
				if err := kv.Reserve(sq, l); err != nil {
					t.Fatal(err)
				}
			}
			return kv
		}
		kvd, kvr := cache(s.b, tensor.F32), cache(s.ref, tensor.F64)
		s.b.StoreKV(kvd, 0, k.dev, v.dev, seq, pos)
		s.ref.StoreKV(kvr, 0, k.f64, v.f64, seq, pos)
		what := fmt.Sprintf("lens %v heads %d/%d D=%d", c.lens, c.heads, c.kvHeads, c.dim)

		p := s.b.Upload(poisonF32(n, c.heads, ctx))
		pr := tensor.New(tensor.F64, n, c.heads, ctx)
		s.b.AttentionPattern(p, q.dev, kvd, 0, seq, pos)
		s.ref.AttentionPattern(pr, q.f64, kvr, 0, seq, pos)
		Compare(t, "attention pattern "+what, s.back(p), pr.F64(), s.tol)
		out := s.b.Upload(poisonF32(n, c.heads*c.dim))
		outr := tensor.New(tensor.F64, n, c.heads*c.dim)
		s.b.AttentionApply(out, p, kvd, 0, seq, pos)
		s.ref.AttentionApply(outr, pr, kvr, 0, seq, pos)
		Compare(t, "attention apply "+what, s.back(out), outr.F64(), s.tol)

		dout := s.random(rng, 1, n, c.heads*c.dim)
		dp, dv := s.random(rng, 1, n, c.heads, ctx), s.random(rng, 1, n, c.kvHeads, c.dim)
		s.b.AttentionApplyBackward(dp.dev, dv.dev, dout.dev, p, v.dev, seq, pos)
		s.ref.AttentionApplyBackward(dp.f64, dv.f64, dout.f64, pr, v.f64, seq, pos)
		// Entries past a token's position are not the op's: compare the rest.
		Compare(t, "attention apply backward dp "+what, causal(s.back(dp.dev), pos, c.heads, ctx), causal(dp.f64.F64(), pos, c.heads, ctx), s.tol)
		Compare(t, "attention apply backward dv "+what, s.back(dv.dev), dv.f64.F64(), s.tol)

		dq, dk := s.random(rng, 1, n, c.heads, c.dim), s.random(rng, 1, n, c.kvHeads, c.dim)
		s.b.AttentionPatternBackward(dq.dev, dk.dev, dp.dev, p, q.dev, k.dev, seq, pos)
		s.ref.AttentionPatternBackward(dq.f64, dk.f64, dp.f64, pr, q.f64, k.f64, seq, pos)
		Compare(t, "attention pattern backward dq "+what, s.back(dq.dev), dq.f64.F64(), s.tol)
		Compare(t, "attention pattern backward dk "+what, s.back(dk.dev), dk.f64.F64(), s.tol)
	}
}

// poisonF32 is a new F32 tensor of NaNs.
func poisonF32(shape ...int) *tensor.Tensor {
	v := make([]float32, numel(shape))
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return tensor.FromF32(v, shape...)
}

// causal keeps the entries t <= pos[i] of each (token, head) row of a pattern-shaped tensor.
func causal(x []float64, pos []int32, heads, ctx int) []float64 {
	var out []float64
	for i, p := range pos {
		for h := 0; h < heads; h++ {
			out = append(out, x[(i*heads+h)*ctx:(i*heads+h)*ctx+int(p)+1]...)
		}
	}
	return out
}
