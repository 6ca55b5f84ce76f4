// Package llama loads Hugging Face LLaMA-family checkpoints (Llama 2, 3, 3.1, 3.2, TinyLlama,
// SmolLM, Mistral-style) and runs them: config, weights, the forward pass over a batch of tokens
// with a KV cache, sampling and generation.
package llama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Config is the part of config.json that decides the computation. Every field a supported
// checkpoint family uses is read; a value tiller does not implement is an error, never ignored.
type Config struct {
	ModelType         string  // "llama" or "mistral"
	Dim               int     // hidden_size
	FFNDim            int     // intermediate_size
	Layers            int     // num_hidden_layers
	Heads             int     // num_attention_heads
	KVHeads           int     // num_key_value_heads (defaults to Heads)
	HeadDim           int     // head_dim (defaults to Dim / Heads)
	Vocab             int     // vocab_size
	MaxPositions      int     // max_position_embeddings, or sliding_window when that is smaller
	NormEps           float32 // rms_norm_eps
	RopeTheta         float64 // rope_theta
	RopeScaling       RopeScaling
	AttentionBias     bool // q, k, v and o projections carry biases
	MLPBias           bool // gate, up and down projections carry biases
	TieEmbeddings     bool // the LM head is the embedding matrix
	BOS               int  // -1 when absent
	EOS               []int
	DType             string  // torch_dtype: the checkpoint's declared dtype, informational
	InitStd           float64 // initializer_range (default 0.02): the spread of random weights
	SlidingWindowNote string  // set when sliding_window shortened MaxPositions
}

// RopeScaling is config.json's rope_scaling. Type is "" (none), "linear" or "llama3".
type RopeScaling struct {
	Type                 string
	Factor               float64
	LowFreqFactor        float64
	HighFreqFactor       float64
	OriginalMaxPositions int
}

// rawConfig mirrors config.json; pointers and raw messages tell absent from zero and carry the
// fields whose JSON type varies between checkpoints.
type rawConfig struct {
	Architectures     []string        `json:"architectures"`
	ModelType         string          `json:"model_type"`
	HiddenSize        *int            `json:"hidden_size"`
	IntermediateSize  *int            `json:"intermediate_size"`
	NumHiddenLayers   *int            `json:"num_hidden_layers"`
	NumAttentionHeads *int            `json:"num_attention_heads"`
	NumKeyValueHeads  *int            `json:"num_key_value_heads"`
	HeadDim           *int            `json:"head_dim"`
	VocabSize         *int            `json:"vocab_size"`
	MaxPositions      *int            `json:"max_position_embeddings"`
	RMSNormEps        *float64        `json:"rms_norm_eps"`
	RopeTheta         *float64        `json:"rope_theta"`
	RopeScaling       json.RawMessage `json:"rope_scaling"`
	RopeParameters    json.RawMessage `json:"rope_parameters"`
	AttentionBias     *bool           `json:"attention_bias"`
	MLPBias           *bool           `json:"mlp_bias"`
	TieWordEmbeddings *bool           `json:"tie_word_embeddings"`
	BOSTokenID        json.RawMessage `json:"bos_token_id"`
	EOSTokenID        json.RawMessage `json:"eos_token_id"`
	HiddenAct         *string         `json:"hidden_act"`
	TorchDType        string          `json:"torch_dtype"`
	DType             string          `json:"dtype"`
	SlidingWindow     *int            `json:"sliding_window"`
	InitializerRange  *float64        `json:"initializer_range"`
	Quantization      json.RawMessage `json:"quantization_config"`
}

// ReadConfig reads dir/config.json.
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return c, nil
}

// ParseConfig parses and validates the bytes of a config.json.
func ParseConfig(b []byte) (*Config, error) {
	var r rawConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("malformed JSON: data after the top-level object")
	}
	switch r.ModelType {
	case "llama", "mistral":
	case "":
		return nil, fmt.Errorf("model_type is missing (want \"llama\" or \"mistral\")")
	default:
		return nil, fmt.Errorf("model_type %q is not supported (want \"llama\" or \"mistral\")", r.ModelType)
	}
	if len(r.Quantization) > 0 && string(r.Quantization) != "null" {
		return nil, fmt.Errorf("quantization_config: quantized checkpoints are not supported")
	}
	if r.HiddenAct != nil && *r.HiddenAct != "silu" {
		return nil, fmt.Errorf("hidden_act %q is not supported (want \"silu\")", *r.HiddenAct)
	}
	c := &Config{ModelType: r.ModelType, BOS: -1, DType: r.TorchDType, InitStd: 0.02}
	if r.InitializerRange != nil && *r.InitializerRange > 0 {
		c.InitStd = *r.InitializerRange
	}
	if c.DType == "" {
		c.DType = r.DType
	}
	required := []struct {
		name string
		v    *int
		dst  *int
	}{
		{"hidden_size", r.HiddenSize, &c.Dim},
		{"intermediate_size", r.IntermediateSize, &c.FFNDim},
		{"num_hidden_layers", r.NumHiddenLayers, &c.Layers},
		{"num_attention_heads", r.NumAttentionHeads, &c.Heads},
		{"vocab_size", r.VocabSize, &c.Vocab},
		{"max_position_embeddings", r.MaxPositions, &c.MaxPositions},
	}
	for _, f := range required {
		if f.v == nil {
			return nil, fmt.Errorf("%s is missing", f.name)
		}
		if *f.v <= 0 {
			return nil, fmt.Errorf("%s is %d, want > 0", f.name, *f.v)
		}
		*f.dst = *f.v
	}
	c.KVHeads = c.Heads
	if r.NumKeyValueHeads != nil {
		c.KVHeads = *r.NumKeyValueHeads
	}
	if c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("num_key_value_heads %d does not divide num_attention_heads %d", c.KVHeads, c.Heads)
	}
	if r.HeadDim != nil {
		c.HeadDim = *r.HeadDim
	} else {
		if c.Dim%c.Heads != 0 {
			return nil, fmt.Errorf("head_dim is missing and hidden_size %d is not a multiple of num_attention_heads %d", c.Dim, c.Heads)
		}
		c.HeadDim = c.Dim / c.Heads
	}
	if c.HeadDim <= 0 || c.HeadDim%2 != 0 {
		return nil, fmt.Errorf("head_dim %d must be positive and even (RoPE rotates pairs)", c.HeadDim)
	}
	c.NormEps = 1e-6
	if r.RMSNormEps != nil {
		if *r.RMSNormEps <= 0 {
			return nil, fmt.Errorf("rms_norm_eps %g, want > 0", *r.RMSNormEps)
		}
		c.NormEps = float32(*r.RMSNormEps)
	}
	c.AttentionBias = r.AttentionBias != nil && *r.AttentionBias
	c.MLPBias = r.MLPBias != nil && *r.MLPBias
	c.TieEmbeddings = r.TieWordEmbeddings != nil && *r.TieWordEmbeddings
	if err := c.parseRope(&r); err != nil {
		return nil, err
	}
	if r.SlidingWindow != nil && *r.SlidingWindow > 0 && *r.SlidingWindow < c.MaxPositions {
		// Within the window, sliding-window attention is ordinary causal attention; past it, it is
		// not, so tiller stops there rather than answer wrongly.
		c.SlidingWindowNote = fmt.Sprintf("sliding_window %d limits sequences to %d positions", *r.SlidingWindow, *r.SlidingWindow)
		c.MaxPositions = *r.SlidingWindow
	}
	var err error
	if c.BOS, err = optionalID("bos_token_id", r.BOSTokenID); err != nil {
		return nil, err
	}
	if c.EOS, err = idList("eos_token_id", r.EOSTokenID); err != nil {
		return nil, err
	}
	for _, id := range append([]int{c.BOS}, c.EOS...) {
		if id >= c.Vocab {
			return nil, fmt.Errorf("token id %d in bos/eos_token_id is outside vocab_size %d", id, c.Vocab)
		}
	}
	return c, nil
}

// parseRope reads rope_theta and rope_scaling, or transformers 5's rope_parameters that holds both.
func (c *Config) parseRope(r *rawConfig) error {
	c.RopeTheta = 10000
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	scaling := r.RopeScaling
	if len(r.RopeParameters) > 0 && string(r.RopeParameters) != "null" {
		var p struct {
			Theta *float64 `json:"rope_theta"`
		}
		if err := json.Unmarshal(r.RopeParameters, &p); err != nil {
			return fmt.Errorf("rope_parameters: %v", err)
		}
		if p.Theta != nil {
			c.RopeTheta = *p.Theta
		}
		if len(scaling) == 0 || string(scaling) == "null" {
			scaling = r.RopeParameters
		}
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("rope_theta %g, want > 0", c.RopeTheta)
	}
	if len(scaling) == 0 || string(scaling) == "null" {
		return nil
	}
	var s struct {
		RopeType string   `json:"rope_type"`
		Type     string   `json:"type"`
		Factor   *float64 `json:"factor"`
		Low      *float64 `json:"low_freq_factor"`
		High     *float64 `json:"high_freq_factor"`
		Original *int     `json:"original_max_position_embeddings"`
	}
	if err := json.Unmarshal(scaling, &s); err != nil {
		return fmt.Errorf("rope_scaling: %v", err)
	}
	kind := s.RopeType
	if kind == "" {
		kind = s.Type
	}
	switch kind {
	case "", "default":
		return nil
	case "linear":
		if s.Factor == nil || *s.Factor <= 0 {
			return fmt.Errorf("rope_scaling: linear needs a factor > 0")
		}
		c.RopeScaling = RopeScaling{Type: "linear", Factor: *s.Factor}
	case "llama3":
		if s.Factor == nil || s.Low == nil || s.High == nil || s.Original == nil {
			return fmt.Errorf("rope_scaling: llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
		}
		if *s.Factor <= 0 || *s.Low <= 0 || *s.High <= *s.Low || *s.Original <= 0 {
			return fmt.Errorf("rope_scaling: llama3 wants factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0")
		}
		c.RopeScaling = RopeScaling{Type: "llama3", Factor: *s.Factor, LowFreqFactor: *s.Low, HighFreqFactor: *s.High, OriginalMaxPositions: *s.Original}
	default:
		return fmt.Errorf("rope_scaling: rope_type %q is not supported (want linear or llama3)", kind)
	}
	return nil
}

// optionalID reads an int or null; -1 means absent. A list takes its first element.
func optionalID(field string, raw json.RawMessage) (int, error) {
	ids, err := idList(field, raw)
	if err != nil || len(ids) == 0 {
		return -1, err
	}
	return ids[0], nil
}

// idList reads an int, a list of ints, or null.
func idList(field string, raw json.RawMessage) ([]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		if one < 0 {
			return nil, fmt.Errorf("%s %d, want >= 0", field, one)
		}
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("%s is %s, want an integer or a list of integers", field, raw)
	}
	for _, id := range many {
		if id < 0 {
			return nil, fmt.Errorf("%s has %d, want ids >= 0", field, id)
		}
	}
	return many, nil
}

// GenerationConfig is the part of generation_config.json that sets defaults for sampling.
type GenerationConfig struct {
	EOS               []int
	DoSample          *bool
	Temperature       *float64
	TopP              *float64
	TopK              *int
	MinP              *float64
	RepetitionPenalty *float64
}

// ReadGenerationConfig reads dir/generation_config.json; a missing file gives an empty config.
func ReadGenerationConfig(dir string) (*GenerationConfig, error) {
	path := filepath.Join(dir, "generation_config.json")
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return &GenerationConfig{}, nil
	}
	if err != nil {
		return nil, err
	}
	var r struct {
		EOS               json.RawMessage `json:"eos_token_id"`
		DoSample          *bool           `json:"do_sample"`
		Temperature       *float64        `json:"temperature"`
		TopP              *float64        `json:"top_p"`
		TopK              *int            `json:"top_k"`
		MinP              *float64        `json:"min_p"`
		RepetitionPenalty *float64        `json:"repetition_penalty"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: malformed JSON: %v", path, err)
	}
	g := &GenerationConfig{DoSample: r.DoSample, Temperature: r.Temperature, TopP: r.TopP, TopK: r.TopK, MinP: r.MinP, RepetitionPenalty: r.RepetitionPenalty}
	if g.EOS, err = idList("eos_token_id", r.EOS); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return g, nil
}

// Params is the number of parameters the config implies.
func (c *Config) Params() int64 {
	d, f, q, kv := int64(c.Dim), int64(c.FFNDim), int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	layer := 2*d + d*q + 2*d*kv + q*d + 3*d*f
	if c.AttentionBias {
		layer += q + 2*kv + d
	}
	if c.MLPBias {
		layer += 2*f + d
	}
	n := int64(c.Vocab)*d + int64(c.Layers)*layer + d
	if !c.TieEmbeddings {
		n += int64(c.Vocab) * d
	}
	return n
}
