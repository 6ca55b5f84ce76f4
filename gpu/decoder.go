//go:build cuda

package gpu

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Decoder is greedy decoding of one sequence with no host in the loop: the one-row decode step of
// Steps followed by argmax_advance, which writes the argmax of the logits where the next step's
// embedding reads its token, advances the position and cache row, and records the token in a
// history. The whole is one CUDA graph replayed per token, so the host only launches: the
// benchmarks' and `tiller profile`'s measure of the step itself. The runner's steps (llama.Runner
// on the device, `tiller generate --device cuda`) run the same kernels with the host choosing
// each token.
//
// The forms of the step are Steps' (Fused, PDL, UseGraph): fused, 5 launches per layer on compute
// capability ≥ 9.0; generic, the batched form at one row.
type Decoder struct {
	s        *Steps
	kv       *tensor.KVCache
	seq      int
	capacity int // positions the sequence can reach
	hostPos  int // the position the next step feeds, as far as the host knows

	hist, ctx, argCount, candI, candV *tensor.Tensor // I32 history and argmax state; candV F32

	steers map[hooks.Point][]steerAdd
	order  []hooks.Point // steered points in forward order
	dirty  bool          // steering changed since the inputs were copied

	// UseGraph replays a captured CUDA graph per step (the default); false launches each kernel.
	UseGraph bool
	// Fused selects the fused step; false the generic one. NewDecoder sets it where the fused
	// kernels run: compute capability ≥ 9.0 and norm weights of the matrices' dtype.
	Fused bool
	// PDL launches the fused step with programmatic dependent launch (default with Fused). Where
	// the driver cannot capture that into a graph, Step turns it off and captures without.
	PDL bool
}

// steerAdd is one addition registered with Steer.
type steerAdd struct {
	v     []float32
	alpha float32
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
	s, err := NewSteps(b, m, 1)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("gpu: decoder for head_dim %d: the decode step takes even head sizes up to 256", c.HeadDim)
	}
	d := &Decoder{s: s, kv: kv, seq: seq, capacity: capacity, UseGraph: true, Fused: s.Fused, PDL: s.PDL, steers: map[hooks.Point][]steerAdd{}}
	i := func(n int) *tensor.Tensor { return b.Alloc(tensor.I32, n) }
	d.hist, d.ctx, d.argCount, d.candI = i(capacity+2), i(1), i(1), i(argmaxMaxBlocks)
	d.candV = b.Alloc(tensor.F32, argmaxMaxBlocks)
	return d, nil
}

// Steer adds alpha·v at a hook point in every following step, as a hooks.Steer registered there
// does in llama.Runner: at the residual stream (hook_embed, resid_pre, resid_mid, resid_post) or
// the block outputs added to it (attn_out, mlp_out). Adds at one point accumulate (ClearSteering
// removes them all); a step whose steered points and term counts are the captured graph's replays
// it with the new strengths and vectors, any other recaptures it.
func (d *Decoder) Steer(p hooks.Point, v []float32, alpha float32) error {
	c := d.s.c
	if !llama.StepPoints(p.Kind) || p.Layer >= c.Layers || p.Layer < 0 && p.Kind != hooks.Embed {
		return fmt.Errorf("gpu: decoder steering at %s: only hook_embed and blocks.L.hook_resid_pre, hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post (L < %d)", p.Name(), c.Layers)
	}
	if len(v) != c.Dim {
		return fmt.Errorf("gpu: steering vector of %d values for d_model %d", len(v), c.Dim)
	}
	if len(d.steers[p]) == 0 {
		d.order = append(d.order, p)
		sortPoints(d.order, c.Layers)
	}
	d.steers[p] = append(d.steers[p], steerAdd{append([]float32(nil), v...), alpha})
	d.dirty = true
	return nil
}

// sortPoints orders points as a forward pass meets them.
func sortPoints(ps []hooks.Point, layers int) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j].Index(layers) < ps[j-1].Index(layers); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// ClearSteering removes every Steer add; the next step runs unsteered.
func (d *Decoder) ClearSteering() {
	clear(d.steers)
	d.order = d.order[:0]
	d.dirty = true
}

// terms is the registered steering as the step takes it (one row).
func (d *Decoder) terms() []llama.PointTerms {
	var out []llama.PointTerms
	for _, p := range d.order {
		pt := llama.PointTerms{Point: p}
		for _, a := range d.steers[p] {
			pt.Terms = append(pt.Terms, hooks.Term{Vector: a.v, Alpha: []float32{a.alpha}})
		}
		out = append(out, pt)
	}
	return out
}

// Start sets the token the next step feeds at position pos (the cache must hold positions
// before pos).
func (d *Decoder) Start(token int32, pos int) error {
	if pos < 0 || pos >= d.capacity {
		return fmt.Errorf("gpu: decoder start at position %d of a capacity of %d", pos, d.capacity)
	}
	s := d.s
	if err := s.prepare(1, d.kv); err != nil {
		return err
	}
	if err := d.layout(); err != nil {
		return err
	}
	in := s.inHost
	in[s.lay.tok], in[s.lay.pos], in[s.lay.row] = token, int32(pos), int32(d.kv.Row(int32(d.seq), int32(pos)))
	if err := s.uploadTables([]int32{int32(d.seq)}, d.kv); err != nil {
		return err
	}
	d.hostPos = pos
	return s.copyIn(0, s.lay.words)
}

// layout lays out the inputs for the registered steering and writes its strengths and vector
// addresses (the token, position and row words are the device loop's, not touched here).
func (d *Decoder) layout() error {
	s := d.s
	terms := d.terms()
	s.waitUploads()
	s.b.trimVectors()
	s.lay = newStepLayout(1, terms)
	for _, pt := range terms {
		pl := s.lay.at(pt.Point)
		for t, term := range pt.Terms {
			s.inHost[pl.alpha+t] = int32(math.Float32bits(term.Alpha[0]))
			addr := s.b.vector(term.Vector)
			s.inHost[pl.vecs+2*t], s.inHost[pl.vecs+2*t+1] = int32(uint32(addr)), int32(uint32(addr>>32))
		}
	}
	d.dirty = false
	return nil
}

// Step queues one decode step: the current token's forward pass, the argmax of its logits as
// the next token (recorded in the history at the next position), and the position update. It
// does not wait; Tokens and Logits do. The caller keeps the position under capacity.
func (d *Decoder) Step() error {
	s := d.s
	defer func() { d.hostPos++ }()
	if d.dirty {
		// The token, position and row live on the device now: copy only the steering words.
		if err := d.layout(); err != nil {
			return err
		}
		if err := s.copyIn(3, s.lay.words); err != nil {
			return err
		}
	}
	s.Fused, s.PDL, s.UseGraph = d.Fused, d.PDL && d.Fused, d.UseGraph
	s.hostPos = d.hostPos
	err := s.run("decoder", d.advance)
	d.PDL = s.PDL
	return err
}

// advance queues argmax_advance: the next token, position, cache row and history entry.
func (d *Decoder) advance() {
	s := d.s
	tok, pos, row := s.inputs()
	s.role("argmax+advance", float64(4*s.c.Vocab))
	if !s.Fused || s.b.cc < 90 {
		// decode.cu needs compute capability 9.0: the plain argmax and advance kernels there.
		s.b.argmax(tok, dev(s.logits), 1, s.c.Vocab)
		s.b.advance(pos, dev(d.ctx), row, dev(s.tab), d.kv.BlockSize, tok, dev(d.hist))
		return
	}
	s.b.argmaxAdvance(tok, dev(s.logits), s.c.Vocab, dev(d.candV), dev(d.candI), dev(d.argCount),
		pos, dev(d.ctx), row, dev(s.tab), d.kv.BlockSize, dev(d.hist))
}

// queue queues one step's kernels without a graph (the profiler).
func (d *Decoder) queue() {
	s := d.s
	s.Fused, s.PDL = d.Fused, d.PDL && d.Fused
	s.hostPos = d.hostPos
	s.queue()
	d.advance()
}

// Tokens returns the tokens chosen at positions [from, to).
func (d *Decoder) Tokens(from, to int) []int32 {
	h := tensor.New(tensor.I32, d.hist.Numel())
	d.s.b.Download(h, d.hist)
	return append([]int32(nil), h.I32()[from:to]...)
}

// Logits returns the logits of the last step, (1, vocab) on the host.
func (d *Decoder) Logits() []float32 {
	h := tensor.New(tensor.F32, 1, d.s.c.Vocab)
	d.s.b.Download(h, d.s.logits.Slice(0, 1))
	return h.F32()
}

// Close frees the decoder's graphs and buffers (not the model or the cache).
func (d *Decoder) Close() {
	d.s.Close()
	for _, t := range []*tensor.Tensor{d.hist, d.ctx, d.argCount, d.candI, d.candV} {
		d.s.b.Free(t)
	}
}
