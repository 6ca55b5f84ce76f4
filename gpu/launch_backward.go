//go:build cuda

package gpu

import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// Launchers of the backward pass and of the f32-precision products (kernels/gemm_exact.cu,
// attention_backward.cu, the *_backward_* kernels of rmsnorm.cu, elementwise.cu, rope.cu and
// embedding.cu), one per kernel family as in launch.go.

func (b *Backend) rmsnormBackward(dx, dy, x uint64, w *tensor.Tensor, n, d int, eps float32) {
	k := b.kernel("rmsnorm", "rmsnorm_backward_"+suffix(w.DType))
	b.args.reset().p(dx).p(dy).p(x).p(dev(w)).i(d).f(eps)
	b.launch(k, n, 1, 1, threadsFor(d), 0)
}

func (b *Backend) ropeBackward(x, pos, invFreq uint64, n, heads, dim int) {
	k := b.kernel("rope", "rope_backward_f32")
	b.args.reset().p(x).p(pos).p(invFreq).i(heads).i(dim)
	b.launch(k, n, 1, 1, min(256, max(32, (heads*dim/2+31)&^31)), 0)
}

func (b *Backend) siluMulBackward(dgate, dup, dy, gate, up uint64, n int) {
	b.args.reset().p(dgate).p(dup).p(dy).p(gate).p(up).i(n)
	b.launch(b.kernel("elementwise", "silu_mul_backward_f32"), b.elementwiseGrid(n), 1, 1, 256, 0)
}

// embeddingBackward adds row i of dy into row ids[i] of dtable; per ids are taken by one block,
// in order (1 when the ids are distinct, all of them when some repeat).
func (b *Backend) embeddingBackward(dtable, dy, ids uint64, n, d, per int) {
	b.args.reset().p(dtable).p(dy).p(ids).i(n).i(d).i(per)
	b.launch(b.kernel("embedding", "embedding_backward_f32"), (d+255)/256, (n+per-1)/per, 1, 256, 0)
}

// exactShared is gemm_exact_*'s dynamic shared memory: 4 stages of a 64 × 40 f32 A tile (the
// 32-row tile uses half of it) and a 128 × 40 bf16 B tile (kernels/gemm_exact.cu).
const exactShared = 4 * (64*40*4 + 128*40*2)

// exactRowTile is the row tile of an f32-precision product of m rows: 32 up to 32 rows (a pair's
// rows after its first difference), else 64.
func exactRowTile(m int) int {
	if m <= 32 {
		return 32
	}
	return 64
}

// exactParts divides K (kdim) among the blocks of an f32-precision product of m rows and n
// outputs on sms multiprocessors: splits ranges of kchunk k each. The aim is a full wave of two
// 256-thread blocks per SM, rounded to whole splits; each split keeps ≥ 4 tiles of 32 k (the
// pipeline's depth), and splits ≤ kdim / (8m) keeps the partial sums (splits·m·n f32, written and
// read back) within a fraction of W's bytes.
func exactParts(m, n, kdim, sms int) (splits, kchunk int) {
	bm := exactRowTile(m)
	blocks := ((n + 127) / 128) * ((m + bm - 1) / bm)
	tiles := (kdim + 31) / 32
	splits = max(1, min((2*sms+blocks/2)/blocks, tiles/4, kdim/(8*m)))
	per := (tiles + splits - 1) / splits
	return (tiles + per - 1) / per, per * 32
}

// exactOK reports whether the tensor-core form of gemm_exact takes a product with weights w:
// bf16, 16-byte pieces along the weights' rows (rowLen % 8) and of the activation (kdim % 4),
// aligned bases.
func exactOK(w *tensor.Tensor, a uint64, kdim, rowLen int) bool {
	return w.DType == tensor.BF16 && kdim%4 == 0 && rowLen%8 == 0 && dev(w)%16 == 0 && a%16 == 0
}

// gemmExact is the forward product y (m, n) = x (m, k)·wᵀ + bias at f32 precision: bf16 weights on
// tensor cores with x cut into three bf16 pieces (gemm_exact_m{32,64}_bf16, K split for few rows),
// other weights or shapes with the f32 FMA tiles (gemm_tiled_*), which are exact already.
func (b *Backend) gemmExact(y, x uint64, w, bias *tensor.Tensor, m, n, kdim int) {
	if bias != nil && bias.DType != w.DType {
		panic(fmt.Sprintf("gpu: matmul with %s weights and a %s bias", w.DType, bias.DType))
	}
	if !exactOK(w, x, kdim, kdim) {
		b.args.reset().p(y).p(x).p(dev(w)).p(dev(bias)).i(m).i(n).i(kdim)
		b.launch(b.kernel("gemm", "gemm_tiled_"+suffix(w.DType)), (n+63)/64, (m+63)/64, 1, 256, 0)
		return
	}
	b.exactSplit(true, y, x, w, bias, m, n, kdim)
}

// gemmExactDx is the backward product dx (m, n) += dy (m, k)·w with w (k, n) as stored, at f32
// precision: bf16 weights on tensor cores (gemm_exact_dx_m{32,64}_bf16), others with f32 FMA tiles
// (gemm.cu's gemm_tiled_dx_*).
func (b *Backend) gemmExactDx(dx, dy uint64, w *tensor.Tensor, m, n, kdim int) {
	if !exactOK(w, dy, n, n) || kdim%4 != 0 {
		b.args.reset().p(dx).p(dy).p(dev(w)).i(m).i(n).i(kdim)
		b.launch(b.kernel("gemm", "gemm_tiled_dx_"+suffix(w.DType)), (n+63)/64, (m+63)/64, 1, 256, 0)
		return
	}
	b.exactSplit(false, dx, dy, w, nil, m, n, kdim)
}

// exactSplit launches gemm_exact_m*_bf16 (forward: y = a·wᵀ + bias) or gemm_exact_dx_m*_bf16 (y += a·w)
// with K split as exactParts says: one split writes (or adds into) y itself; several write partial
// sums that gemm_exact_reduce_f32 adds in split order.
func (b *Backend) exactSplit(forward bool, y, a uint64, w, bias *tensor.Tensor, m, n, kdim int) {
	splits, kchunk := exactParts(m, n, kdim, b.sms)
	b.exactSplitAs(forward, y, a, w, bias, m, n, kdim, splits, kchunk, exactRowTile(m))
}

// exactSplitAs is exactSplit with the splits, their k range and the row tile bm given.
func (b *Backend) exactSplitAs(forward bool, y, a uint64, w, bias *tensor.Tensor, m, n, kdim, splits, kchunk, bm int) {
	name, acc := fmt.Sprintf("gemm_exact_m%d_bf16", bm), 0
	if !forward {
		name, acc = fmt.Sprintf("gemm_exact_dx_m%d_bf16", bm), 1
	}
	dst, direct := y, acc
	var part *tensor.Tensor
	if splits > 1 {
		part = b.scratch("f32-precision product partial sums", splits*m*n)
		dst, direct = dev(part), 0
	}
	b.args.reset().p(dst).p(a).p(dev(w))
	if forward {
		b.args.p(dev(bias))
	}
	b.args.i(m).i(n).i(kdim).i(kchunk).i(direct)
	b.launch(b.kernel("gemm_exact", name), (n+127)/128, (m+bm-1)/bm, splits, 256, exactShared)
	if part != nil {
		b.args.reset().p(y).p(dst).u64(uint64(m * n)).i(splits).i(acc)
		b.launch(b.kernel("gemm_exact", "gemm_exact_reduce_f32"), b.elementwiseGrid(m*n), 1, 1, 256, 0)
		b.Free(part)
	}
}

// attentionDP is the head_dim the attention backward kernels are compiled for that holds dim.
func attentionDP(dim int) int {
	switch {
	case dim <= 64:
		return 64
	case dim <= 128:
		return 128
	}
	return 256
}

// attentionGradRows is the rows (queries or keys) one block of the attention backward kernels
// takes: 128 threads, dim/16 per row.
func attentionGradRows(dim int) int { return 128 / (attentionDP(dim) / 16) }

// attentionBackwardRows saves each query's log-sum-exp and δ and adds dq (dq may be 0);
// attentionBackwardKeys adds dk and dv (either may be 0) from them.
func (b *Backend) attentionBackwardRows(dq, lse, delta, q, k, v, dout, rows, tiles uint64, ntiles, heads, kvHeads, dim int, scale float32) {
	name := fmt.Sprintf("attention_backward_rows_f32_d%d", attentionDP(dim))
	b.args.reset().p(dq).p(lse).p(delta).p(q).p(k).p(v).p(dout).p(rows).p(tiles).i(heads).i(kvHeads).i(dim).f(scale)
	b.launch(b.kernel("attention_backward", name), ntiles, heads, 1, 128, 0)
}

func (b *Backend) attentionBackwardKeys(dk, dv, lse, delta, q, k, v, dout, rows, tiles uint64, ntiles, heads, kvHeads, dim int, scale float32) {
	name := fmt.Sprintf("attention_backward_keys_f32_d%d", attentionDP(dim))
	b.args.reset().p(dk).p(dv).p(lse).p(delta).p(q).p(k).p(v).p(dout).p(rows).p(tiles).i(heads).i(kvHeads).i(dim).f(scale)
	b.launch(b.kernel("attention_backward", name), ntiles, kvHeads, 1, 128, 0)
}

// patternThreads is the block of the pattern kernels: threads over D or over keys.
func patternThreads(n int) int { return min(256, max(32, (n+31)&^31)) }

func (b *Backend) attentionPattern(p, q, kc, ctx, table uint64, n, maxBlocks, blockSize, heads, kvHeads, dim, pctx int, scale float32) {
	b.args.reset().p(p).p(q).p(kc).p(ctx).p(table).i(maxBlocks).i(blockSize).i(heads).i(kvHeads).i(dim).i(pctx).f(scale)
	b.launch(b.kernel("attention_backward", "attention_pattern_f32"), heads, n, 1, 128, 0)
}

func (b *Backend) attentionApply(dst, p, vc, ctx, table uint64, n, maxBlocks, blockSize, heads, kvHeads, dim, pctx int) {
	b.args.reset().p(dst).p(p).p(vc).p(ctx).p(table).i(maxBlocks).i(blockSize).i(heads).i(kvHeads).i(dim).i(pctx)
	b.launch(b.kernel("attention_backward", "attention_apply_f32"), heads, n, 1, patternThreads(dim), 0)
}

// attentionApplyBackward adds dp (may be 0) and dv (may be 0).
func (b *Backend) attentionApplyBackward(dp, dv, dout, p, v uint64, x *gradIndex, heads, kvHeads, dim, pctx int) {
	rows, tbase, pos, tlen := x.device(b)
	if dp != 0 {
		b.args.reset().p(dp).p(dout).p(v).p(rows).p(tbase).p(pos).i(heads).i(kvHeads).i(dim).i(pctx)
		b.launch(b.kernel("attention_backward", "attention_apply_backward_rows_f32"), heads, x.n, 1, patternThreads(pctx), 0)
	}
	if dv != 0 {
		b.args.reset().p(dv).p(dout).p(p).p(rows).p(tbase).p(pos).p(tlen).i(heads).i(kvHeads).i(dim).i(pctx)
		b.launch(b.kernel("attention_backward", "attention_apply_backward_keys_f32"), kvHeads, x.n, 1, patternThreads(dim), 0)
	}
}

// attentionPatternBackward saves δ (n·heads floats) and adds dq (may be 0) and dk (may be 0).
func (b *Backend) attentionPatternBackward(dq, dk, delta, dp, p, q, k uint64, x *gradIndex, heads, kvHeads, dim, pctx int, scale float32) {
	rows, tbase, pos, tlen := x.device(b)
	b.args.reset().p(dq).p(delta).p(dp).p(p).p(k).p(rows).p(tbase).p(pos).i(heads).i(kvHeads).i(dim).i(pctx).f(scale)
	b.launch(b.kernel("attention_backward", "attention_pattern_backward_rows_f32"), heads, x.n, 1, 128, 0)
	if dk != 0 {
		b.args.reset().p(dk).p(delta).p(dp).p(p).p(q).p(rows).p(tbase).p(pos).p(tlen).i(heads).i(kvHeads).i(dim).i(pctx).f(scale)
		b.launch(b.kernel("attention_backward", "attention_pattern_backward_keys_f32"), kvHeads, x.n, 1, patternThreads(dim), 0)
	}
}
