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
	ks, vs := k.F32(), v.F32()
	kc, vc := kv.K[layer].F32(), kv.V[layer].F32()
	for i := range seq {
		r := kv.row(seq[i], pos[i])
		copy(kc[r*width:(r+1)*width], ks[i*width:(i+1)*width])
		copy(vc[r*width:(r+1)*width], vs[i*width:(i+1)*width])
	}
}

// attentionJob computes the output of (token, head) pairs [lo, hi): index i·heads + h.
type attentionJob struct {
	dst, q          []float32
	kv              *KVCache
	k, v            []float32 // this layer's cache: (rows, kvHeads, headDim)
	seq, pos        []int32
	heads, group, d int
	scale           float32
	scores          [][]float32 // per worker: one score per cached position
}

func (j *attentionJob) run(worker, lo, hi int) {
	kvWidth := j.kv.KVHeads * j.d
	for item := lo; item < hi; item++ {
		i, h := item/j.heads, item%j.heads
		kvh := h / j.group
		q := j.q[(i*j.heads+h)*j.d : (i*j.heads+h+1)*j.d]
		n := int(j.pos[i]) + 1
		if len(j.scores[worker]) < n {
			j.scores[worker] = make([]float32, max(n, 2*len(j.scores[worker])))
		}
		s := j.scores[worker][:n]
		for t := 0; t < n; t++ {
			r := j.kv.row(j.seq[i], int32(t))
			s[t] = dotF32(q, j.k[r*kvWidth+kvh*j.d:r*kvWidth+(kvh+1)*j.d]) * j.scale
		}
		softmax(s)
		out := j.dst[(i*j.heads+h)*j.d : (i*j.heads+h+1)*j.d]
		clear(out)
		for t := 0; t < n; t++ {
			r := j.kv.row(j.seq[i], int32(t))
			v := j.v[r*kvWidth+kvh*j.d : r*kvWidth+(kvh+1)*j.d]
			p := s[t]
			for e := range out {
				out[e] += p * v[e]
			}
		}
	}
}

func (c *CPU) Attention(dst, q *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	if len(q.Shape) != 3 || q.Shape[0] != len(seq) || q.Shape[2] != kv.HeadDim || len(pos) != len(seq) ||
		q.Shape[1]%kv.KVHeads != 0 || dst.Numel() != q.Numel() {
		panic(fmt.Sprintf("tensor: attention of q %v into %v over a cache of %d×%d for %d tokens", q.Shape, dst.Shape, kv.KVHeads, kv.HeadDim, len(seq)))
	}
	j := &c.attention
	j.dst, j.q, j.kv = dst.F32(), q.F32(), kv
	j.k, j.v = kv.K[layer].F32(), kv.V[layer].F32()
	j.seq, j.pos = seq, pos
	j.heads, j.d = q.Shape[1], q.Shape[2]
	j.group = j.heads / kv.KVHeads
	j.scale = float32(1 / math.Sqrt(float64(j.d)))
	c.pool.parallel(len(seq)*j.heads, 1, j)
}
