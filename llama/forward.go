package llama

import (
	"fmt"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// Batch is a flat batch of tokens, each with its sequence id and position. Prefill of a prompt,
// one decode step of many sequences, or a mix of both are all this one shape.
type Batch struct {
	Tokens []int32 // token ids
	Seq    []int32 // sequence id of each token: the KV cache slot it reads and writes
	Pos    []int32 // position of each token within its sequence
	Logits []bool  // which tokens produce logits, in token order; nil means the last token only
}

// Prompt makes the batch of one sequence's tokens at positions start, start+1, …, asking for logits
// at the last token only, or at every token when all is set.
func Prompt(seq int32, tokens []int32, start int, all bool) Batch {
	b := Batch{Tokens: tokens, Seq: make([]int32, len(tokens)), Pos: make([]int32, len(tokens)), Logits: make([]bool, len(tokens))}
	for i := range tokens {
		b.Seq[i], b.Pos[i] = seq, int32(start+i)
		b.Logits[i] = all || i == len(tokens)-1
	}
	return b
}

// Runner runs a model's forward pass on a backend. It owns the activations (the run state), in
// the backend's memory and sized for the largest batch seen so far, so repeated steps of one shape
// allocate nothing. Not safe for concurrent use.
type Runner struct {
	Model   *Model // weights in the backend's memory
	Backend tensor.Backend
	act     tensor.DType // activations, gradients and the KV cache: F32, or F64 for exact analysis
	prec    Precision

	n, m int // tokens and logit rows the views below are shaped for

	products [3]tensor.Product // the products of one input, for a backend with MatMulShared
	// The decode-step fast path (steps.go): the backend's DecodeSteps once made, or stepsOff when
	// it has none; buffers reused from step to step.
	steps      DecodeSteps
	stepsOff   bool
	invariant  bool    // products in chunks that keep rows independent (invariant.go)
	padRows    []int32 // the rows of one padded chunk
	seen       []int32
	stepPoints []hooks.Point
	stepTerms  []PointTerms

	x     *tensor.Tensor // (n, dim) residual stream
	xn    *tensor.Tensor // (n, dim) normalised residual
	q     *tensor.Tensor // (n, heads, head_dim)
	k, v  *tensor.Tensor // (n, kv_heads, head_dim)
	q2    *tensor.Tensor // q as (n, heads·head_dim), the projection's output
	k2    *tensor.Tensor // k as (n, kv_heads·head_dim)
	v2    *tensor.Tensor // v as (n, kv_heads·head_dim)
	att   *tensor.Tensor // (n, heads·head_dim) attention output before o_proj
	z     *tensor.Tensor // att as (n, heads, head_dim), each head's output
	proj  *tensor.Tensor // (n, dim) o_proj or down_proj output
	gate  *tensor.Tensor // (n, ffn)
	up    *tensor.Tensor // (n, ffn)
	rows  []int32        // (m) tokens that produce logits
	last  *tensor.Tensor // (m, dim) their final hidden states
	logit *tensor.Tensor // (m, vocab) in the backend's memory
	host  *tensor.Tensor // (m, vocab) the logits on the host, when the backend's memory is not

	spare spares // host buffers that recorded and backward passes gave back (mem)

	store struct { // backing tensors the views above are cut from, in the backend's memory
		x, xn, q, k, v, att, proj, gate, up, last, logit, host *tensor.Tensor
		padX, padY                                             *tensor.Tensor // invariant.go's padded chunks
	}
}

// NewRunner prepares a runner with F32 activations, moving the weights into the backend's memory
// if they are not there (on the CPU they stay where they are). Activations are allocated on the
// first Forward.
func NewRunner(m *Model, b tensor.Backend) *Runner {
	return NewRunnerOf(m, b, tensor.F32)
}

// NewRunnerOf prepares a runner whose activations, gradients and KV cache have dtype act: F32, or
// F64 (on the CPU) for finite-difference checks and exact analysis. Logits come back in act.
func NewRunnerOf(m *Model, b tensor.Backend, act tensor.DType) *Runner {
	return &Runner{Model: m.To(b), Backend: b, act: act}
}

func (r *Runner) dtype() tensor.DType { return r.act }

// Precision trades exactness for speed in inference: Forward, Generate, Score and the caches
// NewKVCache makes. Recording for the backward pass (Record, Gradients) always runs exact. The
// zero value is exact: F32 activations, KV cache and arithmetic, every weight widened exactly.
type Precision struct {
	// KVBF16 stores keys and values in bfloat16: each rounded to 8 significant bits as it is
	// stored, for half the cache memory and half the bytes attention reads per position.
	KVBF16 bool
	// ComputeBF16 multiplies the activations, rounded to bfloat16, with bf16 weights in bf16
	// pairs with F32 sums (AVX512-BF16), where a batch is large enough for the GEMM (prefill):
	// about twice the arithmetic rate of the exact F32 GEMM. Decoding is bound by the bytes of
	// the weights, not by arithmetic, and stays exact.
	ComputeBF16 bool
}

// bf16KVBackend is a backend that keeps a BF16 KV cache under F32 activations (package gpu).
type bf16KVBackend interface {
	BF16KVCache() bool
}

// SetPrecision sets how the runner trades exactness for speed. A bf16 KV cache needs F32
// activations on the CPU backend or on a backend that stores and attends over one (the GPU); bf16
// compute needs F32 activations on the CPU backend.
func (r *Runner) SetPrecision(p Precision) error {
	_, cpu := r.Backend.(*tensor.CPU)
	if p.KVBF16 {
		kb, ok := r.Backend.(bf16KVBackend)
		if !(cpu || ok && kb.BF16KVCache()) || r.act != tensor.F32 {
			return fmt.Errorf("a bf16 KV cache needs F32 activations on the CPU or GPU backend")
		}
	}
	if p.ComputeBF16 {
		if !cpu || r.act != tensor.F32 {
			return fmt.Errorf("bf16 compute needs F32 activations on the CPU backend")
		}
	}
	r.prec = p
	return nil
}

// BatchInvariant is a backend that can compute each row of a batch independently of the other
// rows, so that a prompt's logits are the same bits whatever batch it runs in and wherever it
// sits in it (package gpu: one kernel and one order of summation per op whatever the batch size;
// slower).
type BatchInvariant interface {
	SetBatchInvariant(on bool)
}

// SetDeterministic makes every row's result independent of the batch it runs in, or lets each
// product pick the fastest kernel for its batch size (the default). A BatchInvariant backend does
// it itself; on others (the CPU) the runner hands MatMul rows in chunks that run one kernel
// whatever the batch (invariant.go), at some cost in prefill.
func (r *Runner) SetDeterministic(on bool) {
	if bi, ok := r.Backend.(BatchInvariant); ok {
		bi.SetBatchInvariant(on)
		return
	}
	r.invariant = on
}

// To returns the model with every weight uploaded to b; on the CPU, m itself.
func (m *Model) To(b tensor.Backend) *Model {
	if up := b.Upload(m.Embed); up == m.Embed {
		return m
	}
	c := *m
	c.Layers = append([]Layer(nil), m.Layers...)
	for _, w := range c.Weights() {
		if *w.Dst != nil {
			*w.Dst = b.Upload(*w.Dst)
		}
	}
	if c.Config.TieEmbeddings {
		c.LMHead = c.Embed
	}
	c.files = nil // the original keeps the mapping
	return &c
}

// view cuts a (rows, …) tensor from the front of *buf, reallocating it in the backend's memory
// with room for capRows rows when it is too small.
func (r *Runner) view(buf **tensor.Tensor, capRows int, dtype tensor.DType, shape ...int) *tensor.Tensor {
	per := 1
	for _, d := range shape[1:] {
		per *= d
	}
	if *buf == nil || (*buf).Shape[0] < shape[0] || (*buf).DType != dtype {
		if d, ok := r.Backend.(DeviceMemory); ok && *buf != nil && !(*buf).OnHost() {
			d.Free(*buf) // a device's memory is not garbage-collected
		}
		*buf = r.Backend.Alloc(dtype, capRows, per)
	}
	return (*buf).Slice(0, shape[0]).Reshape(shape...)
}

func (r *Runner) shape(n, m int) {
	if n == r.n && m == r.m {
		return
	}
	c := r.Model.Config
	// Grow by doubling, so a sequence of growing batches reallocates a logarithmic number of times.
	capN, capM := max(n, 2*r.n), max(m, 2*r.m)
	s := &r.store
	dt := r.dtype()
	r.x = r.view(&s.x, capN, dt, n, c.Dim)
	r.xn = r.view(&s.xn, capN, dt, n, c.Dim)
	r.q = r.view(&s.q, capN, dt, n, c.Heads, c.HeadDim)
	r.k = r.view(&s.k, capN, dt, n, c.KVHeads, c.HeadDim)
	r.v = r.view(&s.v, capN, dt, n, c.KVHeads, c.HeadDim)
	r.q2 = r.q.Reshape(n, c.Heads*c.HeadDim)
	r.k2 = r.k.Reshape(n, c.KVHeads*c.HeadDim)
	r.v2 = r.v.Reshape(n, c.KVHeads*c.HeadDim)
	r.att = r.view(&s.att, capN, dt, n, c.Heads*c.HeadDim)
	r.z = r.att.Reshape(n, c.Heads, c.HeadDim)
	r.proj = r.view(&s.proj, capN, dt, n, c.Dim)
	r.gate = r.view(&s.gate, capN, dt, n, c.FFNDim)
	r.up = r.view(&s.up, capN, dt, n, c.FFNDim)
	r.last = r.view(&s.last, capM, dt, m, c.Dim)
	r.logit = r.view(&s.logit, capM, dt, m, c.Vocab)
	r.host = r.logit
	if !r.logit.OnHost() {
		if s.host == nil || s.host.Shape[0] < m {
			s.host = tensor.New(dt, capM, c.Vocab)
		}
		r.host = s.host.Slice(0, m)
	}
	if cap(r.rows) < m {
		r.rows = make([]int32, 0, capM)
	}
	r.n, r.m = n, m
}

// NewKVCache makes a cache for the runner's model in its backend's memory, in the runner's
// activation dtype (BF16 with Precision.KVBF16): enough blocks of blockSize positions for the
// given total number of positions across all sequences.
func (r *Runner) NewKVCache(positions, blockSize int) *tensor.KVCache {
	dt := r.dtype()
	if r.prec.KVBF16 {
		dt = tensor.BF16
	}
	return r.newKVCache(dt, positions, blockSize)
}

func (r *Runner) newKVCache(dt tensor.DType, positions, blockSize int) *tensor.KVCache {
	c := r.Model.Config
	blocks := max((positions+blockSize-1)/blockSize, 1)
	return tensor.NewKVCacheOf(r.Backend, dt, c.Layers, c.KVHeads, c.HeadDim, blockSize, blocks)
}

// Check validates a batch against the model and cache: token ids in the vocabulary, positions
// under max_position_embeddings, parallel slices of one length. Forward calls it; callers that
// take input from users may call it first for a better error.
func (m *Model) Check(b Batch) error {
	n := len(b.Tokens)
	if n == 0 {
		return fmt.Errorf("empty batch")
	}
	if len(b.Seq) != n || len(b.Pos) != n || (b.Logits != nil && len(b.Logits) != n) {
		return fmt.Errorf("batch of %d tokens has %d sequence ids, %d positions and %d logit flags", n, len(b.Seq), len(b.Pos), len(b.Logits))
	}
	c := m.Config
	for i, t := range b.Tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("token %d of the batch is id %d, outside the vocabulary of %d", i, t, c.Vocab)
		}
		if b.Pos[i] < 0 || int(b.Pos[i]) >= c.MaxPositions {
			return fmt.Errorf("token %d of the batch is at position %d; the model takes positions 0 to %d (max_position_embeddings %d)", i, b.Pos[i], c.MaxPositions-1, c.MaxPositions)
		}
		if b.Seq[i] < 0 {
			return fmt.Errorf("token %d of the batch has sequence id %d", i, b.Seq[i])
		}
	}
	return nil
}

// Forward runs the batch through the model, writing each token's keys and values into kv, and
// returns the logits of the tokens the batch asks for: (rows, vocab) F32 on the host, in token
// order. The returned tensor is the runner's and holds until the next call. h holds the run's hook
// interventions; nil is the fast path and costs nothing.
func (r *Runner) Forward(b Batch, kv *tensor.KVCache, h *hooks.Set) (*tensor.Tensor, error) {
	return r.forward(b, kv, h, nil)
}

// ForwardDevice runs the batch as Forward does but leaves the logits where the backend computed
// them — in a device's memory on a device — for reductions there (a metric's few values rather
// than rows of the vocabulary). The tensor is the runner's and holds until the next call.
func (r *Runner) ForwardDevice(b Batch, kv *tensor.KVCache, h *hooks.Set) (*tensor.Tensor, error) {
	return r.pass(b, kv, h, nil)
}

func (r *Runner) forward(b Batch, kv *tensor.KVCache, h *hooks.Set, rec *Record) (*tensor.Tensor, error) {
	logits, err := r.pass(b, kv, h, rec)
	if err == nil && logits != r.host {
		r.Backend.Download(r.host, logits)
	}
	return r.host, err
}

// RowArgmax is a backend that finds the largest value of each row of a tensor in its own memory
// (the lowest index on ties, as greedy sampling does), so that greedy decoding of a batch moves
// one id per row instead of a row of logits.
type RowArgmax interface {
	ArgmaxRows(dst []int32, x *tensor.Tensor)
}

// greedy runs the batch as Forward does and writes into ids the argmax of each row of logits
// Forward would return, found on the backend when it can (RowArgmax).
func (r *Runner) greedy(b Batch, kv *tensor.KVCache, h *hooks.Set, ids []int32) error {
	logits, err := r.pass(b, kv, h, nil)
	if err != nil {
		return err
	}
	if am, ok := r.Backend.(RowArgmax); ok && logits != r.host {
		am.ArgmaxRows(ids, logits)
		return nil
	}
	if logits != r.host {
		r.Backend.Download(r.host, logits)
	}
	vocab := r.Model.Config.Vocab
	for i := range ids {
		ids[i] = argmax(r.host.F32()[i*vocab : (i+1)*vocab])
	}
	return nil
}

// pass runs the batch through the model and returns the logits in the backend's memory (the host
// tensor itself on the CPU; after an error, or with no rows asking for logits, the host tensor
// unchanged).
func (r *Runner) pass(b Batch, kv *tensor.KVCache, h *hooks.Set, rec *Record) (*tensor.Tensor, error) {
	m := r.Model
	if err := m.Check(b); err != nil {
		return nil, err
	}
	for i := range b.Tokens {
		if need := int(b.Pos[i]) + 1; kv.Capacity(int(b.Seq[i])) < need {
			if err := kv.Reserve(int(b.Seq[i]), need); err != nil {
				return nil, err
			}
		}
	}
	rows := 0
	for i := range b.Tokens {
		if b.Logits == nil && i == len(b.Tokens)-1 || b.Logits != nil && b.Logits[i] {
			rows++
		}
	}
	r.shape(len(b.Tokens), rows)
	r.rows = r.rows[:0]
	for i := range b.Tokens {
		if b.Logits == nil && i == len(b.Tokens)-1 || b.Logits != nil && b.Logits[i] {
			r.rows = append(r.rows, int32(i))
		}
	}
	if logits, ok, err := r.stepped(b, kv, h, rec); ok || err != nil {
		if err != nil {
			return r.host, err
		}
		return logits, nil
	}
	f := firing{h: h, be: r.Backend, seq: b.Seq, pos: b.Pos}

	be := r.Backend
	be.Embedding(r.x, m.Embed, b.Tokens)
	f.at(hooks.Point{Layer: -1, Kind: hooks.Embed}, r.x)
	for l := range m.Layers {
		r.layer(l, b, kv, &f, rec)
	}
	if rec != nil {
		n := rec.recorded()
		rec.final = rec.mem.clone(r.x.Slice(0, n))
		rec.rows = rec.rows[:0]
		for _, t := range r.rows {
			if int(t) < n {
				rec.rows = append(rec.rows, t)
			}
		}
	}
	if f.err != nil || rows == 0 {
		return r.host, f.err
	}
	be.Embedding(r.last, r.x, r.rows) // gather the rows that produce logits
	be.RMSNorm(r.last, r.last, m.Norm, m.Config.NormEps)
	if h.Active(hooks.Point{Layer: -1, Kind: hooks.FinalNorm}) {
		seq, pos := make([]int32, rows), make([]int32, rows)
		for i, t := range r.rows {
			seq[i], pos[i] = b.Seq[t], b.Pos[t]
		}
		last := firing{h: h, be: r.Backend, seq: seq, pos: pos}
		if last.at(hooks.Point{Layer: -1, Kind: hooks.FinalNorm}, r.last); last.err != nil {
			return r.host, last.err
		}
	}
	r.matMul(rec == nil, r.logit, r.last, m.LMHead, nil)
	return r.logit, nil
}

// firing runs a hook set's interventions at each point of one forward pass and keeps the first
// error; after an error the rest of the pass runs without hooks (its result is discarded).
type firing struct {
	h        *hooks.Set
	be       tensor.Backend
	seq, pos []int32
	delta    *tensor.Tensor // host rows of the additions at a point, for activations on a device
	terms    []hooks.Term   // the additions at a point, for a SteerBackend
	err      error
}

// SteerBackend is a backend that adds steering terms to activations in its own memory: x (n,
// width) row i += Σ_t terms[t].Alpha[i]·terms[t].Vector, the rows built there from the vectors
// (copied to the device once) and the strengths, so no rows of additions cross to the device.
type SteerBackend interface {
	AddTerms(x *tensor.Tensor, terms []hooks.Term)
}

func (f *firing) at(p hooks.Point, x *tensor.Tensor) {
	if f.err != nil || !f.h.Active(p) {
		return
	}
	if x.OnHost() {
		f.err = f.h.At(p, x, f.seq, f.pos)
		return
	}
	// On a device, a point with additions alone takes them as terms built there (SteerBackend), or
	// as one uploaded delta: steering a batch costs an add. Reads, captures and patches run there
	// too (hooks.Set.AtDevice).
	if !f.h.Additive(p) {
		d, ok := f.be.(hooks.Device)
		if !ok {
			f.err = fmt.Errorf("%s: this backend keeps activations in its own memory and cannot read or patch them there; only additions (steering) run on it", p.Name())
			return
		}
		f.err = f.h.AtDevice(p, x, f.seq, f.pos, d)
		return
	}
	if sb, ok := f.be.(SteerBackend); ok {
		f.terms = f.h.Terms(f.terms, p, f.seq, f.pos)
		sb.AddTerms(x, f.terms)
		return
	}
	f.delta = f.h.Delta(f.delta, p, f.seq, f.pos)
	dev := f.be.Upload(&tensor.Tensor{Shape: x.Shape, DType: tensor.F32, Data: f.delta.Data})
	f.be.Add(x, x, dev)
	if pool, ok := f.be.(interface{ Free(*tensor.Tensor) }); ok {
		pool.Free(dev)
	}
}

// bf16Backend is a backend with the bf16 compute mode (tensor.CPU).
type bf16Backend interface {
	MatMulBF16(dst, x, w, bias *tensor.Tensor)
}

// matMul is the backend's MatMul, or its MatMulBF16 when the precision asks for bf16 compute and
// the pass may use it (fast: not a recording for the backward pass).
func (r *Runner) matMul(fast bool, dst, x, w, b *tensor.Tensor) {
	if fast && r.prec.ComputeBF16 && !r.invariant { // bf16 products would round by batch size
		r.Backend.(bf16Backend).MatMulBF16(dst, x, w, b)
		return
	}
	r.product(dst, x, w, b)
}

// sharedBackend is a backend that computes several products of one input in one pass
// (tensor.CPU): q, k and v, or gate and up.
type sharedBackend interface {
	MatMulShared(x *tensor.Tensor, bf16 bool, ps ...tensor.Product)
}

// shared computes the products of x, as matMul would one by one.
func (r *Runner) shared(fast bool, x *tensor.Tensor, ps ...tensor.Product) {
	sb, ok := r.Backend.(sharedBackend)
	if !ok || r.invariant { // a deterministic runner cuts each product into chunks of rows
		for _, p := range ps {
			r.matMul(fast, p.Dst, x, p.W, p.Bias)
		}
		return
	}
	// The runner's own array, so that the products do not escape to the heap on every call.
	n := copy(r.products[:], ps)
	sb.MatMulShared(x, fast && r.prec.ComputeBF16, r.products[:n]...)
}

// patternBackend is the explicit attention path (probabilities, then their product with V) that a
// hook on attn.hook_pattern needs; the fused Attention op never forms the probabilities.
type patternBackend interface {
	AttentionPattern(p, q *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32)
	AttentionApply(dst, p *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32)
}

// layer runs decoder block l on the residual stream r.x in place:
// h = x + o_proj(attention(rope(q), rope(k), v)) over rmsnorm(x); x' = h + down(silu(gate) ⊙ up) over rmsnorm(h).
func (r *Runner) layer(l int, b Batch, kv *tensor.KVCache, f *firing, rec *Record) {
	be, w, c := r.Backend, &r.Model.Layers[l], r.Model.Config
	at := func(k hooks.Kind, x *tensor.Tensor) { f.at(hooks.Point{Layer: l, Kind: k}, x) }
	mm := func(dst, x, w, b *tensor.Tensor) { r.matMul(rec == nil, dst, x, w, b) }
	var lr *layerRecord
	// q, k and v, the attention output and the gate and up projections are the runner's, or with a
	// record the record's own buffers, which the layer writes in place of copying them afterwards.
	q, k, v, att, gate, up := r.q, r.k, r.v, r.att, r.gate, r.up
	q2, k2, v2, z := r.q2, r.k2, r.v2, r.z
	inPlace := false
	if rec != nil {
		rec.layers = append(rec.layers, layerRecord{})
		lr = &rec.layers[l]
		// In place where the record lives beside the runner's buffers (both on the host, or both
		// on a device); else keep copies.
		if m := rec.mem; m.onDevice() != r.x.OnHost() {
			inPlace = true
			q, k, v, att, gate, up = m.scratch(q), m.scratch(k), m.scratch(v), m.scratch(att), m.scratch(gate), m.scratch(up)
			n := r.n
			q2, k2, v2 = q.Reshape(n, c.Heads*c.HeadDim), k.Reshape(n, c.KVHeads*c.HeadDim), v.Reshape(n, c.KVHeads*c.HeadDim)
			z = att.Reshape(n, c.Heads, c.HeadDim)
		}
	}

	// Attention block.
	at(hooks.ResidPre, r.x)
	be.RMSNorm(r.xn, r.x, w.AttnNorm, c.NormEps)
	r.shared(rec == nil, r.xn, tensor.Product{Dst: q2, W: w.WQ, Bias: w.BQ},
		tensor.Product{Dst: k2, W: w.WK, Bias: w.BK}, tensor.Product{Dst: v2, W: w.WV, Bias: w.BV})
	at(hooks.Q, q)
	at(hooks.K, k)
	at(hooks.V, v)
	be.RoPE(q, b.Pos, r.Model.InvFreq)
	be.RoPE(k, b.Pos, r.Model.InvFreq)
	be.StoreKV(kv, l, k, v, b.Seq, b.Pos)
	if rec != nil && len(rec.share.src) > 0 {
		m := rec.mem
		be.StoreKV(kv, l, m.rowsOf(k, rec.share.src), m.rowsOf(v, rec.share.src), rec.share.seq, rec.share.pos)
		m.release()
	}
	if p := (hooks.Point{Layer: l, Kind: hooks.Pattern}); f.h.Active(p) {
		r.explicitAttention(l, b, kv, f, att, q)
	} else {
		be.Attention(att, q, kv, l, b.Seq, b.Pos)
	}
	at(hooks.Z, z)
	if lr != nil {
		lr.x = rec.keep(lr, r.x, false)
		lr.q, lr.k, lr.v, lr.z = rec.keep(lr, q, inPlace), rec.keep(lr, k, inPlace), rec.keep(lr, v, inPlace), rec.keep(lr, z, inPlace)
	}
	mm(r.proj, att, w.WO, w.BO)
	at(hooks.AttnOut, r.proj)
	be.Add(r.x, r.x, r.proj)

	// MLP block.
	at(hooks.ResidMid, r.x)
	be.RMSNorm(r.xn, r.x, w.MLPNorm, c.NormEps)
	r.shared(rec == nil, r.xn, tensor.Product{Dst: gate, W: w.WGate, Bias: w.BGate},
		tensor.Product{Dst: up, W: w.WUp, Bias: w.BUp})
	if lr != nil {
		lr.mid, lr.gate, lr.up = rec.keep(lr, r.x, false), rec.keep(lr, gate, inPlace), rec.keep(lr, up, inPlace)
	}
	be.SiLUMul(r.gate, gate, up) // into the runner's buffer: a record keeps gate before SiLU
	at(hooks.MLPPost, r.gate)
	mm(r.proj, r.gate, w.WDown, w.BDown)
	at(hooks.MLPOut, r.proj)
	be.Add(r.x, r.x, r.proj)
	at(hooks.ResidPost, r.x)
}

// keep is what the layer record lr holds of t, a tensor of the whole pass: its first
// rec.recorded() rows, a view of t when the layer wrote t in place into the record's own buffer
// (which lr then gives back), else a copy.
func (rec *Record) keep(lr *layerRecord, t *tensor.Tensor, inPlace bool) *tensor.Tensor {
	if inPlace {
		lr.own = append(lr.own, t)
		return t.Slice(0, rec.recorded())
	}
	c := rec.mem.clone(t.Slice(0, rec.recorded()))
	lr.own = append(lr.own, c)
	return c
}

// explicitAttention forms the attention probabilities (n, heads, ctx), lets the pattern hook see
// or replace them, then applies them to the values.
func (r *Runner) explicitAttention(l int, b Batch, kv *tensor.KVCache, f *firing, att, q *tensor.Tensor) {
	pb, ok := r.Backend.(patternBackend)
	if !ok {
		f.err = fmt.Errorf("blocks.%d.attn.hook_pattern: this backend cannot form attention probabilities", l)
		r.Backend.Attention(att, q, kv, l, b.Seq, b.Pos)
		return
	}
	ctx := int32(0)
	for _, p := range b.Pos {
		ctx = max(ctx, p+1)
	}
	p := r.Backend.Alloc(r.dtype(), r.n, r.Model.Config.Heads, int(ctx))
	pb.AttentionPattern(p, q, kv, l, b.Seq, b.Pos)
	f.at(hooks.Point{Layer: l, Kind: hooks.Pattern}, p)
	pb.AttentionApply(att, p, kv, l, b.Seq, b.Pos)
	if d, ok := r.Backend.(DeviceMemory); ok && !p.OnHost() {
		d.Free(p) // hooks copied what they keep
	}
}
