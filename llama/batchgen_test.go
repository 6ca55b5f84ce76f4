package llama

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// alone is what Generate gives for one sequence's prompt and options.
func alone(t *testing.T, r *Runner, s Sequence) ([]int32, Stats) {
	t.Helper()
	var got []int32
	st, err := r.Generate(s.Prompt, GenerateOptions{MaxTokens: s.MaxTokens, Sampler: s.Sampler, Stop: s.Stop}, func(id int32) bool {
		got = append(got, id)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, st
}

// Each sequence of a batch, greedy or sampled with its own seed, of its own length and stop ids,
// gets the tokens Generate gives it alone, whatever the others do.
func TestGenerateBatchMatchesAlone(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 2)
	seqs := []Sequence{
		{Prompt: prompt, MaxTokens: 9, Stop: []int32{}},
		{Prompt: []int32{1, 9, 9, 9}, MaxTokens: 5, Sampler: SamplerConfig{Temperature: 0.9, TopK: 20, Seed: 4}, Stop: []int32{}},
		{Prompt: []int32{1, 50, 60, 70, 80, 90, 14}, MaxTokens: 12, Sampler: SamplerConfig{Temperature: 1.3, TopP: 0.9, Seed: 11}},
		{Prompt: prompt, MaxTokens: 9, Sampler: SamplerConfig{Temperature: 1, Seed: 5}, Stop: []int32{}},
		{Prompt: make([]int32, 60), MaxTokens: 50, Stop: []int32{}}, // runs into the 64-position context
	}
	// A stop id that the first sequence meets half way.
	first, _ := alone(t, r, seqs[0])
	seqs = append(seqs, Sequence{Prompt: prompt, MaxTokens: 9, Stop: []int32{first[4]}})
	// Small prefill passes so that prompts are packed several to a pass and one has its own.
	got, st, err := r.GenerateBatch(seqs, BatchOptions{PrefillTokens: 20})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, s := range seqs {
		want, wst := alone(t, r, s)
		if fmt.Sprint(got[i].Tokens) != fmt.Sprint(want) {
			t.Errorf("sequence %d: batched %v, alone %v", i, got[i].Tokens, want)
		}
		if got[i].Stopped != wst.Stopped || got[i].ContextFull != wst.ContextFull {
			t.Errorf("sequence %d: batched stopped %v, context full %v; alone %+v", i, got[i].Stopped, got[i].ContextFull, wst)
		}
		total += len(want)
	}
	if !got[5].Stopped || !got[4].ContextFull || len(got[4].Tokens) != 4 {
		t.Errorf("stop and context end not seen: %+v %+v", got[5], got[4])
	}
	// The longest runs 12 tokens: 1 from the prefill, 11 decode steps.
	if st.GeneratedTokens != total || st.DecodeSteps != 11 || st.Sequences != len(seqs) {
		t.Errorf("stats %+v, want %d tokens in 11 decode steps", st, total)
	}
}

// Emit sees every token in order, and returning false ends that sequence only.
func TestGenerateBatchEmit(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 1)
	seqs := []Sequence{{Prompt: prompt, MaxTokens: 6, Stop: []int32{}}, {Prompt: prompt[:5], MaxTokens: 6, Stop: []int32{}}}
	seen := make([][]int32, 2)
	got, _, err := r.GenerateBatch(seqs, BatchOptions{Emit: func(i int, id int32) bool {
		seen[i] = append(seen[i], id)
		return i != 1 || len(seen[1]) < 2
	}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen[0]) != fmt.Sprint(got[0].Tokens) || len(got[0].Tokens) != 6 || len(got[1].Tokens) != 2 || fmt.Sprint(seen[1]) != fmt.Sprint(got[1].Tokens) {
		t.Errorf("emitted %v, generated %v %v", seen, got[0].Tokens, got[1].Tokens)
	}
}

// The prefill and decode hook sets reach the passes they are meant for: steering only the decode
// steps leaves the first token as it was and changes what follows.
func TestGenerateBatchHooks(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	r := newRunner(t, m, 1)
	seqs := []Sequence{{Prompt: prompt, MaxTokens: 8, Stop: []int32{}}, {Prompt: prompt, MaxTokens: 8, Stop: []int32{}}}
	plain, _, err := r.GenerateBatch(seqs, BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, m.Config.Dim)
	for i := range v {
		v[i] = float32(i%5) - 2
	}
	h := hooks.NewSet(m.Config.HookDims())
	// Sequence 1 only, strongly.
	if err := h.Add("blocks.0.hook_resid_post", hooks.Steer{Vector: v, SeqAlpha: map[int32]float32{1: 40}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := r.GenerateBatch(seqs, BatchOptions{Decode: h})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got[0].Tokens) != fmt.Sprint(plain[0].Tokens) {
		t.Errorf("unsteered sequence changed: %v, want %v", got[0].Tokens, plain[0].Tokens)
	}
	if got[1].Tokens[0] != plain[1].Tokens[0] || fmt.Sprint(got[1].Tokens) == fmt.Sprint(plain[1].Tokens) {
		t.Errorf("decode-only steering: %v against %v", got[1].Tokens, plain[1].Tokens)
	}
}

func TestGenerateBatchErrors(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	r := newRunner(t, m, 1)
	cases := []struct {
		seqs []Sequence
		want string
	}{
		{nil, "no sequences"},
		{[]Sequence{{Prompt: prompt, MaxTokens: 2}, {MaxTokens: 2}}, "sequence 1: empty prompt"},
		{[]Sequence{{Prompt: make([]int32, 64), MaxTokens: 2}}, "max_position_embeddings"},
		{[]Sequence{{Prompt: prompt}}, "max tokens 0"},
		{[]Sequence{{Prompt: prompt, MaxTokens: 2, Sampler: SamplerConfig{TopP: 2}}}, "sequence 0: top-p 2"},
		{[]Sequence{{Prompt: []int32{1, 500}, MaxTokens: 2}}, "outside the vocabulary"},
	}
	for _, c := range cases {
		if _, _, err := r.GenerateBatch(c.seqs, BatchOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d sequences: error %v, want %q", len(c.seqs), err, c.want)
		}
	}
}
