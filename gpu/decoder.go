//go:build cuda

package gpu

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Decoder is greedy decoding of one sequence with the whole step on the device: the token, its
// position, context length and cache row live in device memory; argmax writes the next token
// where the embedding of the next step reads it, and a small kernel advances the position. The
// step is recorded once as a CUDA graph and replayed per token, so the host only launches.
//
// The step is the model's forward pass for one token (llama.Runner.layer) with the decode
// fusions: q, k and v in one GEMV launch; the residual add fused into the next RMSNorm; gate, up
// and SiLU·mul in one GEMV launch. Tests hold it to the Runner on the CPU.
type Decoder struct {
	b        *Backend
	m        *llama.Model // weights in b's memory
	kv       *tensor.KVCache
	seq      int
	capacity int // positions the sequence can reach
	parts    int // split-KV partitions covering capacity

	x, xn, q, k, v, att, proj, hidden, logits *tensor.Tensor // (1, …) F32 activations
	acc, ml                                   *tensor.Tensor // attention partials
	tok, pos, ctx, row, table, hist           *tensor.Tensor // I32 state on the device
	invFreq                                   *tensor.Tensor

	graph *Graph
	// UseGraph replays a captured CUDA graph per step (the default); false launches each kernel.
	UseGraph bool
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
	f := func(n int) *tensor.Tensor { return b.Alloc(tensor.F32, 1, n) }
	d.x, d.xn, d.proj = f(c.Dim), f(c.Dim), f(c.Dim)
	d.q, d.att = f(c.Heads*c.HeadDim), f(c.Heads*c.HeadDim)
	d.k, d.v = f(c.KVHeads*c.HeadDim), f(c.KVHeads*c.HeadDim)
	d.hidden, d.logits = f(c.FFNDim), f(c.Vocab)
	d.acc = b.Alloc(tensor.F32, c.Heads*d.parts*c.HeadDim)
	d.ml = b.Alloc(tensor.F32, c.Heads*d.parts*2)
	i := func(n int) *tensor.Tensor { return b.Alloc(tensor.I32, n) }
	d.tok, d.pos, d.ctx, d.row = i(1), i(1), i(1), i(1)
	d.hist = i(capacity + 2)
	d.table = i(len(kv.Table(seq)))
	b.CopyTo(d.table, kv.Table(seq))
	d.invFreq = b.Upload(tensor.FromF32(append([]float32(nil), m.InvFreq...), len(m.InvFreq)))
	return d, nil
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
	return nil
}

// Step queues one decode step: the current token's forward pass, the argmax of its logits as
// the next token (recorded in the history at the next position), and the position update. It
// does not wait; Tokens and Logits do. The caller keeps the position under capacity.
func (d *Decoder) Step() error {
	if !d.UseGraph {
		defer d.b.enter()()
		d.launches()
		d.b.done("decoder step")
		return nil
	}
	if d.graph == nil {
		d.b.dry = true // load every module now: none may load during capture
		func() { defer d.b.enter()(); d.launches() }()
		d.b.dry = false
		g, err := d.b.Capture(d.launches)
		if err != nil {
			return err
		}
		d.graph = g
	}
	return d.graph.Launch()
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
	for _, t := range []*tensor.Tensor{d.x, d.xn, d.q, d.k, d.v, d.att, d.proj, d.hidden, d.logits, d.acc, d.ml, d.tok, d.pos, d.ctx, d.row, d.table, d.hist, d.invFreq} {
		d.b.Free(t)
	}
}

// launches queues one step's kernels.
func (d *Decoder) launches() {
	b, m, c := d.b, d.m, d.m.Config
	kvWidth := c.KVHeads * c.HeadDim
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	b.embedding(dev(d.x), m.Embed, dev(d.tok), 1, c.Dim)
	b.rmsnorm(dev(d.xn), dev(d.x), m.Layers[0].AttnNorm, 1, c.Dim, c.NormEps)
	for l := range m.Layers {
		w := &m.Layers[l]
		// Attention block: xn = rmsnorm(x) on entry.
		b.gemv(dev(d.xn), 1, c.Dim,
			gemvSeg{w: w.WQ, bias: w.BQ, y: dev(d.q)},
			gemvSeg{w: w.WK, bias: w.BK, y: dev(d.k)},
			gemvSeg{w: w.WV, bias: w.BV, y: dev(d.v)})
		b.rope(dev(d.q), dev(d.pos), dev(d.invFreq), 1, c.Heads, c.HeadDim)
		b.rope(dev(d.k), dev(d.pos), dev(d.invFreq), 1, c.KVHeads, c.HeadDim)
		b.kvStore(dev(d.kv.K[l]), dev(d.kv.V[l]), dev(d.k), dev(d.v), dev(d.row), 1, kvWidth)
		b.attentionDecode(dev(d.att), dev(d.q), dev(d.kv.K[l]), dev(d.kv.V[l]), dev(d.ctx), dev(d.table),
			dev(d.acc), dev(d.ml), 1, d.table.Numel(), d.kv.BlockSize, c.Heads, c.KVHeads, c.HeadDim, d.parts, scale)
		b.gemv(dev(d.att), 1, c.Heads*c.HeadDim, gemvSeg{w: w.WO, bias: w.BO, y: dev(d.proj)})
		// x += o_proj; xn = rmsnorm(x) for the MLP.
		b.residualRMSNorm(dev(d.xn), dev(d.x), dev(d.proj), 0, 0, w.MLPNorm, 1, c.Dim, c.NormEps)
		b.gemvSwiGLU(dev(d.hidden), dev(d.xn), 1, c.Dim, w.WGate, w.BGate, w.WUp, w.BUp)
		b.gemv(dev(d.hidden), 1, c.FFNDim, gemvSeg{w: w.WDown, bias: w.BDown, y: dev(d.proj)})
		// x += down_proj; xn = rmsnorm(x) with the next layer's norm, or the final one.
		next := m.Norm
		if l+1 < len(m.Layers) {
			next = m.Layers[l+1].AttnNorm
		}
		b.residualRMSNorm(dev(d.xn), dev(d.x), dev(d.proj), 0, 0, next, 1, c.Dim, c.NormEps)
	}
	b.gemv(dev(d.xn), 1, c.Dim, gemvSeg{w: m.LMHead, y: dev(d.logits)})
	b.argmax(dev(d.tok), dev(d.logits), 1, c.Vocab)
	b.advance(dev(d.pos), dev(d.ctx), dev(d.row), dev(d.table), d.kv.BlockSize, dev(d.tok), dev(d.hist))
}
