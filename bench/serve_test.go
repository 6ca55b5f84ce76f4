package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/tensor"
)

// The cost of per-request steering in the batching engine: the mean time of a decode step of
// `rows` sequences, each steered at one layer with its own vector and strength, against the same
// step unsteered. The two alternate within each iteration, and the best of each over the
// iterations is kept, so that the ratio compares runs minutes apart at most on a shared machine.
//
//	go test ./bench -run X -bench EngineSteering -benchtime 5x

// servingModels are the shapes measured: the tiny test model and a small one (76 M parameters)
// whose steps are long enough for the model, not the scheduler, to dominate.
var servingModels = []struct {
	name                             string
	dim, ffn, layers, heads, kvHeads int
}{
	{"tiny", 64, 160, 2, 4, 2},
	{"small", 768, 2048, 12, 12, 4},
}

func BenchmarkEngineSteering(b *testing.B) {
	for _, m := range servingModels {
		for _, rows := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/rows=%d", m.name, rows), func(b *testing.B) {
				cfg, _ := json.Marshal(map[string]any{
					"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
					"hidden_size": m.dim, "intermediate_size": m.ffn, "num_hidden_layers": m.layers,
					"num_attention_heads": m.heads, "num_key_value_heads": m.kvHeads, "vocab_size": 512,
					"max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
					"initializer_range": 0.02, "bos_token_id": 256, "eos_token_id": []int{257}, "tie_word_embeddings": false,
				})
				benchEngineSteering(b, cfg, rows)
			})
		}
	}
}

func benchEngineSteering(b *testing.B, cfg []byte, rows int) {
	dir := b.TempDir()
	if _, err := llama.WriteRandom(cfg, nil, dir, llama.InitOptions{Seed: 1, DType: tensor.BF16}); err != nil {
		b.Fatal(err)
	}
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	be := tensor.NewCPU(runtime.NumCPU())
	defer be.Close()
	var (
		mu     sync.Mutex
		steps  int
		decode float64 // seconds in decode-only steps
		count  int
	)
	e, err := engine.New(llama.NewRunner(m, be), engine.Options{MaxRunning: rows, BatchTokens: 256 + rows, PrefixBlocks: -1, OnStep: func(s engine.Step) {
		mu.Lock()
		defer mu.Unlock()
		steps++
		if s.Prefill == 0 {
			decode += s.Elapsed.Seconds()
			count++
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)

	c := m.Config
	rng := rand.New(rand.NewPCG(1, 1))
	prompt := make([]int32, 24)
	for i := range prompt {
		prompt[i] = int32(rng.IntN(256))
	}
	// Each row its own unit vector and strength at the middle layer.
	adds := make([][]engine.Addition, rows)
	for i := range adds {
		v := make([]float32, c.Dim)
		for k := range v {
			v[k] = float32(rng.NormFloat64() / math.Sqrt(float64(c.Dim)))
		}
		adds[i] = []engine.Addition{{Point: fmt.Sprintf("blocks.%d.hook_resid_post", c.Layers/2), Vector: v, Alpha: float32(1 + i%4), Span: engine.All}}
	}
	// round runs every row for 32 tokens and returns the mean decode step time.
	round := func(steered bool) float64 {
		mu.Lock()
		decode, count = 0, 0
		mu.Unlock()
		var streams []*engine.Stream
		for i := range rows {
			q := engine.Request{Prompt: prompt, MaxTokens: 32, Stop: []int32{}}
			if steered {
				q.Steering = adds[i]
			}
			s, err := e.Submit(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			streams = append(streams, s)
		}
		for _, s := range streams {
			s.Result()
		}
		for { // the last step's callback runs just after its requests end
			mu.Lock()
			done := steps == e.Stats().Steps
			d, n := decode, count
			mu.Unlock()
			if done {
				return d / float64(n)
			}
			runtime.Gosched()
		}
	}
	round(false) // first touch of the weights and the cache
	plain, steered := math.Inf(1), math.Inf(1)
	b.ResetTimer()
	for range b.N {
		plain = min(plain, round(false))
		steered = min(steered, round(true))
	}
	b.ReportMetric(plain*1e3, "ms/step")
	b.ReportMetric(steered*1e3, "steered-ms/step")
	b.ReportMetric(steered/plain, "steered/plain")
}
