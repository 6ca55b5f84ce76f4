//go:build cuda

package main

import (
	"fmt"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// denseBF16Peak is the dense bf16 tensor-core rate of an H100 or H200 SXM (TFLOP/s, NVIDIA's
// datasheet): the ceiling the prefill GEMM rows are read against.
const denseBF16Peak = 989.4

// gemvKernels are the two GEMV layouts Backend.SplitK chooses between.
var gemvKernels = []struct {
	name   string
	splitK bool
}{{"gemv (row per warp)", false}, {"matvec (split-K)", true}}

// kernels times each op at the model's shapes. Weight matrices smaller than 256 MB are cycled
// through several copies, so that repeats read memory, not the 50 MB L2. The decode-sized kernels
// are timed inside a CUDA graph (timeGraph); the small ones of a decode step (norms, RoPE,
// attention) appear in context in the step profiles of model().
func kernels(b *gpu.Backend, c *llama.Config) error {
	defer func(splitK, wgmma bool) { b.SplitK, b.WGMMAGEMM = splitK, wgmma }(b.SplitK, b.WGMMAGEMM)
	b.WGMMAGEMM = false // the mma.sync GEMMs unless a row names the Hopper one
	d, ffn, q, kvw := c.Dim, c.FFNDim, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	mats := []struct {
		name    string
		out, in int
	}{{"q_proj/o_proj", q, d}, {"k_proj/v_proj", kvw, d}, {"gate_proj/up_proj", ffn, d}, {"down_proj", d, ffn}, {"lm_head", c.Vocab, d}}
	for _, m := range mats {
		bytes := float64(m.out * m.in * 2)
		copies := max(1, int(256e6/bytes))
		ws := make([]*tensor.Tensor, copies)
		for i := range ws {
			ws[i] = randomT(b, uint64(100+i), 0.02, tensor.BF16, m.out, m.in)
		}
		xin := randomT(b, 7, 1, tensor.F32, 1, m.in)
		y := b.Alloc(tensor.F32, 1, m.out)
		for _, k := range gemvKernels {
			b.SplitK = k.splitK
			ms, err := timeGraph(b, max(copies, 4), func(i int) { b.MatMul(y, xin, ws[i%copies], nil) })
			if err != nil {
				return fmt.Errorf("%s %s: %w", k.name, m.name, err)
			}
			bandwidthRow(k.name+" n1 bf16 "+m.name, fmt.Sprintf("1x%dx%d", m.in, m.out), bytes, ms)
		}
		// A decode batch of 64 rows: the prefill GEMM (one row tile, out/128 blocks each streaming
		// all of K) against the split-K GEMM, both with their rounding pass (and the split-K
		// reduction) inside the time; GB/s counts the weights once.
		if m.name != "k_proj/v_proj" {
			const rows = 64
			xb := randomT(b, 15, 1, tensor.F32, rows, m.in)
			yb := b.Alloc(tensor.F32, rows, m.out)
			for _, k := range []struct {
				name string
				wide bool
			}{{"round+gemm_pipe_bf16", true}, {"round+gemm_splitk_bf16+reduce", false}} {
				b.NoSplitKGEMM = k.wide
				ms, err := timeGraph(b, max(copies, 4), func(i int) { b.MatMul(yb, xb, ws[i%copies], nil) })
				b.NoSplitKGEMM = false
				if err != nil {
					return fmt.Errorf("%s n%d %s: %w", k.name, rows, m.name, err)
				}
				bandwidthRow(fmt.Sprintf("%s n%d bf16 %s", k.name, rows, m.name), fmt.Sprintf("%dx%dx%d", rows, m.in, m.out), bytes, ms)
			}
			b.Free(xb)
			b.Free(yb)
		}
		// The prefill GEMM at 2048 tokens (not the LM head: prefill takes logits at one row).
		if m.name != "lm_head" {
			n := *prefillN
			xs := randomT(b, 8, 1, tensor.F32, n, m.in)
			ys := b.Alloc(tensor.F32, n, m.out)
			// The staged kernel, then round_bf16 + the pipelined one (the default before Hopper;
			// its time includes the rounding pass), then on Hopper round_bf16 + the wgmma kernel
			// (the default there), with its speed over the pipelined kernel's and its fraction of
			// the card's dense bf16 rate (hf-baseline.jsonl's bf16_matmul row is cuBLAS's, measured
			// in the same call).
			shape, flops := fmt.Sprintf("%dx%dx%d", n, m.in, m.out), 2*float64(n)*float64(m.in)*float64(m.out)
			var pipeMs float64
			for _, k := range []struct {
				name        string
				pipe, wgmma bool
			}{{"gemm_bf16 ", false, false}, {"round+gemm_pipe_bf16 ", true, false}, {"round+gemm_wgmma_bf16 ", true, true}} {
				if k.wgmma && !b.HasWGMMA() {
					emit(map[string]any{"what": "kernel", "kernel": k.name + m.name, "shape": shape, "skipped": fmt.Sprintf("compute capability %d, %v", b.ComputeCapability(), b.WGMMAError())})
					continue
				}
				b.PipeGEMM, b.WGMMAGEMM = k.pipe, k.wgmma
				ms, err := b.Time(2, 10, func() { b.MatMul(ys, xs, ws[0], nil) })
				b.PipeGEMM, b.WGMMAGEMM = true, false
				if err != nil {
					return err
				}
				if !k.wgmma {
					flopRow(k.name+m.name, shape, flops, ms)
					pipeMs = ms
					continue
				}
				tflops := flops / (ms * 1e-3) / 1e12
				emit(map[string]any{"what": "kernel", "kernel": k.name + m.name, "shape": shape, "ms": ms, "tflops": tflops,
					"x_pipe": pipeMs / ms, "frac_dense_peak": tflops / denseBF16Peak})
			}
			b.Free(xs)
			b.Free(ys)
		}
		for _, w := range ws {
			b.Free(w)
		}
		b.Free(xin)
		b.Free(y)
	}
	// The fused decode forms: q, k, v in one launch, and gate·up·SiLU in one launch.
	{
		const copies = 4
		type set struct{ wq, wk, wv, wg, wu *tensor.Tensor }
		sets := make([]set, copies)
		for i := range sets {
			sets[i] = set{randomT(b, uint64(200+i), 0.02, tensor.BF16, q, d), randomT(b, uint64(210+i), 0.02, tensor.BF16, kvw, d),
				randomT(b, uint64(220+i), 0.02, tensor.BF16, kvw, d), randomT(b, uint64(230+i), 0.02, tensor.BF16, ffn, d),
				randomT(b, uint64(240+i), 0.02, tensor.BF16, ffn, d)}
		}
		xin := randomT(b, 9, 1, tensor.F32, 1, d)
		yq, yk, yv := b.Alloc(tensor.F32, 1, q), b.Alloc(tensor.F32, 1, kvw), b.Alloc(tensor.F32, 1, kvw)
		h, tmp := b.Alloc(tensor.F32, 1, ffn), b.Alloc(tensor.F32, 1, ffn)
		for _, k := range gemvKernels {
			b.SplitK = k.splitK
			ms, err := timeGraph(b, 8, func(i int) { s := sets[i%copies]; b.MatMulQKV(yq, yk, yv, xin, s.wq, nil, s.wk, nil, s.wv, nil) })
			if err != nil {
				return err
			}
			bandwidthRow(k.name+" n1 bf16 q+k+v", fmt.Sprintf("1x%dx(%d+%d+%d)", d, q, kvw, kvw), float64((q+2*kvw)*d*2), ms)
			ms, err = timeGraph(b, 8, func(i int) { s := sets[i%copies]; b.MatMulSwiGLU(h, tmp, xin, s.wg, nil, s.wu, nil) })
			if err != nil {
				return err
			}
			bandwidthRow(k.name+" swiglu n1 bf16 gate+up", fmt.Sprintf("1x%dx(2x%d)", d, ffn), float64(2*ffn*d*2), ms)
		}
		for _, s := range sets {
			for _, w := range []*tensor.Tensor{s.wq, s.wk, s.wv, s.wg, s.wu} {
				b.Free(w)
			}
		}
		for _, t := range []*tensor.Tensor{xin, yq, yk, yv, h, tmp} {
			b.Free(t)
		}
	}
	// Row-wise and elementwise kernels at prefill size (bandwidth).
	{
		n := *prefillN
		x := randomT(b, 10, 1, tensor.F32, n, d)
		w := randomT(b, 11, 1, tensor.BF16, d)
		dst := b.Alloc(tensor.F32, n, d)
		ms, err := b.Time(3, 20, func() { b.RMSNorm(dst, x, w, 1e-5) })
		if err != nil {
			return err
		}
		bandwidthRow("rmsnorm_bf16", fmt.Sprintf("%dx%d", n, d), float64(2*n*d*4+d*2), ms)
		delta := randomT(b, 12, 1, tensor.F32, n, d)
		ms, err = b.Time(3, 20, func() { b.ResidualRMSNorm(dst, x, delta, nil, w, 1e-5) })
		if err != nil {
			return err
		}
		bandwidthRow("residual_rmsnorm_bf16", fmt.Sprintf("%dx%d", n, d), float64(4*n*d*4+d*2), ms)
		g, u := randomT(b, 13, 1, tensor.F32, n, ffn), randomT(b, 14, 1, tensor.F32, n, ffn)
		ms, err = b.Time(3, 20, func() { b.SiLUMul(g, g, u) })
		if err != nil {
			return err
		}
		bandwidthRow("silu_mul_f32", fmt.Sprintf("%dx%d", n, ffn), float64(3*n*ffn*4), ms)
		for _, t := range []*tensor.Tensor{x, w, dst, delta, g, u} {
			b.Free(t)
		}
	}
	// Attention: a causal prefill of 2048 tokens (flash-style).
	{
		n := *prefillN
		kv := tensor.NewKVCache(b, 1, c.KVHeads, c.HeadDim, 16, n/16+1)
		kv.Reserve(0, n)
		seq, pos := make([]int32, n), make([]int32, n)
		for i := range pos {
			pos[i] = int32(i)
		}
		kx := randomT(b, 19, 1, tensor.F32, n, c.KVHeads, c.HeadDim)
		vx := randomT(b, 20, 1, tensor.F32, n, c.KVHeads, c.HeadDim)
		b.StoreKV(kv, 0, kx, vx, seq, pos)
		qx := randomT(b, 21, 1, tensor.F32, n, c.Heads, c.HeadDim)
		att := b.Alloc(tensor.F32, n, q)
		// Causal: n(n+1)/2 scores, each 2·D FLOPs for q·k and 2·D for p·v. The f32 kernel, then the
		// tensor-core one (the default).
		for _, k := range []struct {
			name  string
			exact bool
		}{{fmt.Sprintf("attention_prefill_f32_d%d", c.HeadDim), true}, {fmt.Sprintf("attention_prefill_mma_bf16_d%d", c.HeadDim), false}} {
			b.ExactAttention = k.exact
			ms, err := b.Time(2, 5, func() { b.Attention(att, qx, kv, 0, seq, pos) })
			b.ExactAttention = false
			if err != nil {
				return err
			}
			flopRow(k.name, fmt.Sprintf("%d tokens, %d/%d heads", n, c.Heads, c.KVHeads), float64(n)*float64(n+1)/2*4*float64(c.HeadDim)*float64(c.Heads), ms)
		}
		for _, t := range []*tensor.Tensor{kx, vx, qx, att, kv.K[0], kv.V[0]} {
			b.Free(t)
		}
	}
	return b.Sync()
}
