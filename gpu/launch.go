//go:build cuda

package gpu

import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// Launchers, one per kernel family and named after it. They take device addresses and sizes,
// check nothing the ops have checked already, and queue one launch (two for attention decode).
// The kernels' header comments in kernels/*.cu give the math and layouts.

// suffix is a weight dtype's kernel-name suffix.
func suffix(d tensor.DType) string {
	switch d {
	case tensor.F32:
		return "f32"
	case tensor.BF16:
		return "bf16"
	case tensor.F16:
		return "f16"
	}
	panic(fmt.Sprintf("gpu: no kernels for %s weights", d))
}

// dev is a tensor's device address, or 0 (a null pointer) for nil.
func dev(t *tensor.Tensor) uint64 {
	if t == nil {
		return 0
	}
	if t.OnHost() {
		panic(fmt.Sprintf("gpu: %v is in host memory; upload it first", t))
	}
	return t.Dev
}

// threadsFor picks a block size for a row-wise kernel over d elements.
func threadsFor(d int) int {
	switch {
	case d >= 2048:
		return 512
	case d >= 512:
		return 256
	}
	return 128
}

func (b *Backend) embedding(dst uint64, table *tensor.Tensor, ids uint64, n, d int) {
	k := b.kernel("embedding", "embedding_"+suffix(table.DType))
	b.args.reset().p(dst).p(dev(table)).p(ids).i(d)
	b.launch(k, n, 1, 1, threadsFor(d), 0)
}

func (b *Backend) rmsnorm(dst, x uint64, w *tensor.Tensor, n, d int, eps float32) {
	k := b.kernel("rmsnorm", "rmsnorm_"+suffix(w.DType))
	b.args.reset().p(dst).p(x).p(dev(w)).i(d).f(eps)
	b.launch(k, n, 1, 1, threadsFor(d), 0)
}

// residualRMSNorm: resid = (resid + delta) + sdelta; dst = rmsnorm(resid) ⊙ w (delta and sdelta
// may be 0).
func (b *Backend) residualRMSNorm(dst, resid, delta, sdelta uint64, w *tensor.Tensor, n, d int, eps float32) {
	k := b.kernel("rmsnorm", "residual_rmsnorm_"+suffix(w.DType))
	b.args.reset().p(dst).p(resid).p(delta).p(sdelta).p(dev(w)).i(d).f(eps)
	b.launch(k, n, 1, 1, threadsFor(d), 0)
}

// steerAdd: x (n, d) += Σ_t alpha[t·n + i]·vecs[t] (kernels/steer.cu); steerDelta writes the sum
// into delta instead. vecs is a device array of terms vector addresses, alpha (terms, n) F32.
func (b *Backend) steerAdd(x, vecs, alpha uint64, n, d, terms int) {
	b.args.reset().p(x).p(vecs).p(alpha).i(n).i(d).i(terms)
	b.launch(b.kernel("steer", "steer_add_f32"), b.elementwiseGrid(n*d), 1, 1, 256, 0)
}

func (b *Backend) steerDelta(delta, vecs, alpha uint64, n, d, terms int) {
	b.args.reset().p(delta).p(vecs).p(alpha).i(n).i(d).i(terms)
	b.launch(b.kernel("steer", "steer_delta_f32"), b.elementwiseGrid(n*d), 1, 1, 256, 0)
}

func (b *Backend) rope(x, pos, invFreq uint64, n, heads, dim int) {
	k := b.kernel("rope", "rope_f32")
	b.args.reset().p(x).p(pos).p(invFreq).i(heads).i(dim)
	b.launch(k, n, 1, 1, min(256, max(32, (heads*dim/2+31)&^31)), 0)
}

// elementwiseGrid covers n elements with 256-thread blocks, capped at a few waves (grid-stride).
func (b *Backend) elementwiseGrid(n int) int { return min((n+255)/256, 8*max(b.sms, 1)) }

func (b *Backend) siluMul(dst, gate, up uint64, n int) {
	b.args.reset().p(dst).p(gate).p(up).i(n)
	b.launch(b.kernel("elementwise", "silu_mul_f32"), b.elementwiseGrid(n), 1, 1, 256, 0)
}

func (b *Backend) add(dst, x, y uint64, n int) {
	b.args.reset().p(dst).p(x).p(y).i(n)
	b.launch(b.kernel("elementwise", "add_f32"), b.elementwiseGrid(n), 1, 1, 256, 0)
}

func (b *Backend) softmax(x uint64, rows, d int) {
	b.args.reset().p(x).i(d)
	b.launch(b.kernel("softmax", "softmax_f32"), rows, 1, 1, threadsFor(d), 0)
}

func (b *Backend) argmax(out, x uint64, rows, d int) {
	b.args.reset().p(out).p(x).i(d)
	b.launch(b.kernel("sampling", "argmax_f32"), rows, 1, 1, 1024, 0)
}

func (b *Backend) advance(pos, ctx, row, table uint64, blockSize int, tok, hist uint64) {
	b.args.reset().p(pos).p(ctx).p(row).p(table).i(blockSize).p(tok).p(hist)
	b.launch(b.kernel("sampling", "advance_i32"), 1, 1, 1, 32, 0)
}

// kvStore writes n tokens' keys and values into the cache rows rows (n I32; < 0: none) of a
// cache of dtype dt (F32, or BF16: rounded to nearest even).
func (b *Backend) kvStore(kc, vc uint64, dt tensor.DType, k, v, rows uint64, n, width int) {
	b.args.reset().p(kc).p(vc).p(k).p(v).p(rows).i(width)
	b.launch(b.kernel("kvcache", "kv_store_"+kvSuffix(dt)), n, 1, 1, min(1024, max(32, (width+31)&^31)), 0)
}

// kvSuffix is a KV cache dtype's kernel-name suffix: f32 or bf16.
func kvSuffix(dt tensor.DType) string {
	if dt != tensor.F32 && dt != tensor.BF16 {
		panic(fmt.Sprintf("gpu: a KV cache of %s; the kernels take F32 and BF16", dt))
	}
	return suffix(dt)
}

func (b *Backend) random(t *tensor.Tensor, seed uint64, scale float32) {
	n := uint64(t.Numel())
	switch t.DType {
	case tensor.BF16:
		b.args.reset().p(dev(t)).u64(n).u64(seed).f(scale)
		b.launch(b.kernel("random", "random_bf16"), 16*max(b.sms, 1), 1, 1, 256, 0)
	case tensor.F32:
		b.args.reset().p(dev(t)).u64(n).u64(seed).f(scale)
		b.launch(b.kernel("random", "random_f32"), 16*max(b.sms, 1), 1, 1, 256, 0)
	default:
		panic(fmt.Sprintf("gpu: random fill of %s", t.DType))
	}
}

// gemvSeg is one product of a gemv launch: y (n, out) = x·wᵀ + bias.
type gemvSeg struct {
	w, bias *tensor.Tensor
	y       uint64
}

// gemvRows is the rows one gemv block computes (4 warps × 4 rows; kernels/gemv.cu).
const gemvRows = 16

// gemvTokens is the compiled token count (1, 2, 4, 8) a batch of n ≤ 8 tokens runs with.
func gemvTokens(n int) int {
	switch {
	case n <= 1:
		return 1
	case n <= 2:
		return 2
	case n <= 4:
		return 4
	}
	return 8
}

// gemvShared is the dynamic shared memory of a gemv launch: x staged as f32, nt tokens ×
// min(in, 8192/nt) elements.
func gemvShared(nt, in int) int { return 4 * nt * min(in, 8192/nt) }

// vectorOK reports whether the 16-byte-load paths may read w and x: rows of in elements start on
// 16-byte boundaries and the bases are aligned.
func vectorOK(w *tensor.Tensor, x uint64, in int) bool {
	per := 16 / w.DType.Size()
	return in%per == 0 && in%4 == 0 && dev(w)%16 == 0 && x%16 == 0
}

// gemv computes up to three products sharing x (n ≤ 8 tokens, in features) in one launch.
func (b *Backend) gemv(x uint64, n, in int, segs ...gemvSeg) {
	if len(segs) == 0 || len(segs) > 3 || n > 8 {
		panic(fmt.Sprintf("gpu: gemv of %d segments, %d tokens", len(segs), n))
	}
	nt := gemvTokens(n)
	dt := segs[0].w.DType
	vec := 1
	blocks := 0
	b.args.reset().p(x).i(n).i(in).i(0)
	for _, s := range segs {
		if s.w.DType != dt || (s.bias != nil && s.bias.DType != dt) {
			panic(fmt.Sprintf("gpu: gemv segments of dtypes %s, %v, %v", dt, s.w, s.bias))
		}
		if !vectorOK(s.w, x, in) {
			vec = 0
		}
		out := s.w.Rows()
		b.args.p(dev(s.w)).p(dev(s.bias)).p(s.y).i(out)
		blocks += (out + gemvRows - 1) / gemvRows
	}
	for i := len(segs); i < 3; i++ {
		b.args.p(0).p(0).p(0).i(0)
	}
	b.args.slot[3] = uint64(vec)
	k := b.kernel("gemv", fmt.Sprintf("gemv_n%d_%s", nt, suffix(dt)))
	b.launch(k, blocks, 1, 1, 128, gemvShared(nt, in))
}

// gemvSwiGLU computes y = silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu) for n ≤ 8 tokens in one launch.
func (b *Backend) gemvSwiGLU(y, x uint64, n, in int, gate, bg, up, bu *tensor.Tensor) {
	nt := gemvTokens(n)
	vec := 0
	if vectorOK(gate, x, in) && vectorOK(up, x, in) {
		vec = 1
	}
	out := gate.Rows()
	b.args.reset().p(x).i(n).i(in).i(vec).p(dev(gate)).p(dev(bg)).p(dev(up)).p(dev(bu)).p(y).i(out)
	k := b.kernel("gemv", fmt.Sprintf("gemv_swiglu_n%d_%s", nt, suffix(gate.DType)))
	b.launch(k, (out+gemvRows-1)/gemvRows, 1, 1, 128, gemvShared(nt, in))
}

// gemmPipeShared is gemm_pipe_*'s dynamic shared memory: 4 stages of (128 + 128) rows × 40
// 16-bit elements (kernels/gemm.cu).
const gemmPipeShared = 4 * (128 + 128) * 40 * 2

// splitKRows is the largest row count the split-K GEMM takes (one row tile of gemm_splitk_m128).
// Past it the prefill GEMM's 128 × 128 tiles have several row tiles to spread over the SMs, and
// at ≥ 128 rows a bf16 product does ≥ 128 FLOP per weight byte — near the ridge of mma.sync on an
// H100/H200 (~600 TFLOP/s over 3.4–4.8 TB/s), so streaming W once no longer sets the time.
const splitKRows = 128

// splitKShared is gemm_splitk_m<bm>'s dynamic shared memory: 4 stages × (bm + 256) rows × 72
// 16-bit elements (kernels/gemm.cu, SplitKShape), one block per SM.
func splitKShared(bm int) int { return 4 * (bm + 256) * 72 * 2 }

// splitKRowTile is the row tile (32, 64 or 128) that holds m ≤ 128 rows.
func splitKRowTile(m int) int {
	switch {
	case m <= 32:
		return 32
	case m <= 64:
		return 64
	}
	return 128
}

// splitKParts divides K (kdim) among the blocks of a split-K product of m rows and n outputs on
// sms multiprocessors: splits blocks of kchunk k each per 256-column slice of W. The aim is one
// full wave, a block per SM, rounded to the nearest whole number of splits; each split keeps ≥ 4
// tiles of 64 k (the pipeline's depth), and splits ≤ kdim / (8m), which keeps the partial sums
// (splits·m·n f32, written and read back from L2) within 1/4 of W's bytes. lm_head's 501 slices
// make one split: no partials at all.
func splitKParts(m, n, kdim, sms int) (splits, kchunk int) {
	slices, tiles := (n+255)/256, (kdim+63)/64
	splits = max(1, min((sms+slices/2)/slices, tiles/4, kdim/(8*m)))
	per := (tiles + splits - 1) / splits
	return (tiles + per - 1) / per, per * 64
}

// useSplitK says whether gemm sends a product of m rows to gemmSplitK.
func (b *Backend) useSplitK(w *tensor.Tensor, x uint64, m, kdim int) bool {
	return !b.NoSplitKGEMM && m <= splitKRows && w.DType != tensor.F32 && kdim%8 == 0 && vectorOK(w, x, kdim)
}

// round16 is x (m, k) f32 rounded to dt (BF16 or F16) in a scratch tensor the caller frees.
func (b *Backend) round16(x uint64, m, kdim int, dt tensor.DType) *tensor.Tensor {
	xs := b.scratch("matmul input in 16 bits", (m*kdim+1)/2)
	b.args.reset().p(dev(xs)).p(x).u64(uint64(m * kdim))
	b.launch(b.kernel("gemm", "round_"+suffix(dt)), min((m*kdim/4+255)/256, 16*b.sms), 1, 1, 256, 0)
	return xs
}

// gemmOut is one product of gemmShared: y (m, w.Rows()) = x·wᵀ + bias.
type gemmOut struct {
	y       uint64
	w, bias *tensor.Tensor
}

// gemmShared computes several products of the same x (q/k/v, gate/up). When all of them take
// the split-K GEMM, or all the Hopper GEMM, with one weight type, x is rounded once for all (one
// launch and M·K·6 bytes instead of one per product); otherwise each is a plain gemm.
func (b *Backend) gemmShared(x uint64, m, kdim int, outs ...gemmOut) {
	split, wgmma := true, true
	for _, o := range outs {
		same := o.w.DType == outs[0].w.DType && (o.bias == nil || o.bias.DType == o.w.DType)
		split = split && same && b.useSplitK(o.w, x, m, kdim)
		wgmma = wgmma && same && b.useWGMMA(o.w, x, m, kdim)
	}
	if !split && !wgmma {
		for _, o := range outs {
			b.gemm(o.y, x, o.w, o.bias, m, o.w.Rows(), kdim)
		}
		return
	}
	xs := b.round16(x, m, kdim, outs[0].w.DType)
	for _, o := range outs {
		if split {
			b.gemmSplitK(o.y, dev(xs), o.w, o.bias, m, o.w.Rows(), kdim)
		} else {
			b.gemmWGMMA(o.y, dev(xs), o.w, o.bias, m, o.w.Rows(), kdim)
		}
	}
	b.Free(xs)
}

// gemmSplitK computes y (m, n) = xs (m, k) · wᵀ + bias for 9–128 rows (decode batches) on tensor
// cores, streaming W once, from xs already rounded to the weights' type (round16):
// gemm_splitk_m<tile> with a block per (256 outputs, k range) writing per-split partial sums, and
// splitk_reduce_f32 adding them in split order (deterministic: no atomics). With one split the
// GEMM writes y itself.
func (b *Backend) gemmSplitK(y, xs uint64, w, bias *tensor.Tensor, m, n, kdim int) {
	splits, kchunk := splitKParts(m, n, kdim, b.sms)
	b.gemmSplitKAs(y, xs, w, bias, m, n, kdim, splits, kchunk, splitKRowTile(m))
}

// gemmSplitKAs is gemmSplitK with the splits, their k range and the row tile bm (≥ m) given.
func (b *Backend) gemmSplitKAs(y, xs uint64, w, bias *tensor.Tensor, m, n, kdim, splits, kchunk, bm int) {
	dst := y
	var part *tensor.Tensor
	if splits > 1 {
		part = b.scratch("split-K partial sums", splits*m*n)
		dst = dev(part)
	}
	b.args.reset().p(dst).p(xs).p(dev(w)).p(dev(bias)).i(m).i(n).i(kdim).i(kchunk)
	b.launch(b.kernel("gemm", fmt.Sprintf("gemm_splitk_m%d_%s", bm, suffix(w.DType))), (n+255)/256, splits, 1, 256, splitKShared(bm))
	if part != nil {
		b.args.reset().p(y).p(dst).u64(uint64(m * n)).i(splits)
		b.launch(b.kernel("gemm", "splitk_reduce_f32"), b.elementwiseGrid((m*n+3)/4), 1, 1, 256, 0)
		b.Free(part)
	}
}

// gemm computes y (m, n) = x (m, k) · wᵀ + bias: for 16-bit weights whose rows allow 16-byte
// loads, on tensor cores (gemmSplitK up to 128 rows, else gemmWGMMA where useWGMMA allows it,
// else PipeGEMM picks the kernel), otherwise with the tiled f32 kernel.
func (b *Backend) gemm(y, x uint64, w, bias *tensor.Tensor, m, n, kdim int) {
	if bias != nil && bias.DType != w.DType {
		panic(fmt.Sprintf("gpu: matmul with %s weights and a %s bias", w.DType, bias.DType))
	}
	if b.useSplitK(w, x, m, kdim) {
		xs := b.round16(x, m, kdim, w.DType)
		b.gemmSplitK(y, dev(xs), w, bias, m, n, kdim)
		b.Free(xs)
		return
	}
	if b.useWGMMA(w, x, m, kdim) {
		xs := b.round16(x, m, kdim, w.DType)
		b.gemmWGMMA(y, dev(xs), w, bias, m, n, kdim)
		b.Free(xs)
		return
	}
	if w.DType != tensor.F32 && kdim%8 == 0 && vectorOK(w, x, kdim) {
		if b.PipeGEMM {
			// x rounded to the weights' type once, then the 4-stage cp.async kernel.
			xs := b.round16(x, m, kdim, w.DType)
			b.args.reset().p(y).p(dev(xs)).p(dev(w)).p(dev(bias)).i(m).i(n).i(kdim)
			b.launch(b.kernel("gemm", "gemm_pipe_"+suffix(w.DType)), (n+127)/128, (m+127)/128, 1, 256, gemmPipeShared)
			b.Free(xs)
			return
		}
		b.args.reset().p(y).p(x).p(dev(w)).p(dev(bias)).i(m).i(n).i(kdim)
		b.launch(b.kernel("gemm", "gemm_"+suffix(w.DType)), (n+127)/128, (m+127)/128, 1, 256, 0)
		return
	}
	b.args.reset().p(y).p(x).p(dev(w)).p(dev(bias)).i(m).i(n).i(kdim)
	b.launch(b.kernel("gemm", "gemm_tiled_"+suffix(w.DType)), (n+63)/64, (m+63)/64, 1, 256, 0)
}

// decodeChunks is the most chunks attention_decode.cuh cuts a context into: the grid's x, and the
// partial results it may leave per (token, head).
const decodeChunks = 32

// decodeGroups is the blocks per kv head of the decode attention: one per 8 query heads.
func decodeGroups(heads, kvHeads int) int { return kvHeads * ((heads/kvHeads + 7) / 8) }

// decodeScratch is the partials (F32 elements) and counters (I32) of a decode attention over n
// tokens: acc (n, heads, 32, dim), ml (n, heads, 32, 2), count (n, decodeGroups).
func decodeScratch(n, heads, kvHeads, dim int) (partials, counters int) {
	return n * heads * decodeChunks * (dim + 2), n * decodeGroups(heads, kvHeads)
}

// attentionDecodeGQA runs attention_decode_gqa_* (kernels/attention_decode.cuh) over n tokens:
// pos (n) I32 their positions (< 0: idle rows), table (n, stride) I32 their block tables; part
// holds decodeScratch's partials (acc, then ml), count its counters, zero between launches.
func (b *Backend) attentionDecodeGQA(out, q, kc, vc uint64, dt tensor.DType, pos, table uint64, stride, blockSize int,
	part, count uint64, n, heads, kvHeads, dim int, scale float32) {
	acc, ml := part, part+uint64(4*n*heads*decodeChunks*dim)
	b.args.reset().p(out).p(acc).p(ml).p(count).p(q).p(kc).p(vc).p(pos).p(table).i(stride).i(blockSize).
		i(heads).i(kvHeads).i(dim).f(scale)
	name := fmt.Sprintf("attention_decode_gqa_%s_d%d", kvSuffix(dt), decodeDP(dim))
	b.launch(b.kernel("attention", name), decodeChunks, decodeGroups(heads, kvHeads), n, 128, 0)
}

// attentionDecodeRoPEGQA is attentionDecodeGQA with RoPE of q and of the tokens' keys k and the
// cache append of k and v in the same launch (kernels/decode.cu; compute capability ≥ 9.0).
func (b *Backend) attentionDecodeRoPEGQA(out, q, k, v, kc, vc uint64, dt tensor.DType, pos, table uint64, stride, blockSize int,
	invFreq, part, count uint64, n, heads, kvHeads, dim int, scale float32) {
	acc, ml := part, part+uint64(4*n*heads*decodeChunks*dim)
	b.args.reset().p(out).p(acc).p(ml).p(count).p(q).p(k).p(v).p(kc).p(vc).p(pos).p(table).i(stride).i(blockSize).
		p(invFreq).i(heads).i(kvHeads).i(dim).f(scale)
	name := fmt.Sprintf("attention_decode_rope_gqa_%s_d%d", kvSuffix(dt), decodeDP(dim))
	b.launch(b.kernel("decode", name), decodeChunks, decodeGroups(heads, kvHeads), n, 128, 0)
}

// decodeDP is the head-size bound (128 or 256) of the decode attention entry point for dim.
func decodeDP(dim int) int {
	if dim <= 128 {
		return 128
	}
	return 256
}

// attentionPrefill runs the flash-style kernel over tiles of 32 tokens, each of one sequence.
func (b *Backend) attentionPrefill(out, q, kc, vc, ctx, table uint64, n, maxBlocks, blockSize, heads, kvHeads, dim int, scale float32) {
	name := "attention_prefill_f32_d256"
	switch {
	case dim <= 64:
		name = "attention_prefill_f32_d64"
	case dim <= 128:
		name = "attention_prefill_f32_d128"
	}
	b.args.reset().p(out).p(q).p(kc).p(vc).p(ctx).p(table).i(n).i(maxBlocks).i(blockSize).i(heads).i(kvHeads).i(dim).f(scale)
	b.launch(b.kernel("attention", name), (n+31)/32, heads, 1, 128, 0)
}

// attentionPrefillMMA runs the tensor-core flash kernel: block (b, kvh) takes rows 64b…64b+63
// of the (query, head-in-group) pairs of kv head kvh, all of one sequence (usePrefillMMA).
func (b *Backend) attentionPrefillMMA(out, q, kc, vc, ctx, table uint64, n, maxBlocks, blockSize, heads, kvHeads, dim int, scale float32) {
	name := "attention_prefill_mma_bf16_d128"
	if dim <= 64 {
		name = "attention_prefill_mma_bf16_d64"
	}
	b.args.reset().p(out).p(q).p(kc).p(vc).p(ctx).p(table).i(n).i(maxBlocks).i(blockSize).i(heads).i(kvHeads).i(dim).f(scale)
	b.launch(b.kernel("attention", name), (n*(heads/kvHeads)+prefillRows-1)/prefillRows, kvHeads, 1, 128, 0)
}

// attentionPrefillFA is attentionPrefillMMA over a BF16 cache: the tiles copied by cp.async into
// faStages stages of shared memory (kernels/attention.cu, attention_prefill_fa_kvbf16_*).
func (b *Backend) attentionPrefillFA(out, q, kc, vc, ctx, table uint64, n, maxBlocks, blockSize, heads, kvHeads, dim int, scale float32) {
	dp := 128
	if dim <= 64 {
		dp = 64
	}
	b.args.reset().p(out).p(q).p(kc).p(vc).p(ctx).p(table).i(n).i(maxBlocks).i(blockSize).i(heads).i(kvHeads).i(dim).f(scale)
	b.launch(b.kernel("attention", fmt.Sprintf("attention_prefill_fa_kvbf16_d%d", dp)), (n*(heads/kvHeads)+prefillRows-1)/prefillRows, kvHeads, 1, 128,
		faStages*2*64*(dp+8)*2)
}

// faStages is the key and value tiles attention_prefill_fa_kvbf16_* keeps in flight (FA_STAGES).
const faStages = 3

// matvecNorm folds a decoder block's residual add and RMSNorm into a matvec launch
// (kernels/matvec.cu, the matvec_rms_* kernels, one token): v = x + xb + alpha[0]·steer (xb and
// steer may be 0; a steer selects the matvec_rms_*steer_* kernels), the product runs on
// rmsnorm(v) ⊙ w, and xout (may be 0) receives v, the updated residual stream. alpha is a device
// address (one f32), so that a captured step reads the strength current at replay.
type matvecNorm struct {
	xb, xout     uint64
	alpha, steer uint64
	w            *tensor.Tensor // (in), the matrices' dtype
	eps          float32
}

// matvecRows is the rows of each matrix one matvec block computes (8 warps split K; kernels/matvec.cu).
const matvecRows = 4

// matvecArgs puts the leading parameters every matvec kernel takes into b.args, checking norm,
// and returns whether the 16-byte-load path may run.
func (b *Backend) matvecArgs(x uint64, n, in int, norm *matvecNorm, ws ...*tensor.Tensor) bool {
	vec := true
	for _, w := range ws {
		if !vectorOK(w, x, in) {
			vec = false
		}
	}
	var xb, wn, xout, alpha, steer uint64
	var eps float32
	if norm != nil {
		if n != 1 || norm.w.DType != ws[0].DType || norm.w.Numel() != in || (norm.xout != 0 && (norm.xout == x || norm.xout == norm.xb)) {
			panic(fmt.Sprintf("gpu: matvec with a norm over %d tokens of %d features, norm weight %v, matrices %s, xout %#x (x %#x, xb %#x)",
				n, in, norm.w, ws[0].DType, norm.xout, x, norm.xb))
		}
		if (norm.steer == 0) != (norm.alpha == 0) {
			panic("gpu: matvec steering needs both the vector and its strength")
		}
		xb, wn, xout, alpha, steer, eps = norm.xb, dev(norm.w), norm.xout, norm.alpha, norm.steer, norm.eps
		if xb%16 != 0 || wn%16 != 0 || steer%16 != 0 {
			vec = false
		}
	}
	v := 0
	if vec {
		v = 1
	}
	b.args.reset().p(x).p(xb).p(wn).p(xout).p(alpha).p(steer).f(eps).i(n).i(in).i(v)
	return vec
}

// matvec computes up to three products sharing x (n ≤ 8 tokens, in features) in one split-K
// launch; with norm (one token) on the normalised residual stream.
func (b *Backend) matvec(x uint64, n, in int, norm *matvecNorm, segs ...gemvSeg) {
	if len(segs) == 0 || len(segs) > 3 || n > 8 {
		panic(fmt.Sprintf("gpu: matvec of %d segments, %d tokens", len(segs), n))
	}
	dt := segs[0].w.DType
	ws := make([]*tensor.Tensor, 0, 3)
	for _, s := range segs {
		if s.w.DType != dt || (s.bias != nil && s.bias.DType != dt) {
			panic(fmt.Sprintf("gpu: matvec segments of dtypes %s, %v, %v", dt, s.w, s.bias))
		}
		ws = append(ws, s.w)
	}
	b.matvecArgs(x, n, in, norm, ws...)
	blocks := 0
	for _, s := range segs {
		out := s.w.Rows()
		b.args.p(dev(s.w)).p(dev(s.bias)).p(s.y).i(out)
		blocks += (out + matvecRows - 1) / matvecRows
	}
	for i := len(segs); i < 3; i++ {
		b.args.p(0).p(0).p(0).i(0)
	}
	name := fmt.Sprintf("matvec_n%d_%s", gemvTokens(n), suffix(dt))
	if norm != nil {
		name = "matvec_rms_n1_" + suffix(dt)
		if norm.steer != 0 {
			name = "matvec_rms_steer_n1_" + suffix(dt)
		}
	}
	b.launch(b.kernel("matvec", name), blocks, 1, 1, 256, 0)
}

// matvecSwiGLU computes y = silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu) for n ≤ 8 tokens in one split-K
// launch; with norm (one token) on the normalised residual stream.
func (b *Backend) matvecSwiGLU(y, x uint64, n, in int, norm *matvecNorm, gate, bg, up, bu *tensor.Tensor) {
	if n > 8 || up.DType != gate.DType || (bg != nil && bg.DType != gate.DType) || (bu != nil && bu.DType != gate.DType) {
		panic(fmt.Sprintf("gpu: matvec swiglu of %d tokens, gate %v, up %v, biases %v, %v", n, gate, up, bg, bu))
	}
	b.matvecArgs(x, n, in, norm, gate, up)
	out := gate.Rows()
	b.args.p(dev(gate)).p(dev(bg)).p(y).i(out).p(dev(up)).p(dev(bu)).p(0).i(0).p(0).p(0).p(0).i(0)
	name := fmt.Sprintf("matvec_swiglu_n%d_%s", gemvTokens(n), suffix(gate.DType))
	if norm != nil {
		name = "matvec_rms_swiglu_n1_" + suffix(gate.DType)
		if norm.steer != 0 {
			name = "matvec_rms_swiglu_steer_n1_" + suffix(gate.DType)
		}
	}
	b.launch(b.kernel("matvec", name), (out+matvecRows-1)/matvecRows, 1, 1, 256, 0)
}

// product is the GEMV of ≤ 8 tokens the backend's ops use: split-K or row-per-warp (SplitK).
func (b *Backend) product(x uint64, n, in int, segs ...gemvSeg) {
	if b.SplitK {
		b.matvec(x, n, in, nil, segs...)
	} else {
		b.gemv(x, n, in, segs...)
	}
}

// productSwiGLU is product's SwiGLU form.
func (b *Backend) productSwiGLU(y, x uint64, n, in int, gate, bg, up, bu *tensor.Tensor) {
	if b.SplitK {
		b.matvecSwiGLU(y, x, n, in, nil, gate, bg, up, bu)
	} else {
		b.gemvSwiGLU(y, x, n, in, gate, bg, up, bu)
	}
}

// argmaxBlocks is the grid of argmax_advance_f32 over d logits: ~2 per thread of 1024-thread
// blocks, at most argmaxMaxBlocks.
func argmaxBlocks(d int) int { return max(1, min(argmaxMaxBlocks, (d+2047)/2048)) }

const argmaxMaxBlocks = 256

// argmaxAdvance is greedy sampling and the decode loop's position update in one launch
// (kernels/decode.cu). candV, candI hold argmaxMaxBlocks floats and ints; count one int32, zero
// between launches.
func (b *Backend) argmaxAdvance(tok, x uint64, d int, candV, candI, count, pos, ctx, row, table uint64, blockSize int, hist uint64) {
	b.args.reset().p(tok).p(x).i(d).p(candV).p(candI).p(count).p(pos).p(ctx).p(row).p(table).i(blockSize).p(hist)
	b.launch(b.kernel("decode", "argmax_advance_f32"), argmaxBlocks(d), 1, 1, 1024, 0)
}

// holdNs queues a kernel that sleeps for ns nanoseconds (the profiler queues a step behind it).
func (b *Backend) holdNs(ns uint64) {
	b.args.reset().u64(ns)
	b.launch(b.kernel("decode", "hold_ns"), 1, 1, 1, 32, 0)
}
