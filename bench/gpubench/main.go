//go:build cuda

// Command gpubench measures tiller's GPU backend on the card it runs on, against that card's own
// device-to-device copy bandwidth measured in the same run: each kernel at the Llama-3.1-8B
// shapes (time, GB/s or TFLOP/s, fraction of the copy peak), batch-1 greedy decode of the full
// 32-layer model with random bf16 weights made on the device (with and without a CUDA graph per
// step), and a 2048-token prefill. It writes one JSON line per figure to -out and prints them.
//
//	gpubench -config llama-3.1-8b-config.json -out results.jsonl
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

var (
	configPath = flag.String("config", "build/device/llama-3.1-8b-config.json", "the model's config.json")
	outPath    = flag.String("out", "", "append JSON lines here")
	steps      = flag.Int("steps", 128, "decode steps to time")
	prefillN   = flag.Int("prefill", 2048, "prefill tokens to time")
	skipModel  = flag.Bool("kernels-only", false, "skip the whole-model decode and prefill")
)

var copyPeak float64 // GB/s, measured first

func emit(row map[string]any) {
	b, _ := json.Marshal(row)
	fmt.Println(string(b))
	if *outPath != "" {
		f, err := os.OpenFile(*outPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
}

var failures int

func fail(what string, err error) {
	failures++
	emit(map[string]any{"what": "failed", "step": what, "error": err.Error()})
}

// guarded runs one measurement, turning a panic (a driver error inside an op) into a failure
// row so that the remaining measurements still run.
func guarded(what string, fn func() error) {
	defer func() {
		if r := recover(); r != nil {
			fail(what, fmt.Errorf("panic: %v", r))
		}
	}()
	if err := fn(); err != nil {
		fail(what, err)
	}
}

func main() {
	flag.Parse()
	b, err := gpu.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpubench:", err)
		os.Exit(1)
	}
	defer b.Close()
	emit(map[string]any{"what": "device", "name": b.Name(), "sms": b.SMs()})

	guarded("copy", func() error {
		gbps, ms, err := b.CopyBandwidth(2<<30, 20)
		if err != nil {
			return err
		}
		copyPeak = gbps
		emit(map[string]any{"what": "device_copy", "bytes_moved": 2 * (2 << 30), "ms": ms, "gbps": gbps})
		return nil
	})
	raw, err := os.ReadFile(*configPath)
	if err != nil {
		fail("config", err)
		os.Exit(1)
	}
	cfg, err := llama.ParseConfig(raw)
	if err != nil {
		fail("config", err)
		os.Exit(1)
	}
	guarded("kernels", func() error { return kernels(b, cfg) })
	if !*skipModel {
		guarded("model", func() error { return model(b, cfg) })
	}
	emit(map[string]any{"what": "done", "failures": failures})
	if failures > 0 {
		os.Exit(1)
	}
}

// bandwidthRow reports a memory-bound kernel: bytes it must move, its time, and GB/s against the
// copy peak.
func bandwidthRow(name, shape string, bytes float64, ms float64) {
	gbps := bytes / (ms * 1e-3) / 1e9
	row := map[string]any{"what": "kernel", "kernel": name, "shape": shape, "ms": ms, "bytes": bytes, "gbps": gbps}
	if copyPeak > 0 {
		row["frac_copy"] = gbps / copyPeak
	}
	emit(row)
}

func flopRow(name, shape string, flops float64, ms float64) {
	emit(map[string]any{"what": "kernel", "kernel": name, "shape": shape, "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12})
}

func randomT(b *gpu.Backend, seed uint64, scale float32, dt tensor.DType, shape ...int) *tensor.Tensor {
	t := b.Alloc(dt, shape...)
	b.Random(t, seed, scale)
	return t
}

// kernels times each op at the model's shapes. Weight matrices smaller than 256 MB are cycled
// through several copies, so that repeats read memory, not the 50 MB L2.
func kernels(b *gpu.Backend, c *llama.Config) error {
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
		xin := b.Alloc(tensor.F32, 1, m.in)
		b.Random(xin, 7, 1)
		y := b.Alloc(tensor.F32, 1, m.out)
		i := 0
		ms, err := b.Time(3, 30, func() { b.MatMul(y, xin, ws[i%copies], nil); i++ })
		if err != nil {
			return err
		}
		bandwidthRow("gemv_n1_bf16 "+m.name, fmt.Sprintf("1x%dx%d", m.in, m.out), bytes, ms)
		// The prefill GEMM at 2048 tokens (not the LM head: prefill takes logits at one row).
		if m.name != "lm_head" {
			n := *prefillN
			xs := randomT(b, 8, 1, tensor.F32, n, m.in)
			ys := b.Alloc(tensor.F32, n, m.out)
			ms, err := b.Time(2, 10, func() { b.MatMul(ys, xs, ws[0], nil) })
			if err != nil {
				return err
			}
			flopRow("gemm_bf16 "+m.name, fmt.Sprintf("%dx%dx%d", n, m.in, m.out), 2*float64(n)*float64(m.in)*float64(m.out), ms)
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
		i := 0
		ms, err := b.Time(3, 30, func() { s := sets[i%copies]; b.MatMulQKV(yq, yk, yv, xin, s.wq, nil, s.wk, nil, s.wv, nil); i++ })
		if err != nil {
			return err
		}
		bandwidthRow("gemv_n1_bf16 q+k+v fused", fmt.Sprintf("1x%dx(%d+%d+%d)", d, q, kvw, kvw), float64((q+2*kvw)*d*2), ms)
		h, tmp := b.Alloc(tensor.F32, 1, ffn), b.Alloc(tensor.F32, 1, ffn)
		ms, err = b.Time(3, 30, func() { s := sets[i%copies]; b.MatMulSwiGLU(h, tmp, xin, s.wg, nil, s.wu, nil); i++ })
		if err != nil {
			return err
		}
		bandwidthRow("gemv_swiglu_n1_bf16 gate+up", fmt.Sprintf("1x%dx(2x%d)", d, ffn), float64(2*ffn*d*2), ms)
		for _, s := range sets {
			for _, w := range []*tensor.Tensor{s.wq, s.wk, s.wv, s.wg, s.wu} {
				b.Free(w)
			}
		}
	}
	// Row-wise and elementwise kernels at decode size (latency) and prefill size (bandwidth).
	for _, n := range []int{1, *prefillN} {
		x := randomT(b, 10, 1, tensor.F32, n, d)
		w := randomT(b, 11, 1, tensor.BF16, d)
		dst := b.Alloc(tensor.F32, n, d)
		ms, err := b.Time(3, 30, func() { b.RMSNorm(dst, x, w, 1e-5) })
		if err != nil {
			return err
		}
		bandwidthRow("rmsnorm_bf16", fmt.Sprintf("%dx%d", n, d), float64(2*n*d*4+d*2), ms)
		delta := randomT(b, 12, 1, tensor.F32, n, d)
		ms, err = b.Time(3, 30, func() { b.ResidualRMSNorm(dst, x, delta, nil, nil, w, 1e-5) })
		if err != nil {
			return err
		}
		bandwidthRow("residual_rmsnorm_bf16", fmt.Sprintf("%dx%d", n, d), float64(4*n*d*4+d*2), ms)
		g, u := randomT(b, 13, 1, tensor.F32, n, ffn), randomT(b, 14, 1, tensor.F32, n, ffn)
		ms, err = b.Time(3, 30, func() { b.SiLUMul(g, g, u) })
		if err != nil {
			return err
		}
		bandwidthRow("silu_mul_f32", fmt.Sprintf("%dx%d", n, ffn), float64(3*n*ffn*4), ms)
		qx := randomT(b, 15, 1, tensor.F32, n, c.Heads, c.HeadDim)
		pos := make([]int32, n)
		for i := range pos {
			pos[i] = int32(i)
		}
		inv := c.InvFreq()
		ms, err = b.Time(3, 30, func() { b.RoPE(qx, pos, inv) })
		if err != nil {
			return err
		}
		bandwidthRow("rope_f32 (q)", fmt.Sprintf("%dx%dx%d", n, c.Heads, c.HeadDim), float64(2*n*q*4), ms)
		for _, t := range []*tensor.Tensor{x, w, dst, delta, g, u, qx} {
			b.Free(t)
		}
	}
	// Attention: one decode query over contexts of 1024 and 4096 (split-KV), and a causal
	// prefill of 2048 tokens (flash-style).
	for _, ctx := range []int{1024, 4096} {
		kv := tensor.NewKVCache(b, 1, c.KVHeads, c.HeadDim, 16, ctx/16+1)
		kv.Reserve(0, ctx)
		seq, pos := make([]int32, ctx), make([]int32, ctx)
		for i := range pos {
			pos[i] = int32(i)
		}
		kx := randomT(b, 16, 1, tensor.F32, ctx, c.KVHeads, c.HeadDim)
		vx := randomT(b, 17, 1, tensor.F32, ctx, c.KVHeads, c.HeadDim)
		b.StoreKV(kv, 0, kx, vx, seq, pos)
		qx := randomT(b, 18, 1, tensor.F32, 1, c.Heads, c.HeadDim)
		att := b.Alloc(tensor.F32, 1, q)
		ms, err := b.Time(3, 30, func() { b.Attention(att, qx, kv, 0, seq[:1], pos[ctx-1:]) })
		if err != nil {
			return err
		}
		bandwidthRow("attention_decode_f32 (+combine)", fmt.Sprintf("ctx %d, %d/%d heads", ctx, c.Heads, c.KVHeads), float64(ctx*kvw*4*2), ms)
		if ctx == 1024 {
			ms, err := b.Time(3, 30, func() { b.StoreKV(kv, 0, kx.Slice(0, 1), vx.Slice(0, 1), seq[:1], pos[:1]) })
			if err != nil {
				return err
			}
			bandwidthRow("kv_store_f32", "1 token", float64(4*kvw*4), ms)
		}
		for _, t := range []*tensor.Tensor{kx, vx, qx, att, kv.K[0], kv.V[0]} {
			b.Free(t)
		}
	}
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
		ms, err := b.Time(2, 10, func() { b.Attention(att, qx, kv, 0, seq, pos) })
		if err != nil {
			return err
		}
		// Causal: n(n+1)/2 scores, each 2·D FLOPs for q·k and 2·D for p·v.
		flopRow("attention_prefill_f32_d128", fmt.Sprintf("%d tokens, %d/%d heads", n, c.Heads, c.KVHeads), float64(n)*float64(n+1)/2*4*float64(c.HeadDim)*float64(c.Heads), ms)
		for _, t := range []*tensor.Tensor{kx, vx, qx, att, kv.K[0], kv.V[0]} {
			b.Free(t)
		}
	}
	{
		logits := randomT(b, 22, 1, tensor.F32, 1, c.Vocab)
		out := b.Alloc(tensor.I32, 1)
		ms, err := b.Time(3, 30, func() { b.Argmax(out, logits) })
		if err != nil {
			return err
		}
		bandwidthRow("argmax_f32", fmt.Sprintf("1x%d", c.Vocab), float64(c.Vocab*4), ms)
		ids := []int32{int32(rand.IntN(c.Vocab))}
		table := randomT(b, 23, 0.02, tensor.BF16, c.Vocab, d)
		x := b.Alloc(tensor.F32, 1, d)
		ms, err = b.Time(3, 30, func() { b.Embedding(x, table, ids) })
		if err != nil {
			return err
		}
		bandwidthRow("embedding_bf16", fmt.Sprintf("1 of %dx%d", c.Vocab, d), float64(d*2+d*4), ms)
		b.Free(table)
	}
	return b.Sync()
}

// model builds the full model with random bf16 weights in device memory, then times batch-1
// greedy decode (CUDA graph per step, and plain launches) and a prefill.
func model(b *gpu.Backend, c *llama.Config) error {
	t0 := time.Now()
	m := &llama.Model{Config: c, InvFreq: c.InvFreq()}
	var bytes, decodeBytes int64
	for i, w := range m.Weights() {
		t, err := b.AllocErr(w.Name, tensor.BF16, w.Shape...)
		if err != nil {
			return err
		}
		scale := float32(0.02)
		if len(w.Shape) == 1 {
			scale = 1 // norm weights: order 1
		}
		b.Random(t, uint64(1000+i), scale)
		*w.Dst = t
		n := int64(t.Numel() * 2)
		bytes += n
		if w.Name != "model.embed_tokens.weight" || c.TieEmbeddings {
			decodeBytes += n
		}
	}
	if c.TieEmbeddings {
		m.LMHead = m.Embed
	}
	if err := b.Sync(); err != nil {
		return err
	}
	emit(map[string]any{"what": "model", "layers": c.Layers, "weight_bytes": bytes, "decode_bytes": decodeBytes, "build_s": time.Since(t0).Seconds()})
	r := llama.NewRunner(m, b)
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32(rand.IntN(c.Vocab))
	}

	// Batch-1 greedy decode after a 128-token prompt: the prompt through the runner, then the
	// device-resident decoder, timed over many steps.
	capacity := len(prompt) + 2*(*steps) + 8
	for _, useGraph := range []bool{true, false} {
		kv := r.NewKVCache(capacity+1, 16)
		if _, err := r.Forward(llama.Prompt(0, prompt[:len(prompt)-1], 0, false), kv, nil); err != nil {
			return err
		}
		dec, err := gpu.NewDecoder(b, r.Model, kv, 0, capacity)
		if err != nil {
			return err
		}
		dec.UseGraph = useGraph
		if err := dec.Start(prompt[len(prompt)-1], len(prompt)-1); err != nil {
			return err
		}
		var stepErr error
		step := func() {
			if err := dec.Step(); err != nil && stepErr == nil {
				stepErr = err
			}
		}
		// Warm-up: 8 steps (the graph is captured in the first). Then one timed run of -steps.
		ms, err := b.Time(0, 1, func() {
			for i := 0; i < 8; i++ {
				step()
			}
		})
		if err == nil && stepErr == nil {
			ms, err = b.Time(0, 1, func() {
				for i := 0; i < *steps; i++ {
					step()
				}
			})
		}
		if err == nil {
			err = stepErr
		}
		if err != nil {
			dec.Close()
			return fmt.Errorf("decode (graph %v): %w", useGraph, err)
		}
		toks := dec.Tokens(len(prompt), len(prompt)+8)
		dec.Close()
		for l := range kv.K { // the caches are large: give them back before the next run
			b.Free(kv.K[l])
			b.Free(kv.V[l])
		}
		msTok := ms / float64(*steps)
		gbps := float64(decodeBytes) / (msTok * 1e-3) / 1e9
		row := map[string]any{"what": "tiller_decode_b1", "graph": useGraph, "steps": *steps, "ms_per_token": msTok, "tok_s": 1e3 / msTok,
			"weight_gbps": gbps, "first_tokens": toks}
		if copyPeak > 0 {
			row["frac_copy"] = gbps / copyPeak
		}
		emit(row)
	}

	// Prefill of -prefill tokens through the runner (GEMMs on tensor cores, flash-style attention).
	n := *prefillN
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rand.IntN(c.Vocab))
	}
	kv := r.NewKVCache(n, 16)
	var fwdErr error
	ms, err := b.Time(1, 3, func() {
		kv.Release(0)
		if _, err := r.Forward(llama.Prompt(0, ids, 0, false), kv, nil); err != nil && fwdErr == nil {
			fwdErr = err
		}
	})
	if err == nil {
		err = fwdErr
	}
	if err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	params := float64(decodeBytes) / 2
	emit(map[string]any{"what": "tiller_prefill", "tokens": n, "ms": ms, "tok_s": float64(n) / ms * 1e3, "tflops": 2 * params * float64(n) / (ms * 1e-3) / 1e12})
	return nil
}
