package llama

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tillerlm/tiller/hooks"
)

// Sequence is one sequence of a batched generation: its prompt, how many tokens it may add, and
// how they are chosen. Each sequence samples with its own random stream (Sampler.Seed), so its
// tokens do not depend on which other sequences share the batch.
type Sequence struct {
	Prompt    []int32
	MaxTokens int
	Sampler   SamplerConfig
	Stop      []int32 // ids that end it (not emitted); nil: the model's eos ids
}

// BatchOptions control GenerateBatch.
type BatchOptions struct {
	// Prefill holds the interventions of the passes over the prompts, Decode those of the decode
	// steps; nil runs that phase on the fast path. Their Where selects rows by sequence id, which
	// is the sequence's index in the call.
	Prefill, Decode *hooks.Set
	// PrefillTokens caps the tokens of one prefill pass: prompts are packed whole, in order, into
	// passes of up to this many tokens (a longer prompt gets a pass of its own). 0 means 512.
	PrefillTokens int
	// Emit, when set, is called with each new token of sequence i as soon as it is chosen;
	// returning false ends that sequence.
	Emit func(i int, token int32) bool
}

// Generated is what one sequence of a batch produced.
type Generated struct {
	Tokens      []int32 // new tokens, without the stop id
	Stopped     bool    // ended on a stop id
	ContextFull bool    // ended at max_position_embeddings before MaxTokens
}

// BatchStats are the counts and timings of a batched generation.
type BatchStats struct {
	Sequences       int
	PromptTokens    int
	PromptTime      time.Duration
	GeneratedTokens int
	DecodeSteps     int // forward passes of one new token for each running sequence
	GenerateTime    time.Duration
}

// GenerateRate is generated tokens per second, over all sequences.
func (s BatchStats) GenerateRate() float64 { return rate(s.GeneratedTokens, s.GenerateTime) }

// GenerateBatch continues several prompts at once, sequence i in KV-cache slot i: the prompts run
// through the model in packed prefill passes, then every decode step is one forward pass over one
// token of each sequence still running, so a batch of n costs about what one sequence costs while
// decode is bound by reading the weights. A sequence on its own gives exactly what Generate gives
// with the same options (the same tokens; the same logits bit for bit when the backend's row
// results do not depend on the batch, as on the CPU).
func (r *Runner) GenerateBatch(seqs []Sequence, opts BatchOptions) ([]Generated, BatchStats, error) {
	st := BatchStats{Sequences: len(seqs)}
	m := r.Model
	if len(seqs) == 0 {
		return nil, st, fmt.Errorf("no sequences to generate")
	}
	// Each sequence's state; the samplers share one set of vocabulary-sized buffers.
	type state struct {
		context []int32
		total   int // the context length at which it ends
		stop    []int32
		sampler *Sampler
		done    bool
	}
	states := make([]state, len(seqs))
	var shared *Sampler
	positions := 0
	for i, s := range seqs {
		switch {
		case len(s.Prompt) == 0:
			return nil, st, fmt.Errorf("sequence %d: empty prompt", i)
		case len(s.Prompt) >= m.Config.MaxPositions:
			return nil, st, fmt.Errorf("sequence %d: prompt of %d tokens leaves no room to generate: the model takes %d positions (max_position_embeddings)", i, len(s.Prompt), m.Config.MaxPositions)
		case s.MaxTokens <= 0:
			return nil, st, fmt.Errorf("sequence %d: max tokens %d, want > 0", i, s.MaxTokens)
		}
		if err := s.Sampler.Validate(); err != nil {
			return nil, st, fmt.Errorf("sequence %d: %v", i, err)
		}
		total := min(len(s.Prompt)+s.MaxTokens, m.Config.MaxPositions)
		stop := s.Stop
		if stop == nil {
			stop = m.StopIDs()
		}
		if shared == nil {
			shared = NewSampler(s.Sampler, m.Config.Vocab)
		}
		states[i] = state{context: append(make([]int32, 0, total), s.Prompt...), total: total, stop: stop, sampler: shared.sharing(s.Sampler)}
		positions += (total + 15) / 16 * 16
		st.PromptTokens += len(s.Prompt)
	}
	kv := r.NewKVCache(positions, 16)
	defer r.FreeKVCache(kv)
	out := make([]Generated, len(seqs))

	// Greedy decoding without penalties or biases needs only each row's argmax, which the
	// backend can find where the logits are (RowArgmax): on a GPU the step then moves one id per
	// row instead of a row of logits.
	allGreedy := true
	for _, q := range seqs {
		allGreedy = allGreedy && q.Sampler.Greedy()
	}
	ids := make([]int32, len(seqs))
	// next runs batch b and returns, for its k-th row asking for logits (sequence i), the
	// logits to sample from, or nil when ids[k] already holds the greedy token.
	next := func(b Batch, h *hooks.Set) (func(k, i int) int32, error) {
		if allGreedy {
			rows := 0
			for _, want := range b.Logits {
				if want {
					rows++
				}
			}
			if err := r.greedy(b, kv, h, ids[:rows]); err != nil {
				return nil, err
			}
			return func(k, _ int) int32 { return ids[k] }, nil
		}
		logits, err := r.Forward(b, kv, h)
		if err != nil {
			return nil, err
		}
		vocab := m.Config.Vocab
		return func(k, i int) int32 {
			return states[i].sampler.Sample(logits.F32()[k*vocab:(k+1)*vocab], states[i].context)
		}, nil
	}

	// choose appends sequence i's next token and reports whether it goes on.
	choose := func(i int, tok int32) bool {
		s := &states[i]
		if slices.Contains(s.stop, tok) {
			out[i].Stopped = true
			return false
		}
		s.context = append(s.context, tok)
		out[i].Tokens = append(out[i].Tokens, tok)
		st.GeneratedTokens++
		if opts.Emit != nil && !opts.Emit(i, tok) {
			return false
		}
		return len(s.context) < s.total
	}
	finish := func(i int) {
		s := &states[i]
		s.done = true
		out[i].ContextFull = !out[i].Stopped && len(s.context) == s.total && s.total < len(seqs[i].Prompt)+seqs[i].MaxTokens
		kv.Release(i)
	}

	// Prefill: whole prompts packed into passes, logits at each prompt's last token.
	start := time.Now()
	limit := opts.PrefillTokens
	if limit <= 0 {
		limit = 512
	}
	for lo := 0; lo < len(seqs); {
		hi, n := lo, 0
		for hi < len(seqs) && (hi == lo || n+len(seqs[hi].Prompt) <= limit) {
			n += len(seqs[hi].Prompt)
			hi++
		}
		var b Batch
		for i := lo; i < hi; i++ {
			p := Prompt(int32(i), seqs[i].Prompt, 0, false)
			b.Tokens = append(b.Tokens, p.Tokens...)
			b.Seq = append(b.Seq, p.Seq...)
			b.Pos = append(b.Pos, p.Pos...)
			b.Logits = append(b.Logits, p.Logits...)
		}
		token, err := next(b, opts.Prefill)
		if err != nil {
			return nil, st, err
		}
		for i := lo; i < hi; i++ {
			if !choose(i, token(i-lo, i)) {
				finish(i)
			}
		}
		lo = hi
	}
	st.PromptTime = time.Since(start)

	// Decode: one token of every running sequence per pass.
	start = time.Now()
	step := Batch{}
	running := make([]int, 0, len(seqs))
	for {
		running = running[:0]
		step.Tokens, step.Seq, step.Pos, step.Logits = step.Tokens[:0], step.Seq[:0], step.Pos[:0], step.Logits[:0]
		for i := range states {
			if s := &states[i]; !s.done {
				running = append(running, i)
				step.Tokens = append(step.Tokens, s.context[len(s.context)-1])
				step.Seq = append(step.Seq, int32(i))
				step.Pos = append(step.Pos, int32(len(s.context)-1))
				step.Logits = append(step.Logits, true)
			}
		}
		if len(running) == 0 {
			break
		}
		token, err := next(step, opts.Decode)
		if err != nil {
			return nil, st, err
		}
		st.DecodeSteps++
		for k, i := range running {
			if !choose(i, token(k, i)) {
				finish(i)
			}
		}
	}
	st.GenerateTime = time.Since(start)
	return out, st, nil
}

// sharing returns a sampler with its own settings and random stream that works in s's buffers,
// so that many sequences sampled one after another need one set of vocabulary-sized buffers.
func (s *Sampler) sharing(cfg SamplerConfig) *Sampler {
	return &Sampler{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x7469_6c6c_6572)), // as NewSampler
		logits: s.logits,
		idx:    s.idx,
		seen:   s.seen,
	}
}
