package llama

import (
	"encoding/json"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// tinyConfig is a small GQA model with odd sizes; initializer_range 0.3 makes the random weights
// large enough that logits differ by whole units, so the tests below see real differences.
func tinyConfig(overrides map[string]any) []byte {
	c := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"hidden_size":             48,
		"intermediate_size":       72,
		"num_hidden_layers":       2,
		"num_attention_heads":     6,
		"num_key_value_heads":     2,
		"vocab_size":              97,
		"max_position_embeddings": 64,
		"rms_norm_eps":            1e-5,
		"rope_theta":              10000.0,
		"initializer_range":       0.3,
		"bos_token_id":            1,
		"eos_token_id":            []int{2, 3},
		"tie_word_embeddings":     false,
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, _ := json.Marshal(c)
	return b
}

// tinyModel writes a random checkpoint into a temporary folder and loads it.
func tinyModel(t testing.TB, dt tensor.DType, overrides map[string]any) (*Model, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := WriteRandom(tinyConfig(overrides), nil, dir, InitOptions{Seed: 7, DType: dt}); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, dir
}

func newRunner(t testing.TB, m *Model, threads int) *Runner {
	b := tensor.NewCPU(threads)
	t.Cleanup(b.Close)
	return NewRunner(m, b)
}

func maxAbs(v []float32) float64 {
	var m float64
	for _, x := range v {
		m = max(m, float64(x), -float64(x))
	}
	return m
}

// closeRows fails when two logit matrices differ by more than rel × max|want|.
func closeRows(t *testing.T, what string, got, want []float32, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bound := rel * maxAbs(want)
	worst, at := 0.0, 0
	for i := range got {
		if d := float64(got[i]) - float64(want[i]); d > worst || -d > worst || d != d {
			worst, at = max(d, -d), i
			if d != d {
				worst = 1e300
			}
		}
	}
	t.Logf("%s: max |Δ| = %.2g × max|want| (%g)", what, worst/maxAbs(want), maxAbs(want))
	if worst > bound {
		t.Errorf("%s: max |Δ| %g at %d (got %g want %g) exceeds %g = %g × max|want|", what, worst, at, got[at], want[at], bound, rel)
	}
}
