//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"slices"

	"github.com/tillerlm/tiller/tensor"
)

// gradIndex indexes a batch that holds whole sequences from position 0, in any order, as the
// attention backward kernels read it (kernels/attention_backward.cu): rows[base_s + p] is the
// batch row of position p of sequence s, and each token has its sequence's base and length.
type gradIndex struct {
	n                      int
	rows, tbase, tlen, pos []int32
	base, lens             []int32 // per sequence of the batch, in ascending id order
}

// newGradIndex indexes the batch; a position missing or given twice is a programmer error, as on
// the CPU.
func newGradIndex(op string, seq, pos []int32) *gradIndex {
	if len(seq) != len(pos) {
		panic(fmt.Sprintf("gpu: %s of %d tokens with %d positions", op, len(seq), len(pos)))
	}
	length := map[int32]int32{}
	for i, s := range seq {
		if s < 0 || pos[i] < 0 {
			panic(fmt.Sprintf("gpu: %s: token %d has sequence %d, position %d", op, i, s, pos[i]))
		}
		length[s] = max(length[s], pos[i]+1)
	}
	ids := make([]int32, 0, len(length))
	for s := range length {
		ids = append(ids, s)
	}
	slices.Sort(ids)
	x := &gradIndex{n: len(seq), tbase: make([]int32, len(seq)), tlen: make([]int32, len(seq)), pos: pos}
	start := map[int32]int32{}
	total := int32(0)
	for _, s := range ids {
		start[s] = total
		x.base, x.lens = append(x.base, total), append(x.lens, length[s])
		total += length[s]
	}
	x.rows = make([]int32, total)
	for k := range x.rows {
		x.rows[k] = -1
	}
	for i, s := range seq {
		at := start[s] + pos[i]
		if int(at) < len(x.rows) && x.rows[at] >= 0 {
			panic(fmt.Sprintf("gpu: %s: position %d of sequence %d is in the batch twice (tokens %d and %d)", op, pos[i], s, x.rows[at], i))
		}
		x.rows[at] = int32(i)
		x.tbase[i], x.tlen[i] = start[s], length[s]
	}
	for k, r := range x.rows {
		if r < 0 {
			for j, s := range ids {
				if int32(k) >= x.base[j] && int32(k) < x.base[j]+x.lens[j] {
					panic(fmt.Sprintf("gpu: %s: sequence %d has position %d in the batch but not position %d; attention backward needs whole sequences from position 0",
						op, s, x.lens[j]-1, int32(k)-x.base[j]))
				}
			}
		}
	}
	return x
}

// tiles cuts every sequence into runs of at most per positions: (base, first position, count,
// length) each.
func (x *gradIndex) tiles(per int) []int32 {
	var t []int32
	for j, base := range x.base {
		for p0 := int32(0); p0 < x.lens[j]; p0 += int32(per) {
			t = append(t, base, p0, min(int32(per), x.lens[j]-p0), x.lens[j])
		}
	}
	return t
}

// device stages the per-token arrays: rows, tbase, pos and tlen.
func (x *gradIndex) device(b *Backend) (rows, tbase, pos, tlen uint64) {
	rows = b.ints(x.rows, x.tbase, x.pos, x.tlen)
	tbase = rows + uint64(4*len(x.rows))
	pos = tbase + uint64(4*x.n)
	tlen = pos + uint64(4*x.n)
	return rows, tbase, pos, tlen
}

func checkGradShapes(op string, q, k, v, dout *tensor.Tensor, seq []int32) {
	if len(q.Shape) != 3 || len(k.Shape) != 3 || q.Shape[2] != k.Shape[2] || q.Shape[1]%k.Shape[1] != 0 || q.Shape[0] != len(seq) ||
		k.Shape[0] != len(seq) || (v != nil && (v.Numel() != k.Numel() || v.Cols() != k.Cols())) || (dout != nil && dout.Numel() != q.Numel()) || q.Shape[2] > 256 {
		panic(fmt.Sprintf("gpu: %s of dout %v, q %v, k %v, v %v for %d tokens", op, dout, q.Shape, k.Shape, v, len(seq)))
	}
}

func gradShape(op string, grad, t *tensor.Tensor) {
	if grad != nil {
		sameShape(op, grad, t)
		f32(op, grad)
	}
}

// AttentionBackward is FlashAttention-2's backward over the batch's own tokens
// (kernels/attention_backward.cu): a pass by query saves each row's log-sum-exp and δ and adds
// dq, a pass by key adds dk and dv, the query heads of a kv group summed in registers.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v *tensor.Tensor, seq, pos []int32) {
	checkGradShapes("attention backward", q, k, v, dout, seq)
	gradShape("attention backward", dq, q)
	gradShape("attention backward", dk, k)
	gradShape("attention backward", dv, v)
	f32("attention backward", dout, q, k, v)
	if dq == nil && dk == nil && dv == nil {
		return
	}
	x := newGradIndex("attention backward", seq, pos)
	n, heads, kvHeads, dim := len(seq), q.Shape[1], k.Shape[1], q.Shape[2]
	scale := float32(1 / math.Sqrt(float64(dim)))
	tiles := x.tiles(attentionGradRows(dim))
	defer b.enter()()
	rows := b.ints(x.rows, tiles)
	tilesDev := rows + uint64(4*len(x.rows))
	lse := b.scratch("attention log-sum-exp", n*heads)
	delta := b.scratch("attention δ", n*heads)
	b.attentionBackwardRows(dev(dq), dev(lse), dev(delta), dev(q), dev(k), dev(v), dev(dout), rows, tilesDev, len(tiles)/4, heads, kvHeads, dim, scale)
	if dk != nil || dv != nil {
		b.attentionBackwardKeys(dev(dk), dev(dv), dev(lse), dev(delta), dev(q), dev(k), dev(v), dev(dout), rows, tilesDev, len(tiles)/4, heads, kvHeads, dim, scale)
	}
	b.Free(lse)
	b.Free(delta)
	b.done("attention backward")
}

// checkPatternShape: p is (n, heads, ctx) with ctx past every token's position.
func checkPatternShape(op string, p *tensor.Tensor, heads int, pos []int32) {
	if len(p.Shape) != 3 || p.Shape[0] != len(pos) || p.Shape[1] != heads {
		panic(fmt.Sprintf("gpu: %s: pattern %v for %d tokens of %d heads", op, p.Shape, len(pos), heads))
	}
	for i, q := range pos {
		if int(q) >= p.Shape[2] {
			panic(fmt.Sprintf("gpu: %s: token %d at position %d in a pattern of %d positions", op, i, q, p.Shape[2]))
		}
	}
}

// f32Cache panics unless kv is F32: the explicit attention path, for hooks on the pattern, reads
// the exact cache that analysis runs keep (llama.Runner.Record), never a BF16 one.
func f32Cache(op string, kv *tensor.KVCache) {
	if kv.DType() != tensor.F32 {
		panic(fmt.Sprintf("gpu: %s over a %s KV cache; it reads an F32 one", op, kv.DType()))
	}
}

func (b *Backend) AttentionPattern(p, q *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32) {
	if len(q.Shape) != 3 || q.Shape[0] != len(seq) || q.Shape[2] != kv.HeadDim || len(pos) != len(seq) || q.Shape[1]%kv.KVHeads != 0 || kv.HeadDim > 256 {
		panic(fmt.Sprintf("gpu: attention pattern of q %v over a cache of %d×%d for %d tokens", q.Shape, kv.KVHeads, kv.HeadDim, len(seq)))
	}
	checkPatternShape("attention pattern", p, q.Shape[1], pos)
	f32("attention pattern", p, q)
	f32Cache("attention pattern", kv)
	ctx, table, maxBlocks := blockTables(kv, seq, pos)
	defer b.enter()()
	ctxDev := b.ints(ctx, table)
	b.attentionPattern(dev(p), dev(q), dev(kv.K[layer]), ctxDev, ctxDev+uint64(4*len(ctx)), len(seq), maxBlocks, kv.BlockSize, q.Shape[1], kv.KVHeads,
		kv.HeadDim, p.Shape[2], float32(1/math.Sqrt(float64(kv.HeadDim))))
	b.done("attention pattern")
}

func (b *Backend) AttentionApply(dst, p *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32) {
	if len(p.Shape) != 3 || len(pos) != len(seq) || p.Shape[1]%kv.KVHeads != 0 || dst.Numel() != len(seq)*p.Shape[1]*kv.HeadDim {
		panic(fmt.Sprintf("gpu: attention apply of p %v into %v over a cache of %d×%d for %d tokens", p.Shape, dst.Shape, kv.KVHeads, kv.HeadDim, len(seq)))
	}
	checkPatternShape("attention apply", p, p.Shape[1], pos)
	f32("attention apply", dst, p)
	f32Cache("attention apply", kv)
	ctx, table, maxBlocks := blockTables(kv, seq, pos)
	defer b.enter()()
	ctxDev := b.ints(ctx, table)
	b.attentionApply(dev(dst), dev(p), dev(kv.V[layer]), ctxDev, ctxDev+uint64(4*len(ctx)), len(seq), maxBlocks, kv.BlockSize, p.Shape[1], kv.KVHeads,
		kv.HeadDim, p.Shape[2])
	b.done("attention apply")
}

func (b *Backend) AttentionApplyBackward(dp, dv, dout, p, v *tensor.Tensor, seq, pos []int32) {
	if len(p.Shape) != 3 || len(v.Shape) != 3 || p.Shape[1]%v.Shape[1] != 0 || v.Shape[0] != len(seq) || dout.Numel() != len(seq)*p.Shape[1]*v.Shape[2] {
		panic(fmt.Sprintf("gpu: attention apply backward of dout %v with p %v and v %v", dout.Shape, p.Shape, v.Shape))
	}
	checkPatternShape("attention apply backward", p, p.Shape[1], pos)
	gradShape("attention apply backward", dp, p)
	gradShape("attention apply backward", dv, v)
	f32("attention apply backward", dout, p, v)
	if dp == nil && dv == nil {
		return
	}
	x := newGradIndex("attention apply backward", seq, pos)
	defer b.enter()()
	b.attentionApplyBackward(dev(dp), dev(dv), dev(dout), dev(p), dev(v), x, p.Shape[1], v.Shape[1], v.Shape[2], p.Shape[2])
	b.done("attention apply backward")
}

func (b *Backend) AttentionPatternBackward(dq, dk, dp, p, q, k *tensor.Tensor, seq, pos []int32) {
	checkGradShapes("attention pattern backward", q, k, nil, nil, seq)
	checkPatternShape("attention pattern backward", p, q.Shape[1], pos)
	if dp == nil {
		panic("gpu: attention pattern backward without the pattern's gradient")
	}
	gradShape("attention pattern backward", dp, p)
	gradShape("attention pattern backward", dq, q)
	gradShape("attention pattern backward", dk, k)
	f32("attention pattern backward", p, q, k)
	if dq == nil && dk == nil {
		return
	}
	x := newGradIndex("attention pattern backward", seq, pos)
	heads, dim := q.Shape[1], q.Shape[2]
	defer b.enter()()
	delta := b.scratch("attention pattern δ", len(seq)*heads)
	b.attentionPatternBackward(dev(dq), dev(dk), dev(delta), dev(dp), dev(p), dev(q), dev(k), x, heads, k.Shape[1], dim, p.Shape[2], float32(1/math.Sqrt(float64(dim))))
	b.Free(delta)
	b.done("attention pattern backward")
}
