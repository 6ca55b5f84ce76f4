//go:build cuda

package gpu

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Decoder is greedy decoding of one sequence with the whole step on the device: the token, its
// position, context length and cache row live in device memory; argmax writes the next token
// where the embedding of the next step reads it, and the position advances on the device. The
// step is recorded once as a CUDA graph and replayed per token, so the host only launches.
//
// The step is the model's forward pass for one token (llama.Runner.layer), in one of two forms:
//
//   - fused (Fused, the default on compute capability ≥ 9.0): 5 launches per layer. The residual
//     add and RMSNorm fold into the split-K GEMV that consumes them (kernels/matvec.cu: x += delta,
//     the norm's scale comes out of the sum), q, k and v come from one launch, RoPE, the KV-cache
//     append, attention and its merge from another (kernels/decode.cu), gate, up and SiLU·mul
//     from a third; argmax and the position update are one launch. The residual stream
//     ping-pongs between two buffers, because a GEMV reads it while its block 0 writes the sum.
//     With PDL each kernel may start before the one ahead of it ends, streaming its weights
//     while that one finishes (programmatic dependent launch; kernels/common.cuh).
//   - generic: the backend's own kernels, 11 launches per layer — q, k and v in one GEMV launch,
//     the residual add fused into the next RMSNorm, gate, up and SiLU·mul in one GEMV launch.
//
// Tests hold both to the Runner on the CPU.
type Decoder struct {
	b        *Backend
	m        *llama.Model // weights in b's memory
	kv       *tensor.KVCache
	seq      int
	capacity int // positions the sequence can reach
	parts    int // split-KV partitions covering capacity
	hostPos  int // the position the next step feeds, as far as the host knows (for the profiler)

	x, xn, q, k, v, att, proj, hidden, logits *tensor.Tensor // (1, …) F32 activations
	x2                                        *tensor.Tensor // (1, dim) the fused step's second residual buffer
	acc, ml                                   *tensor.Tensor // attention partials
	tok, pos, ctx, row, table, hist           *tensor.Tensor // I32 state on the device
	invFreq                                   *tensor.Tensor
	count, argCount, candI                    *tensor.Tensor // I32: the fused kernels' counters and argmax candidates
	candV                                     *tensor.Tensor

	// Steering (Steer): per residual-stream boundary b (b = L is hook_resid_pre of layer L and
	// hook_resid_post of layer L−1; b = layers is before the final norm), the additions registered
	// there, and on the device one row of steerVec and one strength in steerAlpha (host copies
	// in vecs, alphas).
	steers               [][]steerAdd
	steerVec, steerAlpha *tensor.Tensor
	vecs, alphas         []float32

	graph    *Graph
	graphKey graphKey // the form of the captured graph

	// UseGraph replays a captured CUDA graph per step (the default); false launches each kernel.
	UseGraph bool
	// Fused selects the fused step; false the generic one. NewDecoder sets it where the fused
	// kernels run: compute capability ≥ 9.0, an F32 KV cache, an even head_dim ≤ 256, norm
	// weights of the matrices' dtype.
	Fused bool
	// PDL launches the fused step with programmatic dependent launch (default with Fused). Where
	// the driver cannot capture that into a graph, Step turns it off and captures without.
	PDL bool
}

// graphKey is what a captured step depends on beyond the buffers: its form, and which residual
// boundaries are steered (their launches take the steering operands; the others pass none).
type graphKey struct {
	fused, pdl bool
	steered    string
}

// steerAdd is one resid += alpha·v registered with Steer.
type steerAdd struct {
	v     []float32
	alpha float32
}

// Steer adds alpha·v to the residual stream at a hook point in every following step, as a
// hooks.Steer registered there does in llama.Runner on the CPU: blocks.L.hook_resid_post (layer
// L's output) or blocks.L.hook_resid_pre (its input, the same stream as resid_post of L−1). The
// add is folded into the launch that next normalises the stream (the fused step's matvec_rms_*,
// the generic step's residual_rmsnorm), so unsteered boundaries take no steering operands at
// all. Adds at one boundary accumulate (ClearSteering removes them all); a step whose set of
// steered boundaries is the captured graph's replays it with the uploaded values, any other set
// recaptures it.
func (d *Decoder) Steer(p hooks.Point, v []float32, alpha float32) error {
	c := d.m.Config
	if p.Kind != hooks.ResidPre && p.Kind != hooks.ResidPost || p.Layer < 0 || p.Layer >= c.Layers {
		return fmt.Errorf("gpu: decoder steering at %s: only blocks.L.hook_resid_pre and hook_resid_post (L < %d)", p.Name(), c.Layers)
	}
	if len(v) != c.Dim {
		return fmt.Errorf("gpu: steering vector of %d values for d_model %d", len(v), c.Dim)
	}
	bd := p.Layer
	if p.Kind == hooks.ResidPost {
		bd++
	}
	if d.steers == nil {
		d.steers = make([][]steerAdd, c.Layers+1)
		d.steerVec = d.b.Alloc(tensor.F32, c.Layers+1, c.Dim)
		d.steerAlpha = d.b.Alloc(tensor.F32, c.Layers+1)
		d.vecs, d.alphas = make([]float32, (c.Layers+1)*c.Dim), make([]float32, c.Layers+1)
	}
	d.steers[bd] = append(d.steers[bd], steerAdd{append([]float32(nil), v...), alpha})
	// One add goes up as it is; several as their sum Σ alpha_i·v_i with strength 1.
	row, a := d.steers[bd][0].v, d.steers[bd][0].alpha
	if len(d.steers[bd]) > 1 {
		row, a = make([]float32, c.Dim), 1
		for _, s := range d.steers[bd] {
			for k, x := range s.v {
				row[k] += s.alpha * x
			}
		}
	}
	copy(d.vecs[bd*c.Dim:], row)
	d.alphas[bd] = a
	d.b.copyF32(d.steerVec, d.vecs)
	d.b.copyF32(d.steerAlpha, d.alphas)
	return nil
}

// ClearSteering removes every Steer add; the next step runs unsteered.
func (d *Decoder) ClearSteering() {
	for i := range d.steers {
		d.steers[i] = nil
	}
}

// steerAt is the steering operands of boundary bd (device addresses of its strength and vector),
// or zeros where nothing is steered.
func (d *Decoder) steerAt(bd int) (alpha, vec uint64) {
	if d.steers == nil || len(d.steers[bd]) == 0 {
		return 0, 0
	}
	return dev(d.steerAlpha) + uint64(4*bd), dev(d.steerVec) + uint64(4*bd*d.m.Config.Dim)
}

// steeredKey names the steered boundaries, for graphKey.
func (d *Decoder) steeredKey() string {
	var k []byte
	for bd, s := range d.steers {
		if len(s) > 0 {
			k = fmt.Appendf(k, "%d,", bd)
		}
	}
	return string(k)
}

// NewDecoder prepares greedy decoding of sequence seq of kv, up to capacity positions, reserving
// them in the cache. m's weights must be in b's memory (llama.NewRunner(m, b).Model, say).
func NewDecoder(b *Backend, m *llama.Model, kv *tensor.KVCache, seq, capacity int) (*Decoder, error) {
	c := m.Config
	if c.HeadDim > 256 {
		return nil, fmt.Errorf("gpu: decoder for head_dim %d; the attention kernels take at most 256", c.HeadDim)
	}
	if err := kv.Reserve(seq, capacity+1); err != nil {
		return nil, err
	}
	d := &Decoder{b: b, m: m, kv: kv, seq: seq, capacity: capacity, parts: (capacity + 32) / 32, UseGraph: true}
	d.Fused = b.cc >= 90 && kv.K[0].DType == tensor.F32 && c.HeadDim%2 == 0 && normsMatch(m)
	d.PDL = d.Fused
	f := func(n int) *tensor.Tensor { return b.Alloc(tensor.F32, 1, n) }
	d.x, d.xn, d.proj, d.x2 = f(c.Dim), f(c.Dim), f(c.Dim), f(c.Dim)
	d.q, d.att = f(c.Heads*c.HeadDim), f(c.Heads*c.HeadDim)
	d.k, d.v = f(c.KVHeads*c.HeadDim), f(c.KVHeads*c.HeadDim)
	d.hidden, d.logits = f(c.FFNDim), f(c.Vocab)
	d.acc = b.Alloc(tensor.F32, c.Heads*d.parts*c.HeadDim)
	d.ml = b.Alloc(tensor.F32, c.Heads*d.parts*2)
	i := func(n int) *tensor.Tensor { return b.Alloc(tensor.I32, n) }
	d.tok, d.pos, d.ctx, d.row = i(1), i(1), i(1), i(1)
	d.count, d.argCount, d.candI = i(c.Heads), i(1), i(argmaxMaxBlocks)
	d.candV = b.Alloc(tensor.F32, argmaxMaxBlocks)
	d.hist = i(capacity + 2)
	d.table = i(len(kv.Table(seq)))
	b.CopyTo(d.table, kv.Table(seq))
	d.invFreq = b.Upload(tensor.FromF32(append([]float32(nil), m.InvFreq...), len(m.InvFreq)))
	return d, nil
}

// normsMatch reports whether every RMSNorm weight has the dtype of the matrices it is folded into
// by the fused step (the matvec_rms kernels take one weight dtype).
func normsMatch(m *llama.Model) bool {
	for i := range m.Layers {
		l := &m.Layers[i]
		if l.AttnNorm.DType != l.WQ.DType || l.MLPNorm.DType != l.WGate.DType {
			return false
		}
	}
	return m.Norm.DType == m.LMHead.DType
}

// Start sets the token the next step feeds at position pos (the cache must hold positions
// before pos).
func (d *Decoder) Start(token int32, pos int) error {
	if pos < 0 || pos >= d.capacity {
		return fmt.Errorf("gpu: decoder start at position %d of a capacity of %d", pos, d.capacity)
	}
	d.b.CopyTo(d.tok, []int32{token})
	d.b.CopyTo(d.pos, []int32{int32(pos)})
	d.b.CopyTo(d.ctx, []int32{int32(pos + 1)})
	d.b.CopyTo(d.row, []int32{int32(d.kv.Row(int32(d.seq), int32(pos)))})
	d.hostPos = pos
	return nil
}

// Step queues one decode step: the current token's forward pass, the argmax of its logits as
// the next token (recorded in the history at the next position), and the position update. It
// does not wait; Tokens and Logits do. The caller keeps the position under capacity.
func (d *Decoder) Step() error {
	defer func() { d.hostPos++ }()
	if !d.UseGraph {
		defer d.b.enter()()
		d.queue()
		d.b.done("decoder step")
		return nil
	}
	key := graphKey{d.Fused, d.PDL, d.steeredKey()}
	if d.graph != nil && d.graphKey != key {
		d.graph.Close()
		d.graph = nil
	}
	if d.graph == nil {
		d.b.dry = true // load every module now: none may load during capture
		func() { defer d.b.enter()(); d.queue() }()
		d.b.dry = false
		g, err := d.b.Capture(d.queue)
		if err != nil && d.PDL {
			// Programmatic dependent launch in a captured graph needs CUDA 12.3 or later
			// in the driver; without it the same kernels run fully serialised.
			d.PDL = false
			key.pdl = false
			g, err = d.b.Capture(d.queue)
		}
		if err != nil {
			return err
		}
		d.graph, d.graphKey = g, key
	}
	return d.graph.Launch()
}

// queue queues one step's kernels in the selected form.
func (d *Decoder) queue() {
	if !d.Fused {
		d.launches()
		return
	}
	prev := d.b.pdl
	d.b.pdl = d.PDL
	defer func() { d.b.pdl = prev }()
	d.launchesFused()
}

// Tokens returns the tokens chosen at positions [from, to).
func (d *Decoder) Tokens(from, to int) []int32 {
	h := tensor.New(tensor.I32, d.hist.Numel())
	d.b.Download(h, d.hist)
	return append([]int32(nil), h.I32()[from:to]...)
}

// Logits returns the logits of the last step, (1, vocab) on the host.
func (d *Decoder) Logits() []float32 {
	h := tensor.New(tensor.F32, d.logits.Shape...)
	d.b.Download(h, d.logits)
	return h.F32()
}

// Close frees the decoder's graph and buffers (not the model or the cache).
func (d *Decoder) Close() {
	if d.graph != nil {
		d.graph.Close()
	}
	for _, t := range []*tensor.Tensor{d.x, d.xn, d.x2, d.q, d.k, d.v, d.att, d.proj, d.hidden, d.logits, d.acc, d.ml, d.tok, d.pos, d.ctx, d.row,
		d.table, d.hist, d.invFreq, d.count, d.argCount, d.candI, d.candV} {
		d.b.Free(t)
	}
	if d.steerVec != nil {
		d.b.Free(d.steerVec)
		d.b.Free(d.steerAlpha)
	}
}

// role names the next launches for the profiler (a no-op otherwise): what part of the model
// they compute and the bytes they must read (weights, or the KV cache).
func (d *Decoder) role(name string, bytes float64) {
	if t := d.b.timing; t != nil {
		t.role, t.roleBytes = name, bytes
	}
}

// weightBytes is the bytes of the given tensors (nil ones count 0).
func weightBytes(ts ...*tensor.Tensor) float64 {
	n := 0
	for _, t := range ts {
		if t != nil {
			n += t.Numel() * t.DType.Size()
		}
	}
	return float64(n)
}

// kvBytes is what attention reads of the cache at the position the next step feeds.
func (d *Decoder) kvBytes() float64 {
	c := d.m.Config
	return float64((d.hostPos + 1) * c.KVHeads * c.HeadDim * d.kv.K[0].DType.Size() * 2)
}

// launches queues one generic step.
func (d *Decoder) launches() {
	b, m, c := d.b, d.m, d.m.Config
	kvWidth := c.KVHeads * c.HeadDim
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	d.role("embedding", 0)
	b.embedding(dev(d.x), m.Embed, dev(d.tok), 1, c.Dim)
	d.role("rmsnorm", weightBytes(m.Layers[0].AttnNorm))
	if alpha, vec := d.steerAt(0); vec != 0 {
		b.residualRMSNorm(dev(d.xn), dev(d.x), 0, alpha, vec, m.Layers[0].AttnNorm, 1, c.Dim, c.NormEps)
	} else {
		b.rmsnorm(dev(d.xn), dev(d.x), m.Layers[0].AttnNorm, 1, c.Dim, c.NormEps)
	}
	for l := range m.Layers {
		w := &m.Layers[l]
		// Attention block: xn = rmsnorm(x) on entry.
		d.role("q/k/v", weightBytes(w.WQ, w.WK, w.WV, w.BQ, w.BK, w.BV))
		b.gemv(dev(d.xn), 1, c.Dim,
			gemvSeg{w: w.WQ, bias: w.BQ, y: dev(d.q)},
			gemvSeg{w: w.WK, bias: w.BK, y: dev(d.k)},
			gemvSeg{w: w.WV, bias: w.BV, y: dev(d.v)})
		d.role("rope", 0)
		b.rope(dev(d.q), dev(d.pos), dev(d.invFreq), 1, c.Heads, c.HeadDim)
		b.rope(dev(d.k), dev(d.pos), dev(d.invFreq), 1, c.KVHeads, c.HeadDim)
		d.role("kv store", 0)
		b.kvStore(dev(d.kv.K[l]), dev(d.kv.V[l]), dev(d.k), dev(d.v), dev(d.row), 1, kvWidth)
		d.role("attention", d.kvBytes())
		b.attentionDecode(dev(d.att), dev(d.q), dev(d.kv.K[l]), dev(d.kv.V[l]), dev(d.ctx), dev(d.table),
			dev(d.acc), dev(d.ml), 1, d.table.Numel(), d.kv.BlockSize, c.Heads, c.KVHeads, c.HeadDim, d.parts, scale)
		d.role("o_proj", weightBytes(w.WO, w.BO))
		b.gemv(dev(d.att), 1, c.Heads*c.HeadDim, gemvSeg{w: w.WO, bias: w.BO, y: dev(d.proj)})
		// x += o_proj; xn = rmsnorm(x) for the MLP.
		d.role("residual+rmsnorm", weightBytes(w.MLPNorm))
		b.residualRMSNorm(dev(d.xn), dev(d.x), dev(d.proj), 0, 0, w.MLPNorm, 1, c.Dim, c.NormEps)
		d.role("gate/up", weightBytes(w.WGate, w.WUp, w.BGate, w.BUp))
		b.gemvSwiGLU(dev(d.hidden), dev(d.xn), 1, c.Dim, w.WGate, w.BGate, w.WUp, w.BUp)
		d.role("down_proj", weightBytes(w.WDown, w.BDown))
		b.gemv(dev(d.hidden), 1, c.FFNDim, gemvSeg{w: w.WDown, bias: w.BDown, y: dev(d.proj)})
		// x += down_proj; xn = rmsnorm(x) with the next layer's norm, or the final one.
		next := m.Norm
		if l+1 < len(m.Layers) {
			next = m.Layers[l+1].AttnNorm
		}
		d.role("residual+rmsnorm", weightBytes(next))
		alpha, vec := d.steerAt(l + 1)
		b.residualRMSNorm(dev(d.xn), dev(d.x), dev(d.proj), alpha, vec, next, 1, c.Dim, c.NormEps)
	}
	d.role("lm_head", weightBytes(m.LMHead))
	b.gemv(dev(d.xn), 1, c.Dim, gemvSeg{w: m.LMHead, y: dev(d.logits)})
	d.role("argmax", float64(4*c.Vocab))
	b.argmax(dev(d.tok), dev(d.logits), 1, c.Vocab)
	d.role("advance", 0)
	b.advance(dev(d.pos), dev(d.ctx), dev(d.row), dev(d.table), d.kv.BlockSize, dev(d.tok), dev(d.hist))
}

// launchesFused queues one fused step. The residual stream lives in cur; delta is the last
// block's output not yet added to it (none before layer 0), which the next GEMV adds while it
// normalises, writing the sum to the other buffer.
func (d *Decoder) launchesFused() {
	b, m, c := d.b, d.m, d.m.Config
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	d.role("embedding", 0)
	b.embedding(dev(d.x), m.Embed, dev(d.tok), 1, c.Dim)
	cur, other := d.x, d.x2
	var delta uint64
	for l := range m.Layers {
		w := &m.Layers[l]
		// x += delta; q, k, v = rmsnorm(x)·Wᵀ.
		d.role("rmsnorm+q/k/v", weightBytes(w.AttnNorm, w.WQ, w.WK, w.WV, w.BQ, w.BK, w.BV))
		alpha, vec := d.steerAt(l)
		b.matvec(dev(cur), 1, c.Dim, &matvecNorm{xb: delta, xout: dev(other), alpha: alpha, steer: vec, w: w.AttnNorm, eps: c.NormEps},
			gemvSeg{w: w.WQ, bias: w.BQ, y: dev(d.q)},
			gemvSeg{w: w.WK, bias: w.BK, y: dev(d.k)},
			gemvSeg{w: w.WV, bias: w.BV, y: dev(d.v)})
		cur, other = other, cur
		// RoPE, the cache append and attention over positions ≤ pos.
		d.role("rope+kv+attention", d.kvBytes())
		b.attentionDecodeRoPE(dev(d.att), dev(d.acc), dev(d.ml), dev(d.count), dev(d.q), dev(d.k), dev(d.v),
			dev(d.kv.K[l]), dev(d.kv.V[l]), dev(d.pos), dev(d.table), dev(d.invFreq),
			d.kv.BlockSize, c.Heads, c.KVHeads, c.HeadDim, d.parts, scale)
		d.role("o_proj", weightBytes(w.WO, w.BO))
		b.matvec(dev(d.att), 1, c.Heads*c.HeadDim, nil, gemvSeg{w: w.WO, bias: w.BO, y: dev(d.proj)})
		// x += o_proj; hidden = silu(rmsnorm(x)·gateᵀ) ⊙ (rmsnorm(x)·upᵀ).
		d.role("rmsnorm+gate/up", weightBytes(w.MLPNorm, w.WGate, w.WUp, w.BGate, w.BUp))
		b.matvecSwiGLU(dev(d.hidden), dev(cur), 1, c.Dim, &matvecNorm{xb: dev(d.proj), xout: dev(other), w: w.MLPNorm, eps: c.NormEps},
			w.WGate, w.BGate, w.WUp, w.BUp)
		cur, other = other, cur
		d.role("down_proj", weightBytes(w.WDown, w.BDown))
		b.matvec(dev(d.hidden), 1, c.FFNDim, nil, gemvSeg{w: w.WDown, bias: w.BDown, y: dev(d.proj)})
		delta = dev(d.proj)
	}
	// x += down_proj; logits = rmsnorm(x)·lm_headᵀ (the sum itself is not needed again).
	d.role("rmsnorm+lm_head", weightBytes(m.Norm, m.LMHead))
	alpha, vec := d.steerAt(len(m.Layers))
	b.matvec(dev(cur), 1, c.Dim, &matvecNorm{xb: delta, alpha: alpha, steer: vec, w: m.Norm, eps: c.NormEps}, gemvSeg{w: m.LMHead, y: dev(d.logits)})
	d.role("argmax+advance", float64(4*c.Vocab))
	b.argmaxAdvance(dev(d.tok), dev(d.logits), c.Vocab, dev(d.candV), dev(d.candI), dev(d.argCount),
		dev(d.pos), dev(d.ctx), dev(d.row), dev(d.table), d.kv.BlockSize, dev(d.hist))
}
