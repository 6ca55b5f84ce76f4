package tensor

import (
	"fmt"
	"math"
)

// The backward of attention runs in two passes, as FlashAttention-2's does, so that every gradient
// row has one owner and no two goroutines add into the same element:
//
//   - by query (token i, and the query heads of kv head g): recompute the scores and the softmax P
//     of each row, keep its maximum and 1/sum (so that the second pass recomputes P bit for bit)
//     and δ = Σ_t P⊙dP (dP = dout·vᵀ), and add the row's dq;
//   - by key (token j, kv head g): for every query of j's sequence at or after j's position and
//     every query head of the group, recompute P and dS = P⊙(dP − δ) of that one entry, and add
//     into dk[j, g] and dv[j, g].
//
// Both passes run on the forward's attention steps (attentionOps: the AVX-512 kernels with F32,
// the portable ones with F64) over the batch's own rows at element offsets: by query the rows are
// the sequence's keys and values, by key they are the later tokens' queries and output gradients,
// scored against the one key (q·k and k·q are the same sums in the same order, so P is the same
// bits). Nothing is kept but 3·n·heads numbers; the scores are computed twice.

// batchIndex finds the batch row of each (sequence, position) in a batch that holds whole
// sequences from position 0, in any order: the tokens a recorded forward attends to.
type batchIndex struct {
	start []int32 // per sequence id: where its rows begin in rows
	count []int32 // per sequence id: its number of positions
	rows  []int32 // batch rows grouped by sequence, in position order
}

// build indexes the batch; a position missing or given twice is a programmer error.
func (x *batchIndex) build(op string, seq, pos []int32) {
	seqs := 0
	for i, s := range seq {
		if s < 0 || pos[i] < 0 {
			panic(fmt.Sprintf("tensor: %s: token %d has sequence %d, position %d", op, i, s, pos[i]))
		}
		seqs = max(seqs, int(s)+1)
	}
	count := grow(&x.count, seqs)
	clear(count)
	for i, s := range seq {
		count[s] = max(count[s], pos[i]+1)
	}
	start := grow(&x.start, seqs)
	total := 0
	for s := range count {
		start[s] = int32(total)
		total += int(count[s])
		if total > len(seq) {
			break // positions missing: reported below
		}
	}
	if total > len(seq) {
		for s := range count {
			if count[s] > 0 {
				x.missing(op, seq, pos, int32(s))
			}
		}
		panic(fmt.Sprintf("tensor: %s: positions missing from the batch", op)) // not reached
	}
	rows := grow(&x.rows, total)
	for k := range rows {
		rows[k] = -1
	}
	for i, s := range seq {
		r := &rows[start[s]+pos[i]]
		if *r >= 0 {
			panic(fmt.Sprintf("tensor: %s: position %d of sequence %d is in the batch twice (tokens %d and %d)", op, pos[i], s, *r, i))
		}
		*r = int32(i)
	}
}

// missing panics naming the first position of sequence s the batch lacks, if it lacks one.
func (x *batchIndex) missing(op string, seq, pos []int32, s int32) {
	n := x.count[s]
	seen := make([]bool, n)
	for i := range seq {
		if seq[i] == s {
			seen[pos[i]] = true
		}
	}
	for p, ok := range seen {
		if !ok {
			panic(fmt.Sprintf("tensor: %s: sequence %d has position %d in the batch but not position %d; attention backward needs whole sequences from position 0", op, s, n-1, p))
		}
	}
}

// context is the batch rows of positions 0, 1, … of sequence s.
func (x *batchIndex) context(s int32) []int32 {
	return x.rows[x.start[s] : x.start[s]+x.count[s]]
}

// attentionPass names one pass of an attention backward op.
type attentionPass uint8

const (
	fusedQueries   attentionPass = iota // AttentionBackward by query: statistics and dq
	fusedKeys                           // AttentionBackward by key: dk, dv
	applyQueries                        // AttentionApplyBackward: dp
	applyKeys                           // AttentionApplyBackward: dv
	patternQueries                      // AttentionPatternBackward: δ and dq
	patternKeys                         // AttentionPatternBackward: dk
)

// attentionGradJob is one pass of one attention backward op over items [lo, hi): (token, head)
// pairs i·heads + h for the explicit path's pass by query, (token, kv head) pairs i·kvHeads + g
// for AttentionBackward's pass by query and every pass by key.
type attentionGradJob[T float] struct {
	pass                          attentionPass
	dq, dk, dv, dp                []T
	dout, q, k, v, p              []T
	seq, pos                      []int32
	idx                           *batchIndex
	heads, kvHeads, group, d, ctx int
	scale                         T
	dot                           func(x, y []T) T

	// AttentionBackward's operands as tensors for ops, and the element offsets of the rows of k
	// and v in the order of idx.rows, padded as cacheRows pads them.
	ops                  attentionOps[T]
	qT, kT, vT, doutT    *Tensor
	offKV                []int
	maxs, invs, deltas   []T     // (n, heads): each query row's softmax maximum and 1/sum, and Σ P⊙dP
	scores, dprobs, sums [][]T   // per worker: rows of P and of dP (or weights), and gradient rows
	offs                 [][]int // per worker: the offsets of the queries of a key
}

func (j *attentionGradJob[T]) run(worker, lo, hi int) {
	for item := lo; item < hi; item++ {
		switch j.pass {
		case fusedQueries:
			fusedQuery(j, worker, item)
		case fusedKeys:
			fusedKey(j, worker, item)
		case applyQueries:
			applyQuery(j, item)
		case applyKeys:
			applyKey(j, item)
		case patternQueries:
			patternQuery(j, item)
		case patternKeys:
			patternKey(j, item)
		}
	}
}

// Rows of the operands: query head h of token i, kv head g of token j.
func (j *attentionGradJob[T]) qRow(s []T, i, h int) []T {
	return s[(i*j.heads+h)*j.d : (i*j.heads+h+1)*j.d]
}
func (j *attentionGradJob[T]) kvRow(s []T, r, g int) []T {
	return s[(r*j.kvHeads+g)*j.d : (r*j.kvHeads+g+1)*j.d]
}
func (j *attentionGradJob[T]) pRow(s []T, i, h int) []T {
	return s[(i*j.heads+h)*j.ctx : (i*j.heads+h+1)*j.ctx]
}

// fusedQuery: for the query heads h of token i that read kv head g, P and dP of row (i, h), its
// statistics, and dq[i,h] += Σ_t dS_t·k_t/√D.
func fusedQuery[T float](j *attentionGradJob[T], worker, item int) {
	i, g := item/j.kvHeads, item%j.kvHeads
	n, d, group := int(j.pos[i])+1, j.d, j.group
	x0 := int(j.idx.start[j.seq[i]])
	off := j.offKV[x0 : x0+roundKeys(n)]
	first := i*j.heads + g*group // the group's first (token, head) row
	p := perWorker(j.scores, worker, group*n)
	dp := perWorker(j.dprobs, worker, group*n)
	j.ops.scores(p, n, j.q[first*d:(first+group)*d], d, j.kT, g*d, off, n, j.scale)
	j.ops.scores(dp, n, j.dout[first*d:(first+group)*d], d, j.vT, g*d, off, n, 1)
	for h := range group {
		ph, dph := p[h*n:(h+1)*n], dp[h*n:(h+1)*n]
		j.maxs[first+h], j.invs[first+h] = j.ops.softmax(ph)
		delta := j.dot(ph, dph)
		j.deltas[first+h] = delta
		for t := range ph {
			ph[t] *= (dph[t] - delta) * j.scale // now dS/√D
		}
	}
	if j.dq == nil {
		return
	}
	sum := perWorker(j.sums, worker, group*d)
	j.ops.mix(sum, d, p, n, j.kT, g*d, off, n)
	axpy(j.dq[first*d:(first+group)*d], 1, sum)
}

// fusedKey: dk[j,g] += Σ dS·q/√D and dv[j,g] += Σ P·dout over the queries that attend to token j.
func fusedKey[T float](j *attentionGradJob[T], worker, item int) {
	r, g := item/j.kvHeads, item%j.kvHeads
	queries := j.idx.context(j.seq[r])[j.pos[r]:]
	d, group := j.d, j.group
	n := len(queries) * group
	// The later tokens' query heads of the group: rows of q and of dout, (n, heads, D) alike; the
	// row of entry x is off[x]/D.
	off := perWorker(j.offs, worker, roundKeys(n))
	x := 0
	for _, i := range queries {
		for h := g * group; h < (g+1)*group; h++ {
			off[x] = (int(i)*j.heads + h) * d
			x++
		}
	}
	for ; x < len(off); x++ {
		off[x] = off[0]
	}
	// P of each entry, recomputed as fusedQuery formed it: exp(s − max)·(1/sum).
	p := perWorker(j.scores, worker, n)
	kv := (r*j.kvHeads + g) * d
	j.ops.scores(p, n, j.k[kv:kv+d], d, j.qT, 0, off, n, j.scale)
	for x := range p {
		p[x] -= j.maxs[off[x]/d]
	}
	j.ops.exp(p)
	for x := range p {
		p[x] *= j.invs[off[x]/d]
	}
	sum := perWorker(j.sums, worker, d)
	if j.dv != nil {
		j.ops.mix(sum, d, p, n, j.doutT, 0, off, n)
		axpy(j.dv[kv:kv+d], 1, sum)
	}
	if j.dk != nil {
		ds := perWorker(j.dprobs, worker, n)
		j.ops.scores(ds, n, j.v[kv:kv+d], d, j.doutT, 0, off, n, 1)
		for x := range ds {
			ds[x] = p[x] * (ds[x] - j.deltas[off[x]/d]) * j.scale
		}
		j.ops.mix(sum, d, ds, n, j.qT, 0, off, n)
		axpy(j.dk[kv:kv+d], 1, sum)
	}
}

// applyQuery: dp[i,h,t] += dout[i,h]·v_t for t <= pos[i].
func applyQuery[T float](j *attentionGradJob[T], item int) {
	i, h := item/j.heads, item%j.heads
	ctx := j.idx.context(j.seq[i])[:j.pos[i]+1]
	dp := j.pRow(j.dp, i, h)
	dout := j.qRow(j.dout, i, h)
	for t, r := range ctx {
		dp[t] += j.dot(dout, j.kvRow(j.v, int(r), h/j.group))
	}
}

// applyKey: dv[j,g] += Σ p[i,h,pos[j]]·dout[i,h] over the queries that attend to token j.
func applyKey[T float](j *attentionGradJob[T], item int) {
	r, g := item/j.kvHeads, item%j.kvHeads
	t := int(j.pos[r])
	for _, i32 := range j.idx.context(j.seq[r])[t:] {
		i := int(i32)
		for h := g * j.group; h < (g+1)*j.group; h++ {
			axpy(j.kvRow(j.dv, r, g), j.pRow(j.p, i, h)[t], j.qRow(j.dout, i, h))
		}
	}
}

// patternQuery: δ = Σ_t p⊙dp of row (i, h), and dq[i,h] += Σ_t dS_t·k_t/√D.
func patternQuery[T float](j *attentionGradJob[T], item int) {
	i, h := item/j.heads, item%j.heads
	ctx := j.idx.context(j.seq[i])[:j.pos[i]+1]
	p, dp := j.pRow(j.p, i, h)[:len(ctx)], j.pRow(j.dp, i, h)[:len(ctx)]
	delta := dotGo(p, dp)
	j.deltas[item] = delta
	if j.dq == nil {
		return
	}
	dq := j.qRow(j.dq, i, h)
	for t, r := range ctx {
		axpy(dq, p[t]*(dp[t]-delta)*j.scale, j.kvRow(j.k, int(r), h/j.group))
	}
}

// patternKey: dk[j,g] += Σ dS[i,h,pos[j]]·q[i,h]/√D over the queries that attend to token j.
func patternKey[T float](j *attentionGradJob[T], item int) {
	r, g := item/j.kvHeads, item%j.kvHeads
	t := int(j.pos[r])
	for _, i32 := range j.idx.context(j.seq[r])[t:] {
		i := int(i32)
		for h := g * j.group; h < (g+1)*j.group; h++ {
			q := i*j.heads + h
			ds := j.pRow(j.p, i, h)[t] * (j.pRow(j.dp, i, h)[t] - j.deltas[q])
			axpy(j.kvRow(j.dk, r, g), ds*j.scale, j.qRow(j.q, i, h))
		}
	}
}

func (c *CPU) AttentionBackward(dq, dk, dv, dout, q, k, v *Tensor, seq, pos []int32) {
	checkAttentionGrad("attention backward", q, k, v, dout, seq, pos)
	sameOptShape("attention backward", dq, q)
	sameOptShape("attention backward", dk, k)
	sameOptShape("attention backward", dv, v)
	switch activations("attention backward", dq, dk, dv, dout, q, k, v) {
	case F32:
		attentionBackward(&c.f32, dq, dk, dv, dout, q, k, v, seq, pos)
	case F64:
		attentionBackward(&c.f64, dq, dk, dv, dout, q, k, v, seq, pos)
	}
}

func (c *CPU) AttentionApplyBackward(dp, dv, dout, p, v *Tensor, seq, pos []int32) {
	if len(p.Shape) != 3 || len(v.Shape) != 3 || p.Shape[1]%v.Shape[1] != 0 || dout.Numel() != len(seq)*p.Shape[1]*v.Shape[2] {
		panic(fmt.Sprintf("tensor: attention apply backward of dout %v with p %v and v %v", dout.Shape, p.Shape, v.Shape))
	}
	checkGradBatch("attention apply backward", v, seq, pos)
	checkPattern("attention apply backward", p, p.Shape[1], pos)
	sameOptShape("attention apply backward", dp, p)
	sameOptShape("attention apply backward", dv, v)
	switch activations("attention apply backward", dp, dv, dout, p, v) {
	case F32:
		attentionApplyBackward(&c.f32, dp, dv, dout, p, v, seq, pos)
	case F64:
		attentionApplyBackward(&c.f64, dp, dv, dout, p, v, seq, pos)
	}
}

func (c *CPU) AttentionPatternBackward(dq, dk, dp, p, q, k *Tensor, seq, pos []int32) {
	if len(q.Shape) != 3 || len(k.Shape) != 3 || q.Shape[2] != k.Shape[2] || q.Shape[1]%k.Shape[1] != 0 {
		panic(fmt.Sprintf("tensor: attention pattern backward of q %v, k %v", q.Shape, k.Shape))
	}
	checkGradBatch("attention pattern backward", q, seq, pos)
	checkGradBatch("attention pattern backward", k, seq, pos)
	checkPattern("attention pattern backward", p, q.Shape[1], pos)
	sameOptShape("attention pattern backward", dp, p)
	if dp == nil {
		panic("tensor: attention pattern backward without the pattern's gradient")
	}
	sameOptShape("attention pattern backward", dq, q)
	sameOptShape("attention pattern backward", dk, k)
	switch activations("attention pattern backward", dq, dk, dp, p, q, k) {
	case F32:
		attentionPatternBackward(&c.f32, dq, dk, dp, p, q, k, seq, pos)
	case F64:
		attentionPatternBackward(&c.f64, dq, dk, dp, p, q, k, seq, pos)
	}
}

func checkAttentionGrad(op string, q, k, v, dout *Tensor, seq, pos []int32) {
	if len(q.Shape) != 3 || len(k.Shape) != 3 || q.Shape[2] != k.Shape[2] || q.Shape[1]%k.Shape[1] != 0 ||
		v.Numel() != k.Numel() || v.Cols() != k.Cols() || dout.Numel() != q.Numel() {
		panic(fmt.Sprintf("tensor: %s of dout %v, q %v, k %v, v %v", op, dout.Shape, q.Shape, k.Shape, v.Shape))
	}
	checkGradBatch(op, q, seq, pos)
	checkGradBatch(op, k, seq, pos)
}

func checkGradBatch(op string, t *Tensor, seq, pos []int32) {
	if len(seq) != len(pos) || t.Shape[0] != len(seq) {
		panic(fmt.Sprintf("tensor: %s of %v for %d tokens with %d positions", op, t.Shape, len(seq), len(pos)))
	}
}

func sameOptShape(op string, grad, t *Tensor) {
	if grad != nil && (grad.Numel() != t.Numel() || grad.Cols() != t.Cols()) {
		panic(fmt.Sprintf("tensor: %s: gradient %v for %v", op, grad.Shape, t.Shape))
	}
}

// attentionGrad indexes the batch and fills the fields every attention backward op uses.
func (jobs *cpuJobs[T]) attentionGrad(op string, heads, kvHeads, d, ctx int, seq, pos []int32) *attentionGradJob[T] {
	jobs.index.build(op, seq, pos)
	j := &jobs.attnGrad
	n := len(seq)
	*j = attentionGradJob[T]{
		seq: seq, pos: pos, idx: &jobs.index,
		heads: heads, kvHeads: kvHeads, group: heads / kvHeads, d: d, ctx: ctx,
		scale: T(1 / math.Sqrt(float64(d))), dot: jobs.dot, ops: jobs.attention.ops,
		maxs: grow(&j.maxs, n*heads), invs: grow(&j.invs, n*heads), deltas: grow(&j.deltas, n*heads),
		scores: j.scores, dprobs: j.dprobs, sums: j.sums, offs: j.offs, offKV: j.offKV,
	}
	return j
}

func attentionBackward[T float](jobs *cpuJobs[T], dq, dk, dv, dout, q, k, v *Tensor, seq, pos []int32) {
	if dq == nil && dk == nil && dv == nil {
		return
	}
	n, heads, kvHeads, d := q.Shape[0], q.Shape[1], k.Shape[1], q.Shape[2]
	j := jobs.attentionGrad("attention backward", heads, kvHeads, d, 0, seq, pos)
	j.dq, j.dk, j.dv = optElems[T](dq), optElems[T](dk), optElems[T](dv)
	j.dout, j.q, j.k, j.v = elems[T](dout), elems[T](q), elems[T](k), elems[T](v)
	j.qT, j.kT, j.vT, j.doutT = q, k, v, dout
	rows := jobs.index.rows
	j.offKV = grow(&j.offKV, len(rows)+16)
	for x := range j.offKV {
		j.offKV[x] = 0 // the padding: row 0, a row of every sequence's tensor
		if x < len(rows) {
			j.offKV[x] = int(rows[x]) * kvHeads * d
		}
	}
	j.pass = fusedQueries
	jobs.pool.parallel(n*kvHeads, 1, j)
	if dk != nil || dv != nil {
		j.pass = fusedKeys
		jobs.pool.parallel(n*kvHeads, 1, j)
	}
}

func attentionApplyBackward[T float](jobs *cpuJobs[T], dp, dv, dout, p, v *Tensor, seq, pos []int32) {
	n, heads, kvHeads, d := len(seq), p.Shape[1], v.Shape[1], v.Shape[2]
	j := jobs.attentionGrad("attention apply backward", heads, kvHeads, d, p.Shape[2], seq, pos)
	j.dp, j.dv, j.dout, j.p, j.v = optElems[T](dp), optElems[T](dv), elems[T](dout), elems[T](p), elems[T](v)
	if dp != nil {
		j.pass = applyQueries
		jobs.pool.parallel(n*heads, 1, j)
	}
	if dv != nil {
		j.pass = applyKeys
		jobs.pool.parallel(n*kvHeads, 1, j)
	}
}

func attentionPatternBackward[T float](jobs *cpuJobs[T], dq, dk, dp, p, q, k *Tensor, seq, pos []int32) {
	if dq == nil && dk == nil {
		return
	}
	n, heads, kvHeads, d := len(seq), q.Shape[1], k.Shape[1], q.Shape[2]
	j := jobs.attentionGrad("attention pattern backward", heads, kvHeads, d, p.Shape[2], seq, pos)
	j.dq, j.dk, j.dp, j.p, j.q, j.k = optElems[T](dq), optElems[T](dk), elems[T](dp), elems[T](p), elems[T](q), elems[T](k)
	j.pass = patternQueries
	jobs.pool.parallel(n*heads, 1, j)
	if dk != nil {
		j.pass = patternKeys
		jobs.pool.parallel(n*kvHeads, 1, j)
	}
}
