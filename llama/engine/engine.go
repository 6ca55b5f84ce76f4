// Package engine serves many generation requests at once on one model with continuous batching:
// each step is one forward pass over a flat batch that mixes the prompt chunks of requests being
// prefilled with one token of every request being decoded; a request joins at the step after it
// arrives and leaves at the step it finishes. Every request carries its own steering (vectors,
// layers, strengths, positions), applied to its own rows through the add hook, so requests with
// different steering share a batch without touching each other's output.
//
// Memory is the runner's paged KV cache (tensor.KVCache): fixed-size blocks from one pool, a block
// table per sequence. A request reserves the blocks for its prompt plus max_tokens when it is
// admitted, so a running request never waits for memory or has to be preempted; it gives them
// back the moment it finishes or is cancelled. Requests that do not fit wait in a bounded queue
// in arrival order. A prefix cache (prefix.go) keeps whole blocks of earlier prompts.
//
// On the CPU, a row's result does not depend on the other rows of its batch, so a request gets
// exactly the tokens it gets alone (greedy, or sampled with its own seed).
package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Options size the engine. Zero values take the defaults in parentheses.
type Options struct {
	BlockSize   int // positions per KV block (16)
	Blocks      int // KV blocks in the pool, shared by all sequences and the prefix cache (4096)
	BatchTokens int // the token budget of one step: decode rows first, prefill chunks fill the rest (256)
	MaxRunning  int // sequences in the batch at once (32); must be below BatchTokens
	MaxWaiting  int // requests queued for admission before Submit refuses with ErrQueueFull (64)
	// PrefixBlocks is the most blocks the prefix cache may hold (Blocks/4); negative turns it off.
	// It is always off when the KV cache is not in host memory.
	PrefixBlocks int
	// OnStep, when set, is called on the engine's goroutine after each step, with no lock held.
	OnStep func(Step)
}

func (o *Options) defaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.BlockSize, 16)
	def(&o.Blocks, 4096)
	def(&o.BatchTokens, 256)
	def(&o.MaxRunning, 32)
	def(&o.MaxWaiting, 64)
	def(&o.PrefixBlocks, o.Blocks/4)
	switch {
	case o.BlockSize < 1 || o.Blocks < 1 || o.MaxRunning < 1 || o.MaxWaiting < 0:
		return fmt.Errorf("engine: block size %d, blocks %d, max running %d, max waiting %d: want positive sizes", o.BlockSize, o.Blocks, o.MaxRunning, o.MaxWaiting)
	case o.BatchTokens <= o.MaxRunning:
		// Decode rows always run; the budget must leave room for prefill or new requests starve.
		return fmt.Errorf("engine: batch tokens %d must exceed max running %d", o.BatchTokens, o.MaxRunning)
	}
	return nil
}

// Request is one generation.
type Request struct {
	Prompt    []int32
	MaxTokens int
	Sampler   llama.SamplerConfig // each request samples with its own random stream
	Stop      []int32             // ids that end it (not emitted); nil: the model's eos ids
	Steering  []Addition
	// Logprobs asks for each generated token's log-probability under the model (log softmax of
	// its logits row, before the sampler's temperature, penalties and filters) and for the
	// TopLogprobs most likely tokens with theirs, on Stream.Logprobs.
	Logprobs    bool
	TopLogprobs int
}

// Logprobs is what a request asking for log-probabilities gets with each generated token.
type Logprobs struct {
	Logprob float32
	Top     []llama.TokenLogprob // most likely first
}

// Finish says why a request ended.
type Finish uint8

const (
	FinishStop      Finish = iota // a stop id
	FinishLength                  // max tokens, or the end of the model's context
	FinishCancelled               // its context was cancelled
	FinishError                   // the forward pass failed; Result.Err says why
)

func (f Finish) String() string {
	return [...]string{"stop", "length", "cancelled", "error"}[f]
}

// Result is what a request produced.
type Result struct {
	Tokens       []int32 // generated tokens, without the stop id
	Finish       Finish
	ContextFull  bool // FinishLength at max_position_embeddings before MaxTokens
	PromptTokens int
	CachedTokens int // prompt tokens whose keys and values came from the prefix cache
	Err          error
}

// Stream is a submitted request: Tokens yields each generated token as it is chosen and is closed
// when the request ends; Result then returns the outcome. When the request asked for them,
// Logprobs holds each token's log-probabilities, sent before the token itself, so a reader that
// has a token can take its entry without waiting; it is closed with Tokens.
type Stream struct {
	Tokens   <-chan int32
	Logprobs <-chan Logprobs
	done     chan struct{}
	res      Result
}

// Result waits for the request to end and returns what it produced.
func (s *Stream) Result() Result {
	<-s.done
	return s.res
}

// Step describes one forward pass of the engine.
type Step struct {
	Decode  int  // decode rows
	Prefill int  // prompt tokens
	Steered bool // the pass carried a hook set
	Elapsed time.Duration
}

// Stats are the engine's counters.
type Stats struct {
	Waiting, Running  int
	Blocks            int // in the pool
	FreeBlocks        int // held by no sequence and no prefix-cache entry
	PrefixBlocks      int // held by the prefix cache
	PrefixEntries     int
	Steps             int
	PromptTokens      int // prompt tokens run through the model
	CachedTokens      int // prompt tokens taken from the prefix cache instead
	GeneratedTokens   int
	MixedSteps        int // steps with both prefill and decode rows
	Completed, Failed int
}

// ErrQueueFull is Submit's answer when MaxWaiting requests already wait.
var ErrQueueFull = errors.New("engine: queue full")

// ErrClosed is Submit's answer after Run has returned.
var ErrClosed = errors.New("engine: closed")

// ErrNonFinite ends a request whose chosen token's logit is not a finite number: its activations
// overflowed float32, as steering additions far beyond the residual stream's scale make them.
var ErrNonFinite = errors.New("engine: the logits are not finite numbers (activations overflowed float32)")

// Engine runs requests on one runner. Submit and Stats are safe for concurrent use; Run drives the
// model and must run on one goroutine.
type Engine struct {
	runner *llama.Runner
	opts   Options
	dims   hooks.Dims
	wakeCh chan struct{} // a buffered slot: set when there may be work

	mu      sync.Mutex // guards everything below; the engine drops it only for the forward pass
	kv      *tensor.KVCache
	waiting []*sequence
	running []*sequence // in admission order
	freeIDs []int32     // KV sequence ids no sequence or prefix entry holds
	nextID  int32
	prefix  prefixCache
	stats   Stats
	closed  bool

	// The hook set of the last step that steered decode rows only, and the sequences it steers
	// in row order; compared by identity, since a new sequence may reuse an old one's KV id.
	decodeHooks *hooks.Set
	decodeSeqs  []*sequence
}

// sequence is a request's state inside the engine.
type sequence struct {
	id           int32 // KV cache sequence id while running
	req          Request
	points       []hooks.Point // of req.Steering, parsed once
	ctx          context.Context
	unwatch      func() bool // stops the wake-up on cancellation
	key          [sha256.Size]byte
	context      []int32 // prompt, then generated tokens
	total        int     // context length at which it ends
	stop         []int32
	sampler      *llama.Sampler
	prefill      int  // prompt positions whose keys and values are in the cache
	steersDecode bool // some addition applies to its decode rows
	tokens       chan int32
	logprobs     chan Logprobs // nil unless the request asked for them
	stream       *Stream
	admitted     bool
}

// New makes an engine over the runner, with a KV cache of opts.Blocks blocks in the runner's
// backend. Call Run to start it.
func New(r *llama.Runner, opts Options) (*Engine, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	kv := r.NewKVCache(opts.Blocks*opts.BlockSize, opts.BlockSize)
	if !kv.K[0].OnHost() {
		opts.PrefixBlocks = -1 // copyBlocks works on host memory
	}
	e := &Engine{runner: r, opts: opts, dims: r.Model.Config.HookDims(), kv: kv, wakeCh: make(chan struct{}, 1)}
	e.prefix.maxBlocks = max(opts.PrefixBlocks, 0)
	e.stats.Blocks = opts.Blocks
	return e, nil
}

func (e *Engine) wake() {
	select {
	case e.wakeCh <- struct{}{}:
	default:
	}
}

// Check validates a request against the model and the engine's size, naming the field at fault.
func (e *Engine) Check(r Request) error {
	c := e.runner.Model.Config
	switch {
	case len(r.Prompt) == 0:
		return fmt.Errorf("prompt: empty")
	case len(r.Prompt) >= c.MaxPositions:
		return fmt.Errorf("prompt: %d tokens leave no room to generate: the model takes %d positions", len(r.Prompt), c.MaxPositions)
	case r.MaxTokens <= 0:
		return fmt.Errorf("max_tokens: %d, want > 0", r.MaxTokens)
	case r.TopLogprobs < 0 || r.TopLogprobs > c.Vocab || r.TopLogprobs > 0 && !r.Logprobs:
		return fmt.Errorf("top_logprobs: %d, want 0 to the vocabulary size, with logprobs", r.TopLogprobs)
	}
	for i, t := range r.Prompt {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("prompt: token %d is id %d, outside the vocabulary of %d", i, t, c.Vocab)
		}
	}
	if err := r.Sampler.Validate(); err != nil {
		return fmt.Errorf("sampler: %v", err)
	}
	for i, a := range r.Steering {
		if _, err := a.check(e.dims); err != nil {
			return fmt.Errorf("steering[%d]: %v", i, err)
		}
	}
	if need := e.blocksFor(r); need > e.opts.Blocks {
		return fmt.Errorf("max_tokens: prompt and max_tokens need %d positions, the KV cache holds %d", need*e.opts.BlockSize, e.opts.Blocks*e.opts.BlockSize)
	}
	return nil
}

// total is the context length at which r ends; MaxTokens is capped first so that a huge one
// cannot overflow the sum.
func (e *Engine) total(r Request) int {
	limit := e.runner.Model.Config.MaxPositions
	return min(len(r.Prompt)+min(r.MaxTokens, limit), limit)
}

func (e *Engine) blocksFor(r Request) int {
	return (e.total(r) + e.opts.BlockSize - 1) / e.opts.BlockSize
}

// Submit queues a request. It runs until it finishes or ctx is cancelled; cancellation frees its
// blocks at the engine's next step boundary, at once if the engine is idle.
func (e *Engine) Submit(ctx context.Context, r Request) (*Stream, error) {
	if err := e.Check(r); err != nil {
		return nil, err
	}
	stop := r.Stop
	if stop == nil {
		stop = e.runner.Model.StopIDs()
	}
	points := make([]hooks.Point, len(r.Steering))
	for i, a := range r.Steering {
		points[i], _ = a.check(e.dims) // Check passed: parsed once here, not at every step
	}
	total := e.total(r)
	tokens := make(chan int32, total-len(r.Prompt)) // never blocks the engine
	s := &sequence{
		req: r, points: points, ctx: ctx, key: prefixKey(r.Steering, len(r.Prompt)), steersDecode: steersDecode(r.Steering), total: total, stop: stop, tokens: tokens,
		context: append(make([]int32, 0, total), r.Prompt...),
		stream:  &Stream{Tokens: tokens, done: make(chan struct{})},
	}
	if r.Logprobs {
		s.logprobs = make(chan Logprobs, cap(tokens))
		s.stream.Logprobs = s.logprobs
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return nil, ErrClosed
	case len(e.waiting) >= e.opts.MaxWaiting:
		return nil, ErrQueueFull
	}
	s.sampler = llama.NewSampler(r.Sampler, e.runner.Model.Config.Vocab)
	s.stream.res.PromptTokens = len(r.Prompt)
	s.unwatch = context.AfterFunc(ctx, e.wake)
	e.waiting = append(e.waiting, s)
	e.wake()
	return s.stream, nil
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.stats
	st.Waiting, st.Running = len(e.waiting), len(e.running)
	st.FreeBlocks, st.PrefixBlocks, st.PrefixEntries = e.kv.FreeBlocks(), e.prefix.blocks, len(e.prefix.entries)
	return st
}

// Run drives the engine until ctx is cancelled, then ends every request still queued or running
// as cancelled and refuses new ones.
func (e *Engine) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	for {
		e.mu.Lock()
		if ctx.Err() != nil {
			e.closed = true
			for _, s := range append(e.running, e.waiting...) {
				e.finish(s, FinishCancelled, nil)
			}
			e.running, e.waiting = nil, nil
			e.mu.Unlock()
			return
		}
		e.reap()
		e.admit()
		b, rows := e.schedule()
		e.mu.Unlock()
		if len(b.batch.Tokens) == 0 {
			<-e.wakeCh
			continue
		}
		e.step(b, rows)
	}
}

// reap ends the requests whose context is done.
func (e *Engine) reap() {
	keep := func(list []*sequence) []*sequence {
		return slices.DeleteFunc(list, func(s *sequence) bool {
			if s.ctx.Err() == nil {
				return false
			}
			e.finish(s, FinishCancelled, nil)
			return true
		})
	}
	e.running = keep(e.running)
	e.waiting = keep(e.waiting)
}

// finish ends a request: its blocks go back to the pool before its caller hears of it.
func (e *Engine) finish(s *sequence, f Finish, err error) {
	if s.admitted {
		e.kv.Release(int(s.id))
		e.freeIDs = append(e.freeIDs, s.id)
		s.admitted = false
	}
	s.unwatch()
	s.stream.res.Tokens = s.context[len(s.req.Prompt):]
	s.stream.res.Finish, s.stream.res.Err = f, err
	switch f {
	case FinishError:
		e.stats.Failed++
	case FinishStop, FinishLength:
		e.stats.Completed++
	}
	close(s.tokens)
	if s.logprobs != nil {
		close(s.logprobs)
	}
	close(s.stream.done)
}

func (e *Engine) newID() int32 {
	if n := len(e.freeIDs); n > 0 {
		id := e.freeIDs[n-1]
		e.freeIDs = e.freeIDs[:n-1]
		return id
	}
	e.nextID++
	return e.nextID - 1
}

// admit moves waiting requests into the batch in arrival order while sequences and blocks allow;
// the first that does not fit waits, and so does everything behind it, so no request starves.
func (e *Engine) admit() {
	for len(e.waiting) > 0 && len(e.running) < e.opts.MaxRunning {
		s := e.waiting[0]
		need := e.blocksFor(s.req)
		hit, reuse := e.prefix.lookup(s.key, s.req.Prompt, e.opts.BlockSize)
		for e.kv.FreeBlocks() < need && e.prefix.evictOldest(e.kv, hit, e.releaseID) {
		}
		if e.kv.FreeBlocks() < need {
			return
		}
		s.id = e.newID()
		if err := e.kv.Reserve(int(s.id), need*e.opts.BlockSize); err != nil {
			panic("engine: " + err.Error()) // the free count was checked above
		}
		s.admitted = true
		if hit != nil {
			copyBlocks(e.kv, s.id, hit.seq, reuse)
			e.prefix.touch(hit)
			s.prefill = reuse * e.opts.BlockSize
			s.stream.res.CachedTokens = s.prefill
			e.stats.CachedTokens += s.prefill
		}
		e.waiting = e.waiting[1:]
		e.running = append(e.running, s)
	}
}

func (e *Engine) releaseID(id int32) { e.freeIDs = append(e.freeIDs, id) }

// row is one logits row of a step: the sequence whose next token it chooses.
type row struct {
	seq        *sequence
	prefillEnd bool // the row ends the prompt: the sequence starts decoding after it
}

// stepBatch is a step's batch and the hook set that steers its rows.
type stepBatch struct {
	batch llama.Batch
	hooks *hooks.Set
	err   error // a steering entry the hook set refused (checked at Submit, so not expected)
	step  Step
}

// schedule builds the next step: one decode row for every sequence past its prompt, then chunks
// of the prompts still being prefilled, in admission order, within the token budget. It returns
// the logits rows in batch order.
func (e *Engine) schedule() (*stepBatch, []row) {
	sb := &stepBatch{}
	b := &sb.batch
	var rows []row
	add := func(s *sequence, tok int32, pos int, logits bool) {
		b.Tokens = append(b.Tokens, tok)
		b.Seq = append(b.Seq, s.id)
		b.Pos = append(b.Pos, int32(pos))
		b.Logits = append(b.Logits, logits)
	}
	steer := func(set **hooks.Set, s *sequence, lo, hi int, decode bool) {
		if err := steerRows(set, e.dims, s.id, s.req.Steering, s.points, lo, hi, len(s.req.Prompt), decode); err != nil && sb.err == nil {
			sb.err = err
		}
	}
	var decoding []*sequence // steered sequences with a decode row
	for _, s := range e.running {
		if s.prefill < len(s.req.Prompt) {
			continue
		}
		pos := len(s.context) - 1
		add(s, s.context[pos], pos, true)
		rows = append(rows, row{seq: s})
		if s.steersDecode {
			decoding = append(decoding, s)
		}
		sb.step.Decode++
	}
	budget := e.opts.BatchTokens - sb.step.Decode
	for _, s := range e.running {
		p := len(s.req.Prompt)
		if s.prefill >= p || budget <= 0 {
			continue
		}
		lo, hi := s.prefill, min(p, s.prefill+budget)
		for i := lo; i < hi; i++ {
			add(s, s.req.Prompt[i], i, i == p-1)
		}
		if hi == p {
			rows = append(rows, row{seq: s, prefillEnd: true})
		}
		steer(&sb.hooks, s, lo, hi, false)
		budget -= hi - lo
		sb.step.Prefill += hi - lo
		s.prefill = hi
	}
	// A decode row's additions are the same at every step, so the hook set of a step that steers
	// only decode rows is kept and reused while the same sequences decode.
	switch {
	case sb.hooks != nil: // prefill rows are steered too: a set for this step alone
		for _, s := range decoding {
			steer(&sb.hooks, s, 0, 0, true)
		}
	case len(decoding) > 0 && slices.Equal(decoding, e.decodeSeqs):
		sb.hooks = e.decodeHooks
	case len(decoding) > 0:
		for _, s := range decoding {
			steer(&sb.hooks, s, 0, 0, true)
		}
		e.decodeHooks, e.decodeSeqs = sb.hooks, decoding
	}
	sb.step.Steered = sb.hooks != nil
	return sb, rows
}

// step runs one forward pass and hands each logits row's token to its sequence.
func (e *Engine) step(sb *stepBatch, rows []row) {
	start := time.Now()
	var logits *tensor.Tensor
	err := sb.err
	if err == nil {
		logits, err = e.runner.Forward(sb.batch, e.kv, sb.hooks)
	}
	sb.step.Elapsed = time.Since(start)

	e.mu.Lock()
	st := &e.stats
	st.Steps++
	st.PromptTokens += sb.step.Prefill
	if sb.step.Prefill > 0 && sb.step.Decode > 0 {
		st.MixedSteps++
	}
	if err != nil {
		// A failed pass leaves the cache of every sequence in it unreliable: end them all.
		inStep := map[int32]bool{}
		for _, id := range sb.batch.Seq {
			inStep[id] = true
		}
		e.running = slices.DeleteFunc(e.running, func(s *sequence) bool {
			if inStep[s.id] {
				e.finish(s, FinishError, err)
				return true
			}
			return false
		})
		e.mu.Unlock()
		return
	}
	vocab := e.runner.Model.Config.Vocab
	var done, overflowed []*sequence
	for k, r := range rows {
		s := r.seq
		if r.prefillEnd {
			e.remember(s)
		}
		row := logits.F32()[k*vocab : (k+1)*vocab]
		next := s.sampler.Sample(row, s.context)
		if x := float64(row[next]); math.IsNaN(x) || math.IsInf(x, 0) {
			// An overflowed row gives NaN everywhere, so the argmax and every sample land on
			// a NaN: checking the chosen logit catches it at no cost.
			overflowed = append(overflowed, s)
			continue
		}
		if s.logprobs != nil {
			lp, top := llama.Logprobs(row, next, s.req.TopLogprobs, nil)
			s.logprobs <- Logprobs{Logprob: lp, Top: top}
		}
		if slices.Contains(s.stop, next) {
			done = append(done, s)
			s.stream.res.Finish = FinishStop
			continue
		}
		s.context = append(s.context, next)
		s.tokens <- next
		st.GeneratedTokens++
		if len(s.context) == s.total {
			done = append(done, s)
			s.stream.res.Finish = FinishLength
			s.stream.res.ContextFull = s.total < len(s.req.Prompt)+s.req.MaxTokens
		}
	}
	for _, s := range done {
		e.running = slices.DeleteFunc(e.running, func(x *sequence) bool { return x == s })
		e.finish(s, s.stream.res.Finish, nil)
	}
	for _, s := range overflowed {
		e.running = slices.DeleteFunc(e.running, func(x *sequence) bool { return x == s })
		e.finish(s, FinishError, fmt.Errorf("%w at generated token %d", ErrNonFinite, len(s.context)-len(s.req.Prompt)))
	}
	e.mu.Unlock()
	if e.opts.OnStep != nil {
		e.opts.OnStep(sb.step)
	}
}

// remember puts the whole blocks of a just-prefilled prompt into the prefix cache, unless an
// entry holds them already, evicting older entries for room.
func (e *Engine) remember(s *sequence) {
	bs := e.opts.BlockSize
	n := (len(s.req.Prompt) - 1) / bs
	if n == 0 || n > e.prefix.maxBlocks || e.prefix.covered(s.key, s.req.Prompt, bs, n) {
		return
	}
	for (e.kv.FreeBlocks() < n || e.prefix.blocks+n > e.prefix.maxBlocks) && e.prefix.evictOldest(e.kv, nil, e.releaseID) {
	}
	if e.kv.FreeBlocks() < n || e.prefix.blocks+n > e.prefix.maxBlocks {
		return
	}
	id := e.newID()
	if err := e.kv.Reserve(int(id), n*bs); err != nil {
		panic("engine: " + err.Error()) // the free count was checked above
	}
	copyBlocks(e.kv, id, s.id, n)
	ent := &prefixEntry{seq: id, key: s.key, tokens: slices.Clone(s.req.Prompt[:n*bs])}
	e.prefix.touch(ent)
	e.prefix.entries = append(e.prefix.entries, ent)
	e.prefix.blocks += n
}
