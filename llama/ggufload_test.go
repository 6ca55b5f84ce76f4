package llama

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/gguf"
	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// permuteForGGUF is llama.cpp's converter (convert_hf_to_gguf.py's permute): within each head,
// rows (2, D/2) become (D/2, 2), so RoPE's rotated pairs are adjacent. Written here from the
// converter's reshape/swapaxes, independently of the loader's inverse.
func permuteForGGUF(data []byte, rows, heads int) []byte {
	rb := len(data) / rows
	d := rows / heads
	out := make([]byte, len(data))
	for h := range heads {
		for i := range d / 2 {
			for s := range 2 {
				// out[h, i, s] = in[h, s, i]
				copy(out[(h*d+i*2+s)*rb:][:rb], data[(h*d+s*d/2+i)*rb:][:rb])
			}
		}
	}
	return out
}

// ggufOf writes m as a llama.cpp converter would, with F32 weights (F16 when m has them, to cover
// the mapped half types); meta replaces (or, with nil, removes) metadata, and extra adds tensors.
func ggufOf(t testing.TB, m *Model, meta map[string]any, extra func(b *gguf.Builder)) string {
	t.Helper()
	c := m.Config
	kv := map[string]any{
		"general.architecture":                   "llama",
		"llama.block_count":                      uint32(c.Layers),
		"llama.context_length":                   uint32(c.MaxPositions),
		"llama.embedding_length":                 uint32(c.Dim),
		"llama.feed_forward_length":              uint32(c.FFNDim),
		"llama.attention.head_count":             uint32(c.Heads),
		"llama.attention.head_count_kv":          uint32(c.KVHeads),
		"llama.rope.freq_base":                   float32(c.RopeTheta),
		"llama.rope.dimension_count":             uint32(c.HeadDim),
		"llama.attention.layer_norm_rms_epsilon": c.NormEps,
		"llama.vocab_size":                       uint32(c.Vocab),
		"tokenizer.ggml.bos_token_id":            uint32(c.BOS),
		"tokenizer.ggml.eos_token_id":            uint32(c.EOS[0]),
	}
	for k, v := range meta {
		if v == nil {
			delete(kv, k)
		} else {
			kv[k] = v
		}
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b gguf.Builder
	for _, k := range keys {
		b.Add(k, kv[k])
	}
	if extra != nil {
		extra(&b)
	}
	for _, w := range m.Weights() {
		name, permute := ggufName(w.Name)
		src := *w.Dst
		data := append([]byte(nil), src.Data...)
		typ := gguf.F32
		if src.DType == tensor.F16 {
			typ = gguf.F16
		}
		switch permute {
		case "q":
			data = permuteForGGUF(data, w.Shape[0], c.Heads)
		case "k":
			data = permuteForGGUF(data, w.Shape[0], c.KVHeads)
		}
		dims := make([]int, len(w.Shape))
		for i, d := range w.Shape {
			dims[len(dims)-1-i] = d
		}
		b.AddTensor(name, dims, typ, data)
	}
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGGUFMatchesSafetensors: the same random weights, as a Hugging Face folder and as a GGUF
// file with llama.cpp's q/k row order, give bit-identical logits.
func TestGGUFMatchesSafetensors(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			hf, _ := tinyModel(t, dt, map[string]any{"attention_bias": true})
			path := ggufOf(t, hf, nil, nil)
			var log strings.Builder
			g, err := LoadGGUF(path, LoadOptions{Log: &log})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if !reflect.DeepEqual(g.Config, withDType(hf.Config, g.Config.DType)) {
				t.Errorf("config from GGUF metadata\n%+v\nwant\n%+v", *g.Config, *hf.Config)
			}
			if !strings.Contains(log.String(), "dequantized to F32") {
				t.Errorf("no memory report: %q", log.String())
			}
			ids := []int32{1, 5, 9, 33, 2, 96, 40, 7}
			want := forwardLogits(t, hf, ids)
			got := forwardLogits(t, g, ids)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("logit %d: GGUF %g, safetensors %g", i, got[i], want[i])
				}
			}
		})
	}
}

func withDType(c *Config, dtype string) *Config {
	d := *c
	d.DType = dtype
	d.EOS = c.EOS[:1] // a GGUF file carries one eos id
	d.InitStd = 0.02
	return &d
}

func forwardLogits(t *testing.T, m *Model, ids []int32) []float32 {
	t.Helper()
	r := newRunner(t, m, 2)
	out, err := r.Forward(Prompt(0, ids, 0, true), r.NewKVCache(len(ids), 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), out.F32()...)
}

func TestGGUFRopeFreqs(t *testing.T) {
	hf, _ := tinyModel(t, tensor.F32, nil)
	half := hf.Config.HeadDim / 2
	factors := make([]float32, half)
	for i := range factors {
		factors[i] = 1 + float32(i)
	}
	path := ggufOf(t, hf, nil, func(b *gguf.Builder) {
		b.AddTensor("rope_freqs.weight", []int{half}, gguf.F32, tensor.FromF32(factors, half).Data)
	})
	g, err := LoadGGUF(path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for i, f := range hf.InvFreq {
		if want := f / factors[i]; g.InvFreq[i] != want {
			t.Errorf("InvFreq[%d] = %g, want %g / %g", i, g.InvFreq[i], f, factors[i])
		}
	}
}

func TestGGUFErrors(t *testing.T) {
	hf, _ := tinyModel(t, tensor.F32, nil)
	for _, tc := range []struct {
		name string
		meta map[string]any
		want string
	}{
		{"architecture", map[string]any{"general.architecture": "gemma"}, `general.architecture is "gemma"; tiller runs "llama"`},
		{"no layers", map[string]any{"llama.block_count": nil}, "no metadata key llama.block_count"},
		{"layers as a string", map[string]any{"llama.block_count": "2"}, "llama.block_count is string, want an integer"},
		{"partial rotary", map[string]any{"llama.rope.dimension_count": uint32(4)}, "partial rotary"},
		{"yarn", map[string]any{"llama.rope.scaling.type": "yarn"}, `llama.rope.scaling.type "yarn" is not supported`},
		{"odd head size", map[string]any{"llama.attention.key_length": uint32(7)}, "head_dim 7"},
		{"heads", map[string]any{"llama.attention.head_count_kv": uint32(4)}, "num_key_value_heads 4 does not divide"},
		{"missing tensor", map[string]any{"llama.block_count": uint32(3)}, `no tensor "blk.2.attn_norm.weight"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadGGUF(ggufOf(t, hf, tc.meta, nil), LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	// A tied model's file with an LM head of a type tiller does not read.
	tied, _ := tinyModel(t, tensor.F32, map[string]any{"tie_word_embeddings": true})
	path := ggufOf(t, tied, nil, func(b *gguf.Builder) {
		b.AddTensor("output.weight", []int{48, 97}, gguf.TensorType(24), make([]byte, 48*97))
	})
	if _, err := LoadGGUF(path, LoadOptions{}); err == nil || !strings.Contains(err.Error(), `tensor "output.weight" is I8`) {
		t.Errorf("an I8 LM head: %v", err)
	}
}

// smolLM2 is the real model `make real-model` fetches; tests that need it skip without it.
func smolLM2(t *testing.T) string {
	t.Helper()
	path := os.Getenv("TILLER_SMOLLM2_GGUF")
	if path == "" {
		path = filepath.Join("..", "build", "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no SmolLM2 GGUF at %s: run `make real-model` (or set TILLER_SMOLLM2_GGUF)", path)
	}
	return path
}

// TestSmolLM2GGUFMatchesTransformers: SmolLM2-135M-Instruct's Q4_1 GGUF (Q4_1 weights, a Q8_0
// embedding, F32 norms) against transformers' own GGUF loader in F32
// (llama/testdata/gguf/smollm2.safetensors, scripts/reference/make_gguf_fixtures.py). The weights
// are bit-identical (gguf-py's dequantization, TestDequantizeMatchesGGUFPy); what differs is
// summation order in 30 layers, within 1e-4 of the logit range.
func TestSmolLM2GGUFMatchesTransformers(t *testing.T) {
	path := smolLM2(t)
	m, err := LoadGGUF(path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ref, err := safetensors.Open(filepath.Join("testdata", "gguf", "smollm2.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	get := func(name string) *tensor.Tensor {
		x, err := ref.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	vocab := m.Config.Vocab
	for _, p := range []string{"plain", "chat"} {
		ids := get(p + ".ids").I32()
		logits := forwardLogits(t, m, ids)
		var got []float32
		for _, r := range get(p + ".rows").I32() {
			got = append(got, logits[int(r)*vocab:int(r+1)*vocab]...)
		}
		closeRows(t, p, got, get(p+".logits").F32(), 1e-4)
	}
}

// FuzzGGUFModel: whatever a GGUF file holds, the model reader returns an error or a model whose
// every weight has the shape the config implies. The seed is a valid tiny model.
func FuzzGGUFModel(f *testing.F) {
	hf, _ := tinyModel(f, tensor.F32, map[string]any{"tie_word_embeddings": true})
	seed, err := os.ReadFile(ggufOf(f, hf, nil, nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := gguf.Parse(data)
		if err != nil {
			return
		}
		c, _, err := GGUFConfig(g)
		if err != nil || c.Params() > 1<<22 {
			return // the fuzzer may write a valid config of a model too large to allocate here
		}
		m, err := fromGGUF(g, nil)
		if err != nil {
			return
		}
		for _, w := range m.Weights() {
			if (*w.Dst).Numel() != numel(w.Shape) {
				t.Fatalf("%s: %v, want %v", w.Name, (*w.Dst).Shape, w.Shape)
			}
		}
	})
}
