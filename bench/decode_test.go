package bench

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// benchModels is where random checkpoints at real shapes are written once and reused: gigabytes
// that should not be remade on every run. Override with TILLER_BENCH_MODELS.
func benchModels() string {
	if d := os.Getenv("TILLER_BENCH_MODELS"); d != "" {
		return d
	}
	return filepath.Join("..", "build", "bench-models")
}

var modelOnce sync.Map // config name → *sync.Once guarding its checkpoint

// randomModel returns the folder of a random bf16 checkpoint for llama/testdata/configs/NAME,
// writing it the first time.
func randomModel(b *testing.B, name string) string {
	b.Helper()
	dir := filepath.Join(benchModels(), name+"-random-bf16")
	once, _ := modelOnce.LoadOrStore(name, new(sync.Once))
	var err error
	once.(*sync.Once).Do(func() {
		if _, statErr := os.Stat(filepath.Join(dir, "model.safetensors")); statErr == nil {
			return
		}
		var cfg []byte
		if cfg, err = os.ReadFile(filepath.Join("..", "llama", "testdata", "configs", name, "config.json")); err != nil {
			return
		}
		b.Logf("writing %s (once)", dir)
		_, err = llama.WriteRandom(cfg, nil, dir, llama.InitOptions{Seed: 1, DType: tensor.BF16})
	})
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// decodeBytes is the weight bytes one decode step reads: every matrix once, the embedding table
// only as the LM head (its row lookup is negligible).
func decodeBytes(m *llama.Model) int64 {
	var n int64
	for _, w := range m.Weights() {
		if w.Name == "model.embed_tokens.weight" && !m.Config.TieEmbeddings {
			continue
		}
		n += int64(len((*w.Dst).Data))
	}
	return n
}

// loadRunner loads the random checkpoint for name with its pages read in, on a CPU backend.
func loadRunner(b *testing.B, name string, threads int) *llama.Runner {
	return loadFolder(b, randomModel(b, name), threads)
}

// realModel is the model folder in TILLER_BENCH_MODEL (SmolLM2-135M-Instruct, say); the benchmark
// skips without it.
func realModel(b *testing.B) string {
	dir := os.Getenv("TILLER_BENCH_MODEL")
	if dir == "" {
		b.Skip("set TILLER_BENCH_MODEL to a model folder (a real checkpoint in Hugging Face layout) to run this benchmark")
	}
	return dir
}

// loadFolder loads the model folder dir with its pages read in, on a CPU backend.
func loadFolder(b *testing.B, dir string, threads int) *llama.Runner {
	m, err := llama.Load(dir, llama.LoadOptions{Prefetch: true})
	if err != nil {
		b.Fatal(err)
	}
	be := tensor.NewCPU(threads)
	b.Cleanup(func() {
		be.Close()
		m.Close()
	})
	return llama.NewRunner(m, be)
}

// benchDecode times single-token decode steps after a 16-token prompt, on 2 threads, and reports
// tok/s and the weight bandwidth they imply.
func benchDecode(b *testing.B, name string, threads int) {
	r := loadRunner(b, name, threads)
	m := r.Model
	prompt := []int32{128000, 9906, 11, 1268, 527, 499, 3432, 30, 358, 1097, 7060, 11, 9523, 369, 10371, 13}
	steps := b.N + 1
	kv := r.NewKVCache(len(prompt)+steps, 16)
	logits, err := r.Forward(llama.Prompt(0, prompt, 0, false), kv, nil)
	if err != nil {
		b.Fatal(err)
	}
	step := llama.Batch{Tokens: []int32{0}, Seq: []int32{0}, Pos: []int32{0}, Logits: []bool{true}}
	greedy := llama.NewSampler(llama.SamplerConfig{}, m.Config.Vocab)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step.Tokens[0] = greedy.Sample(logits.F32(), nil)
		step.Pos[0] = int32(len(prompt) + i)
		if logits, err = r.Forward(step, kv, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	perToken := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(1/perToken, "tok/s")
	b.ReportMetric(float64(decodeBytes(m))/perToken/1e9, "GB/s")
}

// benchPrefill times one forward pass over a prompt of n tokens and reports tok/s.
func benchPrefill(b *testing.B, name string, threads, n int) {
	r := loadRunner(b, name, threads)
	m := r.Model
	prompt := make([]int32, n)
	for i := range prompt {
		prompt[i] = int32((i*7919 + 13) % m.Config.Vocab)
	}
	kv := r.NewKVCache(n, 16)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kv.Release(0)
		if _, err := r.Forward(llama.Prompt(0, prompt, 0, false), kv, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tok/s")
}

func BenchmarkDecodeLlama32_1B_2Threads(b *testing.B) { benchDecode(b, "llama-3.2-1b-instruct", 2) }
func BenchmarkDecodeLlama32_1B_1Thread(b *testing.B)  { benchDecode(b, "llama-3.2-1b-instruct", 1) }
func BenchmarkPrefill128Llama32_1B_2Threads(b *testing.B) {
	benchPrefill(b, "llama-3.2-1b-instruct", 2, 128)
}
