package tensor_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// The backward ops are checked three ways:
//
//   - against central finite differences of the forward op in F64, on random inputs of odd sizes,
//     through the scalar loss L = Σ c⊙y with a random c (so that dy = c). With a step of 1e-5 the
//     differences are accurate to about 1e-10 relative (truncation h²·f‴, rounding 2⁻⁵³·L/h), so
//     the bound of 1e-6 on the worst error relative to the largest gradient leaves a wide margin
//     for a correct op and none for a missing or wrong term, which is off by O(1);
//   - for accumulation: a second call adds the same gradient again (2× within 1e-12: only the
//     order of the additions differs);
//   - in F32 against F64 on the same values (rounded to F32 first), within 1e-4 relative: F32
//     rounding over sums of at most a few hundred terms, with an absolute floor of 1e-5 of the
//     largest gradient for the elements that cancel to near zero.

// fdStep is the finite-difference step; fdTol bounds the worst error relative to the largest
// gradient.
const (
	fdStep = 1e-5
	fdTol  = 1e-6
)

func randF64(rng *rand.Rand, scale float64, shape ...int) *tensor.Tensor {
	t := tensor.New(tensor.F64, shape...)
	for i := range t.F64() {
		t.F64()[i] = rng.NormFloat64() * scale
	}
	return t
}

func zerosLike(t *tensor.Tensor) *tensor.Tensor { return tensor.New(t.DType, t.Shape...) }

// loss is Σ c⊙y.
func loss(y *tensor.Tensor, c []float64) float64 {
	var s float64
	for i, v := range y.ToF64() {
		s += c[i] * v
	}
	return s
}

// gradCheck compares the analytic gradient of the loss with respect to the F64 tensor in with
// central differences of loss() over every element of in.
func gradCheck(t *testing.T, what string, in *tensor.Tensor, analytic *tensor.Tensor, loss func() float64) {
	t.Helper()
	v := in.F64()
	a := analytic.ToF64()
	fd := make([]float64, len(v))
	for e := range v {
		x := v[e]
		v[e] = x + fdStep
		plus := loss()
		v[e] = x - fdStep
		minus := loss()
		v[e] = x
		fd[e] = (plus - minus) / (2 * fdStep)
	}
	scale, worst, at := 0.0, 0.0, 0
	for e := range fd {
		scale = math.Max(scale, math.Abs(fd[e]))
		if err := math.Abs(a[e] - fd[e]); err > worst || math.IsNaN(a[e]) {
			worst, at = err, e
		}
	}
	if scale == 0 {
		t.Fatalf("%s: the loss does not depend on it", what)
	}
	if !(worst <= fdTol*scale) {
		t.Errorf("%s: analytic gradient off finite differences by %.3g relative (largest gradient %.3g); worst [%d] analytic %.12g, difference %.12g",
			what, worst/scale, scale, at, a[at], fd[at])
	}
}

// checkTwice checks that a gradient after a second call is twice the first.
func checkTwice(t *testing.T, what string, once []float64, twice *tensor.Tensor) {
	t.Helper()
	want := make([]float64, len(once))
	for i, v := range once {
		want[i] = 2 * v
	}
	tensortest.Compare(t, what+" accumulated twice", twice.ToF64(), want, tensortest.Tolerance{Atol: 1e-14, Rtol: 1e-12})
}

// agree compares an F32 gradient with the F64 one on the same values.
func agree(t *testing.T, what string, got32, want64 *tensor.Tensor) {
	t.Helper()
	want := want64.ToF64()
	scale := 0.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	tensortest.Compare(t, what+" F32 against F64", got32.F32(), want, tensortest.Tolerance{Atol: 1e-5 * scale, Rtol: 1e-4})
}

// as32 rounds an F64 tensor to F32 in place (so that F32 and F64 runs see the same values) and
// returns its F32 copy.
func as32(t *tensor.Tensor) *tensor.Tensor {
	r := t.Convert(tensor.F32)
	copy(t.F64(), r.ToF64())
	return r
}

func newCPU(t *testing.T, threads int) *tensor.CPU {
	b := tensor.NewCPU(threads)
	t.Cleanup(b.Close)
	return b
}

func TestMatMulBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(11, 1))
	const n, in, out = 5, 13, 7
	x := randF64(rng, 1, n, in)
	w := randF64(rng, 0.5, out, in)
	bias := randF64(rng, 1, out)
	c := randF64(rng, 1, n, out)
	y := tensor.New(tensor.F64, n, out)
	f := func() float64 { b.MatMul(y, x, w, bias); return loss(y, c.F64()) }

	dx, dw, db := zerosLike(x), zerosLike(w), zerosLike(bias)
	b.MatMulBackward(dx, dw, db, c, x, w)
	gradCheck(t, "dx", x, dx, f)
	gradCheck(t, "dw", w, dw, f)
	gradCheck(t, "db", bias, db, f)
	once := [][]float64{dx.ToF64(), dw.ToF64(), db.ToF64()}
	b.MatMulBackward(dx, dw, db, c, x, w)
	checkTwice(t, "dx", once[0], dx)
	checkTwice(t, "dw", once[1], dw)
	checkTwice(t, "db", once[2], db)

	// Narrow weights are widened exactly: dx of BF16 weights is dx of their F64 values; dw does
	// not depend on w; nil outputs are skipped.
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		wn := w.Convert(dt)
		wv := tensor.FromF64(wn.ToF64(), out, in)
		got, want := zerosLike(x), zerosLike(x)
		b.MatMulBackward(got, nil, nil, c, x, wn)
		b.MatMulBackward(want, nil, nil, c, x, wv)
		tensortest.Compare(t, fmt.Sprintf("dx with %s weights", dt), got.F64(), want.ToF64(), tensortest.Tolerance{})
		gradCheck(t, fmt.Sprintf("dx with %s weights", dt), x, got, func() float64 { b.MatMul(y, x, wn, bias); return loss(y, c.F64()) })
	}
}

// The F32 MatMulBackward runs on the GEMM micro-kernel: batches of whole and partial kernel tiles
// (n = 1, 7, 33, 44, 65: 12-row tiles on AVX-512, 6 on AVX2), outputs with a partial 32-column panel
// and a partial group of panels (in = 70, 600), sums over one depth slice and several (out = 45,
// 300), more rows than one block of sums (dw's 300 rows, dx's 300 tokens), groups of panels split
// over threads, every weight dtype; against F64 on the same values, added to a prior gradient.
func TestMatMulBackwardF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	shapes := [][3]int{{5, 70, 300}, {300, 33, 20}, {13, 300, 530}}
	for _, n := range []int{1, 7, 33, 44, 65} {
		shapes = append(shapes, [3]int{n, 70, 45}, [3]int{n, 600, 300})
	}
	for _, threads := range []int{1, 3} {
		b := newCPU(t, threads)
		for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
			for _, s := range shapes {
				n, in, out := s[0], s[1], s[2]
				name := fmt.Sprintf("threads=%d %s n=%d in=%d out=%d", threads, dt, n, in, out)
				x, dy := randF64(rng, 1, n, in), randF64(rng, 1, n, out)
				x32, dy32 := as32(x), as32(dy)
				w := randF64(rng, 0.3, out, in).Convert(dt)
				dx, dw, db := tensor.New(tensor.F64, n, in), tensor.New(tensor.F64, out, in), tensor.New(tensor.F64, out)
				b.MatMulBackward(dx, dw, db, dy, x, w)
				// A prior gradient, so that accumulation into a nonzero value is covered too.
				dx32, dw32, db32 := prior32(rng, n, in), prior32(rng, out, in), prior32(rng, out)
				want := func(prior, g *tensor.Tensor) *tensor.Tensor {
					v := g.ToF64()
					for i, p := range prior.F32() {
						v[i] += float64(p)
					}
					return tensor.FromF64(v, g.Shape...)
				}
				wdx, wdw, wdb := want(dx32, dx), want(dw32, dw), want(db32, db)
				b.MatMulBackward(dx32, dw32, db32, dy32, x32, w)
				agree(t, name+" dx", dx32, wdx)
				agree(t, name+" dw", dw32, wdw)
				agree(t, name+" db", db32, wdb)
			}
		}
	}
}

func prior32(rng *rand.Rand, shape ...int) *tensor.Tensor {
	return randF64(rng, 1, shape...).Convert(tensor.F32)
}

func TestRMSNormBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(13, 1))
	const n, d, eps = 5, 13, 1e-5
	x := randF64(rng, 2, n, d)
	w := randF64(rng, 1, d)
	c := randF64(rng, 1, n, d)
	y := tensor.New(tensor.F64, n, d)
	f := func() float64 { b.RMSNorm(y, x, w, eps); return loss(y, c.F64()) }

	dx, dw := zerosLike(x), zerosLike(w)
	b.RMSNormBackward(dx, dw, c, x, w, eps)
	gradCheck(t, "dx", x, dx, f)
	gradCheck(t, "dw", w, dw, f)
	once := [][]float64{dx.ToF64(), dw.ToF64()}
	b.RMSNormBackward(dx, dw, c, x, w, eps)
	checkTwice(t, "dx", once[0], dx)
	checkTwice(t, "dw", once[1], dw)

	// BF16 norm weights, and only dx.
	wb := w.Convert(tensor.BF16)
	dxb := zerosLike(x)
	b.RMSNormBackward(dxb, nil, c, x, wb, eps)
	gradCheck(t, "dx with BF16 weights", x, dxb, func() float64 { b.RMSNorm(y, x, wb, eps); return loss(y, c.F64()) })

	// F32 against F64, on enough rows to split over the threads.
	const n2, d2 = 40, 517
	x2, dy2 := randF64(rng, 2, n2, d2), randF64(rng, 1, n2, d2)
	x32, dy32 := as32(x2), as32(dy2)
	dx64, dw64 := tensor.New(tensor.F64, n2, d2), tensor.New(tensor.F64, d2)
	dx32, dw32 := tensor.New(tensor.F32, n2, d2), tensor.New(tensor.F32, d2)
	w2 := randF64(rng, 1, d2).Convert(tensor.BF16)
	b.RMSNormBackward(dx64, dw64, dy2, x2, w2, eps)
	b.RMSNormBackward(dx32, dw32, dy32, x32, w2, eps)
	agree(t, "rmsnorm dx", dx32, dx64)
	agree(t, "rmsnorm dw", dw32, dw64)
}

func TestRoPEBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(14, 1))
	const n, heads, d = 5, 3, 10
	pos := []int32{0, 7, 3, 300, 131071}
	invFreq := make([]float32, d/2)
	for i := range invFreq {
		invFreq[i] = float32(math.Pow(500000, -float64(2*i)/d))
	}
	x := randF64(rng, 1, n, heads, d)
	c := randF64(rng, 1, n, heads, d)
	y := tensor.New(tensor.F64, n, heads, d)
	f := func() float64 { copy(y.F64(), x.F64()); b.RoPE(y, pos, invFreq); return loss(y, c.F64()) }
	dx := tensor.FromF64(append([]float64(nil), c.F64()...), n, heads, d)
	b.RoPEBackward(dx, pos, invFreq)
	gradCheck(t, "dx", x, dx, f)

	// F32 against F64, at short positions: F32 rounds the angle as the forward does, which at
	// position 131071 moves it by up to 2⁻²⁴·131071 ≈ 0.008 rad, far past F32 noise.
	x2 := randF64(rng, 1, 3, heads, d)
	x32 := as32(x2)
	b.RoPEBackward(x2, pos[:3], invFreq)
	b.RoPEBackward(x32, pos[:3], invFreq)
	agree(t, "rope", x32, x2)
}

func TestSiLUMulBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(15, 1))
	const n, d = 5, 13
	gate := randF64(rng, 3, n, d)
	gate.F64()[0], gate.F64()[1] = 30, -30 // the saturated tails: silu' → 1 and 0
	up := randF64(rng, 1, n, d)
	c := randF64(rng, 1, n, d)
	y := tensor.New(tensor.F64, n, d)
	f := func() float64 { b.SiLUMul(y, gate, up); return loss(y, c.F64()) }

	dg, du := zerosLike(gate), zerosLike(up)
	b.SiLUMulBackward(dg, du, c, gate, up)
	gradCheck(t, "dgate", gate, dg, f)
	gradCheck(t, "dup", up, du, f)
	once := [][]float64{dg.ToF64(), du.ToF64()}
	b.SiLUMulBackward(dg, du, c, gate, up)
	checkTwice(t, "dgate", once[0], dg)
	checkTwice(t, "dup", once[1], du)
	onlyUp := zerosLike(up)
	b.SiLUMulBackward(nil, onlyUp, c, gate, up)
	tensortest.Compare(t, "dup alone", onlyUp.F64(), once[1], tensortest.Tolerance{})

	// F32 against F64, with a gate far enough out that e⁻ᵍ overflows F32.
	g2, u2, dy2 := randF64(rng, 4, 40, 517), randF64(rng, 1, 40, 517), randF64(rng, 1, 40, 517)
	g2.F64()[0], g2.F64()[1] = 100, -100
	g32, u32, dy32 := as32(g2), as32(u2), as32(dy2)
	dg64, du64 := zerosLike(g2), zerosLike(u2)
	dg32, du32 := zerosLike(g32), zerosLike(u32)
	b.SiLUMulBackward(dg64, du64, dy2, g2, u2)
	b.SiLUMulBackward(dg32, du32, dy32, g32, u32)
	agree(t, "silu·mul dgate", dg32, dg64)
	agree(t, "silu·mul dup", du32, du64)
}

func TestEmbeddingBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(16, 1))
	const vocab, d = 11, 13
	ids := []int32{3, 0, 10, 3, 7, 3} // repeats sum
	table := randF64(rng, 1, vocab, d)
	c := randF64(rng, 1, len(ids), d)
	y := tensor.New(tensor.F64, len(ids), d)
	f := func() float64 { b.Embedding(y, table, ids); return loss(y, c.F64()) }
	dt := zerosLike(table)
	b.EmbeddingBackward(dt, c, ids)
	gradCheck(t, "dtable", table, dt, f)
	once := dt.ToF64()
	b.EmbeddingBackward(dt, c, ids)
	checkTwice(t, "dtable", once, dt)

	// F32 against F64, with more tokens than a thread's share.
	ids2 := make([]int32, 300)
	for i := range ids2 {
		ids2[i] = int32(rng.IntN(vocab))
	}
	dy := randF64(rng, 1, len(ids2), 517)
	dy32 := as32(dy)
	dt64, dt32 := tensor.New(tensor.F64, vocab, 517), tensor.New(tensor.F32, vocab, 517)
	b.EmbeddingBackward(dt64, dy, ids2)
	b.EmbeddingBackward(dt32, dy32, ids2)
	agree(t, "embedding", dt32, dt64)
}

// attentionBatch is a batch of two sequences (ids 3 and 1) whose tokens are interleaved and out
// of position order, as the backward allows: every position of each is in the batch once.
var attentionBatch = struct{ seq, pos []int32 }{
	seq: []int32{3, 1, 3, 1, 1, 3, 1, 3, 1},
	pos: []int32{1, 0, 0, 2, 1, 2, 3, 3, 4},
}

const attnHeads, attnKV, attnD = 6, 2, 10

// attentionForward computes the forward attention of the batch from q, k and v by the forward
// ops: StoreKV into a fresh cache of q's dtype, then Attention.
func attentionForward(b *tensor.CPU, dst, q, k, v *tensor.Tensor, seq, pos []int32) {
	kv := filledCache(b, k, v, seq, pos)
	b.Attention(dst, q, kv, 0, seq, pos)
}

func filledCache(b *tensor.CPU, k, v *tensor.Tensor, seq, pos []int32) *tensor.KVCache {
	kv := tensor.NewKVCacheOf(b, k.DType, 1, k.Shape[1], k.Shape[2], 2, 64)
	for i := range seq {
		if err := kv.Reserve(int(seq[i]), int(pos[i])+1); err != nil {
			panic(err)
		}
	}
	b.StoreKV(kv, 0, k, v, seq, pos)
	return kv
}

func TestAttentionBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(17, 1))
	seq, pos := attentionBatch.seq, attentionBatch.pos
	n := len(seq)
	q := randF64(rng, 1, n, attnHeads, attnD)
	k := randF64(rng, 1, n, attnKV, attnD)
	v := randF64(rng, 1, n, attnKV, attnD)
	c := randF64(rng, 1, n, attnHeads*attnD)
	y := tensor.New(tensor.F64, n, attnHeads*attnD)
	f := func() float64 { attentionForward(b, y, q, k, v, seq, pos); return loss(y, c.F64()) }

	dq, dk, dv := zerosLike(q), zerosLike(k), zerosLike(v)
	b.AttentionBackward(dq, dk, dv, c, q, k, v, seq, pos)
	gradCheck(t, "dq", q, dq, f)
	gradCheck(t, "dk", k, dk, f)
	gradCheck(t, "dv", v, dv, f)
	once := [][]float64{dq.ToF64(), dk.ToF64(), dv.ToF64()}
	b.AttentionBackward(dq, dk, dv, c, q, k, v, seq, pos)
	checkTwice(t, "dq", once[0], dq)
	checkTwice(t, "dk", once[1], dk)
	checkTwice(t, "dv", once[2], dv)
	// Each output alone.
	for i, which := range []string{"dq", "dk", "dv"} {
		g := []*tensor.Tensor{nil, nil, nil}
		g[i] = zerosLike([]*tensor.Tensor{q, k, v}[i])
		b.AttentionBackward(g[0], g[1], g[2], c, q, k, v, seq, pos)
		tensortest.Compare(t, which+" alone", g[i].F64(), once[i], tensortest.Tolerance{})
	}

	// F32 against F64 on three sequences of 17, 14 and 9 tokens, shuffled together, with an odd
	// head size and with 64 (where F32 runs the AVX-512 kernels).
	var seq2, pos2 []int32
	for s, l := range []int{17, 14, 9} {
		for p := 0; p < l; p++ {
			seq2, pos2 = append(seq2, int32(s)), append(pos2, int32(p))
		}
	}
	rng.Shuffle(len(seq2), func(i, j int) {
		seq2[i], seq2[j] = seq2[j], seq2[i]
		pos2[i], pos2[j] = pos2[j], pos2[i]
	})
	n2 := len(seq2)
	for _, d := range []int{attnD, 64} {
		q2, k2, v2 := randF64(rng, 1, n2, attnHeads, d), randF64(rng, 1, n2, attnKV, d), randF64(rng, 1, n2, attnKV, d)
		dout := randF64(rng, 1, n2, attnHeads*d)
		q32, k32, v32, dout32 := as32(q2), as32(k2), as32(v2), as32(dout)
		dq64, dk64, dv64 := zerosLike(q2), zerosLike(k2), zerosLike(v2)
		dq32, dk32, dv32 := zerosLike(q32), zerosLike(k32), zerosLike(v32)
		b.AttentionBackward(dq64, dk64, dv64, dout, q2, k2, v2, seq2, pos2)
		b.AttentionBackward(dq32, dk32, dv32, dout32, q32, k32, v32, seq2, pos2)
		agree(t, fmt.Sprintf("attention dq (head_dim %d)", d), dq32, dq64)
		agree(t, fmt.Sprintf("attention dk (head_dim %d)", d), dk32, dk64)
		agree(t, fmt.Sprintf("attention dv (head_dim %d)", d), dv32, dv64)
	}
}

// The pattern path: AttentionApplyBackward gives the gradient at the pattern and at v,
// AttentionPatternBackward takes a pattern gradient to q and k; both against finite differences of
// their forward ops, and the two in a row against AttentionBackward.
func TestAttentionPatternBackward(t *testing.T) {
	b := newCPU(t, 3)
	rng := rand.New(rand.NewPCG(18, 1))
	seq, pos := attentionBatch.seq, attentionBatch.pos
	n := len(seq)
	const ctx = 7 // past the largest position + 1 = 5: two columns no token reaches
	q := randF64(rng, 1, n, attnHeads, attnD)
	k := randF64(rng, 1, n, attnKV, attnD)
	v := randF64(rng, 1, n, attnKV, attnD)

	// Apply: a free pattern (a patched one need not be a softmax) against p and v.
	p := randF64(rng, 1, n, attnHeads, ctx)
	c := randF64(rng, 1, n, attnHeads*attnD)
	y := tensor.New(tensor.F64, n, attnHeads*attnD)
	apply := func() float64 {
		b.AttentionApply(y, p, filledCache(b, k, v, seq, pos), 0, seq, pos)
		return loss(y, c.F64())
	}
	dp, dv := zerosLike(p), zerosLike(v)
	b.AttentionApplyBackward(dp, dv, c, p, v, seq, pos)
	gradCheck(t, "apply dp", p, dp, apply)
	gradCheck(t, "apply dv", v, dv, apply)
	once := [][]float64{dp.ToF64(), dv.ToF64()}
	b.AttentionApplyBackward(dp, dv, c, p, v, seq, pos)
	checkTwice(t, "apply dp", once[0], dp)
	checkTwice(t, "apply dv", once[1], dv)

	// Pattern: the softmax against q and k, with a gradient on every entry of p, also those past a
	// token's context (p is a constant 0 there).
	cp := randF64(rng, 1, n, attnHeads, ctx)
	pp := tensor.New(tensor.F64, n, attnHeads, ctx)
	pattern := func() float64 {
		b.AttentionPattern(pp, q, filledCache(b, k, v, seq, pos), 0, seq, pos)
		return loss(pp, cp.F64())
	}
	pattern()
	dq, dk := zerosLike(q), zerosLike(k)
	b.AttentionPatternBackward(dq, dk, cp, pp, q, k, seq, pos)
	gradCheck(t, "pattern dq", q, dq, pattern)
	gradCheck(t, "pattern dk", k, dk, pattern)
	once = [][]float64{dq.ToF64(), dk.ToF64()}
	pattern() // the pattern of the unperturbed q and k again
	b.AttentionPatternBackward(dq, dk, cp, pp, q, k, seq, pos)
	checkTwice(t, "pattern dq", once[0], dq)
	checkTwice(t, "pattern dk", once[1], dk)

	// Apply's backward, then Pattern's on the gradient at the pattern, is AttentionBackward.
	for _, dt := range []tensor.DType{tensor.F64, tensor.F32} {
		q, k, v, c := q.Convert(dt), k.Convert(dt), v.Convert(dt), c.Convert(dt)
		p := tensor.New(dt, n, attnHeads, ctx)
		b.AttentionPattern(p, q, filledCache(b, k, v, seq, pos), 0, seq, pos)
		dp, dq, dk, dv := zerosLike(p), zerosLike(q), zerosLike(k), zerosLike(v)
		b.AttentionApplyBackward(dp, dv, c, p, v, seq, pos)
		b.AttentionPatternBackward(dq, dk, dp, p, q, k, seq, pos)
		fq, fk, fv := zerosLike(q), zerosLike(k), zerosLike(v)
		b.AttentionBackward(fq, fk, fv, c, q, k, v, seq, pos)
		tol := tensortest.Tolerance{Atol: 1e-13, Rtol: 1e-12}
		if dt == tensor.F32 {
			tol = tensortest.Tolerance{Atol: 1e-5, Rtol: 1e-4}
		}
		tensortest.Compare(t, fmt.Sprintf("%s pattern path dq", dt), dq.ToF64(), fq.ToF64(), tol)
		tensortest.Compare(t, fmt.Sprintf("%s pattern path dk", dt), dk.ToF64(), fk.ToF64(), tol)
		tensortest.Compare(t, fmt.Sprintf("%s pattern path dv", dt), dv.ToF64(), fv.ToF64(), tol)
	}
}

// AttentionPattern then AttentionApply is Attention bit for bit, over a paged cache holding earlier
// positions of decode sequences as well as a prompt; the pattern's rows sum to 1 and hold exact
// zeros past each token's context. F32 and F64 with an odd head size, and F32 with a head size the
// CPU's vector kernels take, over an F32 and a BF16 cache.
func TestAttentionPatternApply(t *testing.T) {
	for _, c := range []struct {
		dt, cache tensor.DType
		attnD     int
	}{{tensor.F32, tensor.F32, attnD}, {tensor.F64, tensor.F64, attnD}, {tensor.F32, tensor.F32, 64}, {tensor.F32, tensor.BF16, 64}} {
		dt, attnD := c.dt, c.attnD
		for _, threads := range []int{1, 3} {
			b := newCPU(t, threads)
			rng := rand.New(rand.NewPCG(19, uint64(threads)))
			lens := []int{6, 13, 1} // sequence 0 a prompt; 1 and 2 decode steps
			var seq, pos []int32
			for p := 0; p < lens[0]; p++ {
				seq, pos = append(seq, 0), append(pos, int32(p))
			}
			seq, pos = append(seq, 1, 2), append(pos, int32(lens[1]-1), int32(lens[2]-1))
			kv := tensor.NewKVCacheOf(b, c.cache, 2, attnKV, attnD, 4, 16)
			for s, l := range lens {
				if err := kv.Reserve(s, l); err != nil {
					t.Fatal(err)
				}
				var ss, ps []int32
				for p := 0; p < l; p++ {
					ss, ps = append(ss, int32(s)), append(ps, int32(p))
				}
				b.StoreKV(kv, 1, randF64(rng, 1, l, attnKV, attnD).Convert(dt), randF64(rng, 1, l, attnKV, attnD).Convert(dt), ss, ps)
			}
			n, ctx := len(seq), lens[1]+2
			q := randF64(rng, 1, n, attnHeads, attnD).Convert(dt)
			want := tensor.New(dt, n, attnHeads*attnD)
			b.Attention(want, q, kv, 1, seq, pos)
			p := tensor.FromF64(nans(n*attnHeads*ctx), n, attnHeads, ctx).Convert(dt)
			b.AttentionPattern(p, q, kv, 1, seq, pos)
			got := tensor.FromF64(nans(n*attnHeads*attnD), n, attnHeads*attnD).Convert(dt)
			b.AttentionApply(got, p, kv, 1, seq, pos)
			name := fmt.Sprintf("%s cache %s head_dim %d threads=%d", dt, c.cache, attnD, threads)
			tensortest.Compare(t, name+" pattern·apply against attention", got.ToF64(), want.ToF64(), tensortest.Tolerance{})
			ps := p.ToF64()
			sumTol := 1e-14
			if dt == tensor.F32 {
				sumTol = 1e-6
			}
			for i := range seq {
				for h := 0; h < attnHeads; h++ {
					row := ps[(i*attnHeads+h)*ctx : (i*attnHeads+h+1)*ctx]
					var sum float64
					for t := range row[:pos[i]+1] {
						sum += row[t]
					}
					if math.Abs(sum-1) > sumTol {
						t.Errorf("%s: row of token %d head %d sums to %.17g", name, i, h, sum)
					}
					for t2, v := range row[pos[i]+1:] {
						if v != 0 {
							t.Errorf("%s: token %d head %d has %g at position %d past its context", name, i, h, v, int(pos[i])+1+t2)
						}
					}
				}
			}
		}
	}
}

func nans(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = math.NaN()
	}
	return v
}

// A batch that lacks a position of a sequence, or holds one twice, is a programmer error.
func TestAttentionBackwardBatchErrors(t *testing.T) {
	b := newCPU(t, 2)
	for _, c := range []struct {
		seq, pos []int32
		want     string
	}{
		{[]int32{0, 0, 1}, []int32{0, 2, 0}, "not position 1"},
		{[]int32{0, 0, 0}, []int32{0, 1, 1}, "twice"},
		{[]int32{5, 5}, []int32{1, 2}, "not position 0"},
	} {
		n := len(c.seq)
		q, k := tensor.New(tensor.F64, n, 2, 4), tensor.New(tensor.F64, n, 1, 4)
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), c.want) {
					t.Errorf("seq %v pos %v: panic %v, want one saying %q", c.seq, c.pos, r, c.want)
				}
			}()
			b.AttentionBackward(zerosLike(q), nil, nil, tensor.New(tensor.F64, n, 8), q, k, k, c.seq, c.pos)
		}()
	}
}

// Mixing F32 and F64 in one call is a programmer error.
func TestBackwardMixedDTypes(t *testing.T) {
	b := newCPU(t, 1)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "all F32 or all F64") {
			t.Errorf("panic %v", r)
		}
	}()
	x := tensor.New(tensor.F64, 2, 3)
	b.RMSNormBackward(tensor.New(tensor.F32, 2, 3), nil, x, x, tensor.New(tensor.F32, 3), 1e-5)
}

// Once their scratch has grown, the forward and backward ops allocate nothing, in F32 and F64.
func TestBackwardAllocations(t *testing.T) {
	b := newCPU(t, 2)
	rng := rand.New(rand.NewPCG(20, 1))
	seq, pos := attentionBatch.seq, attentionBatch.pos
	n := len(seq)
	for _, dt := range []tensor.DType{tensor.F32, tensor.F64} {
		q, k, v := randF64(rng, 1, n, attnHeads, attnD).Convert(dt), randF64(rng, 1, n, attnKV, attnD).Convert(dt), randF64(rng, 1, n, attnKV, attnD).Convert(dt)
		dout := randF64(rng, 1, n, attnHeads*attnD).Convert(dt)
		x, w, dy := randF64(rng, 1, n, 40).Convert(dt), randF64(rng, 1, 33, 40).Convert(tensor.BF16), randF64(rng, 1, n, 33).Convert(dt)
		nw := randF64(rng, 1, 40).Convert(tensor.BF16)
		dq, dk, dv, dx, dw := zerosLike(q), zerosLike(k), zerosLike(v), zerosLike(x), tensor.New(dt, 33, 40)
		kv := filledCache(b, k, v, seq, pos)
		p, att := tensor.New(dt, n, attnHeads, 5), tensor.New(dt, n, attnHeads*attnD)
		y := tensor.New(dt, n, 33)
		invFreq := []float32{1, 0.1, 0.01, 0.001, 0.0001}
		ids := []int32{1, 0, 1, 2, 3, 4, 5, 6, 7}
		run := func() {
			b.RMSNorm(x, x, nw, 1e-5)
			b.MatMul(y, x, w, nil)
			b.RoPE(q, pos, invFreq)
			b.StoreKV(kv, 0, k, v, seq, pos)
			b.Attention(att, q, kv, 0, seq, pos)
			b.AttentionPattern(p, q, kv, 0, seq, pos)
			b.AttentionApply(att, p, kv, 0, seq, pos)
			b.SiLUMul(x, x, x)
			b.Add(x, x, x)
			b.Softmax(x)
			b.AttentionBackward(dq, dk, dv, dout, q, k, v, seq, pos)
			b.AttentionApplyBackward(p, dv, dout, p, v, seq, pos)
			b.AttentionPatternBackward(dq, dk, p, p, q, k, seq, pos)
			b.RoPEBackward(dq, pos, invFreq)
			b.EmbeddingBackward(dw, dx, ids)
			b.MatMulBackward(dx, dw, nil, dy, x, w)
			b.RMSNormBackward(dx, nil, x, x, nw, 1e-5)
			b.SiLUMulBackward(dx, dx, x, x, x)
		}
		run()
		if a := testing.AllocsPerRun(5, run); a != 0 {
			t.Errorf("%s: %v allocations per run", dt, a)
		}
	}
}

// RoPE keeps the tables of its last call's angles: a call whose positions (changed in place in
// the same slice, as a decode loop does), frequencies or direction differ gets its own angles,
// the same bits as on a backend that never saw the earlier call.
func TestRoPETablesFollowTheirInputs(t *testing.T) {
	b := newCPU(t, 2)
	rng := rand.New(rand.NewPCG(16, 1))
	const n, heads, d = 3, 2, 8
	pos := []int32{4, 5, 6}
	invFreq := []float32{1, 0.1, 0.01, 0.001}
	x := as32(randF64(rng, 1, n, heads, d))
	rotated := func(be *tensor.CPU, back bool) []float32 {
		y := tensor.FromF32(append([]float32(nil), x.F32()...), n, heads, d)
		if back {
			be.RoPEBackward(y, pos, invFreq)
		} else {
			be.RoPE(y, pos, invFreq)
		}
		return y.F32()
	}
	same := func(what string, back bool) {
		t.Helper()
		got, want := rotated(b, back), rotated(newCPU(t, 2), back)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: element %d is %g, %g on a fresh backend", what, i, got[i], want[i])
			}
		}
	}
	same("first call", false)
	pos[1] = 9
	same("a position changed in place", false)
	invFreq[2] = 0.02
	same("a frequency changed in place", false)
	same("the backward rotation", true)
	same("forward again", false)
}
