package tensor

import (
	"fmt"
	"math"
)

func (c *CPU) StoreKV(kv *KVCache, layer int, k, v *Tensor, seq, pos []int32) {
	width := kv.KVHeads * kv.HeadDim
	if k.Rows()*k.Cols() != len(seq)*width || v.Numel() != k.Numel() || len(pos) != len(seq) {
		panic(fmt.Sprintf("tensor: store of k %v, v %v for %d tokens in a cache of %d×%d", k.Shape, v.Shape, len(seq), kv.KVHeads, kv.HeadDim))
	}
	k.mustHost()
	v.mustHost()
	if k.DType != kv.DType() || v.DType != kv.DType() {
		panic(fmt.Sprintf("tensor: store of k %v, v %v in a %s KV cache", k, v, kv.DType()))
	}
	for i := range seq {
		r := kv.row(seq[i], pos[i])
		// Rows are copied as bytes: the cache holds the activations' own dtype.
		row := width * k.DType.Size()
		copy(kv.K[layer].Data[r*row:(r+1)*row], k.Data[i*row:(i+1)*row])
		copy(kv.V[layer].Data[r*row:(r+1)*row], v.Data[i*row:(i+1)*row])
	}
}

// attentionMode says which part of attention an attentionJob computes.
type attentionMode uint8

const (
	attend  attentionMode = iota // dst = softmax(q·kᵀ/√D)·v
	pattern                      // p = softmax(q·kᵀ/√D), zeros past each token's context
	apply                        // dst = p·v
)

// attentionJob computes the (token, head) pairs [lo, hi) (index i·heads + h) of one of the
// attention ops. Attention, and AttentionPattern followed by AttentionApply, run the same scores
// and the same sum in the same order, so the two paths agree bit for bit.
type attentionJob[T float] struct {
	mode                 attentionMode
	dst, q, p            []T // p: (n, heads, ctx)
	kv                   *KVCache
	k, v                 []T // this layer's cache: (rows, kvHeads, headDim)
	seq, pos             []int32
	heads, group, d, ctx int
	scale                T
	dot                  func(x, y []T) T
	scores               [][]T // per worker: one score per cached position
}

func (j *attentionJob[T]) run(worker, lo, hi int) {
	for item := lo; item < hi; item++ {
		i, h := item/j.heads, item%j.heads
		n := int(j.pos[i]) + 1
		var s []T
		switch j.mode {
		case attend:
			s = perWorker(j.scores, worker, n)
			j.probabilities(s, i, h)
		case pattern:
			row := j.p[item*j.ctx : (item+1)*j.ctx]
			s = row[:n]
			j.probabilities(s, i, h)
			clear(row[n:])
			continue
		case apply:
			s = j.p[item*j.ctx : item*j.ctx+n]
		}
		j.mix(j.dst[item*j.d:(item+1)*j.d], s, i, h)
	}
}

// probabilities writes the softmax over cached positions 0…pos[i] of token i's scores with head h.
func (j *attentionJob[T]) probabilities(s []T, i, h int) {
	kvWidth, kvh := j.kv.KVHeads*j.d, h/j.group
	q := j.q[(i*j.heads+h)*j.d : (i*j.heads+h+1)*j.d]
	for t := range s {
		r := j.kv.row(j.seq[i], int32(t))
		s[t] = j.dot(q, j.k[r*kvWidth+kvh*j.d:r*kvWidth+(kvh+1)*j.d]) * j.scale
	}
	softmax(s)
}

// mix writes out = Σ_t s[t]·v_t over the cached values of token i's sequence, kv head of h.
func (j *attentionJob[T]) mix(out, s []T, i, h int) {
	kvWidth, kvh := j.kv.KVHeads*j.d, h/j.group
	clear(out)
	for t, p := range s {
		r := j.kv.row(j.seq[i], int32(t))
		axpy(out, p, j.v[r*kvWidth+kvh*j.d:r*kvWidth+(kvh+1)*j.d])
	}
}

func (c *CPU) Attention(dst, q *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	checkAttention("attention", q, kv, seq, pos)
	if dst.Numel() != q.Numel() {
		panic(fmt.Sprintf("tensor: attention of q %v into %v", q.Shape, dst.Shape))
	}
	c.attention(attend, dst, q, nil, kv, layer, seq, pos)
}

// AttentionPattern writes the attention probabilities of each token and head over its sequence's
// cached positions: p[i, h, t] = softmax_t(q[i,h]·k_t / √D) for t <= pos[i], and 0 for the
// positions past it. p: (n, heads, ctx) with ctx >= the largest pos + 1; q: (n, heads, D); the cache
// must hold every position read, as for Attention.
func (c *CPU) AttentionPattern(p, q *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	checkAttention("attention pattern", q, kv, seq, pos)
	checkPattern("attention pattern", p, q.Shape[1], pos)
	c.attention(pattern, nil, q, p, kv, layer, seq, pos)
}

// AttentionApply mixes the cached values with given probabilities: dst[i, h] = Σ_{t<=pos[i]}
// p[i, h, t]·v_t, where v_t is position t of token i's sequence in kv head h / (heads / kv_heads).
// Entries of p past a token's own position are not read. AttentionPattern then AttentionApply is
// Attention, bit for bit; between the two a hook may read or replace the pattern.
// p: (n, heads, ctx); dst: (n, heads·D).
func (c *CPU) AttentionApply(dst, p *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	if len(pos) != len(seq) || len(p.Shape) != 3 || p.Shape[0] != len(seq) || p.Shape[1]%kv.KVHeads != 0 ||
		dst.Numel() != p.Shape[0]*p.Shape[1]*kv.HeadDim {
		panic(fmt.Sprintf("tensor: attention apply of p %v into %v over a cache of %d×%d for %d tokens", p.Shape, dst.Shape, kv.KVHeads, kv.HeadDim, len(seq)))
	}
	checkPattern("attention apply", p, p.Shape[1], pos)
	c.attention(apply, dst, nil, p, kv, layer, seq, pos)
}

func checkAttention(op string, q *Tensor, kv *KVCache, seq, pos []int32) {
	if len(q.Shape) != 3 || q.Shape[0] != len(seq) || q.Shape[2] != kv.HeadDim || len(pos) != len(seq) ||
		q.Shape[1]%kv.KVHeads != 0 {
		panic(fmt.Sprintf("tensor: %s of q %v over a cache of %d×%d for %d tokens", op, q.Shape, kv.KVHeads, kv.HeadDim, len(seq)))
	}
}

// checkPattern checks that p is (n, heads, ctx) with room for every token's context.
func checkPattern(op string, p *Tensor, heads int, pos []int32) {
	if len(p.Shape) != 3 || p.Shape[0] != len(pos) || p.Shape[1] != heads || p.Shape[2] < contextOf(pos) {
		panic(fmt.Sprintf("tensor: %s with a pattern of %v for %d tokens, %d heads and context %d", op, p.Shape, len(pos), heads, contextOf(pos)))
	}
}

// contextOf is the largest position + 1: the length of a pattern row.
func contextOf(pos []int32) int {
	ctx := 0
	for _, p := range pos {
		ctx = max(ctx, int(p)+1)
	}
	return ctx
}

func (c *CPU) attention(mode attentionMode, dst, q, p *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	switch activations("attention", dst, q, p, kv.K[layer]) {
	case F32:
		attention(&c.f32, mode, dst, q, p, kv, layer, seq, pos)
	case F64:
		attention(&c.f64, mode, dst, q, p, kv, layer, seq, pos)
	}
}

func attention[T float](jobs *cpuJobs[T], mode attentionMode, dst, q, p *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	j := &jobs.attention
	j.mode, j.dst, j.q, j.p, j.kv = mode, optElems[T](dst), optElems[T](q), optElems[T](p), kv
	j.k, j.v = elems[T](kv.K[layer]), elems[T](kv.V[layer])
	j.seq, j.pos = seq, pos
	j.d = kv.HeadDim
	if q != nil {
		j.heads = q.Shape[1]
	} else {
		j.heads = p.Shape[1]
	}
	if p != nil {
		j.ctx = p.Shape[2]
	}
	j.group = j.heads / kv.KVHeads
	j.scale = T(1 / math.Sqrt(float64(j.d)))
	j.dot = jobs.dot
	jobs.pool.parallel(len(seq)*j.heads, 1, j)
}
