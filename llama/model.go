package llama

import (
	"fmt"

	"github.com/tillerlm/tiller/llama/gguf"
	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// Model is a LLaMA checkpoint's weights, in the dtype the checkpoint stores them.
type Model struct {
	Config  *Config
	Gen     *GenerationConfig
	Embed   *tensor.Tensor // (vocab, dim)
	Layers  []Layer
	Norm    *tensor.Tensor // (dim)
	LMHead  *tensor.Tensor // (vocab, dim); the same tensor as Embed when the embeddings are tied
	InvFreq []float32      // (head_dim/2) RoPE inverse frequencies, rope_scaling applied
	// TurnEnd are ids that end generation besides the eos ids: the chat template's end-of-turn
	// token, which generation_config.json does not always name. Whoever loads the tokenizer sets it.
	TurnEnd []int32

	files []*safetensors.File // the mapped checkpoint the weights point into
	gguf  *gguf.File          // or the mapped GGUF file
}

// Layer is one decoder block. Biases are nil unless attention_bias / mlp_bias say otherwise.
type Layer struct {
	AttnNorm *tensor.Tensor // (dim)
	WQ       *tensor.Tensor // (heads·head_dim, dim)
	WK       *tensor.Tensor // (kv_heads·head_dim, dim)
	WV       *tensor.Tensor // (kv_heads·head_dim, dim)
	WO       *tensor.Tensor // (dim, heads·head_dim)
	BQ       *tensor.Tensor // (heads·head_dim)
	BK       *tensor.Tensor // (kv_heads·head_dim)
	BV       *tensor.Tensor // (kv_heads·head_dim)
	BO       *tensor.Tensor // (dim)
	MLPNorm  *tensor.Tensor // (dim)
	WGate    *tensor.Tensor // (ffn, dim)
	WUp      *tensor.Tensor // (ffn, dim)
	WDown    *tensor.Tensor // (dim, ffn)
	BGate    *tensor.Tensor // (ffn)
	BUp      *tensor.Tensor // (ffn)
	BDown    *tensor.Tensor // (dim)
}

// Close releases the mapped checkpoint files. The model must not be used afterwards.
func (m *Model) Close() error {
	var first error
	for _, f := range m.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	m.files = nil
	if m.gguf != nil {
		if err := m.gguf.Close(); err != nil && first == nil {
			first = err
		}
		m.gguf = nil
	}
	return first
}

// Weight is one tensor a checkpoint must hold: its Hugging Face name, the shape the config
// implies, and where it goes in the model.
type Weight struct {
	Name  string
	Shape []int
	Dst   **tensor.Tensor
}

// Weights lists every tensor of the checkpoint in file order, with its destination in m. This one
// table is the whole mapping between Hugging Face names and the model's fields.
func (m *Model) Weights() []Weight {
	c := m.Config
	d, f, q, kv := c.Dim, c.FFNDim, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	ws := []Weight{{"model.embed_tokens.weight", []int{c.Vocab, d}, &m.Embed}}
	if len(m.Layers) != c.Layers {
		m.Layers = make([]Layer, c.Layers)
	}
	for i := range m.Layers {
		l := &m.Layers[i]
		p := fmt.Sprintf("model.layers.%d.", i)
		ws = append(ws,
			Weight{p + "input_layernorm.weight", []int{d}, &l.AttnNorm},
			Weight{p + "self_attn.q_proj.weight", []int{q, d}, &l.WQ},
			Weight{p + "self_attn.k_proj.weight", []int{kv, d}, &l.WK},
			Weight{p + "self_attn.v_proj.weight", []int{kv, d}, &l.WV},
			Weight{p + "self_attn.o_proj.weight", []int{d, q}, &l.WO},
		)
		if c.AttentionBias {
			ws = append(ws,
				Weight{p + "self_attn.q_proj.bias", []int{q}, &l.BQ},
				Weight{p + "self_attn.k_proj.bias", []int{kv}, &l.BK},
				Weight{p + "self_attn.v_proj.bias", []int{kv}, &l.BV},
				Weight{p + "self_attn.o_proj.bias", []int{d}, &l.BO},
			)
		}
		ws = append(ws,
			Weight{p + "post_attention_layernorm.weight", []int{d}, &l.MLPNorm},
			Weight{p + "mlp.gate_proj.weight", []int{f, d}, &l.WGate},
			Weight{p + "mlp.up_proj.weight", []int{f, d}, &l.WUp},
			Weight{p + "mlp.down_proj.weight", []int{d, f}, &l.WDown},
		)
		if c.MLPBias {
			ws = append(ws,
				Weight{p + "mlp.gate_proj.bias", []int{f}, &l.BGate},
				Weight{p + "mlp.up_proj.bias", []int{f}, &l.BUp},
				Weight{p + "mlp.down_proj.bias", []int{d}, &l.BDown},
			)
		}
	}
	ws = append(ws, Weight{"model.norm.weight", []int{d}, &m.Norm})
	if !c.TieEmbeddings {
		ws = append(ws, Weight{"lm_head.weight", []int{c.Vocab, d}, &m.LMHead})
	}
	return ws
}
