//go:build cuda

package gpu

import "github.com/tillerlm/tiller/tensor"

// Batch invariance (llama.BatchInvariant): with Deterministic set, every op computes each row of
// its batch with one kernel and one order of summation whatever the batch size and the row's
// place in it, so that a prompt's logits are the same bits alone or among others:
//
//   - products (gemmInvariant): x rounded to the weights' 16-bit type and the split-K GEMM with the
//     64-row tile and the splits of a 64-row product, in launches of 64 rows (also for one row,
//     where the GEMV would keep x in f32); at analysis precision the three-piece gemm_exact with
//     the splits of 64 rows, in launches of 256; other weights the f32 tiled kernel, whose order
//     of summation never depended on the batch;
//   - attention: the decode kernel for every token, prefill included (attention_decode.cuh: a
//     token's chunks depend on its own context length only);
//   - norms, RoPE, the cache append, SiLU, adds and steering: one block or thread per row or
//     element, invariant already.
//
// The decode step (Steps) runs the same kernels in the same order as the ops then, so that a
// sequence decoded through the step and through Runner.Forward gets the same bits too.

// invariantRows is the row tile and the rows of one launch of the invariant split-K product;
// invariantExactRows the rows of one launch of the invariant analysis-precision product.
const (
	invariantRows      = 64
	invariantExactRows = 256
)

// SetBatchInvariant turns batch invariance on or off (llama.BatchInvariant).
func (b *Backend) SetBatchInvariant(on bool) { b.Deterministic = on }

// gemmInvariant is y (m, n) = x (m, k)·wᵀ + bias, each row computed as it would be alone.
func (b *Backend) gemmInvariant(y, x uint64, w, bias *tensor.Tensor, m, n, kdim int) {
	switch {
	case b.ExactMatMul && exactOK(w, x, kdim, kdim):
		splits, kchunk := exactParts(invariantRows, n, kdim, b.sms)
		for r0 := 0; r0 < m; r0 += invariantExactRows {
			rows := min(invariantExactRows, m-r0)
			b.exactSplitAs(true, y+uint64(4*r0*n), x+uint64(4*r0*kdim), w, bias, rows, n, kdim, splits, kchunk, exactRowTile(invariantRows))
		}
	case !b.ExactMatMul && w.DType != tensor.F32 && kdim%8 == 0 && vectorOK(w, x, kdim):
		xs := b.round16(x, m, kdim, w.DType)
		splits, kchunk := splitKParts(invariantRows, n, kdim, b.sms)
		for r0 := 0; r0 < m; r0 += invariantRows {
			rows := min(invariantRows, m-r0)
			b.gemmSplitKAs(y+uint64(4*r0*n), dev(xs)+uint64(2*r0*kdim), w, bias, rows, n, kdim, splits, kchunk, invariantRows)
		}
		b.Free(xs)
	default:
		b.args.reset().p(y).p(x).p(dev(w)).p(dev(bias)).i(m).i(n).i(kdim)
		b.launch(b.kernel("gemm", "gemm_tiled_"+suffix(w.DType)), (n+63)/64, (m+63)/64, 1, 256, 0)
	}
}

// products computes y_j (n, out_j) = x (n, in)·w_jᵀ + bias_j for up to three products of one x,
// with the kernels the backend's modes pick for n rows: the invariant product for each
// (Deterministic); the GEMV for n ≤ 8 (one launch for all three); the f32-precision product
// (ExactMatMul); the split-K or tile GEMM otherwise, sharing one rounding of x.
func (b *Backend) products(x uint64, n, in int, segs ...gemvSeg) {
	switch {
	case b.Deterministic:
		for _, s := range segs {
			b.gemmInvariant(s.y, x, s.w, s.bias, n, s.w.Rows(), in)
		}
	case n <= 8:
		b.product(x, n, in, segs...)
	case b.ExactMatMul:
		for _, s := range segs {
			b.gemmExact(s.y, x, s.w, s.bias, n, s.w.Rows(), in)
		}
	case len(segs) == 1:
		b.gemm(segs[0].y, x, segs[0].w, segs[0].bias, n, segs[0].w.Rows(), in)
	default:
		outs := make([]gemmOut, len(segs))
		for i, s := range segs {
			outs[i] = gemmOut{s.y, s.w, s.bias}
		}
		b.gemmShared(x, n, in, outs...)
	}
}

// productsSwiGLU computes y = silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu) for n rows as products picks its
// kernels: one fused GEMV launch for n ≤ 8 (not Deterministic), else the two products (up into
// tmp, (n, ffn) F32) and the elementwise gate.
func (b *Backend) productsSwiGLU(y, tmp, x uint64, n, in int, gate, bg, up, bu *tensor.Tensor) {
	if n <= 8 && !b.Deterministic {
		b.productSwiGLU(y, x, n, in, gate, bg, up, bu)
		return
	}
	b.products(x, n, in, gemvSeg{w: gate, bias: bg, y: y}, gemvSeg{w: up, bias: bu, y: tmp})
	b.siluMul(y, y, tmp, n*gate.Rows())
}
