package tensor

// Backend is the set of ops the LLaMA forward pass is written against. Every op writes into a
// destination the caller owns (destination passing), so a decode loop that reuses its tensors
// allocates nothing, and the same model code drives any backend.
//
// Activations are F32 and row-major: a batch of n tokens is a (n, …) tensor whose row i belongs to
// token i. Weights are (out, in) as Hugging Face stores them, in F32, BF16 or F16, widened to F32
// as they are read; accumulation is F32. Shapes that disagree are programmer errors and panic.
// The CPU backend also takes F64 activations (every activation of a call F64, the KV cache made
// by NewKVCacheOf with F64), computing in F64; the op comments below say F32 for either.
//
// A backend runs one op at a time; it is not safe for concurrent use.
type Backend interface {
	// Alloc returns a zeroed tensor in the backend's memory.
	Alloc(dtype DType, shape ...int) *Tensor

	// Upload returns a copy of the host tensor t in the backend's memory; on the CPU, t itself.
	Upload(t *Tensor) *Tensor

	// Download copies src, a tensor in the backend's memory, into the host tensor dst of the same
	// dtype and size.
	Download(dst, src *Tensor)

	// Embedding gathers rows of a table: dst[i] = table[ids[i]].
	// table: (vocab, d) F32/BF16/F16; dst: (n, d) F32; len(ids) = n.
	Embedding(dst, table *Tensor, ids []int32)

	// RMSNorm normalises each row: dst[i] = x[i] · rsqrt(mean(x[i]²) + eps) ⊙ w.
	// x, dst: (n, d) F32, may be the same tensor; w: (d) F32/BF16/F16.
	RMSNorm(dst, x, w *Tensor, eps float32)

	// MatMul is a linear layer: dst = x·wᵀ + bias.
	// x: (n, in) F32; w: (out, in) F32/BF16/F16; bias: (out) or nil; dst: (n, out) F32.
	MatMul(dst, x, w, bias *Tensor)

	// RoPE rotates every head of x in place by its token's position, in Hugging Face's
	// half-rotation layout: with D = head_dim and f_i = pos·invFreq[i] (rounded to F32 as Hugging
	// Face rounds it; exact with F64 activations),
	// x'[i] = x[i]·cos f_i − x[i+D/2]·sin f_i and x'[i+D/2] = x[i+D/2]·cos f_i + x[i]·sin f_i.
	// x: (n, heads, D) F32; len(pos) = n; len(invFreq) = D/2.
	RoPE(x *Tensor, pos []int32, invFreq []float32)

	// StoreKV writes each token's keys and values into the cache at its sequence and position,
	// rounded to the cache's dtype (a CPU cache may be BF16 for F32 activations).
	// k, v: (n, kv_heads, head_dim) F32; the positions must be reserved in kv.
	StoreKV(kv *KVCache, layer int, k, v *Tensor, seq, pos []int32)

	// Attention is causal grouped-query attention of each token over its own sequence's cached
	// positions 0…pos[i]: dst[i, h] = Σ_j softmax_j(q[i,h]·k_j / √D) v_j, where query head h reads
	// kv head h / (heads / kv_heads). The cache must already hold every position it reads (StoreKV
	// first, also for the tokens of this batch).
	// q: (n, heads, D) F32; dst: (n, heads·D) F32.
	Attention(dst, q *Tensor, kv *KVCache, layer int, seq, pos []int32)

	// SiLUMul is the SwiGLU gate: dst = silu(gate) ⊙ up, silu(x) = x / (1 + e⁻ˣ).
	// gate, up, dst: same shape, F32.
	SiLUMul(dst, gate, up *Tensor)

	// Add is elementwise: dst = a + b. Same shapes, F32; dst may alias a or b.
	Add(dst, a, b *Tensor)

	// Softmax normalises each row of x in place: x[i] = exp(x[i] − max) / Σ exp(x[i] − max).
	Softmax(x *Tensor)
}

// Pattern is the explicit path of attention, for when a hook reads or replaces the attention
// pattern (blocks.L.attn.hook_pattern): AttentionPattern followed by AttentionApply computes
// Attention, with the probabilities materialised in between. Without such a hook the model calls
// Attention, which never materialises them.
type Pattern interface {
	// AttentionPattern writes p[i, h, t] = softmax_t(q[i,h]·k_t / √D) over the cached positions
	// t <= pos[i] of token i's sequence, and zeros past them.
	// q: (n, heads, D); p: (n, heads, ctx) with ctx >= the largest pos + 1.
	AttentionPattern(p, q *Tensor, kv *KVCache, layer int, seq, pos []int32)

	// AttentionApply writes dst[i, h] = Σ_{t<=pos[i]} p[i, h, t]·v_t over the cached values;
	// entries of p past a token's own position are not read.
	// p: (n, heads, ctx); dst: (n, heads·D).
	AttentionApply(dst, p *Tensor, kv *KVCache, layer int, seq, pos []int32)
}
