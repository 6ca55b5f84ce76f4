package llama

import (
	"fmt"
	"slices"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// Record is what a forward pass keeps for Backward, and nothing more. Per layer and token it holds
// the layer's input (resid_pre) and resid_mid, q and k after RoPE, v, z (each head's output), and
// the gate and up projections before SiLU; normalised inputs and silu(gate)⊙up are recomputed in
// the backward pass instead of kept. That is, per token,
//
//	layers × (2·d_model + 2·heads·d_head + 2·kv_heads·d_head + 2·d_mlp) + d_model
//
// values of the activation dtype: 47,104 × 32 + 4,096 floats ≈ 6.0 MB per token in F32 at the
// Llama-3.1-8B shape (BytesPerToken computes it).
//
// On a device (Runner.OnDevice) the record stays in the device's memory, where the backward pass
// reads it; Release gives it back.
type Record struct {
	batch  Batch
	layers []layerRecord
	final  *tensor.Tensor // (n, d_model) the residual stream after the last layer
	rows   []int32        // the tokens whose logits the forward returned, in order
	mem    *mem           // where the tensors above live
	// share is, with RecordAlong, where the unrecorded sequences take their prefixes' keys and
	// values from: after each layer stores the pass's keys and values, the recorded rows src are
	// stored again at (seq, pos) of the sequences that share them.
	share struct{ src, seq, pos []int32 }
}

// Release gives the record's memory back: to a device backend, or on the CPU to the runner, whose
// next recorded or backward pass reuses it. The record must not be used afterwards.
func (rec *Record) Release() {
	if rec == nil {
		return
	}
	for _, lr := range rec.layers {
		for _, t := range lr.own {
			rec.mem.free(t)
		}
	}
	if rec.final != nil {
		rec.mem.free(rec.final)
	}
	rec.layers, rec.final = nil, nil
}

// recorded is how many leading tokens of the pass the record keeps: its own batch's.
func (rec *Record) recorded() int { return len(rec.batch.Tokens) }

type layerRecord struct {
	x, mid   *tensor.Tensor // (n, d_model) resid_pre and resid_mid
	q        *tensor.Tensor // (n, heads, d_head) after RoPE
	k, v     *tensor.Tensor // (n, kv_heads, d_head), k after RoPE
	z        *tensor.Tensor // (n, heads, d_head)
	gate, up *tensor.Tensor // (n, d_mlp) before SiLU
	// own are the buffers the tensors above are cut from: those the forward pass wrote in place
	// hold the rows of every token of the pass, of which the record keeps the first n.
	own []*tensor.Tensor
}

// BytesPerToken is the memory a Record takes per token of the batch.
func (c *Config) BytesPerToken(act tensor.DType) int64 {
	perLayer := 2*c.Dim + 2*c.Heads*c.HeadDim + 2*c.KVHeads*c.HeadDim + 2*c.FFNDim
	return int64(c.Layers*perLayer+c.Dim) * int64(act.Size())
}

// AnalysisBytes estimates the memory, beyond the weights, that a recorded forward pass over tokens
// (of the given number of sequences) and its backward pass take in F32: the record, the runner's
// activations, the KV cache of the recording (blocks of 16 positions) and one layer's backward
// intermediates — what a device must hold at once; rows of logits come on top (vocab·4 bytes each).
// 6.9 MB per token at the Llama-3.1-8B shape.
func (c *Config) AnalysisBytes(tokens, sequences int) int64 {
	state := 4*c.Dim + 2*c.Heads*c.HeadDim + 2*c.KVHeads*c.HeadDim + 2*c.FFNDim // x, xn, proj, last, q, att, k, v, gate, up
	layer := 3*c.FFNDim + 8*c.Dim + 4*c.Heads*c.HeadDim + 6*c.KVHeads*c.HeadDim // the MLP's and attention's gradients and gathers
	kv := 2 * c.Layers * c.KVHeads * c.HeadDim * (tokens + 16*sequences)
	return c.BytesPerToken(tensor.F32)*int64(tokens) + int64(4*(state+layer)*tokens+4*kv)
}

// checkDevice reports a backend that keeps tensors in its own memory but cannot copy or free
// them, which recording and the backward pass need there.
func (r *Runner) checkDevice() error {
	if r.OnDevice() {
		if _, ok := r.Backend.(DeviceMemory); !ok {
			return fmt.Errorf("this backend keeps activations in its own memory but cannot copy them: no recorded forward pass or backward pass on it")
		}
	}
	return nil
}

// Record runs the batch forward like Forward, in a KV cache of its own, and keeps what Backward
// needs. Every sequence of the batch must be whole: its tokens at positions 0, 1, …, in order,
// since the backward pass attends over the batch itself. It returns the logits Forward would.
func (r *Runner) Record(b Batch, h *hooks.Set) (*Record, *tensor.Tensor, error) {
	if err := r.Model.Check(b); err != nil {
		return nil, nil, err
	}
	if err := r.checkDevice(); err != nil {
		return nil, nil, err
	}
	next := map[int32]int32{}
	for i, s := range b.Seq {
		if b.Pos[i] != next[s] {
			return nil, nil, fmt.Errorf("recording for the backward pass needs whole sequences: token %d of sequence %d is at position %d, want %d", i, s, b.Pos[i], next[s])
		}
		next[s]++
	}
	return r.record(b, h, Batch{}, nil)
}

// Shared is the prefix a sequence of RecordAlong's unrecorded batch takes from a recorded one:
// the keys and values of its positions [0, N).
type Shared struct {
	Seq int32 // the recorded sequence
	N   int32 // how many leading positions
}

// RecordAlong records the batch b as Record does, and runs the batch along in the same pass
// without recording it: one pass over the weights for both, the products of b's tokens and
// along's in one batch. along's sequences (ids not in b) each start at a position N > 0 when they
// share, in prefix, the keys and values of a recorded sequence's first N positions (two prompts
// that begin alike), else at 0. The hooks h see both batches, each token under its own sequence
// id. It returns the record of b alone and the logits of both: b's rows, then along's.
func (r *Runner) RecordAlong(b Batch, h *hooks.Set, along Batch, prefix map[int32]Shared) (*Record, *tensor.Tensor, error) {
	if err := r.Model.Check(b); err != nil {
		return nil, nil, err
	}
	if err := r.Model.Check(along); err != nil {
		return nil, nil, fmt.Errorf("unrecorded batch: %v", err)
	}
	recorded := map[int32]int32{} // sequence → its length in b
	for i, s := range b.Seq {
		recorded[s] = max(recorded[s], b.Pos[i]+1)
	}
	next := map[int32]int32{}
	for s, sh := range prefix {
		if n, ok := recorded[sh.Seq]; !ok || sh.N < 0 || sh.N > n {
			return nil, nil, fmt.Errorf("unrecorded sequence %d shares %d positions of sequence %d, which the recorded batch does not hold", s, sh.N, sh.Seq)
		}
		next[s] = sh.N
	}
	for i, s := range along.Seq {
		if _, ok := recorded[s]; ok {
			return nil, nil, fmt.Errorf("sequence %d is in both the recorded and the unrecorded batch", s)
		}
		if along.Pos[i] != next[s] {
			return nil, nil, fmt.Errorf("unrecorded sequence %d: token %d is at position %d, want %d", s, i, along.Pos[i], next[s])
		}
		next[s]++
	}
	return r.record(b, h, along, prefix)
}

// record is Record and RecordAlong: b recorded, along in the same pass.
func (r *Runner) record(b Batch, h *hooks.Set, along Batch, prefix map[int32]Shared) (*Record, *tensor.Tensor, error) {
	const block = 16
	positions := len(b.Tokens) + len(along.Tokens)
	for _, sh := range prefix {
		positions += int(sh.N) + block
	}
	seqs := map[int32]bool{}
	for _, s := range b.Seq {
		seqs[s] = true
	}
	kv := r.newKVCache(r.dtype(), positions+len(seqs)*block, block) // exact, whatever the precision
	rec := &Record{batch: Batch{
		Tokens: append([]int32(nil), b.Tokens...), Seq: append([]int32(nil), b.Seq...),
		Pos: append([]int32(nil), b.Pos...), Logits: b.logitFlags(),
	}, mem: r.mem()}
	defer r.FreeKVCache(kv)
	all := b
	if len(along.Tokens) > 0 {
		all = Batch{
			Tokens: append(append([]int32(nil), b.Tokens...), along.Tokens...),
			Seq:    append(append([]int32(nil), b.Seq...), along.Seq...),
			Pos:    append(append([]int32(nil), b.Pos...), along.Pos...),
			Logits: append(b.logitFlags(), along.logitFlags()...),
		}
		for s, sh := range prefix {
			for i := range b.Tokens {
				if b.Seq[i] == sh.Seq && b.Pos[i] < sh.N {
					rec.share.src = append(rec.share.src, int32(i))
					rec.share.seq = append(rec.share.seq, s)
					rec.share.pos = append(rec.share.pos, b.Pos[i])
				}
			}
		}
	}
	logits, err := r.forward(all, kv, h, rec)
	if err != nil {
		rec.Release()
		return nil, nil, err
	}
	return rec, logits, nil
}

// logitFlags is b.Logits spelled out: nil (the last token only) made explicit, so that batches
// can be joined.
func (b Batch) logitFlags() []bool {
	if b.Logits != nil {
		return append([]bool(nil), b.Logits...)
	}
	out := make([]bool, len(b.Tokens))
	if len(out) > 0 {
		out[len(out)-1] = true
	}
	return out
}

// PrefixKV stores the recorded keys and values of each sequence at positions below upto[seq]
// (none for a sequence without an entry) into the same sequence of kv, reserving room for them, so
// that a forward pass of another batch can start there: the keys and values of a prefix two runs
// share need computing once.
func (r *Runner) PrefixKV(rec *Record, kv *tensor.KVCache, upto map[int32]int32) error {
	b := rec.batch
	var rows, seq, pos []int32
	for i, s := range b.Seq {
		if b.Pos[i] < upto[s] {
			rows, seq, pos = append(rows, int32(i)), append(seq, s), append(pos, b.Pos[i])
		}
	}
	for s, n := range upto {
		if n > 0 && kv.Capacity(int(s)) < int(n) {
			if err := kv.Reserve(int(s), int(n)); err != nil {
				return err
			}
		}
	}
	if len(rows) == 0 {
		return nil
	}
	m := r.mem()
	defer m.release()
	for l := range rec.layers {
		r.Backend.StoreKV(kv, l, m.rowsOf(rec.layers[l].k, rows), m.rowsOf(rec.layers[l].v, rows), seq, pos)
	}
	return nil
}

// GradOptions say what Backward returns.
type GradOptions struct {
	Points  []hooks.Point // hook points whose gradients to return
	Weights bool          // also the gradient of every weight (on the CPU)
	// DropLayers are layers whose residual contributions pass no gradient (AtP*'s GradDrop): at
	// such a layer the gradient reaches resid_pre only through the skip connections, and every
	// point inside the layer (q, k, v, pattern, z, attn_out, mlp.hook_post, mlp_out) gets zero.
	DropLayers []int
	// From is, per sequence of the batch, the first position whose gradients are wanted (0 for a
	// sequence without an entry). A position's gradient comes only from itself and later positions
	// (attention is causal), so from From on the gradients are those of the whole pass, while the
	// pass skips the rows below it: AtP wants no gradient before a pair's first difference, and
	// then does a fraction of the backward's work. Points get zeros below From. Not with Weights,
	// whose gradients sum over every position.
	From map[int32]int32
	// Resumable keeps in the Grads the gradient at every layer's output, for passes that Resume.
	Resumable bool
	// Resume, with DropLayers, is a Resumable pass over the same record, logit gradient, From and
	// Points with no dropped layer. Above the highest dropped layer the two passes are the same, so
	// this one starts there from Resume's gradient, and its points above are Resume's (shared, not
	// copied): GradDrop's pass per layer then runs only the layers below it.
	Resume *Grads
	// Batched returns the gradients at Points as whole-batch tensors in the backend's memory
	// (Grads.Batch: (n, …) in batch order, the pattern (n, heads, ctx)) rather than split by
	// sequence into host memory (Grads.Points stays empty): for consumers on the same device,
	// such as attribution scores reduced there, so that no gradient crosses to the host.
	Batched bool
	// Into is the cache the gradients at Points go into, emptied by hooks.Cache.Recycle so that
	// they reuse its memory; nil makes a new one.
	Into *hooks.Cache
}

// Grads are the gradients of a scalar metric.
type Grads struct {
	Points  *hooks.Cache                   // at hook points, by sequence, in each point's per-sequence shape
	Batch   map[hooks.Point]*tensor.Tensor // with GradOptions.Batched: at hook points, the whole batch
	Weights map[string]*tensor.Tensor      // by checkpoint tensor name, in the activation dtype
	outputs []layerGrad                    // with GradOptions.Resumable: per layer, at its output
	mem     *mem                           // where Batch and outputs live
	shared  map[*tensor.Tensor]bool        // Batch entries that belong to the Resume pass
}

// Release gives the memory of Batch and of a Resumable pass's outputs back to a device backend (on
// the CPU it is garbage like any other). Passes that resumed from g must be released first.
func (g *Grads) Release() {
	if g == nil || g.mem == nil || !g.mem.onDevice() {
		return
	}
	freed := map[*tensor.Tensor]bool{}
	free := func(t *tensor.Tensor) {
		if t != nil && !freed[t] && !g.shared[t] {
			freed[t] = true
			g.mem.dev.Free(t)
		}
	}
	for _, t := range g.Batch {
		free(t)
	}
	for _, o := range g.outputs {
		free(o.dx)
	}
	g.Batch, g.outputs = nil, nil
}

// layerGrad is the gradient at a layer's output (resid_post), (n, d_model) in batch order, and the
// rows it may be nonzero on.
type layerGrad struct {
	dx   *tensor.Tensor
	live []int32
}

// Backward propagates dlogits — the gradient of a scalar metric with respect to the logits the
// recorded forward returned, (rows, vocab), in host memory — back through the model, by the
// hand-written backward of every op, and returns the gradients asked for. The backend must
// implement tensor.Backward; on a device it computes activation gradients only (no Weights), with
// the record and every intermediate in its memory.
func (r *Runner) Backward(rec *Record, dlogits *tensor.Tensor, opt GradOptions) (*Grads, error) {
	bb, ok := r.Backend.(tensor.Backward)
	if !ok {
		return nil, fmt.Errorf("this backend has no backward pass (use the CPU)")
	}
	if err := r.checkDevice(); err != nil {
		return nil, err
	}
	m, c := r.Model, r.Model.Config
	if dlogits.Rows() != len(rec.rows) || dlogits.Cols() != c.Vocab || dlogits.DType != r.dtype() || !dlogits.OnHost() {
		return nil, fmt.Errorf("logit gradient is %v, want %s(%d, %d) in host memory", dlogits, r.dtype(), len(rec.rows), c.Vocab)
	}
	if opt.Weights && len(opt.From) > 0 {
		return nil, fmt.Errorf("weight gradients sum over every position: GradOptions.From must be empty with Weights")
	}
	if opt.Weights && r.OnDevice() {
		return nil, fmt.Errorf("weight gradients are computed on the CPU only; on a device the backward pass gives activation gradients")
	}
	if rs := opt.Resume; rs != nil && (rs.outputs == nil || len(opt.DropLayers) == 0 || opt.Weights) {
		return nil, fmt.Errorf("GradOptions.Resume needs a Resumable pass's Grads, dropped layers, and no weight gradients")
	}
	b := rec.batch
	mm := r.mem()
	defer mm.release()
	dims := c.HookDims()
	g := &Grads{Points: opt.Into, mem: mm}
	if g.Points == nil {
		g.Points = hooks.NewCache()
	}
	if opt.Batched {
		g.Batch = map[hooks.Point]*tensor.Tensor{}
	}
	want := map[hooks.Point]bool{}
	for _, p := range opt.Points {
		want[p] = true
	}
	// put hands a gradient to the Grads: a copy of the batch tensor (Batched), or its rows split by
	// sequence into host memory.
	put := func(p hooks.Point, t *tensor.Tensor, seq, pos []int32) {
		switch {
		case !want[p]:
		case opt.Batched:
			g.Batch[p] = mm.clone(t)
		default:
			g.Points.Put(p, dims, mm.host(t), seq, pos)
		}
	}
	wg := newWeightGrads(opt.Weights, r.dtype())

	// live are the rows whose gradient may be nonzero and is wanted, ascending; the matmuls and
	// row-wise ops run on them alone, and every other row of dx stays zero. Through the last
	// layer's MLP they are the rows with logits; each attention block extends them to the earlier
	// wanted positions of their sequences.
	top, live := c.Layers-1, liveRows(b, rec.rows, opt.From)
	var dx *tensor.Tensor
	if opt.Resume == nil {
		dx = r.unembedBackward(bb, mm, rec, dlogits, opt, wg, put)
	} else {
		top = slices.Max(opt.DropLayers)
		dx, live = opt.Resume.outputs[top].dx, opt.Resume.outputs[top].live
		g.shared = map[*tensor.Tensor]bool{}
		for _, p := range opt.Points {
			if p.Layer > top || p.Kind == hooks.FinalNorm {
				if opt.Batched {
					if t := opt.Resume.Batch[p]; t != nil {
						g.Batch[p], g.shared[t] = t, true
					}
					continue
				}
				for _, s := range opt.Resume.Points.Seqs() {
					if t, ok := opt.Resume.Points.Get(s, p.Name()); ok {
						g.Points.Set(s, p.Name(), t)
					}
				}
			}
		}
	}
	if opt.Resumable {
		g.outputs = make([]layerGrad, c.Layers)
	}
	for l := top; l >= 0; l-- {
		if opt.Resumable {
			// The Grads keep the gradient at this layer's output; temporaries of the pass do not.
			mm.keep(dx)
			g.outputs[l] = layerGrad{dx, live}
		}
		w, lr := &m.Layers[l], &rec.layers[l]
		at := func(k hooks.Kind, t *tensor.Tensor) { put(hooks.Point{Layer: l, Kind: k}, t, b.Seq, b.Pos) }
		at(hooks.ResidPost, dx)
		if slices.Contains(opt.DropLayers, l) {
			r.dropLayer(l, dx, rec, mm, want, put)
			continue
		}
		dx, live = r.layerBackward(bb, mm, l, w, lr, b, dx, live, opt, want, wg, at)
		// Only dx goes on to the layer below: every other temporary of this layer goes back now,
		// so that a device holds one layer's intermediates at a time.
		carried := !slices.ContainsFunc(g.outputs, func(o layerGrad) bool { return o.dx == dx })
		if carried {
			mm.keep(dx)
		}
		mm.release()
		if carried {
			mm.track(dx)
		}
	}
	put(hooks.Point{Layer: -1, Kind: hooks.Embed}, dx, b.Seq, b.Pos)
	if opt.Weights {
		bb.EmbeddingBackward(wg.of(m.Embed), dx, b.Tokens)
		g.Weights = map[string]*tensor.Tensor{}
		for _, w := range m.Weights() {
			if t := wg.grads[*w.Dst]; t != nil {
				g.Weights[w.Name] = t
			}
		}
	}
	return g, nil
}

// layerBackward is the backward of decoder block l from dx, the gradient at its output, on the
// rows live; it returns the gradient at its input and the rows that one may be nonzero on.
func (r *Runner) layerBackward(bb tensor.Backward, mm *mem, l int, w *Layer, lr *layerRecord, b Batch, dx *tensor.Tensor, live []int32,
	opt GradOptions, want map[hooks.Point]bool, wg *weightGrads, at func(hooks.Kind, *tensor.Tensor)) (*tensor.Tensor, []int32) {
	c := r.Model.Config
	n, k := len(b.Tokens), len(live)

	// MLP block: x_post = x_mid + down(silu(gate(n2)) ⊙ up(n2)), n2 = rmsnorm(x_mid).
	at(hooks.MLPOut, dx)
	dxL, gate, up, mid := mm.rowsOf(dx, live), mm.rowsOf(lr.gate, live), mm.rowsOf(lr.up, live), mm.rowsOf(lr.mid, live)
	// The inputs of the projections (silu(gate)⊙up, and the normalised residuals below) enter
	// only their weights' gradients: without those they are not recomputed, and the
	// recorded tensor of the same shape stands in for MatMulBackward's shape check.
	post := gate
	if opt.Weights {
		post = mm.alloc(k, c.FFNDim)
		bb.SiLUMul(post, gate, up)
	}
	dpost := mm.alloc(k, c.FFNDim)
	bb.MatMulBackward(dpost, wg.of(w.WDown), wg.of(w.BDown), dxL, post, w.WDown)
	if want[hooks.Point{Layer: l, Kind: hooks.MLPPost}] {
		at(hooks.MLPPost, mm.spread(dpost, live, n))
	}
	dgate, dup := mm.alloc(k, c.FFNDim), mm.alloc(k, c.FFNDim)
	bb.SiLUMulBackward(dgate, dup, dpost, gate, up)
	n2 := mid
	if opt.Weights {
		n2 = mm.alloc(k, c.Dim)
		bb.RMSNorm(n2, mid, w.MLPNorm, c.NormEps)
	}
	dn2 := mm.alloc(k, c.Dim)
	bb.MatMulBackward(dn2, wg.of(w.WGate), wg.of(w.BGate), dgate, n2, w.WGate)
	bb.MatMulBackward(dn2, wg.of(w.WUp), wg.of(w.BUp), dup, n2, w.WUp)
	dmidL := mm.copyOf(dxL)
	bb.RMSNormBackward(dmidL, wg.of(w.MLPNorm), dn2, mid, w.MLPNorm, c.NormEps)
	dmid := mm.spread(dmidL, live, n)
	at(hooks.ResidMid, dmid)

	// Attention block: x_mid = x_pre + o_proj(z), z = attention(rope(q), rope(k), v) of n1 = rmsnorm(x_pre).
	at(hooks.AttnOut, dmid)
	dzL := mm.alloc(k, c.Heads*c.HeadDim)
	bb.MatMulBackward(dzL, wg.of(w.WO), wg.of(w.BO), dmidL, mm.rowsOf(lr.z.Reshape(n, c.Heads*c.HeadDim), live), w.WO)
	dz := mm.spread(dzL, live, n)
	at(hooks.Z, dz.Reshape(n, c.Heads, c.HeadDim))
	dq := mm.alloc(n, c.Heads, c.HeadDim)
	dk, dv := mm.alloc(n, c.KVHeads, c.HeadDim), mm.alloc(n, c.KVHeads, c.HeadDim)
	if p := (hooks.Point{Layer: l, Kind: hooks.Pattern}); want[p] {
		// Through the probabilities explicitly, to stop at them: dP = dz·Vᵀ, then the softmax.
		pattern := r.pattern(bb, mm, lr, b)
		dp := mm.alloc(pattern.Shape...)
		bb.AttentionApplyBackward(dp, dv, dz, pattern, lr.v, b.Seq, b.Pos)
		at(hooks.Pattern, dp)
		bb.AttentionPatternBackward(dq, dk, dp, pattern, lr.q, lr.k, b.Seq, b.Pos)
	} else {
		bb.AttentionBackward(dq, dk, dv, dz, lr.q, lr.k, lr.v, b.Seq, b.Pos)
	}
	live = extendRows(b, live, opt.From)
	k = len(live)
	dk = mm.keepRows(dk, live) // keys and values below From pass gradient to nothing wanted
	dv = mm.keepRows(dv, live)
	bb.RoPEBackward(dq, b.Pos, r.Model.InvFreq)
	bb.RoPEBackward(dk, b.Pos, r.Model.InvFreq)
	at(hooks.Q, dq)
	at(hooks.K, dk)
	at(hooks.V, dv)
	x := mm.rowsOf(lr.x, live)
	n1 := x
	if opt.Weights {
		n1 = mm.alloc(k, c.Dim)
		bb.RMSNorm(n1, x, w.AttnNorm, c.NormEps)
	}
	dn1 := mm.alloc(k, c.Dim)
	bb.MatMulBackward(dn1, wg.of(w.WQ), wg.of(w.BQ), mm.rowsOf(dq.Reshape(n, c.Heads*c.HeadDim), live), n1, w.WQ)
	bb.MatMulBackward(dn1, wg.of(w.WK), wg.of(w.BK), mm.rowsOf(dk.Reshape(n, c.KVHeads*c.HeadDim), live), n1, w.WK)
	bb.MatMulBackward(dn1, wg.of(w.WV), wg.of(w.BV), mm.rowsOf(dv.Reshape(n, c.KVHeads*c.HeadDim), live), n1, w.WV)
	dpreL := mm.copyOf(mm.rowsOf(dmid, live))
	bb.RMSNormBackward(dpreL, wg.of(w.AttnNorm), dn1, x, w.AttnNorm, c.NormEps)
	dx = mm.spread(dpreL, live, n)
	at(hooks.ResidPre, dx)
	return dx, live
}

// unembedBackward is the backward of logits = lm_head(rmsnorm(x_final)) at the recorded rows: the
// gradient at the last layer's output, (n, d_model) in batch order, zero on rows without logits
// and on those below From.
func (r *Runner) unembedBackward(bb tensor.Backward, mm *mem, rec *Record, dlogits *tensor.Tensor, opt GradOptions, wg *weightGrads, put func(hooks.Point, *tensor.Tensor, []int32, []int32)) *tensor.Tensor {
	m, c, b := r.Model, r.Model.Config, rec.batch
	mRows := len(rec.rows)
	rowSeq, rowPos := make([]int32, mRows), make([]int32, mRows)
	for i, t := range rec.rows {
		rowSeq[i], rowPos[i] = b.Seq[t], b.Pos[t]
	}
	xl := mm.alloc(mRows, c.Dim)
	bb.Embedding(xl, rec.final, rec.rows)
	xln := mm.alloc(mRows, c.Dim)
	bb.RMSNorm(xln, xl, m.Norm, c.NormEps)
	dxln := mm.alloc(mRows, c.Dim)
	if !sparseUnembedBackward(bb, mm, dxln, xln, dlogits, m.LMHead, opt.Weights) {
		dl := bb.Upload(dlogits)
		if dl != dlogits {
			mm.track(dl)
		}
		bb.MatMulBackward(dxln, wg.of(m.LMHead), nil, dl, xln, m.LMHead)
	}
	var wanted []int32
	for i := range rec.rows {
		if rowPos[i] >= opt.From[rowSeq[i]] {
			wanted = append(wanted, int32(i))
		}
	}
	dxln = mm.keepRows(dxln, wanted)
	put(hooks.Point{Layer: -1, Kind: hooks.FinalNorm}, dxln, rowSeq, rowPos)
	dxl := mm.alloc(mRows, c.Dim)
	bb.RMSNormBackward(dxl, wg.of(m.Norm), dxln, xl, m.Norm, c.NormEps)
	dx := mm.alloc(len(b.Tokens), c.Dim)
	bb.EmbeddingBackward(dx, dxl, rec.rows) // scatter the rows back into the batch
	return dx
}

// sparseUnembedBackward is the LM head's backward, dxln += dlogits·lm_head, for a metric that reads
// few logits: a logit difference has two nonzero columns per row, so each row of dxln is a sum of
// two rows of the head, gathered, where the product would stream the whole (vocab, d_model) head
// and cost about a quarter of a forward pass of a 64-token prompt at the Llama-3.2-1B shape. On a
// device the gathered rows are combined by a small product with the coefficients (rows, columns),
// uploaded; xln (rows, d_model) only gives that product's shape. It reports false, doing nothing,
// when weight gradients are wanted or the gradient has more than 64 distinct nonzero columns (a
// log-probability's is dense); the product with the whole head is then the way.
func sparseUnembedBackward(bb tensor.Backward, mm *mem, dxln, xln, dlogits, head *tensor.Tensor, weights bool) bool {
	if weights {
		return false
	}
	rows, vocab := dlogits.Rows(), dlogits.Cols()
	at := func(i int) float64 {
		if dlogits.DType == tensor.F64 {
			return dlogits.F64()[i]
		}
		return float64(dlogits.F32()[i])
	}
	type term struct {
		col int // index into cols
		v   float64
	}
	index := map[int32]int{}
	var cols []int32
	terms := make([][]term, rows)
	for r := 0; r < rows; r++ {
		for j := 0; j < vocab; j++ {
			v := at(r*vocab + j)
			if v == 0 {
				continue
			}
			k, ok := index[int32(j)]
			if !ok {
				if len(cols) == 64 {
					return false
				}
				k = len(cols)
				index[int32(j)] = k
				cols = append(cols, int32(j))
			}
			terms[r] = append(terms[r], term{k, v})
		}
	}
	if len(cols) == 0 {
		return true // a metric that ignores the logits: nothing flows back
	}
	d := head.Cols()
	gathered := mm.alloc(len(cols), d)
	bb.Embedding(gathered, head, cols) // the head's rows, widened to the activation dtype
	if mm.onDevice() {
		coef := make([]float32, rows*len(cols))
		for r, ts := range terms {
			for _, t := range ts {
				coef[r*len(cols)+t.col] = float32(t.v)
			}
		}
		cd := bb.Upload(tensor.FromF32(coef, rows, len(cols)))
		mm.track(cd)
		bb.MatMulBackward(dxln, nil, nil, cd, xln, gathered)
		return true
	}
	g := gathered.ToF64()
	for r, ts := range terms {
		for _, t := range ts {
			src := g[t.col*d : (t.col+1)*d]
			if dxln.DType == tensor.F64 {
				dst := dxln.F64()[r*d : (r+1)*d]
				for i, x := range src {
					dst[i] += t.v * x
				}
			} else {
				dst := dxln.F32()[r*d : (r+1)*d]
				for i, x := range src {
					dst[i] += float32(t.v * x)
				}
			}
		}
	}
	return true
}

// dropLayer is the backward of layer l with its residual contributions cut off from the gradient:
// x_post = x_pre + (attn_out + mlp_out) with d(attn_out) = d(mlp_out) = 0, so the gradient passes
// to resid_mid and resid_pre unchanged and every point inside the layer gets zeros (weights too).
func (r *Runner) dropLayer(l int, dx *tensor.Tensor, rec *Record, mm *mem, want map[hooks.Point]bool, put func(hooks.Point, *tensor.Tensor, []int32, []int32)) {
	b, dims := rec.batch, r.Model.Config.HookDims()
	n := len(b.Tokens)
	ctx := int32(0)
	for _, p := range b.Pos {
		ctx = max(ctx, p+1)
	}
	for _, k := range []hooks.Kind{hooks.MLPOut, hooks.MLPPost, hooks.AttnOut, hooks.Z, hooks.Pattern, hooks.Q, hooks.K, hooks.V} {
		p := hooks.Point{Layer: l, Kind: k}
		if !want[p] {
			continue
		}
		shape := append([]int{n}, dims.Shape(p, 1)[1:]...)
		if k == hooks.Pattern {
			shape = []int{n, dims.Heads, int(ctx)}
		}
		put(p, mm.alloc(shape...), b.Seq, b.Pos)
	}
	put(hooks.Point{Layer: l, Kind: hooks.ResidMid}, dx, b.Seq, b.Pos)
	put(hooks.Point{Layer: l, Kind: hooks.ResidPre}, dx, b.Seq, b.Pos)
}

// pattern recomputes a recorded layer's attention probabilities (n, heads, ctx) from its q, k and v,
// through a one-layer KV cache of the batch's own tokens.
func (r *Runner) pattern(bb tensor.Backward, mm *mem, lr *layerRecord, b Batch) *tensor.Tensor {
	c := r.Model.Config
	const block = 16
	seqs, ctx := map[int32]int32{}, int32(0)
	for i, s := range b.Seq {
		seqs[s] = max(seqs[s], b.Pos[i]+1)
		ctx = max(ctx, b.Pos[i]+1)
	}
	blocks := 0
	for _, n := range seqs {
		blocks += (int(n) + block - 1) / block
	}
	kv := tensor.NewKVCacheOf(bb, r.dtype(), 1, c.KVHeads, c.HeadDim, block, blocks)
	defer r.FreeKVCache(kv)
	for s, n := range seqs {
		if err := kv.Reserve(int(s), int(n)); err != nil {
			panic(fmt.Sprintf("llama: %v", err)) // sized above to fit exactly
		}
	}
	bb.StoreKV(kv, 0, lr.k, lr.v, b.Seq, b.Pos)
	p := mm.alloc(len(b.Tokens), c.Heads, int(ctx))
	bb.AttentionPattern(p, lr.q, kv, 0, b.Seq, b.Pos)
	return p
}

// weightGrads maps each weight tensor to its gradient, allocated on first use; a tied LM head
// shares the embedding's. When weight gradients are not wanted it hands out nil, which the
// backward ops skip.
type weightGrads struct {
	on    bool
	dt    tensor.DType
	grads map[*tensor.Tensor]*tensor.Tensor
}

func newWeightGrads(on bool, dt tensor.DType) *weightGrads {
	return &weightGrads{on: on, dt: dt, grads: map[*tensor.Tensor]*tensor.Tensor{}}
}

func (w *weightGrads) of(t *tensor.Tensor) *tensor.Tensor {
	if !w.on || t == nil {
		return nil
	}
	g, ok := w.grads[t]
	if !ok {
		g = tensor.New(w.dt, t.Shape...)
		w.grads[t] = g
	}
	return g
}

// liveRows are the batch rows among rows (ascending) at or after their sequence's From position.
func liveRows(b Batch, rows []int32, from map[int32]int32) []int32 {
	var out []int32
	for _, i := range rows {
		if b.Pos[i] >= from[b.Seq[i]] {
			out = append(out, i)
		}
	}
	return out
}

// extendRows are the rows an attention block's backward reaches from the rows live: every row at
// or after its sequence's From position and at or before the sequence's last live position.
func extendRows(b Batch, live []int32, from map[int32]int32) []int32 {
	last := map[int32]int32{}
	for _, i := range live {
		last[b.Seq[i]] = max(last[b.Seq[i]], b.Pos[i]+1)
	}
	var out []int32
	for i, s := range b.Seq {
		if p := b.Pos[i]; p >= from[s] && p < last[s] {
			out = append(out, int32(i))
		}
	}
	return out
}

// HookDims are the sizes that give the model's hook points their shapes.
func (c *Config) HookDims() hooks.Dims {
	return hooks.Dims{Layers: c.Layers, DModel: c.Dim, Heads: c.Heads, KVHeads: c.KVHeads, DHead: c.HeadDim, DMLP: c.FFNDim}
}
