package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SamplerConfig chooses how the next token is picked from the logits. The filters run in Hugging
// Face's order: repetition penalty, temperature, top-k, top-p, min-p; OpenAI's logit bias and
// presence and frequency penalties come first. Temperature 0 is greedy.
type SamplerConfig struct {
	Temperature       float32 // 0: greedy (argmax); else logits are divided by it
	TopK              int     // keep the k most likely tokens; 0: off
	TopP              float32 // keep the smallest set whose probability reaches p; 0 or 1: off
	MinP              float32 // drop tokens less likely than min_p × the most likely one; 0: off
	RepetitionPenalty float32 // CTRL-style penalty on tokens already in the context; 0 or 1: off
	// OpenAI's penalties, on the tokens this sampler has chosen (not the prompt): with c(t) the
	// times t was chosen, logit(t) −= c(t)·FrequencyPenalty + [c(t) > 0]·PresencePenalty.
	FrequencyPenalty float32
	PresencePenalty  float32
	LogitBias        map[int32]float32 // added to the logits of these token ids
	Seed             uint64            // the same seed and inputs give the same tokens
}

// Greedy reports whether the token is the argmax of the raw logits, so that a backend may pick it
// where the logits are.
func (c SamplerConfig) Greedy() bool {
	return c.Temperature == 0 && (c.RepetitionPenalty == 0 || c.RepetitionPenalty == 1) &&
		c.FrequencyPenalty == 0 && c.PresencePenalty == 0 && len(c.LogitBias) == 0
}

// Validate reports the first setting outside its range, naming the flag-style field.
func (c SamplerConfig) Validate() error {
	switch {
	case c.Temperature < 0 || math.IsNaN(float64(c.Temperature)) || math.IsInf(float64(c.Temperature), 0):
		return fmt.Errorf("temperature %g, want >= 0 (0 is greedy)", c.Temperature)
	case c.TopK < 0:
		return fmt.Errorf("top-k %d, want >= 0 (0 is off)", c.TopK)
	case !(c.TopP >= 0 && c.TopP <= 1):
		return fmt.Errorf("top-p %g, want 0 to 1", c.TopP)
	case !(c.MinP >= 0 && c.MinP <= 1):
		return fmt.Errorf("min-p %g, want 0 to 1", c.MinP)
	case c.RepetitionPenalty < 0 || math.IsNaN(float64(c.RepetitionPenalty)):
		return fmt.Errorf("repetition penalty %g, want > 0 (1 is off)", c.RepetitionPenalty)
	case !finite(c.FrequencyPenalty) || !finite(c.PresencePenalty):
		return fmt.Errorf("frequency penalty %g, presence penalty %g: want finite numbers", c.FrequencyPenalty, c.PresencePenalty)
	}
	for id, b := range c.LogitBias {
		if id < 0 || !finite(b) {
			return fmt.Errorf("logit bias %g for token %d: want a finite bias for a token id >= 0", b, id)
		}
	}
	return nil
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// Sampler picks tokens. Its buffers are sized once for the vocabulary, so sampling allocates nothing.
type Sampler struct {
	cfg    SamplerConfig
	rng    *rand.Rand
	logits []float32 // a working copy: the caller's logits are not changed
	idx    []int32   // candidate token ids, most likely first once sorted
	seen   map[int32]bool
	chosen map[int32]int // how often each token was picked, for the OpenAI penalties
}

// NewSampler makes a sampler for a vocabulary of the given size.
func NewSampler(cfg SamplerConfig, vocab int) *Sampler {
	return &Sampler{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x7469_6c6c_6572)), // the second word is "tiller"
		logits: make([]float32, vocab),
		idx:    make([]int32, 0, vocab),
		seen:   map[int32]bool{},
	}
}

// Sample returns the next token given one row of logits and the tokens so far in the sequence
// (used by the repetition penalty).
func (s *Sampler) Sample(logits []float32, context []int32) int32 {
	t := s.sample(logits, context)
	if s.cfg.FrequencyPenalty != 0 || s.cfg.PresencePenalty != 0 {
		if s.chosen == nil {
			s.chosen = map[int32]int{}
		}
		s.chosen[t]++
	}
	return t
}

func (s *Sampler) sample(logits []float32, context []int32) int32 {
	c := s.cfg
	if c.Temperature == 0 && len(c.LogitBias) == 0 && len(s.chosen) == 0 && (c.RepetitionPenalty <= 0 || c.RepetitionPenalty == 1) {
		// Plain greedy decoding changes no logit: the pick is their argmax, without the copy
		// (a decode step's largest serial piece of work after the model).
		return argmax(logits)
	}
	x := s.logits[:len(logits)]
	copy(x, logits)
	for t, b := range c.LogitBias {
		if int(t) < len(x) {
			x[t] += b
		}
	}
	for t, n := range s.chosen {
		x[t] -= float32(n)*c.FrequencyPenalty + c.PresencePenalty
	}
	if c.RepetitionPenalty > 0 && c.RepetitionPenalty != 1 {
		clear(s.seen)
		for _, t := range context {
			if t < 0 || int(t) >= len(x) || s.seen[t] {
				continue
			}
			s.seen[t] = true
			if x[t] > 0 {
				x[t] /= c.RepetitionPenalty
			} else {
				x[t] *= c.RepetitionPenalty
			}
		}
	}
	if c.Temperature == 0 {
		return argmax(x)
	}
	for i := range x {
		x[i] /= c.Temperature
	}
	// Candidates, most likely first. Sorting the whole vocabulary costs a few milliseconds for
	// 128k tokens; with top-k only the k best are kept sorted.
	s.idx = s.idx[:0]
	for i := range x {
		s.idx = append(s.idx, int32(i))
	}
	byLogit := func(a, b int32) int {
		if x[a] != x[b] {
			if x[a] > x[b] {
				return -1
			}
			return 1
		}
		return int(a - b)
	}
	cand := s.idx
	if c.TopK > 0 && c.TopK < len(cand) {
		cand = topK(cand, c.TopK, byLogit)
	} else {
		slices.SortFunc(cand, byLogit)
	}
	// Probabilities of the candidates, normalised over them (top-k has already cut the rest).
	m := x[cand[0]]
	var sum float64
	for _, t := range cand {
		sum += math.Exp(float64(x[t] - m))
	}
	if c.TopP > 0 && c.TopP < 1 {
		var cum float64
		for i, t := range cand {
			cum += math.Exp(float64(x[t]-m)) / sum
			if cum >= float64(c.TopP) {
				cand = cand[:i+1]
				break
			}
		}
	}
	if c.MinP > 0 {
		// Relative to the most likely token, so the normalisation does not matter.
		floor := float64(c.MinP)
		for i, t := range cand {
			if math.Exp(float64(x[t]-m)) < floor {
				cand = cand[:max(i, 1)]
				break
			}
		}
	}
	var total float64
	for _, t := range cand {
		total += math.Exp(float64(x[t] - m))
	}
	u := s.rng.Float64() * total
	for _, t := range cand {
		u -= math.Exp(float64(x[t] - m))
		if u < 0 {
			return t
		}
	}
	return cand[len(cand)-1]
}

// TokenLogprob is a token id and its log-probability.
type TokenLogprob struct {
	ID      int32
	Logprob float32
}

// Logprobs returns the log-probability of token under the model's distribution, log softmax of one
// row of raw logits (before temperature, penalties and filters), and writes the k most likely
// tokens with theirs into top, most likely first, the lower id first among equals. The
// normaliser sums in float64.
func Logprobs(logits []float32, token int32, k int, top []TokenLogprob) (float32, []TokenLogprob) {
	m := logits[argmax(logits)]
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - m))
	}
	lse := float64(m) + math.Log(sum)
	top = top[:0]
	for i, v := range logits {
		if k == 0 {
			break
		}
		if len(top) == k && v <= top[k-1].Logprob {
			continue // strictly better than the k-th only: ties keep the lower id
		}
		j := len(top)
		if j == k {
			j--
		} else {
			top = append(top, TokenLogprob{})
		}
		for ; j > 0 && v > top[j-1].Logprob; j-- {
			top[j] = top[j-1]
		}
		top[j] = TokenLogprob{ID: int32(i), Logprob: v} // raw logits until the end
	}
	for i := range top {
		top[i].Logprob = float32(float64(top[i].Logprob) - lse)
	}
	return float32(float64(logits[token]) - lse), top
}

// argmax returns the index of the largest value; the lowest index wins a tie.
func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// topK moves the k best of ids to the front, sorted, and returns them.
func topK(ids []int32, k int, cmp func(a, b int32) int) []int32 {
	best := ids[:k]
	slices.SortFunc(best, cmp)
	for _, t := range ids[k:] {
		if cmp(t, best[k-1]) < 0 {
			// Insert t into its place in best, dropping the last.
			i, _ := slices.BinarySearchFunc(best, t, cmp)
			copy(best[i+1:], best[i:k-1])
			best[i] = t
		}
	}
	return best
}
