package attrib

import (
	"encoding/json"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// tinyConfig is a small GQA model with odd sizes (head_dim 8, 6 query heads over 2 kv heads).
func tinyConfig(overrides map[string]any) []byte {
	c := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"hidden_size":             48,
		"intermediate_size":       72,
		"num_hidden_layers":       3,
		"num_attention_heads":     6,
		"num_key_value_heads":     2,
		"vocab_size":              97,
		"max_position_embeddings": 64,
		"rms_norm_eps":            1e-5,
		"rope_theta":              10000.0,
		"initializer_range":       0.05,
		"bos_token_id":            1,
		"eos_token_id":            2,
		"tie_word_embeddings":     false,
	}
	for k, v := range overrides {
		c[k] = v
	}
	b, _ := json.Marshal(c)
	return b
}

// tinyModel writes a random F32 checkpoint into a temporary folder and loads it.
func tinyModel(t testing.TB, seed uint64, overrides map[string]any) *llama.Model {
	t.Helper()
	dir := t.TempDir()
	if _, err := llama.WriteRandom(tinyConfig(overrides), nil, dir, llama.InitOptions{Seed: seed, DType: tensor.F32}); err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// f64Runner runs the model with F64 activations, so that AtP and exact patching differ only by
// the model's nonlinearity, not by rounding.
func f64Runner(t testing.TB, m *llama.Model) *llama.Runner {
	b := tensor.NewCPU(2)
	t.Cleanup(b.Close)
	return llama.NewRunnerOf(m, b, tensor.F64)
}

// input makes a pair from token ids: corrupt is clean with the tokens at the given positions
// replaced.
func input(clean []int32, swap map[int]int32, cont []int32, a, b int32) *Input {
	corrupt := append([]int32(nil), clean...)
	for p, t := range swap {
		corrupt[p] = t
	}
	in := &Input{Line: 1, Clean: clean, Corrupt: corrupt, Cont: cont, A: a, B: b}
	for range clean {
		in.Labels = append(in.Labels, "t")
	}
	if cont != nil {
		in.Metric = MetricSpec{LogProb: "x"}
	} else {
		in.Metric = MetricSpec{LogitDiff: []string{"a", "b"}}
	}
	return in
}

// nearTokens gives token ids 90, 91, … embeddings a fraction eps of the way from token p[0] to
// token p[1] of each pair, so that a corruption by them is eps of a whole-token swap.
func nearTokens(m *llama.Model, pairs [][2]int32, eps float64) []int32 {
	e := m.Embed.ToF32()
	d := m.Config.Dim
	var ids []int32
	for i, p := range pairs {
		id := int32(90 + i)
		for k := 0; k < d; k++ {
			c, o := e[int(p[0])*d+k], e[int(p[1])*d+k]
			e[int(id)*d+k] = c + float32(eps)*(o-c)
		}
		ids = append(ids, id)
	}
	m.Embed = tensor.FromF32(e, m.Config.Vocab, d)
	return ids
}

// scaleQuery multiplies every layer's query weights by f: large f saturates the attention.
func scaleQuery(m *llama.Model, f float32) {
	for l := range m.Layers {
		w := m.Layers[l].WQ.ToF32()
		for i := range w {
			w[i] *= f
		}
		m.Layers[l].WQ = tensor.FromF32(w, m.Layers[l].WQ.Shape...)
	}
}

// threePairs are corruptions of three prompts (one with a continuation) by the given tokens:
// swap[0], swap[1] replace positions 3 and 6 of the first, swap[2] position 2 of the second,
// swap[3], swap[4] positions 1 and 9 of the third.
func threePairs(swap []int32) []*Input {
	return []*Input{
		input([]int32{1, 20, 31, 44, 52, 60, 71, 80, 9, 14}, map[int]int32{3: swap[0], 6: swap[1]}, nil, 5, 7),
		input([]int32{1, 33, 8, 19, 27, 66, 88, 41}, map[int]int32{2: swap[2]}, []int32{17, 23, 5}, 0, 0),
		input([]int32{1, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59}, map[int]int32{1: swap[3], 9: swap[4]}, nil, 11, 13),
	}
}

// swapPairs are the clean tokens threePairs replaces and the tokens a whole swap puts there.
var swapPairs = [][2]int32{{44, 45}, {71, 12}, {8, 30}, {50, 3}, {58, 4}}

// wholeSwaps are the tokens of swapPairs' whole swaps.
func wholeSwaps() []int32 {
	out := make([]int32, len(swapPairs))
	for i, p := range swapPairs {
		out[i] = p[1]
	}
	return out
}
