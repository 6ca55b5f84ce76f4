package llama

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tillerlm/tiller/tensor"
)

// GenerateOptions control one generation.
type GenerateOptions struct {
	MaxTokens int           // the most new tokens to generate
	Sampler   SamplerConfig // how each token is chosen
	Stop      []int32       // ids that end generation (not emitted); the model's eos ids by default
}

// Stats are the counts and timings of one generation.
type Stats struct {
	PromptTokens    int
	PromptTime      time.Duration
	GeneratedTokens int
	DecodeSteps     int           // forward passes of one new token
	GenerateTime    time.Duration // from the end of the prompt to the end of generation
	Stopped         bool          // ended on a stop id
	ContextFull     bool          // ended at max_position_embeddings before MaxTokens
}

// PromptRate and GenerateRate are tokens per second.
func (s Stats) PromptRate() float64 { return rate(s.PromptTokens, s.PromptTime) }

func (s Stats) GenerateRate() float64 { return rate(s.DecodeSteps, s.GenerateTime) }

func rate(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// StopIDs are the ids that end generation: generation_config.json's eos_token_id if it has one,
// else config.json's, then TurnEnd's ids that are not among them.
func (m *Model) StopIDs() []int32 {
	ids := m.Config.EOS
	if len(m.Gen.EOS) > 0 {
		ids = m.Gen.EOS
	}
	out := make([]int32, len(ids), len(ids)+len(m.TurnEnd))
	for i, id := range ids {
		out[i] = int32(id)
	}
	for _, id := range m.TurnEnd {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// Generate continues prompt as sequence 0 of a fresh KV cache, calling emit with each new token
// as soon as it is chosen; emit returning false stops early. The prompt and generated tokens must
// fit in max_position_embeddings.
func (r *Runner) Generate(prompt []int32, opts GenerateOptions, emit func(int32) bool) (Stats, error) {
	var st Stats
	m := r.Model
	if len(prompt) == 0 {
		return st, fmt.Errorf("empty prompt")
	}
	if len(prompt) >= m.Config.MaxPositions {
		return st, fmt.Errorf("prompt of %d tokens leaves no room to generate: the model takes %d positions (max_position_embeddings)", len(prompt), m.Config.MaxPositions)
	}
	if err := opts.Sampler.Validate(); err != nil {
		return st, err
	}
	if opts.MaxTokens <= 0 {
		return st, fmt.Errorf("max tokens %d, want > 0", opts.MaxTokens)
	}
	total := min(len(prompt)+opts.MaxTokens, m.Config.MaxPositions)
	stop := opts.Stop
	if stop == nil {
		stop = m.StopIDs()
	}
	kv := r.NewKVCache(total, 16)
	defer r.FreeKVCache(kv)
	sampler := NewSampler(opts.Sampler, m.Config.Vocab)
	context := make([]int32, 0, total)
	context = append(context, prompt...)

	// Greedy decoding needs only the argmax, which a device finds where the logits are
	// (RowArgmax): a step then moves one id instead of a row of logits.
	greedy := opts.Sampler.Greedy()
	id := make([]int32, 1)
	pass := func(b Batch) (int32, error) {
		if greedy {
			err := r.greedy(b, kv, nil, id)
			return id[0], err
		}
		logits, err := r.Forward(b, kv, nil)
		if err != nil {
			return 0, err
		}
		return sampler.Sample(logits.F32(), context), nil
	}
	start := time.Now()
	next, err := pass(Prompt(0, prompt, 0, false))
	if err != nil {
		return st, err
	}
	st.PromptTokens, st.PromptTime = len(prompt), time.Since(start)
	start = time.Now()
	step := Batch{Tokens: make([]int32, 1), Seq: []int32{0}, Pos: make([]int32, 1), Logits: []bool{true}}
	for len(context) < total {
		if slices.Contains(stop, next) {
			st.Stopped = true
			break
		}
		context = append(context, next)
		st.GeneratedTokens++
		if !emit(next) || len(context) == total {
			break
		}
		step.Tokens[0], step.Pos[0] = next, int32(len(context)-1)
		if next, err = pass(step); err != nil {
			return st, err
		}
		st.DecodeSteps++
	}
	st.GenerateTime = time.Since(start)
	st.ContextFull = !st.Stopped && len(context) == total && total < len(prompt)+opts.MaxTokens
	return st, nil
}

// Score runs tokens as one sequence and returns the log-probability of each token given the ones
// before it (the first token, having no context, gets none), and the logits at every position.
func (r *Runner) Score(tokens []int32) (logprobs []float64, logits *tensor.Tensor, err error) {
	if len(tokens) < 2 {
		return nil, nil, fmt.Errorf("scoring needs at least 2 tokens, got %d", len(tokens))
	}
	kv := r.NewKVCache(len(tokens), 16)
	defer r.FreeKVCache(kv)
	out, err := r.Forward(Prompt(0, tokens, 0, true), kv, nil)
	if err != nil {
		return nil, nil, err
	}
	vocab := r.Model.Config.Vocab
	all := out.F32()
	logprobs = make([]float64, len(tokens)-1)
	for i := 1; i < len(tokens); i++ {
		logprobs[i-1] = LogSoftmaxAt(all[(i-1)*vocab:i*vocab], tokens[i])
	}
	return logprobs, out, nil
}

// LogSoftmaxAt is log softmax(x)[i], computed in float64 with the maximum subtracted.
func LogSoftmaxAt(x []float32, i int32) float64 {
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	// The differences in float64: in F32, x − m would round by up to |x − m|·2⁻²⁴.
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - float64(m))
	}
	return float64(x[i]) - float64(m) - math.Log(sum)
}
