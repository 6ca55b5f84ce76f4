package llama

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

func TestGreedy(t *testing.T) {
	s := NewSampler(SamplerConfig{}, 5)
	if got := s.Sample([]float32{1, 3, -2, 3, 0}, nil); got != 1 {
		t.Errorf("argmax with a tie = %d, want the lower index 1", got)
	}
}

// Sampling at temperature 1 draws from softmax(logits): over many draws the frequencies match the
// probabilities to within a few standard errors (the seed is fixed, so the test is deterministic).
func TestSampleDistribution(t *testing.T) {
	probs := []float64{0.5, 0.3, 0.15, 0.05}
	logits := make([]float32, len(probs))
	for i, p := range probs {
		logits[i] = float32(math.Log(p))
	}
	const n = 40000
	check := func(name string, cfg SamplerConfig, want []float64) {
		t.Helper()
		s := NewSampler(cfg, len(logits))
		counts := make([]float64, len(logits))
		for i := 0; i < n; i++ {
			counts[s.Sample(logits, nil)]++
		}
		for i, w := range want {
			got := counts[i] / n
			se := math.Sqrt(w*(1-w)/n) + 1e-9
			if math.Abs(got-w) > 5*se {
				t.Errorf("%s: token %d drawn %.4f of the time, want %.4f", name, i, got, w)
			}
		}
	}
	check("plain", SamplerConfig{Temperature: 1, Seed: 1}, probs)
	check("top-k 2", SamplerConfig{Temperature: 1, TopK: 2, Seed: 2}, []float64{0.5 / 0.8, 0.3 / 0.8, 0, 0})
	// Top-p 0.7 keeps the smallest head reaching 0.7: tokens 0 and 1.
	check("top-p 0.7", SamplerConfig{Temperature: 1, TopP: 0.7, Seed: 3}, []float64{0.5 / 0.8, 0.3 / 0.8, 0, 0})
	// Min-p 0.25 drops tokens under 0.25 × 0.5 = 0.125: only token 3.
	check("min-p 0.25", SamplerConfig{Temperature: 1, MinP: 0.25, Seed: 4}, []float64{0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0})
	// Temperature 2 flattens: p ∝ sqrt(p).
	var z float64
	for _, p := range probs {
		z += math.Sqrt(p)
	}
	flat := make([]float64, len(probs))
	for i, p := range probs {
		flat[i] = math.Sqrt(p) / z
	}
	check("temperature 2", SamplerConfig{Temperature: 2, Seed: 5}, flat)
}

func TestSampleSeedAndFilters(t *testing.T) {
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i)) * 3)
	}
	draw := func(cfg SamplerConfig) []int32 {
		s := NewSampler(cfg, len(logits))
		var out []int32
		for i := 0; i < 50; i++ {
			out = append(out, s.Sample(logits, nil))
		}
		return out
	}
	a, b := draw(SamplerConfig{Temperature: 1, Seed: 9}), draw(SamplerConfig{Temperature: 1, Seed: 9})
	if !equal(a, b) {
		t.Error("the same seed drew different tokens")
	}
	if equal(a, draw(SamplerConfig{Temperature: 1, Seed: 10})) {
		t.Error("seeds 9 and 10 drew the same 50 tokens")
	}
	greedy := argmax(logits)
	for _, cfg := range []SamplerConfig{{Temperature: 1, TopK: 1}, {Temperature: 5, TopP: 1e-6}, {Temperature: 1, MinP: 1}} {
		for _, tok := range draw(cfg) {
			if tok != greedy {
				t.Errorf("%+v drew %d, want only the most likely %d", cfg, tok, greedy)
				break
			}
		}
	}
}

func TestRepetitionPenalty(t *testing.T) {
	// Token 0 leads by a little; a penalty of 2 on the context {0, 2} halves its positive logit
	// and doubles the negative one of token 2.
	logits := []float32{2, 1.5, -1, 0}
	s := NewSampler(SamplerConfig{RepetitionPenalty: 2}, 4)
	if got := s.Sample(logits, []int32{0, 2, 0}); got != 1 {
		t.Errorf("penalised greedy = %d, want 1", got)
	}
	if logits[0] != 2 {
		t.Error("the sampler changed the caller's logits")
	}
	if s.logits[0] != 1 || s.logits[2] != -2 {
		t.Errorf("penalised logits %v, want [1 1.5 -2 0]", s.logits)
	}
}

// OpenAI's penalties count the tokens the sampler chose, not the context it is given.
func TestPresenceAndFrequencyPenalty(t *testing.T) {
	logits := []float32{3, 2.5, 2.15, 0}
	context := []int32{1, 1, 1, 2} // a prompt full of token 1: no penalty from it
	greedy := func(cfg SamplerConfig, n int) []int32 {
		s := NewSampler(cfg, 4)
		var out []int32
		for range n {
			out = append(out, s.Sample(logits, context))
		}
		return out
	}
	cases := []struct {
		cfg  SamplerConfig
		want []int32
	}{
		{SamplerConfig{}, []int32{0, 0, 0, 0, 0}},
		// Presence: once chosen, a token loses 1 for good: 0 (3→2), then 1 (2.5→1.5), then 2
		// (2.15→1.15), then 0 again (2 beats 1.5, 1.15, 0).
		{SamplerConfig{PresencePenalty: 1}, []int32{0, 1, 2, 0, 0}},
		// Frequency: each choice of a token costs it 0.4 more: 0 (3→2.6), 0 (→2.2), 1 (2.5→2.1),
		// 0 (2.2 beats 2.15 and 2.1; →1.8), 2 (2.15).
		{SamplerConfig{FrequencyPenalty: 0.4}, []int32{0, 0, 1, 0, 2}},
		// A negative penalty rewards repetition.
		{SamplerConfig{PresencePenalty: -5, FrequencyPenalty: 1}, []int32{0, 0, 0, 0, 0}},
	}
	for _, c := range cases {
		if got := greedy(c.cfg, 5); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.cfg, got, c.want)
		}
		if c.cfg.Greedy() != (c.cfg.PresencePenalty == 0 && c.cfg.FrequencyPenalty == 0) {
			t.Errorf("%+v: Greedy() = %v", c.cfg, c.cfg.Greedy())
		}
	}
}

func TestLogitBias(t *testing.T) {
	logits := []float32{3, 2.5, 2.15, 0}
	s := NewSampler(SamplerConfig{LogitBias: map[int32]float32{0: -100, 3: 2.6}}, 4)
	if got := s.Sample(logits, nil); got != 3 {
		t.Errorf("biased greedy = %d, want 3 (0 + 2.6 beats 2.5)", got)
	}
	if logits[3] != 0 {
		t.Error("the sampler changed the caller's logits")
	}
	// A ban holds under sampling too.
	s = NewSampler(SamplerConfig{Temperature: 1, LogitBias: map[int32]float32{0: -100, 1: -100}, Seed: 1}, 4)
	for range 200 {
		if got := s.Sample(logits, nil); got == 0 || got == 1 {
			t.Fatalf("sampled banned token %d", got)
		}
	}
	if (SamplerConfig{LogitBias: map[int32]float32{1: 1}}).Greedy() {
		t.Error("a biased config claims the raw argmax")
	}
}

// Logprobs is log softmax in float64, with the k best sorted and ties to the lower id.
func TestLogprobs(t *testing.T) {
	logits := []float32{1, 4, -2, 4, 0.5, 3, -30}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v))
	}
	want := func(i int) float64 { return float64(logits[i]) - math.Log(sum) }
	lp, top := Logprobs(logits, 5, 3, nil)
	if math.Abs(float64(lp)-want(5)) > 1e-6 {
		t.Errorf("logprob of token 5 = %g, want %g", lp, want(5))
	}
	ids := []int32{1, 3, 5}
	if len(top) != 3 {
		t.Fatalf("top %v", top)
	}
	for i, tl := range top {
		if tl.ID != ids[i] || math.Abs(float64(tl.Logprob)-want(int(ids[i]))) > 1e-6 {
			t.Errorf("top[%d] = %+v, want id %d, %g", i, tl, ids[i], want(int(ids[i])))
		}
	}
	_, all := Logprobs(logits, 0, len(logits), top)
	var p float64
	for i, tl := range all {
		p += math.Exp(float64(tl.Logprob))
		if i > 0 && tl.Logprob > all[i-1].Logprob {
			t.Errorf("not sorted: %v", all)
		}
	}
	if len(all) != len(logits) || math.Abs(p-1) > 1e-6 {
		t.Errorf("all %d tokens sum to %g", len(all), p)
	}
	if _, none := Logprobs(logits, 0, 0, nil); len(none) != 0 {
		t.Errorf("k = 0 gave %v", none)
	}
	// Huge logits: no overflow, the best token near log 1.
	if lp, _ := Logprobs([]float32{3e38, 0, -3e38}, 0, 0, nil); lp != 0 {
		t.Errorf("logprob of a dominant token %g, want 0", lp)
	}
}

func TestSamplerValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  SamplerConfig
		want string
	}{
		{SamplerConfig{Temperature: -1}, "temperature"},
		{SamplerConfig{TopK: -2}, "top-k"},
		{SamplerConfig{TopP: 1.5}, "top-p"},
		{SamplerConfig{MinP: -0.1}, "min-p"},
		{SamplerConfig{RepetitionPenalty: -1}, "repetition penalty"},
		{SamplerConfig{Temperature: float32(math.NaN())}, "temperature"},
		{SamplerConfig{PresencePenalty: float32(math.Inf(1))}, "presence penalty"},
		{SamplerConfig{FrequencyPenalty: float32(math.NaN())}, "frequency penalty"},
		{SamplerConfig{LogitBias: map[int32]float32{-1: 1}}, "logit bias"},
		{SamplerConfig{LogitBias: map[int32]float32{3: float32(math.NaN())}}, "logit bias"},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v", c.cfg, err)
		}
	}
	if err := (SamplerConfig{Temperature: 0.7, TopK: 40, TopP: 0.9, MinP: 0.05, RepetitionPenalty: 1.1}).Validate(); err != nil {
		t.Error(err)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Generation stops at a stop id without emitting it, at MaxTokens, or when the context is full;
// greedy generation equals repeated argmax over Forward.
func TestGenerate(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 2)
	var got []int32
	st, err := r.Generate(prompt, GenerateOptions{MaxTokens: 6, Stop: []int32{}}, func(id int32) bool { got = append(got, id); return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 || st.GeneratedTokens != 6 || st.Stopped || st.PromptTokens != len(prompt) {
		t.Fatalf("generated %v, stats %+v", got, st)
	}
	// The same tokens by hand.
	ctx := append([]int32(nil), prompt...)
	for i := 0; i < 6; i++ {
		out, err := r.Forward(Prompt(0, ctx, 0, false), r.NewKVCache(len(ctx), 16), nil)
		if err != nil {
			t.Fatal(err)
		}
		if next := argmax(out.F32()); next != got[i] {
			t.Fatalf("token %d: generated %d, argmax %d", i, got[i], next)
		}
		ctx = append(ctx, got[i])
	}
	// Stopping on the third token's id: what came before its first appearance is emitted.
	var short []int32
	st, _ = r.Generate(prompt, GenerateOptions{MaxTokens: 6, Stop: []int32{got[2]}}, func(id int32) bool { short = append(short, id); return true })
	first := slices.Index(got, got[2])
	if !st.Stopped || !equal(short, got[:first]) {
		t.Errorf("stop on %d: emitted %v, want %v; stats %+v", got[2], short, got[:first], st)
	}
	// The context (64 positions) ends generation early.
	long := make([]int32, 60)
	st, err = r.Generate(long, GenerateOptions{MaxTokens: 50, Stop: []int32{}}, func(int32) bool { return true })
	if err != nil || st.GeneratedTokens != 4 || !st.ContextFull {
		t.Errorf("near the context end: %v, %+v", err, st)
	}
	if _, err := r.Generate(make([]int32, 64), GenerateOptions{MaxTokens: 1}, func(int32) bool { return true }); err == nil || !strings.Contains(err.Error(), "max_position_embeddings") {
		t.Errorf("prompt filling the context: %v", err)
	}
	if _, err := r.Generate(prompt, GenerateOptions{MaxTokens: 0}, func(int32) bool { return true }); err == nil {
		t.Error("MaxTokens 0 accepted")
	}
	// emit returning false stops at once.
	n := 0
	st, _ = r.Generate(prompt, GenerateOptions{MaxTokens: 6, Stop: []int32{}}, func(int32) bool { n++; return n < 2 })
	if n != 2 || st.GeneratedTokens != 2 {
		t.Errorf("emit stop: %d calls, %+v", n, st)
	}
}

func TestScore(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 1)
	lp, logits, err := r.Score(prompt)
	if err != nil {
		t.Fatal(err)
	}
	if len(lp) != len(prompt)-1 || logits.Shape[0] != len(prompt) {
		t.Fatalf("%d logprobs, logits %v", len(lp), logits.Shape)
	}
	v := logits.F32()
	row := v[2*m.Config.Vocab : 3*m.Config.Vocab]
	var z float64
	for _, x := range row {
		z += math.Exp(float64(x))
	}
	if want := float64(row[prompt[3]]) - math.Log(z); math.Abs(lp[2]-want) > 1e-9*math.Abs(want)+1e-9 {
		t.Errorf("logprob of token 3 = %g, want %g", lp[2], want)
	}
	if _, _, err := r.Score(prompt[:1]); err == nil {
		t.Error("scoring one token accepted")
	}
}
