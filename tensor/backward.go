package tensor

import (
	"fmt"
	"math"
)

// Backward is the set of backward (vector-Jacobian) ops of the forward ops in Backend, written by
// hand: given the gradient dy of a scalar loss with respect to an op's output, each computes the
// gradients with respect to its inputs. The CPU implements it; it is the reference for any other.
//
// Gradients have the dtype of the activations, F32 or F64, and every tensor of one call shares it
// (weights excepted, which stay F32/BF16/F16 as in the forward pass). Every op ADDS into its
// gradient outputs (dx += …), so that the branches of the residual stream and a weight used twice
// (tied embeddings) sum without extra copies; the caller zeroes a gradient before its first use. A
// nil gradient output is not computed. A gradient output must not alias an input of the same call.
//
// The forward inputs an op needs (x, q, k, v, gate, up, …) are those the forward pass saw; nothing
// else is saved: attention recomputes its softmax from q and k.
type Backward interface {
	Backend
	Pattern

	// MatMulBackward is the backward of y = x·wᵀ + b:
	//	dx += dy·w;   dw += dyᵀ·x;   db += Σ_i dy[i].
	// dy: (n, out); x, dx: (n, in); w: (out, in) F32/BF16/F16 (or F64 with F64 activations);
	// dw: (out, in) and db: (out), both in the activation dtype.
	MatMulBackward(dx, dw, db, dy, x, w *Tensor)

	// RMSNormBackward is the backward of y = x·r·w with r = 1/sqrt(mean(x²) + eps), per row:
	//	dx += r·(w⊙dy) − x·r³·mean(x⊙w⊙dy);   dw += Σ_i dy[i]⊙x[i]·r[i].
	// x, dy, dx: (n, d); w: (d) F32/BF16/F16; dw: (d) in the activation dtype.
	RMSNormBackward(dx, dw, dy, x, w *Tensor, eps float32)

	// RoPEBackward turns, in place, the gradient with respect to RoPE's output into the gradient
	// with respect to its input. RoPE rotates each pair by +θ; its Jacobian is that rotation, whose
	// transpose is the rotation by −θ. The one op that overwrites instead of adding: a rotation
	// has nothing to add to. dx: (n, heads, D); pos, invFreq as for RoPE (same angle rule).
	RoPEBackward(dx *Tensor, pos []int32, invFreq []float32)

	// AttentionBackward is the backward of causal grouped-query attention over the batch's own
	// tokens (no KV cache): token i attends to the tokens j of its sequence (seq[j] == seq[i]) with
	// pos[j] <= pos[i], and every such position must be in the batch, once (a recorded forward
	// covers whole sequences from position 0; the batch may interleave sequences in any order).
	// With P = softmax(q·kᵀ/√D) per token and head, and out = P·v:
	//	dP = dout·vᵀ;  dS = P⊙(dP − Σ_t P⊙dP);  dq += dS·k/√D;  dk += dSᵀ·q/√D;  dv += Pᵀ·dout,
	// dk and dv summed over the query heads of each kv group. The softmax is recomputed from q and
	// k. q, dq: (n, heads, D); k, v, dk, dv: (n, kv_heads, D); dout: (n, heads·D) (hook_z's
	// gradient). It equals AttentionApplyBackward followed by AttentionPatternBackward on the
	// pattern, without materialising the pattern.
	AttentionBackward(dq, dk, dv, dout, q, k, v *Tensor, seq, pos []int32)

	// AttentionApplyBackward is the backward of AttentionApply with the batch's own values:
	//	dp[i,h,t] += dout[i,h]·v[t]  for t <= pos[i];   dv += Pᵀ·dout.
	// dp is the gradient AT the pattern (hook_pattern's gradient); entries past a token's own
	// position get none. p, dp: (n, heads, ctx), ctx >= the largest pos + 1; v, dv:
	// (n, kv_heads, D); dout: (n, heads·D); seq and pos as for AttentionBackward.
	AttentionApplyBackward(dp, dv, dout, p, v *Tensor, seq, pos []int32)

	// AttentionPatternBackward is the backward of AttentionPattern with the batch's own keys: the
	// gradient dp at the pattern, taken through the softmax and the scores to q and k:
	//	dS = P⊙(dp − Σ_t P⊙dp);  dq += dS·k/√D;  dk += dSᵀ·q/√D.
	// p is the softmax the forward computed (before a hook changed it); a pattern a hook replaced
	// does not depend on q and k, and then this op is not called. Shapes as above.
	AttentionPatternBackward(dq, dk, dp, p, q, k *Tensor, seq, pos []int32)

	// SiLUMulBackward is the backward of y = silu(g)⊙u:
	//	dg += dy⊙u⊙silu'(g),  silu'(g) = σ(g)·(1 + g·(1 − σ(g)));   du += dy⊙silu(g).
	// All (n, ffn).
	SiLUMulBackward(dgate, dup, dy, gate, up *Tensor)

	// EmbeddingBackward is the backward of the row gather y[i] = table[ids[i]]:
	// dtable[ids[i]] += dy[i], summed over repeated ids. dtable: (vocab, d) in the activation
	// dtype; dy: (n, d). The model's gather of the rows that produce logits has the same backward.
	EmbeddingBackward(dtable, dy *Tensor, ids []int32)
}

var _ Backward = (*CPU)(nil)

func (c *CPU) RMSNormBackward(dx, dw, dy, x, w *Tensor, eps float32) {
	sameShape("rmsnorm backward", dy, x)
	d := x.Cols()
	if dx != nil {
		sameShape("rmsnorm backward", dx, x)
	}
	if w.Numel() != d || (dw != nil && dw.Numel() != d) {
		panic(fmt.Sprintf("tensor: rmsnorm backward of %v with weight %v", x.Shape, w.Shape))
	}
	switch activations("rmsnorm backward", dx, dw, dy, x) {
	case F32:
		rmsnormBackward(&c.f32, dx, dw, dy, x, w, eps)
	case F64:
		rmsnormBackward(&c.f64, dx, dw, dy, x, w, eps)
	}
}

func rmsnormBackward[T float](j *cpuJobs[T], dx, dw, dy, x, w *Tensor, eps float32) {
	if dx == nil && dw == nil {
		return
	}
	n, d := x.Rows(), x.Cols()
	rms := grow(&j.rms, n)
	// Rows: each row's 1/rms, and dx. Columns: dw, a sum over rows, after every 1/rms is known.
	j.rows = rowJob[T]{op: rowRMSNormGrad, x: elems[T](x), w: j.vector(w), d: d, eps: T(eps),
		dx: optElems[T](dx), dy: elems[T](dy), rms: rms}
	j.rowsParallel(n, d)
	if dw != nil {
		j.cols = colJob[T]{op: colRMSNormWeight, dst: elems[T](dw), x: elems[T](x), dy: elems[T](dy), rms: rms, n: n, d: d}
		j.colsParallel(n, d)
	}
}

func rmsnormBackwardRow[T float](j *rowJob[T], i int) {
	x := j.x[i*j.d : (i+1)*j.d]
	dy := j.dy[i*j.d : (i+1)*j.d]
	var ss T
	for _, v := range x {
		ss += v * v
	}
	r := T(1 / math.Sqrt(float64(ss/T(j.d)+j.eps))) // as the forward computes it
	j.rms[i] = r
	if j.dx == nil {
		return
	}
	var xg T // Σ x⊙w⊙dy
	for k, v := range x {
		xg += v * j.w[k] * dy[k]
	}
	c := r * r * r * xg / T(j.d)
	dx := j.dx[i*j.d : (i+1)*j.d]
	for k, v := range x {
		dx[k] += r*j.w[k]*dy[k] - v*c
	}
}

// rmsnormWeightGrad adds Σ_i dy[i]⊙x[i]·r[i] into columns [lo, hi) of dw.
func rmsnormWeightGrad[T float](j *colJob[T], lo, hi int) {
	dw := j.dst[lo:hi]
	for i := 0; i < j.n; i++ {
		x := j.x[i*j.d+lo : i*j.d+hi]
		dy := j.dy[i*j.d+lo : i*j.d+hi]
		r := j.rms[i]
		for k := range dw {
			dw[k] += dy[k] * x[k] * r
		}
	}
}

func (c *CPU) RoPEBackward(dx *Tensor, pos []int32, invFreq []float32) {
	c.rotate("rope backward", dx, pos, invFreq, -1)
}

func (c *CPU) SiLUMulBackward(dgate, dup, dy, gate, up *Tensor) {
	sameShape("silu·mul backward", dy, gate)
	sameShape("silu·mul backward", gate, up)
	for _, g := range []*Tensor{dgate, dup} {
		if g != nil {
			sameShape("silu·mul backward", g, gate)
		}
	}
	switch activations("silu·mul backward", dgate, dup, dy, gate, up) {
	case F32:
		siluMulBackward(&c.f32, dgate, dup, dy, gate, up)
	case F64:
		siluMulBackward(&c.f64, dgate, dup, dy, gate, up)
	}
}

func siluMulBackward[T float](j *cpuJobs[T], dgate, dup, dy, gate, up *Tensor) {
	if dgate == nil && dup == nil {
		return
	}
	d := gate.Cols()
	j.rows = rowJob[T]{op: rowSiLUMulGrad, x: elems[T](gate), y: elems[T](up), dy: elems[T](dy),
		dx: optElems[T](dgate), dw: optElems[T](dup), d: d, sigmoid: j.sigmoid, scratch: j.rowScratch}
	j.rowsParallel(gate.Rows(), d)
}

// siluMulBackwardRow: x = gate, y = up, dx = dgate, dw = dup. The row's sigmoids come first, all at
// once (the vector exp for F32).
func siluMulBackwardRow[T float](j *rowJob[T], worker, i int) {
	g := j.x[i*j.d : (i+1)*j.d]
	u := j.y[i*j.d : (i+1)*j.d]
	dy := j.dy[i*j.d : (i+1)*j.d]
	var dg, du []T
	if j.dx != nil {
		dg = j.dx[i*j.d : (i+1)*j.d]
	}
	if j.dw != nil {
		du = j.dw[i*j.d : (i+1)*j.d]
	}
	sig := perWorker(j.scratch, worker, j.d)
	j.sigmoid(sig, g)
	for k, v := range g {
		s := sig[k]
		y := v * s
		if dg != nil {
			dg[k] += dy[k] * u[k] * s * (1 + v*(1-s))
		}
		if du != nil {
			du[k] += dy[k] * y
		}
	}
}

func (c *CPU) EmbeddingBackward(dtable, dy *Tensor, ids []int32) {
	d := dtable.Cols()
	if dy.Rows() != len(ids) || dy.Cols() != d {
		panic(fmt.Sprintf("tensor: embedding backward of %d ids from %v into %v", len(ids), dy.Shape, dtable.Shape))
	}
	vocab := dtable.Rows()
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			panic(fmt.Sprintf("tensor: token id %d outside the embedding table of %d rows", id, vocab))
		}
	}
	switch activations("embedding backward", dtable, dy) {
	case F32:
		embeddingBackward(&c.f32, dtable, dy, ids)
	case F64:
		embeddingBackward(&c.f64, dtable, dy, ids)
	}
}

func embeddingBackward[T float](j *cpuJobs[T], dtable, dy *Tensor, ids []int32) {
	// Split by columns: a repeated id has several tokens add into one row.
	d := dy.Cols()
	j.cols = colJob[T]{op: colScatterAdd, dst: elems[T](dtable), dy: elems[T](dy), ids: ids, n: len(ids), d: d}
	j.colsParallel(len(ids), d)
}

// scatterAdd adds columns [lo, hi) of each row i of dy into row ids[i] of dst.
func scatterAdd[T float](j *colJob[T], lo, hi int) {
	for i, id := range j.ids {
		dst := j.dst[int(id)*j.d+lo : int(id)*j.d+hi]
		dy := j.dy[i*j.d+lo : i*j.d+hi]
		for k, v := range dy {
			dst[k] += v
		}
	}
}
