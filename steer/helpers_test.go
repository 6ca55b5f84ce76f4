package steer

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/tensor"
)

// tinyConfig is a small GQA Llama with odd sizes whose vocabulary is the byte-level tokenizer's
// (256 bytes, then Llama 3's 256 special tokens: <|begin_of_text|> 256, <|eot_id|> 265).
func tinyConfig(initRange float64) []byte {
	b, _ := json.Marshal(map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 3,
		"num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 512,
		"max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"initializer_range": initRange, "bos_token_id": 256, "eos_token_id": []int{257, 265},
		"tie_word_embeddings": false,
	})
	return b
}

// tinyDir writes a random F32 checkpoint with the byte-level tokenizer and Llama 3 chat template;
// plant, when given, may change embedding rows before the model is loaded.
func tinyDir(t testing.TB, initRange float64, plant func(embed func(tok int) []float32)) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := llama.WriteRandom(tinyConfig(initRange), nil, dir, llama.InitOptions{Seed: 5, DType: tensor.F32}); err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteByteLevel(filepath.Join(dir, "tokenizer.json"), 512); err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteConfig(filepath.Join(dir, "tokenizer_config.json"), "<|begin_of_text|>", "<|eot_id|>", chat.Llama3()); err != nil {
		t.Fatal(err)
	}
	if plant != nil {
		plantEmbeddings(t, filepath.Join(dir, "model.safetensors"), plant)
	}
	return dir
}

// plantEmbeddings lets plant rewrite rows of the F32 embedding table in the file.
func plantEmbeddings(t testing.TB, path string, plant func(embed func(tok int) []float32)) {
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Info("model.embed_tokens.weight")
	at, dim := f.Header.DataAt+info.Begin, info.Shape[1]
	f.Close()
	rows := map[int][]float32{}
	plant(func(tok int) []float32 {
		if rows[tok] == nil {
			rows[tok] = make([]float32, dim)
		}
		return rows[tok]
	})
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for tok, row := range rows {
		buf := make([]byte, 4*dim)
		for i, x := range row {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
		}
		if _, err := w.WriteAt(buf, at+int64(tok*dim*4)); err != nil {
			t.Fatal(err)
		}
	}
}

// tiny is a loaded model, its runner on the CPU and its tokenizer.
type tiny struct {
	dir string
	m   *llama.Model
	r   *llama.Runner
	tok *tokenizer.Tokenizer
}

func loadTiny(t testing.TB, dir string) *tiny {
	t.Helper()
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := tensor.NewCPU(2)
	t.Cleanup(func() {
		b.Close()
		tok.Close()
		m.Close()
	})
	return &tiny{dir: dir, m: m, r: llama.NewRunner(m, b), tok: tok}
}

func chatPair(user, pos, neg string) Pair {
	msgs := func(reply string) tokenizer.Text {
		return tokenizer.Text{Messages: []chat.Message{{Role: "user", Content: user}, {Role: "assistant", Content: reply}}}
	}
	return Pair{Positive: msgs(pos), Negative: msgs(neg)}
}

func cosine(a []float32, b []float64) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * b[i]
		aa += float64(a[i]) * float64(a[i])
		bb += b[i] * b[i]
	}
	return ab / math.Sqrt(aa*bb)
}
