//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
	"gorgonia.org/cu"
)

// Steps runs llama.Runner's decode steps on the device (llama.DecodeSteps), so that generate,
// steer, eval and serve decode at the speed of the fused step. A step of n rows runs as
// rowBucket(n) rows (the rest idle), one CUDA graph per shape — rows, which points are steered
// and by how many terms, the cache — recorded at first use and replayed after it. What changes
// per step is data in device memory, copied in by one transfer from pinned host memory before the
// replay: each row's token, position and cache row, the strengths of every steering term and the
// addresses of their vectors (uploaded once, kept on the device by Backend.vector), and the block
// table entries that changed. The step leaves the logits of every row on the device; the runner
// downloads them, or only their argmax (ArgmaxRows).
//
// Three forms:
//   - fused (one row, Fused): 5 launches per layer, as the benchmarks' decoder always ran: the
//     residual add, the steering rows and RMSNorm fold into the split-K GEMV that consumes them
//     (matvec.cu), RoPE, the cache append and attention are one launch (decode.cu), with
//     programmatic dependent launch (PDL);
//   - batched (several rows, or Fused off): residual_rmsnorm with the steering rows, the products
//     as MatMul picks them for the row count (GEMV up to 8 rows, split-K GEMM to 128), decode.cu's
//     attention (RoPE) or rope, kv_store and the decode attention;
//   - the ops' own kernels in the ops' order (Backend.Deterministic), so that a row's logits are
//     the same bits through the step as through Runner.Forward, and the same at any batch size.
//
// Steering: additions at hook_embed, resid_pre, resid_mid and resid_post are built on the device
// (steer_delta_f32) and folded into the next launch that adds to the residual stream; those at
// attn_out and mlp_out are added to the block's output (steer_add_f32) before it joins the stream.
type Steps struct {
	b       *Backend
	m       *llama.Model // weights in b's memory
	c       *llama.Config
	maxRows int

	// Fused runs one-row steps in the fused form (compute capability ≥ 9.0, norm weights of the
	// matrices' dtype); RoPE uses decode.cu's attention with RoPE and the cache append in batched
	// steps too (compute capability ≥ 9.0); PDL launches the fused form with programmatic
	// dependent launch; UseGraph replays recorded graphs (off: every kernel launched, for tests
	// and the profiler). NewSteps sets each as the card allows.
	Fused, RoPE, PDL, UseGraph bool

	rows int // rows the buffers below hold

	x, x2, xn, q, k, v, att, proj, hidden, tmp, sdelta, logits *tensor.Tensor // (rows, …) F32
	one, invFreq                                               *tensor.Tensor // F32 1 (the fused kernels' steering strength); RoPE's frequencies
	part, count                                                *tensor.Tensor // decode attention partials (F32) and counters (I32, zero)

	// The cache the table and the graphs are for (the K and V addresses of every layer), its
	// table's row width in blocks, and the table on the device with its pinned host mirror.
	kvDevs    []uint64
	kvDT      tensor.DType
	blockSize int
	width     int
	tab       *tensor.Tensor // (maxRows, width) I32
	tabHost   []int32        // pinned
	tabLen    []int          // entries of each row the device table holds

	lay      stepLayout
	in       *tensor.Tensor // I32 device block of the step's inputs (stepLayout)
	inHost   []int32        // pinned
	pending  bool           // copies out of the pinned buffers may still be queued
	copiedAt int            // Backend.syncs when they were queued: a later sync finished them

	arena  arena
	graphs map[string]*Graph

	hostPos int // for the profiler's byte counts: the position the next step feeds
}

// stepMaxRows is the most rows a step takes: the split-K GEMM's largest row tile. Larger decode
// batches run op by op, where the prefill GEMM's tiles fill the card.
const stepMaxRows = 128

// stepInputWords is the size of the pinned input block: tokens, positions and rows of 128 rows
// and ~250 k steering strengths and addresses.
const stepInputWords = 1 << 18

// NewDecodeSteps prepares decode steps of m on the device (llama.DecodeBackend); nil for a model
// the step's kernels do not take (head_dim over 256 or odd).
func (b *Backend) NewDecodeSteps(m *llama.Model) (llama.DecodeSteps, error) {
	s, err := NewSteps(b, m, stepMaxRows)
	if s == nil || err != nil {
		return nil, err
	}
	return s, nil
}

// NewSteps prepares decode steps of up to maxRows rows of m, whose weights are in b's memory; nil
// when the step's kernels do not take the model's head size.
func NewSteps(b *Backend, m *llama.Model, maxRows int) (*Steps, error) {
	c := m.Config
	if c.HeadDim > 256 || c.HeadDim%2 != 0 || m.Embed.OnHost() {
		return nil, nil
	}
	s := &Steps{b: b, m: m, c: c, maxRows: maxRows, UseGraph: true, graphs: map[string]*Graph{}}
	s.Fused = b.cc >= 90 && normsMatch(m)
	s.RoPE = b.cc >= 90
	s.PDL = s.Fused
	pinned, err := hostAlloc(4 * stepInputWords)
	if err != nil {
		return nil, err
	}
	s.inHost = unsafe.Slice((*int32)(unsafe.Pointer(&pinned[0])), stepInputWords)
	s.in = b.Alloc(tensor.I32, stepInputWords)
	s.one = b.Upload(tensor.FromF32([]float32{1}, 1))
	s.invFreq = b.Upload(tensor.FromF32(append([]float32(nil), m.InvFreq...), len(m.InvFreq)))
	return s, nil
}

// normsMatch reports whether every RMSNorm weight has the dtype of the matrices it is folded into
// by the fused form (the matvec_rms kernels take one weight dtype).
func normsMatch(m *llama.Model) bool {
	for i := range m.Layers {
		l := &m.Layers[i]
		if l.AttnNorm.DType != l.WQ.DType || l.MLPNorm.DType != l.WGate.DType {
			return false
		}
	}
	return m.Norm.DType == m.LMHead.DType
}

// MaxRows is the most rows one step takes.
func (s *Steps) MaxRows() int { return s.maxRows }

// Step runs one decode step of b (llama.DecodeSteps) and returns its rows' logits in device memory.
func (s *Steps) Step(bt llama.Batch, kv *tensor.KVCache, steer []llama.PointTerms) (*tensor.Tensor, error) {
	n := len(bt.Tokens)
	if n == 0 || n > s.maxRows {
		return nil, fmt.Errorf("gpu: a decode step of %d rows; it takes 1 to %d", n, s.maxRows)
	}
	rows := rowBucket(n, s.maxRows)
	if err := s.prepare(rows, kv); err != nil {
		return nil, err
	}
	s.lay = newStepLayout(rows, steer)
	if s.lay.words > stepInputWords {
		return nil, fmt.Errorf("gpu: a decode step steered by %d points needs %d words of inputs; it has %d", len(steer), s.lay.words, stepInputWords)
	}
	s.waitUploads()
	s.b.trimVectors()
	in := s.inHost
	for i := 0; i < rows; i++ {
		in[s.lay.tok+i], in[s.lay.pos+i], in[s.lay.row+i] = 0, -1, -1
		if i < n {
			in[s.lay.tok+i], in[s.lay.pos+i] = bt.Tokens[i], bt.Pos[i]
			in[s.lay.row+i] = int32(kv.Row(bt.Seq[i], bt.Pos[i]))
		}
	}
	for _, pt := range steer {
		pl := s.lay.at(pt.Point)
		for t, term := range pt.Terms {
			for i := 0; i < rows; i++ {
				a := float32(0)
				if i < n {
					a = term.Alpha[i]
				}
				in[pl.alpha+t*rows+i] = int32(math.Float32bits(a))
			}
			addr := s.b.vector(term.Vector)
			in[pl.vecs+2*t], in[pl.vecs+2*t+1] = int32(uint32(addr)), int32(uint32(addr>>32))
		}
	}
	if err := s.uploadTables(bt.Seq, kv); err != nil {
		return nil, err
	}
	if err := s.copyIn(0, s.lay.words); err != nil {
		return nil, err
	}
	if err := s.run(""); err != nil {
		return nil, err
	}
	return s.logits.Slice(0, n), nil
}

// prepare sizes the buffers for rows rows and the table for kv; a new cache or larger buffers
// drop the graphs recorded for the old ones.
func (s *Steps) prepare(rows int, kv *tensor.KVCache) error {
	b, c := s.b, s.c
	same := len(s.kvDevs) == 2*len(kv.K) && s.kvDT == kv.DType()
	for l := 0; same && l < len(kv.K); l++ {
		same = s.kvDevs[2*l] == kv.K[l].Dev && s.kvDevs[2*l+1] == kv.V[l].Dev
	}
	width := min(kv.Blocks(), (c.MaxPositions+kv.BlockSize-1)/kv.BlockSize)
	if !same || width != s.width {
		s.dropGraphs()
		s.kvDevs = s.kvDevs[:0]
		for l := range kv.K {
			s.kvDevs = append(s.kvDevs, kv.K[l].Dev, kv.V[l].Dev)
		}
		s.kvDT, s.blockSize = kv.DType(), kv.BlockSize
		if width != s.width || s.tab == nil {
			b.Free(s.tab)
			if s.tabHost != nil {
				hostFree(unsafe.Slice((*byte)(unsafe.Pointer(&s.tabHost[0])), 4*len(s.tabHost)))
			}
			pinned, err := hostAlloc(4 * s.maxRows * width)
			if err != nil {
				return err
			}
			s.tabHost = unsafe.Slice((*int32)(unsafe.Pointer(&pinned[0])), s.maxRows*width)
			tab, err := b.AllocErr("decode step block tables", tensor.I32, s.maxRows*width)
			if err != nil {
				return err
			}
			s.tab, s.width = tab, width
		}
		s.tabLen = make([]int, s.maxRows)
	}
	if rows <= s.rows {
		return nil
	}
	s.dropGraphs()
	s.freeBuffers()
	s.rows = rows
	alloc := func(what string, dt tensor.DType, n int) (*tensor.Tensor, error) {
		return b.AllocErr("decode step "+what, dt, n)
	}
	var err error
	for _, a := range []struct {
		t    **tensor.Tensor
		what string
		n    int
	}{
		{&s.x, "residual stream", rows * c.Dim}, {&s.x2, "residual stream", rows * c.Dim}, {&s.xn, "normalised stream", rows * c.Dim},
		{&s.sdelta, "steering rows", rows * c.Dim}, {&s.proj, "block outputs", rows * c.Dim},
		{&s.q, "queries", rows * c.Heads * c.HeadDim}, {&s.att, "attention outputs", rows * c.Heads * c.HeadDim},
		{&s.k, "keys", rows * c.KVHeads * c.HeadDim}, {&s.v, "values", rows * c.KVHeads * c.HeadDim},
		{&s.hidden, "MLP hidden", rows * c.FFNDim}, {&s.tmp, "MLP up", rows * c.FFNDim},
	} {
		if *a.t, err = alloc(a.what, tensor.F32, a.n); err != nil {
			return err
		}
	}
	if s.logits, err = alloc("logits", tensor.F32, rows*c.Vocab); err != nil {
		return err
	}
	s.logits = s.logits.Reshape(rows, c.Vocab)
	partials, counters := decodeScratch(rows, c.Heads, c.KVHeads, c.HeadDim)
	if s.part, err = alloc("attention partials", tensor.F32, partials); err != nil {
		return err
	}
	s.count, err = alloc("attention counters", tensor.I32, counters)
	return err
}

// uploadTables copies into the device table the entries of each row's block table that differ
// from what it holds (the blocks added since the last step, or a row's whole table when the row
// now belongs to another sequence).
func (s *Steps) uploadTables(seq []int32, kv *tensor.KVCache) error {
	defer s.b.enter()()
	for i, sq := range seq {
		want := kv.Table(int(sq))
		if len(want) > s.width {
			return fmt.Errorf("gpu: sequence %d holds %d blocks; the decode step's tables take %d", sq, len(want), s.width)
		}
		row := s.tabHost[i*s.width : (i+1)*s.width]
		at := tableChange(row[:s.tabLen[i]], want)
		s.tabLen[i] = len(want)
		if at == len(want) {
			continue
		}
		copy(row[at:], want[at:])
		src := unsafe.Pointer(&row[at])
		if err := cu.MemcpyHtoDAsync(cu.DevicePtr(dev(s.tab)+uint64(4*(i*s.width+at))), src, int64(4*(len(want)-at)), s.b.stream); err != nil {
			return fmt.Errorf("gpu: decode step tables: %v", err)
		}
		s.pending, s.copiedAt = true, s.b.syncs
	}
	return nil
}

// copyIn queues the copy of input words [lo, hi) to the device.
func (s *Steps) copyIn(lo, hi int) error {
	if hi <= lo {
		return nil
	}
	defer s.b.enter()()
	if err := cu.MemcpyHtoDAsync(cu.DevicePtr(dev(s.in)+uint64(4*lo)), unsafe.Pointer(&s.inHost[lo]), int64(4*(hi-lo)), s.b.stream); err != nil {
		return fmt.Errorf("gpu: decode step inputs: %v", err)
	}
	s.pending, s.copiedAt = true, s.b.syncs
	return nil
}

// waitUploads makes sure the copies out of the pinned buffers, which are about to be rewritten,
// have run: the host waited for the stream since they were queued (the runner downloads each
// step's logits or ids), or it waits now.
func (s *Steps) waitUploads() {
	if s.pending && s.b.syncs == s.copiedAt {
		if err := s.b.Sync(); err != nil {
			panic(fmt.Sprintf("gpu: decode step: %v", err))
		}
	}
	s.pending = false
}

// run queues the step of the current layout (and extra, the decoder's), replaying the graph of
// its shape or recording it first; without UseGraph it launches every kernel.
func (s *Steps) run(tag string, extra ...func()) error {
	b := s.b
	queue := func() {
		s.queue()
		for _, f := range extra {
			f()
		}
	}
	if !s.UseGraph {
		defer b.enter()()
		queue()
		b.done("decode step")
		return nil
	}
	key := fmt.Sprintf("%s; %s; fused %v rope %v pdl %v; det %v exact %v/%v", tag, s.lay.shape(), s.Fused, s.RoPE, s.PDL,
		b.Deterministic, b.ExactMatMul, b.ExactAttention)
	g := s.graphs[key]
	if g == nil {
		var err error
		if g, err = s.record(queue); err != nil && s.PDL {
			// Programmatic dependent launch in a captured graph needs CUDA 12.3 or later in the
			// driver; without it the same kernels run fully serialised.
			s.PDL = false
			g, err = s.record(queue)
		}
		if err != nil {
			return err
		}
		if len(s.graphs) >= 64 {
			s.dropGraphs()
		}
		s.graphs[key] = g
	}
	return g.Launch()
}

// record measures the temporaries of queue with a dry run (which also loads every module), holds
// them in the arena, and records queue into a graph.
func (s *Steps) record(queue func()) (*Graph, error) {
	b := s.b
	s.arena.off = 0
	b.arena, b.dry = &s.arena, true
	func() { defer b.enter()(); queue() }()
	b.arena, b.dry = nil, false
	if s.arena.buf == nil || s.arena.peak > s.arena.size {
		s.dropGraphs() // they hold the old arena's addresses
		if err := s.arena.reserve(b); err != nil {
			return nil, err
		}
	}
	s.arena.off = 0
	b.arena = &s.arena
	defer func() { b.arena = nil }()
	return b.Capture(queue)
}

// dropGraphs frees every recorded graph.
func (s *Steps) dropGraphs() {
	for k, g := range s.graphs {
		g.Close()
		delete(s.graphs, k)
	}
}

func (s *Steps) freeBuffers() {
	for _, t := range []*tensor.Tensor{s.x, s.x2, s.xn, s.q, s.k, s.v, s.att, s.proj, s.hidden, s.tmp, s.sdelta, s.logits, s.part, s.count} {
		s.b.Free(t)
	}
}

// Close frees the step's graphs, buffers and pinned memory (not the model or caches).
func (s *Steps) Close() {
	s.dropGraphs()
	s.freeBuffers()
	s.arena.free(s.b)
	for _, t := range []*tensor.Tensor{s.in, s.one, s.invFreq, s.tab} {
		s.b.Free(t)
	}
	hostFree(unsafe.Slice((*byte)(unsafe.Pointer(&s.inHost[0])), 4*len(s.inHost)))
	if s.tabHost != nil {
		hostFree(unsafe.Slice((*byte)(unsafe.Pointer(&s.tabHost[0])), 4*len(s.tabHost)))
	}
}

// ---- the step's kernels ----

// inputs are the device addresses of the step's tokens, positions and cache rows.
func (s *Steps) inputs() (tok, pos, row uint64) {
	base := dev(s.in)
	return base + uint64(4*s.lay.tok), base + uint64(4*s.lay.pos), base + uint64(4*s.lay.row)
}

// addAt queues the additions at p into x (rows × width), if the step steers p.
func (s *Steps) addAt(p hooks.Point, x uint64, width int) {
	if pl := s.lay.at(p); pl != nil {
		s.role("steering "+p.Name(), 0)
		base := dev(s.in)
		s.b.steerAdd(x, base+uint64(4*pl.vecs), base+uint64(4*pl.alpha), s.lay.rows, width, pl.terms)
	}
}

// deltaAt builds the additions at the points ps (those the step steers), summed, in the
// steering rows, and returns their address; 0 when none is steered.
func (s *Steps) deltaAt(ps ...hooks.Point) uint64 {
	base, first := dev(s.in), true
	for _, p := range ps {
		pl := s.lay.at(p)
		if pl == nil {
			continue
		}
		s.role("steering "+p.Name(), 0)
		if first {
			s.b.steerDelta(dev(s.sdelta), base+uint64(4*pl.vecs), base+uint64(4*pl.alpha), s.lay.rows, s.c.Dim, pl.terms)
		} else {
			s.b.steerAdd(dev(s.sdelta), base+uint64(4*pl.vecs), base+uint64(4*pl.alpha), s.lay.rows, s.c.Dim, pl.terms)
		}
		first = false
	}
	if first {
		return 0
	}
	return dev(s.sdelta)
}

// boundary is the hook points at the residual stream where layer l begins: hook_embed (l = 0),
// resid_post of the layer before, and resid_pre; l = layers is the stream before the final norm.
func boundary(l, layers int) []hooks.Point {
	switch {
	case l == 0:
		return []hooks.Point{{Layer: -1, Kind: hooks.Embed}, {Layer: 0, Kind: hooks.ResidPre}}
	case l == layers:
		return []hooks.Point{{Layer: l - 1, Kind: hooks.ResidPost}}
	}
	return []hooks.Point{{Layer: l - 1, Kind: hooks.ResidPost}, {Layer: l, Kind: hooks.ResidPre}}
}

// queue queues the step of the current layout in the form the backend and the row count select.
func (s *Steps) queue() {
	switch {
	case s.b.Deterministic:
		s.queueOps()
	case s.lay.rows == 1 && s.Fused:
		prev := s.b.pdl
		s.b.pdl = s.PDL
		defer func() { s.b.pdl = prev }()
		s.queueFused()
	default:
		s.queueBatched()
	}
}

// attention queues RoPE of q and k, the cache append and the decode attention of layer l: one
// launch (decode.cu) when RoPE, else the ops' kernels.
func (s *Steps) attention(l int) {
	b, c, R := s.b, s.c, s.lay.rows
	_, pos, row := s.inputs()
	kc, vc := s.kvDevs[2*l], s.kvDevs[2*l+1]
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	s.role("rope+kv+attention", s.kvBytes())
	if s.RoPE && !b.Deterministic {
		b.attentionDecodeRoPEGQA(dev(s.att), dev(s.q), dev(s.k), dev(s.v), kc, vc, s.kvDT, pos, dev(s.tab), s.width, s.kvBlock(),
			dev(s.invFreq), dev(s.part), dev(s.count), R, c.Heads, c.KVHeads, c.HeadDim, scale)
		return
	}
	b.rope(dev(s.q), pos, dev(s.invFreq), R, c.Heads, c.HeadDim)
	b.rope(dev(s.k), pos, dev(s.invFreq), R, c.KVHeads, c.HeadDim)
	b.kvStore(kc, vc, s.kvDT, dev(s.k), dev(s.v), row, R, c.KVHeads*c.HeadDim)
	b.attentionDecodeGQA(dev(s.att), dev(s.q), kc, vc, s.kvDT, pos, dev(s.tab), s.width, s.kvBlock(), dev(s.part), dev(s.count),
		R, c.Heads, c.KVHeads, c.HeadDim, scale)
}

// kvBlock is the block size of the step's cache: positions per table entry.
func (s *Steps) kvBlock() int { return s.blockSize }

// queueFused is the one-row fused form. The residual stream lives in cur; delta is the last
// block's output not yet added to it (none before layer 0), which the next GEMV adds while it
// normalises, writing the sum to the other buffer.
func (s *Steps) queueFused() {
	b, m, c := s.b, s.m, s.c
	tok, _, _ := s.inputs()
	s.role("embedding", 0)
	b.embedding(dev(s.x), m.Embed, tok, 1, c.Dim)
	cur, other := s.x, s.x2
	var delta uint64
	steer := func(sd uint64) (alpha, vec uint64) {
		if sd == 0 {
			return 0, 0
		}
		return dev(s.one), sd
	}
	for l := range m.Layers {
		w := &m.Layers[l]
		// x += delta (+ steering); q, k, v = rmsnorm(x)·Wᵀ.
		alpha, vec := steer(s.deltaAt(boundary(l, c.Layers)...))
		s.role("rmsnorm+q/k/v", weightBytes(w.AttnNorm, w.WQ, w.WK, w.WV, w.BQ, w.BK, w.BV))
		b.matvec(dev(cur), 1, c.Dim, &matvecNorm{xb: delta, xout: dev(other), alpha: alpha, steer: vec, w: w.AttnNorm, eps: c.NormEps},
			gemvSeg{w: w.WQ, bias: w.BQ, y: dev(s.q)}, gemvSeg{w: w.WK, bias: w.BK, y: dev(s.k)}, gemvSeg{w: w.WV, bias: w.BV, y: dev(s.v)})
		cur, other = other, cur
		s.attention(l)
		s.role("o_proj", weightBytes(w.WO, w.BO))
		b.matvec(dev(s.att), 1, c.Heads*c.HeadDim, nil, gemvSeg{w: w.WO, bias: w.BO, y: dev(s.proj)})
		s.addAt(hooks.Point{Layer: l, Kind: hooks.AttnOut}, dev(s.proj), c.Dim)
		// x += o_proj (+ steering); hidden = silu(rmsnorm(x)·gateᵀ) ⊙ (rmsnorm(x)·upᵀ).
		alpha, vec = steer(s.deltaAt(hooks.Point{Layer: l, Kind: hooks.ResidMid}))
		s.role("rmsnorm+gate/up", weightBytes(w.MLPNorm, w.WGate, w.WUp, w.BGate, w.BUp))
		b.matvecSwiGLU(dev(s.hidden), dev(cur), 1, c.Dim, &matvecNorm{xb: dev(s.proj), xout: dev(other), alpha: alpha, steer: vec, w: w.MLPNorm, eps: c.NormEps},
			w.WGate, w.BGate, w.WUp, w.BUp)
		cur, other = other, cur
		s.role("down_proj", weightBytes(w.WDown, w.BDown))
		b.matvec(dev(s.hidden), 1, c.FFNDim, nil, gemvSeg{w: w.WDown, bias: w.BDown, y: dev(s.proj)})
		s.addAt(hooks.Point{Layer: l, Kind: hooks.MLPOut}, dev(s.proj), c.Dim)
		delta = dev(s.proj)
	}
	// x += down_proj (+ steering); logits = rmsnorm(x)·lm_headᵀ (the sum itself is not needed again).
	alpha, vec := steer(s.deltaAt(boundary(c.Layers, c.Layers)...))
	s.role("rmsnorm+lm_head", weightBytes(m.Norm, m.LMHead))
	b.matvec(dev(cur), 1, c.Dim, &matvecNorm{xb: delta, alpha: alpha, steer: vec, w: m.Norm, eps: c.NormEps}, gemvSeg{w: m.LMHead, y: dev(s.logits)})
}

// queueBatched is the batched form: the residual add (+ steering) fused into each RMSNorm, the
// products as MatMul picks them for the row count.
func (s *Steps) queueBatched() {
	b, m, c, R := s.b, s.m, s.c, s.lay.rows
	tok, _, _ := s.inputs()
	s.role("embedding", 0)
	b.embedding(dev(s.x), m.Embed, tok, R, c.Dim)
	var delta uint64
	for l := range m.Layers {
		w := &m.Layers[l]
		sd := s.deltaAt(boundary(l, c.Layers)...)
		s.role("residual+rmsnorm", weightBytes(w.AttnNorm))
		b.residualRMSNorm(dev(s.xn), dev(s.x), delta, sd, w.AttnNorm, R, c.Dim, c.NormEps)
		s.role("q/k/v", weightBytes(w.WQ, w.WK, w.WV, w.BQ, w.BK, w.BV))
		b.products(dev(s.xn), R, c.Dim, gemvSeg{w: w.WQ, bias: w.BQ, y: dev(s.q)}, gemvSeg{w: w.WK, bias: w.BK, y: dev(s.k)}, gemvSeg{w: w.WV, bias: w.BV, y: dev(s.v)})
		s.attention(l)
		s.role("o_proj", weightBytes(w.WO, w.BO))
		b.products(dev(s.att), R, c.Heads*c.HeadDim, gemvSeg{w: w.WO, bias: w.BO, y: dev(s.proj)})
		s.addAt(hooks.Point{Layer: l, Kind: hooks.AttnOut}, dev(s.proj), c.Dim)
		sd = s.deltaAt(hooks.Point{Layer: l, Kind: hooks.ResidMid})
		s.role("residual+rmsnorm", weightBytes(w.MLPNorm))
		b.residualRMSNorm(dev(s.xn), dev(s.x), dev(s.proj), sd, w.MLPNorm, R, c.Dim, c.NormEps)
		s.role("gate/up", weightBytes(w.WGate, w.WUp, w.BGate, w.BUp))
		b.productsSwiGLU(dev(s.hidden), dev(s.tmp), dev(s.xn), R, c.Dim, w.WGate, w.BGate, w.WUp, w.BUp)
		s.role("down_proj", weightBytes(w.WDown, w.BDown))
		b.products(dev(s.hidden), R, c.FFNDim, gemvSeg{w: w.WDown, bias: w.BDown, y: dev(s.proj)})
		s.addAt(hooks.Point{Layer: l, Kind: hooks.MLPOut}, dev(s.proj), c.Dim)
		delta = dev(s.proj)
	}
	sd := s.deltaAt(boundary(c.Layers, c.Layers)...)
	s.role("residual+rmsnorm", weightBytes(m.Norm))
	b.residualRMSNorm(dev(s.xn), dev(s.x), delta, sd, m.Norm, R, c.Dim, c.NormEps)
	s.role("lm_head", weightBytes(m.LMHead))
	b.products(dev(s.xn), R, c.Dim, gemvSeg{w: m.LMHead, y: dev(s.logits)})
}

// queueOps is the ops' own kernels in llama.Runner.layer's order (Deterministic): the same bits
// as a pass of Runner.Forward over the same rows.
func (s *Steps) queueOps() {
	b, m, c, R := s.b, s.m, s.c, s.lay.rows
	tok, _, _ := s.inputs()
	at := func(l int, k hooks.Kind, x uint64, width int) { s.addAt(hooks.Point{Layer: l, Kind: k}, x, width) }
	b.embedding(dev(s.x), m.Embed, tok, R, c.Dim)
	at(-1, hooks.Embed, dev(s.x), c.Dim)
	for l := range m.Layers {
		w := &m.Layers[l]
		at(l, hooks.ResidPre, dev(s.x), c.Dim)
		b.rmsnorm(dev(s.xn), dev(s.x), w.AttnNorm, R, c.Dim, c.NormEps)
		b.products(dev(s.xn), R, c.Dim, gemvSeg{w: w.WQ, bias: w.BQ, y: dev(s.q)})
		b.products(dev(s.xn), R, c.Dim, gemvSeg{w: w.WK, bias: w.BK, y: dev(s.k)})
		b.products(dev(s.xn), R, c.Dim, gemvSeg{w: w.WV, bias: w.BV, y: dev(s.v)})
		s.attention(l)
		b.products(dev(s.att), R, c.Heads*c.HeadDim, gemvSeg{w: w.WO, bias: w.BO, y: dev(s.proj)})
		at(l, hooks.AttnOut, dev(s.proj), c.Dim)
		b.add(dev(s.x), dev(s.x), dev(s.proj), R*c.Dim)
		at(l, hooks.ResidMid, dev(s.x), c.Dim)
		b.rmsnorm(dev(s.xn), dev(s.x), w.MLPNorm, R, c.Dim, c.NormEps)
		b.products(dev(s.xn), R, c.Dim, gemvSeg{w: w.WGate, bias: w.BGate, y: dev(s.hidden)})
		b.products(dev(s.xn), R, c.Dim, gemvSeg{w: w.WUp, bias: w.BUp, y: dev(s.tmp)})
		b.siluMul(dev(s.hidden), dev(s.hidden), dev(s.tmp), R*c.FFNDim)
		b.products(dev(s.hidden), R, c.FFNDim, gemvSeg{w: w.WDown, bias: w.BDown, y: dev(s.proj)})
		at(l, hooks.MLPOut, dev(s.proj), c.Dim)
		b.add(dev(s.x), dev(s.x), dev(s.proj), R*c.Dim)
		at(l, hooks.ResidPost, dev(s.x), c.Dim)
	}
	b.rmsnorm(dev(s.xn), dev(s.x), m.Norm, R, c.Dim, c.NormEps)
	b.products(dev(s.xn), R, c.Dim, gemvSeg{w: m.LMHead, y: dev(s.logits)})
}

// role names the next launches for the profiler (a no-op otherwise): what part of the model
// they compute and the bytes they must read (weights, or the KV cache).
func (s *Steps) role(name string, bytes float64) {
	if t := s.b.timing; t != nil {
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

// kvBytes is what attention reads of the cache at the position the next step feeds (one row).
func (s *Steps) kvBytes() float64 {
	c := s.c
	return float64((s.hostPos + 1) * c.KVHeads * c.HeadDim * s.kvDT.Size() * 2)
}

// vector is the device address of a steering vector's copy, made at its first use and kept while
// the host slice is (the map holds it), so that a step uploads only the vector's address.
func (b *Backend) vector(v []float32) uint64 {
	if len(v) == 0 {
		return 0
	}
	if t, ok := b.vecs[&v[0]]; ok && t.Numel() == len(v) {
		return dev(t)
	}
	if b.vecs == nil {
		b.vecs = map[*float32]*tensor.Tensor{}
	}
	t := b.Upload(tensor.FromF32(v, len(v)))
	b.vecs[&v[0]] = t
	return dev(t)
}

// trimVectors drops every device copy of a steering vector once there are more than maxVectors,
// before a step or an op resolves the addresses it uses (never between: an address it holds stays
// valid until the work is queued); they are made again as they are used.
func (b *Backend) trimVectors() {
	if len(b.vecs) <= maxVectors {
		return
	}
	for k, t := range b.vecs {
		b.Free(t)
		delete(b.vecs, k)
	}
}

// maxVectors is the most steering vectors the backend keeps on the device.
const maxVectors = 1024
