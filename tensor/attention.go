package tensor

import (
	"fmt"
	"math"
	"slices"
)

func (c *CPU) StoreKV(kv *KVCache, layer int, k, v *Tensor, seq, pos []int32) {
	width := kv.KVHeads * kv.HeadDim
	if k.Rows()*k.Cols() != len(seq)*width || v.Numel() != k.Numel() || len(pos) != len(seq) {
		panic(fmt.Sprintf("tensor: store of k %v, v %v for %d tokens in a cache of %d×%d", k.Shape, v.Shape, len(seq), kv.KVHeads, kv.HeadDim))
	}
	k.mustHost()
	v.mustHost()
	cache := kv.DType()
	if k.DType != v.DType || k.DType != cache && !(k.DType == F32 && cache == BF16) {
		panic(fmt.Sprintf("tensor: store of k %v, v %v in a %s KV cache", k, v, cache))
	}
	for i := range seq {
		r := kv.row(seq[i], pos[i])
		if cache == BF16 && k.DType == F32 {
			// F32 activations in a BF16 cache: each value rounded to nearest, ties to even.
			kern.narrowBF16(kv.K[layer].U16()[r*width:(r+1)*width], k.F32()[i*width:(i+1)*width])
			kern.narrowBF16(kv.V[layer].U16()[r*width:(r+1)*width], v.F32()[i*width:(i+1)*width])
			continue
		}
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

// attentionOps are the three steps of attention for the query heads of one token that share a kv
// head, on activations of type T: their scores against the sequence's cached keys, s[j·lds + t]
// for query j < len(q)/d and key t < n; the softmax of one row of scores in place; and the mix of
// the cached values the rows weigh, out[j·d + e] = Σ_t p[j·ldp + t]·v_t[e]. k and v are a layer's
// cache, head the element offset of the kv head within a row, off the element offsets of the rows
// (cacheRows.of). The backward pass runs them on the batch's own rows, and recomputes a softmax's
// elements bit for bit from the statistics it returns, with exp.
type attentionOps[T float] struct {
	scores  func(s []T, lds int, q []T, d int, k *Tensor, head int, off []int, n int, scale T)
	softmax func(x []T) (m, inv T) // returns what exp needs to recompute x: exp(x − m)·inv
	exp     func(x []T)
	mix     func(out []T, d int, p []T, ldp int, v *Tensor, head int, off []int, n int)
}

// attentionJob computes the items [lo, hi) of one of the attention ops: an item is a token and
// `per` query heads of it that read one kv head, all of the group (so that each cached row is read
// once for them) or, when the batch has too few tokens to keep every worker busy that way (a
// decode step), one. Attention, and AttentionPattern followed by AttentionApply, run the same
// scores, softmax and sum in the same order, so the two paths agree bit for bit; and each query's
// result depends only on its own query and cached rows, not on the batch around it or on the other
// queries of its item.
//
// Items are ordered by query head, so that a worker's items read the rows of few kv heads, and
// within a head the tokens alternate from both ends of the batch (0, n−1, 1, n−2, …): a prompt's
// later tokens attend to more positions, and alternation gives every contiguous range of items,
// which is what a worker takes, its share of the work.
type attentionJob[T float] struct {
	mode                 attentionMode
	ops                  attentionOps[T]
	dst, q, p            []T // p: (n, heads, ctx)
	k, v                 *Tensor
	rows                 cacheRows
	pos                  []int32
	heads, group, d, ctx int
	per                  int // query heads per item: group, or 1
	scale                T
	scores               [][]T // per worker: the item's scores, (per, positions)
}

func (j *attentionJob[T]) run(worker, lo, hi int) {
	tokens := len(j.pos)
	for item := lo; item < hi; {
		h0, i := j.item(item) // the item's first query head, and its token
		g := h0 / j.group
		// Single-head items of the same token and kv head that this worker has in a row (a
		// decode step's, ordered by head) run as one: each cached row is then read once for
		// all of them, as for a whole group. The result is the same, bit for bit.
		per := j.per
		for item+per < hi && j.per == 1 && tokens == 1 && (h0+per)/j.group == g {
			per++
		}
		item += per / j.per
		n := int(j.pos[i]) + 1
		off := j.rows.of(i, n)
		first := i*j.heads + h0 // the item's first query: index of (token, head)
		var s []T
		lds := j.ctx
		switch j.mode {
		case attend:
			s, lds = perWorker(j.scores, worker, per*n), n
		case pattern, apply:
			s = j.p[first*j.ctx : (first+per)*j.ctx]
		}
		if j.mode != apply {
			j.ops.scores(s, lds, j.q[first*j.d:(first+per)*j.d], j.d, j.k, g*j.d, off, n, j.scale)
			for h := range per {
				j.ops.softmax(s[h*lds : h*lds+n])
				if j.mode == pattern {
					clear(s[h*lds+n : (h+1)*lds])
				}
			}
		}
		if j.mode != pattern {
			j.ops.mix(j.dst[first*j.d:(first+per)*j.d], j.d, s, lds, j.v, g*j.d, off, n)
		}
	}
}

// item is the first query head and the token of item.
func (j *attentionJob[T]) item(item int) (h0, i int) {
	tokens := len(j.pos)
	h0, i = item/tokens*j.per, item%tokens
	if i%2 == 0 {
		return h0, i / 2
	}
	return h0, tokens - 1 - i/2
}

// cacheRows says where the cached positions of a batch's sequences lie in a layer's K and V, seen
// as (rows, KVHeads·HeadDim): the row of position t of token i's sequence starts at element
// off[start[i]+t]. Past each sequence's context the offsets repeat its first row up to a multiple
// of 16 positions, so that a kernel may read whole blocks of 16 rows and drop the extra scores.
// It is built once per op from the block tables, so the kernels never look a position up.
type cacheRows struct {
	off   []int
	start []int   // per token
	first []int   // per sequence id: where its offsets start
	ctx   []int32 // per sequence id: the positions the batch reads, 0 for none
}

// roundKeys is n rounded up to the kernels' block of 16 keys.
func roundKeys(n int) int { return (n + 15) &^ 15 }

func (c *cacheRows) build(kv *KVCache, seq, pos []int32) {
	seqs := 0
	for _, s := range seq {
		seqs = max(seqs, int(s)+1)
	}
	ctx := grow(&c.ctx, seqs)
	clear(ctx)
	for i, s := range seq {
		ctx[s] = max(ctx[s], pos[i]+1)
	}
	first := grow(&c.first, seqs)
	width, bs := kv.KVHeads*kv.HeadDim, kv.BlockSize
	c.off = c.off[:0]
	for s, n := range ctx {
		if n == 0 {
			continue
		}
		if int(n) > kv.Capacity(s) {
			panic(fmt.Sprintf("tensor: KV cache position %d of sequence %d is not reserved", n-1, s))
		}
		first[s] = len(c.off)
		table := kv.tables[s]
		for p := 0; p < int(n); p++ {
			c.off = append(c.off, (int(table[p/bs])*bs+p%bs)*width)
		}
		for range roundKeys(int(n)) - int(n) {
			c.off = append(c.off, c.off[first[s]])
		}
	}
	c.start = grow(&c.start, len(seq))
	for i, s := range seq {
		c.start[i] = first[s]
	}
}

// longest is the most positions any token of the batch reads.
func (c *cacheRows) longest() int { return int(slices.Max(c.ctx)) }

// of is the offsets of the first n positions of token i's sequence, padded as the kernels read them.
func (c *cacheRows) of(i, n int) []int {
	return c.off[c.start[i] : c.start[i]+roundKeys(n)]
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
	act := activations("attention", dst, q, p)
	if cache := kv.DType(); cache != act && !(act == F32 && cache == BF16) {
		panic(fmt.Sprintf("tensor: attention with %s activations over a %s KV cache", act, cache))
	}
	switch act {
	case F32:
		attention(&c.f32, mode, dst, q, p, kv, layer, seq, pos)
	case F64:
		attention(&c.f64, mode, dst, q, p, kv, layer, seq, pos)
	}
}

func attention[T float](jobs *cpuJobs[T], mode attentionMode, dst, q, p *Tensor, kv *KVCache, layer int, seq, pos []int32) {
	j := &jobs.attention
	j.mode, j.dst, j.q, j.p = mode, optElems[T](dst), optElems[T](q), optElems[T](p)
	j.k, j.v = kv.K[layer], kv.V[layer]
	j.rows.build(kv, seq, pos)
	j.pos = pos
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
	// Whole groups when there are enough of them for every worker several times over.
	j.per = j.group
	if len(seq)*kv.KVHeads < 4*jobs.pool.threads {
		j.per = 1
		if mode == attend && jobs.pool.threads > 1 && j.d%16 == 0 && j.rows.longest() >= splitMin {
			jobs.attnSplit.attend(jobs.pool, j)
			return
		}
	}
	jobs.pool.parallel(len(seq)*j.heads/j.per, 1, j)
}

// splitKeys is the keys of one scores item of a split attention, and splitMin the longest
// context from which a decode step's attention splits: below it the two extra hand-offs cost
// more than the balance wins.
const (
	splitKeys = 128
	splitMin  = 256
)

// attentionSplit runs a decode step's attention (a few tokens, each kv head's group a unit) in
// three steps whose work every worker shares evenly, where attentionJob would deal out query heads
// (SmolLM2: 9 heads, 3 kv heads, 2 workers: 5 heads against 4, and the kv head they share read
// by both): the scores of every group against blocks of splitKeys keys, the softmax of each
// query's whole row on the caller, and the mix of each group's values in slices of the head's
// elements. Each score is one key's dot product, each softmax runs over the whole row, and each
// output element sums over the keys in order with one accumulator whichever slice holds it, so
// the result is attentionJob's, bit for bit: only the split of the work differs.
type attentionSplit[T float] struct {
	j      *attentionJob[T]
	mixing bool
	s      []T   // (tokens, heads, lds): scores, then probabilities
	lds    int   // roundKeys of the longest context
	first  []int // per token: its first scores item; first[tokens] is the count
	width  int   // elements of a head's output that one mix item computes
	out    [][]T // per worker: a mix item's (group, width) output
}

func (a *attentionSplit[T]) attend(p *pool, j *attentionJob[T]) {
	tokens, groups := len(j.pos), j.heads/j.group
	a.j, a.mixing = j, false
	a.lds = roundKeys(j.rows.longest())
	a.s = grow(&a.s, tokens*j.heads*a.lds)
	a.first = grow(&a.first, tokens+1)
	items := 0
	for i, pos := range j.pos {
		a.first[i] = items
		items += groups * ((int(pos) + splitKeys) / splitKeys)
	}
	a.first[tokens] = items
	p.parallel(items, 1, a)
	for i, pos := range j.pos {
		n := int(pos) + 1
		for h := range j.heads {
			row := (i*j.heads + h) * a.lds
			j.ops.softmax(a.s[row : row+n])
		}
	}
	// Slices of 16 elements or more, enough of them for every worker twice over.
	a.width = j.d
	for a.width%32 == 0 && tokens*groups*(j.d/a.width) < 2*p.threads {
		a.width /= 2
	}
	a.mixing = true
	p.parallel(tokens*groups*(j.d/a.width), 1, a)
}

func (a *attentionSplit[T]) run(worker, lo, hi int) {
	j := a.j
	for item := lo; item < hi; item++ {
		if a.mixing {
			a.mix(worker, item)
			continue
		}
		i := 0
		for a.first[i+1] <= item {
			i++
		}
		n := int(j.pos[i]) + 1
		chunks := (n + splitKeys - 1) / splitKeys
		g, c := (item-a.first[i])/chunks, (item-a.first[i])%chunks
		k0 := c * splitKeys
		keys := min(n-k0, splitKeys)
		h0 := g * j.group
		off := j.rows.of(i, n)[k0 : k0+roundKeys(keys)]
		first := i*j.heads + h0
		j.ops.scores(a.s[first*a.lds+k0:], a.lds, j.q[first*j.d:(first+j.group)*j.d], j.d, j.k, g*j.d, off, keys, j.scale)
	}
}

// mix computes item's slice of its group's outputs: item = (token, kv head, slice).
func (a *attentionSplit[T]) mix(worker, item int) {
	j := a.j
	groups, parts := j.heads/j.group, j.d/a.width
	slice, g, i := item%parts, item/parts%groups, item/parts/groups
	n := int(j.pos[i]) + 1
	first := i*j.heads + g*j.group
	out := perWorker(a.out, worker, j.group*a.width)
	e0 := slice * a.width
	j.ops.mix(out, a.width, a.s[first*a.lds:], a.lds, j.v, g*j.d+e0, j.rows.of(i, n), n)
	for h := range j.group {
		copy(j.dst[(first+h)*j.d+e0:(first+h)*j.d+e0+a.width], out[h*a.width:(h+1)*a.width])
	}
}

// attentionGo is the portable form of the attention steps, on a cache of the activations' own
// dtype: the F64 path, and the reference of the F32 kernels.
func attentionGo[T float](dot func(x, y []T) T) attentionOps[T] {
	return attentionOps[T]{
		scores: func(s []T, lds int, q []T, d int, k *Tensor, head int, off []int, n int, scale T) {
			kk := elems[T](k)[head:]
			for j := 0; j < len(q)/d; j++ {
				for t := range n {
					s[j*lds+t] = dot(q[j*d:(j+1)*d], kk[off[t]:off[t]+d]) * scale
				}
			}
		},
		softmax: softmaxStats[T],
		exp:     expGo[T],
		mix: func(out []T, d int, p []T, ldp int, v *Tensor, head int, off []int, n int) {
			vv := elems[T](v)[head:]
			clear(out)
			for j := 0; j < len(out)/d; j++ {
				for t, pt := range p[j*ldp : j*ldp+n] {
					axpy(out[j*d:(j+1)*d], pt, vv[off[t]:off[t]+d])
				}
			}
		},
	}
}

// attentionF32 runs the attention steps with the CPU's kernels, on an F32 or BF16 cache.
var attentionF32 = attentionOps[float32]{
	scores: func(s []float32, lds int, q []float32, d int, k *Tensor, head int, off []int, n int, scale float32) {
		if k.DType == BF16 {
			kern.attnScoresBF16(s, lds, q, d, k.U16()[head:], off, n, scale)
		} else {
			kern.attnScoresF32(s, lds, q, d, k.F32()[head:], off, n, scale)
		}
	},
	softmax: func(x []float32) (m, inv float32) { return kern.softmaxF32(x) },
	exp:     func(x []float32) { kern.expF32(x) },
	mix: func(out []float32, d int, p []float32, ldp int, v *Tensor, head int, off []int, n int) {
		if v.DType == BF16 {
			kern.attnMixBF16(out, d, p, ldp, v.U16()[head:], off, n)
		} else {
			kern.attnMixF32(out, d, p, ldp, v.F32()[head:], off, n)
		}
	},
}
