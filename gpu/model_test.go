//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// The whole model on the GPU against the same model on the CPU: logits of a prefill (every
// position) and of token-by-token decode through the KV cache via llama.Runner on each backend,
// then greedy generation with the device-resident Decoder (one CUDA graph per step) against the
// CPU's greedy tokens.
//
// Bounds, relative to max |logit|: the HF fixtures are F32 (one F16) checkpoints; every product
// of ≤ 8 tokens and every F32-weight product is an f32 computation on both sides, so they differ
// by summation order: 1e-4 (their prefill attention is kept in f32: Backend.ExactAttention).
// Prefills of more than 8 tokens with 16-bit weights run on tensor cores, which round the
// activations to bf16/f16 (relative 2⁻⁹/2⁻¹¹ per element), in the GEMMs and in the prefill
// attention (q, k, v and the softmax weights); through two layers and the LM head that moves
// logits by ~1e-2 of their range, so those runs get 3e-2.
func TestModelFixtures(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false // whole-model runs: faults show at the next download anyway
	for _, name := range []string{"gqa", "llama3rope", "tied", "odd", "llama32"} {
		t.Run(name, func(t *testing.T) {
			m, err := llama.Load(filepath.Join("..", "llama", "testdata", "hf", name), llama.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			compareModel(t, b, m)
		})
	}
}

// The same on random tiny checkpoints in bf16, the dtype of the real models: one with head_dim 32,
// and one with the real head_dim of 128 (and GQA groups of 4, as Llama-3.1-8B).
func TestModelRandomBF16(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	compareModel(t, b, randomModel(t, 8))
	compareModel(t, b, randomModelOf(t, 512, 1024, 4, 1, 2, 2048, 5))
}

// randomModel is a random bf16 checkpoint of dim 256, 8 heads of 32 (2 kv heads), ffn 688,
// vocab 1000 and 3 layers; seed picks the weights.
func randomModel(t *testing.T, seed uint64) *llama.Model {
	return randomModelOf(t, 256, 688, 8, 2, 3, 1000, seed)
}

func randomModelOf(t *testing.T, dim, ffn, heads, kvHeads, layers, vocab int, seed uint64) *llama.Model {
	t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":%d,
		"intermediate_size":%d,"num_hidden_layers":%d,"num_attention_heads":%d,"num_key_value_heads":%d,
		"vocab_size":%d,"max_position_embeddings":512,"rms_norm_eps":1e-5,"rope_theta":500000.0,
		"initializer_range":0.05,"bos_token_id":1,"eos_token_id":2,"tie_word_embeddings":false,
		"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}}`,
		dim, ffn, layers, heads, kvHeads, vocab))
	dir := t.TempDir()
	if _, err := llama.WriteRandom(cfg, nil, dir, llama.InitOptions{Seed: seed, DType: tensor.BF16}); err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func compareModel(t *testing.T, b *Backend, m *llama.Model) {
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rc, rg := llama.NewRunner(m, cpu), llama.NewRunner(m, b)
	vocab := m.Config.Vocab
	prompt := make([]int32, 40)
	for i := range prompt {
		prompt[i] = int32((i*37 + 11) % vocab)
	}
	prefillBound := 1e-4
	if m.Embed.DType != tensor.F32 {
		prefillBound = 3e-2
	}
	// An F32 checkpoint is held to the f32 bound, so its prefill attention stays in f32 too (the
	// tensor-core kernel rounds q, k, v to bf16, as the GEMM does x for 16-bit weights).
	defer func(exact bool) { b.ExactAttention = exact }(b.ExactAttention)
	b.ExactAttention = m.Embed.DType == tensor.F32

	// Prefill: logits at every position.
	want, err := rc.Forward(llama.Prompt(0, prompt, 0, true), rc.NewKVCache(len(prompt), 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantP := append([]float32(nil), want.F32()...)
	got, err := rg.Forward(llama.Prompt(0, prompt, 0, true), rg.NewKVCache(len(prompt), 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	closeLogits(t, "prefill of 40 tokens", got.F32(), wantP, prefillBound)

	// Decode: 5 prompt tokens (GEMV path), then one token at a time.
	kvc, kvg := rc.NewKVCache(64, 4), rg.NewKVCache(64, 4)
	for p := 0; p < 12; p++ {
		var bt llama.Batch
		if p == 0 {
			bt = llama.Prompt(0, prompt[:5], 0, true)
		} else if p < 5 {
			continue
		} else {
			bt = llama.Prompt(0, prompt[p:p+1], p, false)
		}
		w, err := rc.Forward(bt, kvc, nil)
		if err != nil {
			t.Fatal(err)
		}
		wv := append([]float32(nil), w.F32()...)
		g, err := rg.Forward(bt, kvg, nil)
		if err != nil {
			t.Fatal(err)
		}
		closeLogits(t, "decode step at position "+itoa(p), g.F32(), wv, 1e-4)
	}

	// Greedy generation: the CPU runner step by step, the Decoder on the device from the same
	// prompt (its prefill through the GPU runner into the decoder's cache).
	const steps = 16
	start := 9
	kvc = rc.NewKVCache(64, 16)
	logits, err := rc.Forward(llama.Prompt(0, prompt[:start], 0, false), kvc, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cpuTokens []int32
	var margins []float64
	var cpuLogits [][]float32 // [s]: the logits of cpuTokens[s] at position start+s
	next := argmax(logits.F32())
	for s := 0; s < steps; s++ {
		cpuTokens = append(cpuTokens, next)
		margins = append(margins, margin(logits.F32()))
		if logits, err = rc.Forward(llama.Prompt(0, []int32{next}, start+s, false), kvc, nil); err != nil {
			t.Fatal(err)
		}
		cpuLogits = append(cpuLogits, append([]float32(nil), logits.F32()...))
		next = argmax(logits.F32())
	}
	// Every form of the decoder step: generic kernels, and (compute capability ≥ 9.0) the fused
	// step with and without programmatic dependent launch; each replayed as a graph and not.
	type variant struct{ fused, pdl, graph bool }
	var variants []variant
	for _, fused := range []bool{false, true} {
		for _, pdl := range []bool{false, true} {
			for _, graph := range []bool{false, true} {
				if (fused || !pdl) && (!fused || b.cc >= 90) {
					variants = append(variants, variant{fused, pdl, graph})
				}
			}
		}
	}
	for _, v := range variants {
		what := fmt.Sprintf("decoder (fused %v, pdl %v, graph %v)", v.fused, v.pdl, v.graph)
		kvg = rg.NewKVCache(64, 16)
		if _, err := rg.Forward(llama.Prompt(0, prompt[:start-1], 0, false), kvg, nil); err != nil {
			t.Fatal(err)
		}
		d, err := NewDecoder(b, rg.Model, kvg, 0, 48)
		if err != nil {
			t.Fatal(err)
		}
		if v.fused && !d.Fused {
			t.Errorf("%s: NewDecoder chose the generic step for this model on a card of compute capability %d", what, b.cc)
			d.Close()
			continue
		}
		d.UseGraph, d.Fused, d.PDL = v.graph, v.fused, v.pdl
		// The decoder feeds the last prompt token, whose argmax is the first new token.
		if err := d.Start(prompt[start-1], start-1); err != nil {
			t.Fatal(err)
		}
		for s := 0; s < steps; s++ {
			if err := d.Step(); err != nil {
				t.Fatal(err)
			}
		}
		if v.pdl && !d.PDL {
			t.Logf("%s: the driver could not capture programmatic dependent launch into a graph; ran without", what)
		}
		got := d.Tokens(start, start+steps)
		last := d.Logits()
		d.Close()
		same := true
		for s := range got {
			if got[s] != cpuTokens[s] {
				same = false
				// A near-tie on the CPU may go either way within rounding; anything else is a bug.
				if margins[s] < 1e-4*maxAbs(wantP) {
					t.Logf("%s step %d: token %d, CPU %d, a near-tie (margin %g); stopping the comparison", what, s, got[s], cpuTokens[s], margins[s])
					break
				}
				t.Errorf("%s: greedy tokens %v, CPU %v (first difference at step %d)", what, got, cpuTokens, s)
				break
			}
		}
		// The last step fed cpuTokens[steps-2] at position start+steps-2: its logits are the CPU's.
		if same {
			closeLogits(t, what+": logits of the last step", last, cpuLogits[steps-2], 1e-4)
		}
	}
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// margin is the gap between the largest and second-largest logit.
func margin(x []float32) float64 {
	a, b := math.Inf(-1), math.Inf(-1)
	for _, v := range x {
		f := float64(v)
		if f > a {
			a, b = f, a
		} else if f > b {
			b = f
		}
	}
	return a - b
}

func maxAbs(v []float32) float64 {
	var m float64
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

// closeLogits fails when got and want differ anywhere by more than rel × max|want|, naming the
// worst element.
func closeLogits(t *testing.T, what string, got, want []float32, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(want))
	}
	scale := maxAbs(want)
	worst, at := 0.0, 0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > worst || d != d {
			worst, at = d, i
			if d != d {
				worst = math.Inf(1)
				break
			}
		}
	}
	if worst > rel*scale {
		t.Errorf("%s: max |Δ| %g at %d (got %g, want %g) exceeds %g × max|want| (%g)", what, worst, at, got[at], want[at], rel, scale)
	} else {
		t.Logf("%s: max |Δ| = %.2g × max|want|", what, worst/scale)
	}
}
