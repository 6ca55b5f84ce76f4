//go:build cuda

package gpu

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/tensor"
)

func (b *Backend) StoreKV(kv *tensor.KVCache, layer int, k, v *tensor.Tensor, seq, pos []int32) {
	width := kv.KVHeads * kv.HeadDim
	if k.Numel() != len(seq)*width || v.Numel() != k.Numel() || len(pos) != len(seq) {
		panic(fmt.Sprintf("gpu: store of k %v, v %v for %d tokens in a cache of %d×%d", k.Shape, v.Shape, len(seq), kv.KVHeads, kv.HeadDim))
	}
	f32("store kv", k, v)
	rows := make([]int32, len(seq))
	for i := range seq {
		rows[i] = int32(kv.Row(seq[i], pos[i]))
	}
	defer b.enter()()
	b.kvStore(dev(kv.K[layer]), dev(kv.V[layer]), kv.DType(), dev(k), dev(v), b.ints(rows), len(seq), width)
	b.done("store kv")
}

// prefillTile is the tokens one block of the prefill attention kernel takes; they must all
// belong to one sequence.
const prefillTile = 32

// blockTables flattens each token's block table into (n, maxBlocks), with ctx[i] = pos[i] + 1.
// Each row holds as much of its sequence's table as fits, not only the blocks of the token's own
// context: a prefill tile reads the keys of all its tokens through its first token's row.
func blockTables(kv *tensor.KVCache, seq, pos []int32) (ctx, table []int32, maxBlocks int) {
	ctx = make([]int32, len(seq))
	for i := range seq {
		ctx[i] = pos[i] + 1
		maxBlocks = max(maxBlocks, (int(ctx[i])+kv.BlockSize-1)/kv.BlockSize)
	}
	table = make([]int32, len(seq)*maxBlocks)
	for i := range seq {
		need := (int(ctx[i]) + kv.BlockSize - 1) / kv.BlockSize
		t := kv.Table(int(seq[i]))
		if len(t) < need {
			panic(fmt.Sprintf("gpu: KV cache position %d of sequence %d is not reserved", pos[i], seq[i]))
		}
		copy(table[i*maxBlocks:(i+1)*maxBlocks], t)
	}
	return ctx, table, maxBlocks
}

// usePrefill reports whether the flash-style kernel applies: enough tokens, and every tile of 32
// consecutive tokens within one sequence.
func usePrefill(seq []int32, dim int) bool {
	if len(seq) < 16 || dim > 256 {
		return false
	}
	for i := range seq {
		if seq[i] != seq[i/prefillTile*prefillTile] {
			return false
		}
	}
	return true
}

// prefillRows is the (query, head) rows one block of the tensor-core prefill kernel takes: rows
// are the pairs of a GQA group, query-major, so a block holds 64 / group queries.
const prefillRows = 64

// usePrefillMMA reports whether the tensor-core kernel applies: enough tokens, D ≤ 128 and a
// multiple of 4 (16-byte loads), and the queries of every block of 64 rows within one sequence.
func usePrefillMMA(seq []int32, dim, group int) bool {
	if len(seq) < 16 || dim > 128 || dim%4 != 0 {
		return false
	}
	rows := len(seq) * group
	for r0 := 0; r0 < rows; r0 += prefillRows {
		first, last := r0/group, (min(r0+prefillRows, rows)-1)/group
		for i := first + 1; i <= last; i++ {
			if seq[i] != seq[first] {
				return false
			}
		}
	}
	return true
}

// Attention runs causal GQA attention of n tokens over an F32 or BF16 cache. Prefill tiles of one
// sequence take the flash-style kernels (tensor cores: the pipelined one over a BF16 cache; or f32
// with ExactAttention, an F32 cache);
// every other token, and every token when Deterministic, the decode kernel, in launches of up to
// decodeBatch tokens so that its partial results stay small.
func (b *Backend) Attention(dst, q *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32) {
	if len(q.Shape) != 3 || q.Shape[0] != len(seq) || q.Shape[2] != kv.HeadDim || len(pos) != len(seq) ||
		q.Shape[1]%kv.KVHeads != 0 || dst.Numel() != q.Numel() || kv.HeadDim > 256 {
		panic(fmt.Sprintf("gpu: attention of q %v into %v over a cache of %d×%d for %d tokens", q.Shape, dst.Shape, kv.KVHeads, kv.HeadDim, len(seq)))
	}
	f32("attention", dst, q)
	n, heads, dim := len(seq), q.Shape[1], q.Shape[2]
	scale := float32(1 / math.Sqrt(float64(dim)))
	ctx, table, maxBlocks := blockTables(kv, seq, pos)
	dt := kv.DType()
	defer b.enter()()
	ctxDev := b.ints(ctx, table)
	tableDev := ctxDev + uint64(4*len(ctx))
	kc, vc := dev(kv.K[layer]), dev(kv.V[layer])
	if !b.Deterministic && dt == tensor.BF16 && dim%8 == 0 && usePrefillMMA(seq, dim, heads/kv.KVHeads) {
		b.attentionPrefillFA(dev(dst), dev(q), kc, vc, ctxDev, tableDev, n, maxBlocks, kv.BlockSize, heads, kv.KVHeads, dim, scale)
		b.done("attention (prefill, tensor cores, bf16 cache)")
		return
	}
	if !b.Deterministic && dt == tensor.F32 {
		if !b.ExactAttention && usePrefillMMA(seq, dim, heads/kv.KVHeads) {
			b.attentionPrefillMMA(dev(dst), dev(q), kc, vc, ctxDev, tableDev, n, maxBlocks, kv.BlockSize, heads, kv.KVHeads, dim, scale)
			b.done("attention (prefill, tensor cores)")
			return
		}
		if usePrefill(seq, dim) {
			b.attentionPrefill(dev(dst), dev(q), kc, vc, ctxDev, tableDev, n, maxBlocks, kv.BlockSize, heads, kv.KVHeads, dim, scale)
			b.done("attention (prefill)")
			return
		}
	}
	// The decode kernel takes positions: pos = ctx − 1, staged beside the tables.
	posDev := b.ints(pos)
	batch := min(n, decodeBatch)
	partials, counters := decodeScratch(batch, heads, kv.KVHeads, dim)
	part := b.scratch("decode attention partials", partials)
	count := b.decodeCounters(counters)
	for i0 := 0; i0 < n; i0 += decodeBatch {
		m := min(decodeBatch, n-i0)
		b.attentionDecodeGQA(dev(dst)+uint64(4*i0*heads*dim), dev(q)+uint64(4*i0*heads*dim), kc, vc, dt, posDev+uint64(4*i0),
			tableDev+uint64(4*i0*maxBlocks), maxBlocks, kv.BlockSize, dev(part), count, m, heads, kv.KVHeads, dim, scale)
	}
	b.Free(part)
	b.done("attention (decode)")
}

// decodeBatch is the most tokens one launch of the ops' decode attention takes.
const decodeBatch = 64

// decodeCounters is the address of n zeroed I32 counters for the ops' decode attention, which
// leaves them zero (the backend keeps one buffer, grown as needed).
func (b *Backend) decodeCounters(n int) uint64 {
	if b.attnCount == nil || b.attnCount.Numel() < n {
		b.Free(b.attnCount)
		b.attnCount = b.Alloc(tensor.I32, max(n, 1024))
	}
	return dev(b.attnCount)
}
