package llama

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tillerlm/tiller/llama/gguf"
	"github.com/tillerlm/tiller/tensor"
)

// IsGGUF says whether path names a GGUF file (by its extension; the reader checks the magic).
func IsGGUF(path string) bool {
	return strings.HasSuffix(strings.ToLower(path), ".gguf")
}

// LoadGGUF opens a llama-architecture GGUF file (llama.cpp's format): the config from its
// llama.* metadata, the weights dequantized exactly to F32 (F32, F16 and BF16 tensors stay as
// they are, memory-mapped), llama.cpp's interleaved-RoPE row order of q and k undone so the model
// runs in Hugging Face's layout, and rope_freqs applied to the RoPE frequencies. Log receives
// the memory the weights take.
func LoadGGUF(path string, opts LoadOptions) (*Model, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := fromGGUF(g, opts.Log)
	if err != nil {
		g.Close()
		return nil, err
	}
	return m, nil
}

// fromGGUF makes the model of a parsed GGUF file, which it then owns.
func fromGGUF(g *gguf.File, logw io.Writer) (*Model, error) {
	if logw == nil {
		logw = io.Discard
	}
	cfg, gen, err := GGUFConfig(g)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Gen: gen, InvFreq: cfg.InvFreq(), gguf: g}
	if err := m.bindGGUF(g, logw); err != nil {
		return nil, err
	}
	if cfg.TieEmbeddings {
		m.LMHead = m.Embed
	}
	return m, nil
}

// GGUFConfig reads the model's hyperparameters from the llama.* keys (and the special token ids
// from tokenizer.ggml.*), as llama.cpp does, into the Config that a config.json with the same
// values would give.
func GGUFConfig(g *gguf.File) (*Config, *GenerationConfig, error) {
	arch, err := g.String("general.architecture")
	if err != nil {
		return nil, nil, err
	}
	if arch != "llama" {
		return nil, nil, fmt.Errorf("%s: general.architecture is %q; tiller runs \"llama\" GGUF files", g.Path, arch)
	}
	raw := map[string]any{"model_type": "llama", "hidden_act": "silu", "attention_bias": false, "mlp_bias": false}
	for _, k := range []struct{ key, field string }{
		{"llama.embedding_length", "hidden_size"},
		{"llama.feed_forward_length", "intermediate_size"},
		{"llama.block_count", "num_hidden_layers"},
		{"llama.attention.head_count", "num_attention_heads"},
		{"llama.context_length", "max_position_embeddings"},
	} {
		n, err := g.Int(k.key)
		if err != nil {
			return nil, nil, err
		}
		raw[k.field] = n
	}
	optInt := func(key, field string) error {
		if !g.Has(key) {
			return nil
		}
		n, err := g.Int(key)
		raw[field] = n
		return err
	}
	optFloat := func(key, field string) error {
		if !g.Has(key) {
			return nil
		}
		f, err := g.Float(key)
		raw[field] = f
		return err
	}
	for _, err := range []error{
		optInt("llama.attention.head_count_kv", "num_key_value_heads"),
		optInt("llama.attention.key_length", "head_dim"),
		optInt("tokenizer.ggml.bos_token_id", "bos_token_id"),
		optFloat("llama.attention.layer_norm_rms_epsilon", "rms_norm_eps"),
		optFloat("llama.rope.freq_base", "rope_theta"),
	} {
		if err != nil {
			return nil, nil, err
		}
	}
	vocab, err := ggufVocab(g)
	if err != nil {
		return nil, nil, err
	}
	raw["vocab_size"] = vocab
	var eos []int64
	for _, key := range []string{"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"} {
		if g.Has(key) {
			id, err := g.Int(key)
			if err != nil {
				return nil, nil, err
			}
			if len(eos) == 0 || eos[0] != id {
				eos = append(eos, id)
			}
		}
	}
	raw["eos_token_id"] = eos
	if err := ggufRopeScaling(g, raw); err != nil {
		return nil, nil, err
	}
	_, hasOutput := g.Tensor("output.weight")
	raw["tie_word_embeddings"] = !hasOutput
	_, qBias := g.Tensor("blk.0.attn_q.bias")
	raw["attention_bias"] = qBias
	_, upBias := g.Tensor("blk.0.ffn_up.bias")
	raw["mlp_bias"] = upBias
	b, _ := json.Marshal(raw)
	c, err := ParseConfig(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: its llama.* metadata: %v", g.Path, err)
	}
	if g.Has("llama.rope.dimension_count") {
		if rot, err := g.Int("llama.rope.dimension_count"); err != nil || rot != int64(c.HeadDim) {
			return nil, nil, fmt.Errorf("%s: llama.rope.dimension_count %d differs from the head size %d: partial rotary embeddings are not supported", g.Path, rot, c.HeadDim)
		}
	}
	if ft, err := g.Int("general.file_type"); err == nil {
		c.DType = "GGUF file type " + strconv.FormatInt(ft, 10)
	}
	return c, &GenerationConfig{EOS: c.EOS}, nil
}

// ggufVocab is llama.vocab_size, else the number of tokenizer.ggml.tokens, else the embedding's rows.
func ggufVocab(g *gguf.File) (int64, error) {
	if g.Has("llama.vocab_size") {
		return g.Int("llama.vocab_size")
	}
	if v, ok := g.Meta["tokenizer.ggml.tokens"]; ok {
		if toks, ok := v.V.([]string); ok {
			return int64(len(toks)), nil
		}
	}
	if t, ok := g.Tensor("token_embd.weight"); ok && len(t.Dims) == 2 {
		return int64(t.Dims[1]), nil
	}
	return 0, fmt.Errorf("%s: no llama.vocab_size, tokenizer.ggml.tokens or token_embd.weight to size the vocabulary", g.Path)
}

// ggufRopeScaling reads llama.rope.scaling.* (type none or linear; llama3's scaling comes as the
// rope_freqs tensor instead, which bindGGUF applies).
func ggufRopeScaling(g *gguf.File, raw map[string]any) error {
	typ := "none"
	if g.Has("llama.rope.scaling.type") {
		var err error
		if typ, err = g.String("llama.rope.scaling.type"); err != nil {
			return err
		}
	}
	switch typ {
	case "none", "":
		return nil
	case "linear":
		f, err := g.Float("llama.rope.scaling.factor")
		if err != nil {
			return err
		}
		raw["rope_scaling"] = map[string]any{"rope_type": "linear", "factor": f}
		return nil
	}
	return fmt.Errorf("%s: llama.rope.scaling.type %q is not supported (none, linear, or llama3's rope_freqs)", g.Path, typ)
}

// ggufName is the GGUF name of a Hugging Face tensor name, and whether llama.cpp permuted its rows
// for interleaved RoPE (q: per attention head, k: per kv head).
func ggufName(hf string) (name string, permute string) {
	switch hf {
	case "model.embed_tokens.weight":
		return "token_embd.weight", ""
	case "model.norm.weight":
		return "output_norm.weight", ""
	case "lm_head.weight":
		return "output.weight", ""
	}
	rest, _ := strings.CutPrefix(hf, "model.layers.")
	layer, field, _ := strings.Cut(rest, ".")
	kind := field[strings.LastIndexByte(field, '.'):] // ".weight" or ".bias"
	base := strings.TrimSuffix(field, kind)
	short := map[string]string{
		"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
		"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
		"self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
	}[base]
	switch short {
	case "attn_q":
		permute = "q"
	case "attn_k":
		permute = "k"
	}
	return "blk." + layer + "." + short + kind, permute
}

// bindGGUF points every weight of m at its tensor in g, dequantizing where needed, one tensor per
// CPU at a time.
func (m *Model) bindGGUF(g *gguf.File, logw io.Writer) error {
	c := m.Config
	used := map[string]bool{}
	types := map[string]int{}
	type job struct {
		w     Weight
		t     *gguf.Tensor
		shape []int
		heads int
	}
	var jobs []job
	for _, w := range m.Weights() {
		name, permute := ggufName(w.Name)
		t, ok := g.Tensor(name)
		if !ok {
			return fmt.Errorf("%s: no tensor %q (%s), which the config implies", g.Path, name, w.Name)
		}
		used[name] = true
		// GGUF lists dimensions innermost first: reversed, they are the Hugging Face shape.
		shape := make([]int, len(t.Dims))
		for i, d := range t.Dims {
			shape[len(shape)-1-i] = d
		}
		if fmt.Sprint(shape) != fmt.Sprint(w.Shape) {
			return fmt.Errorf("%s: tensor %q has shape %v, the config implies %v", g.Path, name, shape, w.Shape)
		}
		if !gguf.Supported(t.Type) {
			return fmt.Errorf("%s: tensor %q is %s; tiller reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K", g.Path, name, t.Type)
		}
		types[t.Type.String()]++
		heads := 0
		switch permute {
		case "q":
			heads = c.Heads
		case "k":
			heads = c.KVHeads
		}
		jobs = append(jobs, job{w, t, shape, heads})
	}
	var heap, mapped atomic.Int64
	errs := make([]error, len(jobs))
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(runtime.NumCPU(), len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(jobs); i = int(next.Add(1) - 1) {
				j := jobs[i]
				dst, copied, err := ggufTensor(g, j.t, j.shape, j.heads)
				if err != nil {
					errs[i] = fmt.Errorf("%s: tensor %q: %v", g.Path, j.t.Name, err)
					continue
				}
				if copied {
					heap.Add(int64(len(dst.Data)))
					g.Release(j.t)
				} else {
					mapped.Add(int64(len(dst.Data)))
				}
				*j.w.Dst = dst
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if t, ok := g.Tensor("rope_freqs.weight"); ok {
		used[t.Name] = true
		if t.Type != gguf.F32 || len(t.Dims) != 1 || t.Dims[0] != len(m.InvFreq) {
			return fmt.Errorf("%s: rope_freqs.weight is %s %v, want F32 [%d]", g.Path, t.Type, t.Dims, len(m.InvFreq))
		}
		factors := make([]float32, len(m.InvFreq))
		gguf.Dequantize(gguf.F32, g.Bytes(t), factors)
		for i, f := range factors {
			if !(f > 0) {
				return fmt.Errorf("%s: rope_freqs.weight[%d] = %g, want > 0", g.Path, i, f)
			}
			// llama.cpp divides each rotation angle by its factor (Llama 3.1's long-context
			// frequencies, precomputed by the converter).
			m.InvFreq[i] /= f
		}
	}
	var extra []string
	for _, t := range g.Tensors {
		if !used[t.Name] {
			extra = append(extra, t.Name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		fmt.Fprintf(logw, "warning: %s holds %d tensors the model does not use (ignored): %s\n", g.Path, len(extra), strings.Join(extra, ", "))
	}
	kinds := make([]string, 0, len(types))
	for k, n := range types {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	fmt.Fprintf(logw, "%s: %s tensors; weights in memory %.1f MB dequantized to F32 + %.1f MB mapped from the file\n",
		g.Path, strings.Join(kinds, ", "), float64(heap.Load())/1e6, float64(mapped.Load())/1e6)
	return nil
}

// ggufTensor returns t as a tensor of the given (Hugging Face) shape: a view of the file for an
// F32, F16 or BF16 tensor that needs no reordering, else a copy (dequantized to F32 for the block
// types) with q/k rows put back in Hugging Face order when heads > 0.
func ggufTensor(g *gguf.File, t *gguf.Tensor, shape []int, heads int) (*tensor.Tensor, bool, error) {
	raw := g.Bytes(t)
	dt, plain := map[gguf.TensorType]tensor.DType{gguf.F32: tensor.F32, gguf.F16: tensor.F16, gguf.BF16: tensor.BF16}[t.Type]
	if plain {
		if heads == 0 {
			view, err := tensor.Wrap(dt, raw, shape...)
			if err == nil && view.Aligned() {
				return view, false, nil
			}
		}
		out := tensor.New(dt, shape...)
		copy(out.Data, raw)
		unpermuteRows(out.Data, shape[0], heads)
		return out, true, nil
	}
	out := tensor.New(tensor.F32, shape...)
	if err := gguf.Dequantize(t.Type, raw, out.F32()); err != nil {
		return nil, false, err
	}
	unpermuteRows(out.Data, shape[0], heads)
	return out, true, nil
}

// unpermuteRows undoes llama.cpp's converter, which reorders the rows of each head of q_proj
// and k_proj (and their biases) so that RoPE can rotate adjacent pairs: within a head of D rows,
// Hugging Face row s·D/2 + i (s = 0, 1; i < D/2) is stored at row 2i + s. data holds rows rows
// of equal size; heads = 0 leaves it as it is.
func unpermuteRows(data []byte, rows, heads int) {
	if heads == 0 {
		return
	}
	rb := len(data) / rows
	d := rows / heads
	src := append([]byte(nil), data...)
	for h := range heads {
		for s := range 2 {
			for i := range d / 2 {
				to, from := h*d+s*d/2+i, h*d+2*i+s
				copy(data[to*rb:(to+1)*rb], src[from*rb:(from+1)*rb])
			}
		}
	}
}
