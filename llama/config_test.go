package llama

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// realConfigs holds the config.json (and generation_config.json) of real checkpoints.
const realConfigs = "testdata/configs"

func TestRealConfigs(t *testing.T) {
	c, err := ReadConfig(filepath.Join(realConfigs, "llama-3.1-8b-instruct"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dim != 4096 || c.Heads != 32 || c.KVHeads != 8 || c.HeadDim != 128 || c.Layers != 32 || c.Vocab != 128256 {
		t.Errorf("8B shape: %+v", c)
	}
	if c.RopeScaling.Type != "llama3" || c.RopeScaling.Factor != 8 || c.RopeScaling.OriginalMaxPositions != 8192 || c.RopeTheta != 500000 {
		t.Errorf("8B rope: %+v theta %g", c.RopeScaling, c.RopeTheta)
	}
	if len(c.EOS) != 3 || c.EOS[2] != 128009 || c.BOS != 128000 || c.TieEmbeddings {
		t.Errorf("8B ids: bos %d eos %v tied %v", c.BOS, c.EOS, c.TieEmbeddings)
	}
	if p := c.Params(); p != 8030261248 {
		t.Errorf("8B parameters %d, want 8030261248 (transformers' count)", p)
	}
	c, err = ReadConfig(filepath.Join(realConfigs, "llama-3.2-1b-instruct"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 64 || !c.TieEmbeddings || c.RopeScaling.Factor != 32 {
		t.Errorf("1B: %+v", c)
	}
	c, err = ReadConfig(filepath.Join(realConfigs, "llama-3-8b-instruct"))
	if err != nil {
		t.Fatal(err)
	}
	if c.RopeScaling.Type != "" || len(c.EOS) != 1 || c.EOS[0] != 128009 {
		t.Errorf("Llama 3 8B: rope %+v eos %v", c.RopeScaling, c.EOS)
	}
	g, err := ReadGenerationConfig(filepath.Join(realConfigs, "llama-3.1-8b-instruct"))
	if err != nil {
		t.Fatal(err)
	}
	if *g.Temperature != 0.6 || *g.TopP != 0.9 || len(g.EOS) != 3 {
		t.Errorf("generation config: %+v", g)
	}
}

func parse(t *testing.T, overrides map[string]any) (*Config, error) {
	t.Helper()
	return ParseConfig(tinyConfig(overrides))
}

func TestConfigFields(t *testing.T) {
	c, err := parse(t, map[string]any{"num_key_value_heads": nil, "eos_token_id": 5, "head_dim": 12, "attention_bias": true, "mlp_bias": true})
	if err != nil {
		t.Fatal(err)
	}
	if c.KVHeads != 6 || c.HeadDim != 12 || !c.AttentionBias || !c.MLPBias || len(c.EOS) != 1 || c.EOS[0] != 5 {
		t.Errorf("%+v", c)
	}
	c, err = parse(t, map[string]any{"rope_theta": nil, "rms_norm_eps": nil, "bos_token_id": nil, "eos_token_id": nil})
	if err != nil {
		t.Fatal(err)
	}
	if c.RopeTheta != 10000 || c.NormEps != 1e-6 || c.BOS != -1 || c.EOS != nil {
		t.Errorf("defaults: %+v", c)
	}
	// transformers 5 writes rope_parameters in place of rope_theta and rope_scaling.
	c, err = parse(t, map[string]any{"rope_theta": nil, "rope_parameters": map[string]any{"rope_theta": 500000.0, "rope_type": "linear", "factor": 4.0}})
	if err != nil {
		t.Fatal(err)
	}
	if c.RopeTheta != 500000 || c.RopeScaling.Type != "linear" || c.RopeScaling.Factor != 4 {
		t.Errorf("rope_parameters: %+v theta %g", c.RopeScaling, c.RopeTheta)
	}
	c, err = parse(t, map[string]any{"model_type": "mistral", "sliding_window": 32})
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxPositions != 32 || c.SlidingWindowNote == "" {
		t.Errorf("sliding window: max positions %d", c.MaxPositions)
	}
	c, err = parse(t, map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 2.0}})
	if err != nil || c.RopeScaling.Type != "linear" {
		t.Errorf("rope_scaling with the old \"type\" key: %v %+v", err, c)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		over map[string]any
		want string
	}{
		{map[string]any{"model_type": "gpt2"}, `model_type "gpt2" is not supported`},
		{map[string]any{"model_type": nil}, "model_type is missing"},
		{map[string]any{"hidden_act": "gelu"}, `hidden_act "gelu"`},
		{map[string]any{"hidden_size": nil}, "hidden_size is missing"},
		{map[string]any{"vocab_size": 0}, "vocab_size is 0"},
		{map[string]any{"num_key_value_heads": 4}, "num_key_value_heads 4 does not divide num_attention_heads 6"},
		{map[string]any{"hidden_size": 50}, "not a multiple of num_attention_heads"},
		{map[string]any{"head_dim": 7}, "head_dim 7 must be positive and even"},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "dynamic", "factor": 2.0}}, `rope_type "dynamic" is not supported`},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 2.0}}, `rope_type "yarn"`},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "llama3 needs factor, low_freq_factor"},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "linear"}}, "linear needs a factor"},
		{map[string]any{"rope_scaling": "big"}, "rope_scaling"},
		{map[string]any{"quantization_config": map[string]any{"bits": 4}}, "quantized checkpoints are not supported"},
		{map[string]any{"eos_token_id": "two"}, "eos_token_id is \"two\""},
		{map[string]any{"eos_token_id": []int{2, 500}}, "token id 500"},
		{map[string]any{"bos_token_id": -3}, "bos_token_id -3"},
		{map[string]any{"rms_norm_eps": -1.0}, "rms_norm_eps"},
		{map[string]any{"rope_theta": 0.0}, "rope_theta 0"},
		{map[string]any{"hidden_size": "48"}, "malformed JSON"},
	}
	for _, c := range cases {
		if _, err := parse(t, c.over); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.over, err, c.want)
		}
	}
	for _, bad := range []string{"", "{", "[]", `{"model_type": "llama"} {}`} {
		if _, err := ParseConfig([]byte(bad)); err == nil || !strings.Contains(err.Error(), "malformed JSON") {
			t.Errorf("config %q: %v", bad, err)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte("{"), 0o644)
	if _, err := ReadConfig(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "config.json")) {
		t.Errorf("error does not name the file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"eos_token_id": [1, "x"]}`), 0o644)
	if _, err := ReadGenerationConfig(dir); err == nil || !strings.Contains(err.Error(), "generation_config.json") {
		t.Errorf("generation config error: %v", err)
	}
}

// Llama 3.1's frequencies, recomputed here in float64 from REFERENCES.md: unchanged above the
// high-frequency wavelength bound, divided by 8 below the low one, interpolated between.
func TestInvFreqLlama3(t *testing.T) {
	c, err := ReadConfig(filepath.Join(realConfigs, "llama-3.1-8b-instruct"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.InvFreq()
	if len(got) != 64 {
		t.Fatalf("%d frequencies", len(got))
	}
	kept, scaled, mixed := 0, 0, 0
	for i, g := range got {
		f := math.Pow(500000, -float64(2*i)/128)
		wl := 2 * math.Pi / f
		var want float64
		switch {
		case wl < 8192.0/4:
			want, kept = f, kept+1
		case wl > 8192.0/1:
			want, scaled = f/8, scaled+1
		default:
			s := (8192/wl - 1) / (4 - 1)
			want, mixed = (1-s)*f/8+s*f, mixed+1
		}
		if math.Abs(float64(g)-want) > 1e-6*want {
			t.Errorf("inv_freq[%d] = %g, want %g", i, g, want)
		}
	}
	if kept == 0 || scaled == 0 || mixed == 0 {
		t.Errorf("bands kept %d scaled %d mixed %d: the test does not cover all three", kept, scaled, mixed)
	}
	c.RopeScaling = RopeScaling{Type: "linear", Factor: 4}
	if lin := c.InvFreq(); lin[1] != float32(math.Pow(500000, -2.0/128))/4 {
		t.Errorf("linear: %g", lin[1])
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, dir := range []string{"llama-3.1-8b-instruct", "llama-3.2-1b-instruct", "llama-3-8b-instruct"} {
		if b, err := os.ReadFile(filepath.Join(realConfigs, dir, "config.json")); err == nil {
			f.Add(b)
		}
	}
	if fixtures, _ := filepath.Glob("testdata/hf/*/config.json"); len(fixtures) > 0 {
		for _, p := range fixtures {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add(tinyConfig(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		// Whatever parses must describe a model the engine can shape.
		if c.Dim <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 || c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.Vocab <= 0 || c.MaxPositions <= 0 {
			t.Fatalf("accepted %+v", c)
		}
		for _, id := range c.EOS {
			if id < 0 || id >= c.Vocab {
				t.Fatalf("accepted eos %d for vocab %d", id, c.Vocab)
			}
		}
		_ = c.InvFreq()
	})
}
