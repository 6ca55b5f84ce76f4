//go:build cuda

package main

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// runnerVariant is one way a user command decodes one sequence through llama.Runner.
type runnerVariant struct {
	name    string
	kvBF16  bool
	batch   bool // GenerateBatch of one sequence (tiller steer, eval, serve) rather than Generate
	steered bool // with a vector added at resid_post of the middle layer
}

// runnerVariants: `tiller generate --device cuda` with its default bf16 KV cache and with
// --kv-cache f32, then the path of steer, eval and serve (GenerateBatch) unsteered and steered at
// one layer, which DESIGN.md bounds at 2% apart.
var runnerVariants = []runnerVariant{
	{"generate, kv bf16", true, false, false},
	{"generate, kv f32", false, false, false},
	{"batch of 1, kv bf16", true, true, false},
	{"batch of 1, kv bf16, steered at one layer", true, true, true},
}

// runnerDecode times batch-1 greedy decode through the runner, as the user commands run it (the
// runner hands each step to the backend's decode steps: gpu.Steps), after a 128-token prompt:
// -steps decode steps per run, the variants interleaved (A, B, C, D, A, …) over 3 rounds, the
// median run of each reported against the copy bandwidth measured first. Counted per decode step,
// the prompt's pass apart, as hf_baseline.py counts HF's.
func runnerDecode(b *gpu.Backend, m *llama.Model, decodeBytes int64) error {
	c := m.Config
	rng := rand.New(rand.NewPCG(7, 8))
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32(rng.IntN(c.Vocab))
	}
	vec := make([]float32, c.Dim)
	for k := range vec {
		vec[k] = float32(0.02 * rng.NormFloat64())
	}
	set := hooks.NewSet(c.HookDims())
	if err := set.Add(hooks.Point{Layer: c.Layers / 2, Kind: hooks.ResidPost}.Name(), hooks.Steer{Vector: vec, Alpha: 4}); err != nil {
		return err
	}
	runners := map[bool]*llama.Runner{}
	for _, bf16 := range []bool{false, true} {
		r := llama.NewRunner(m, b)
		if err := r.SetPrecision(llama.Precision{KVBF16: bf16}); err != nil {
			return err
		}
		runners[bf16] = r
	}
	run := func(v runnerVariant, steps int) (time.Duration, int, []int32, error) {
		r := runners[v.kvBF16]
		if !v.batch {
			var toks []int32
			st, err := r.Generate(prompt, llama.GenerateOptions{MaxTokens: steps + 1, Stop: []int32{}}, func(id int32) bool {
				toks = append(toks, id)
				return true
			})
			return st.GenerateTime, st.DecodeSteps, toks, err
		}
		var opts llama.BatchOptions
		if v.steered {
			opts.Prefill, opts.Decode = set, set
		}
		out, st, err := r.GenerateBatch([]llama.Sequence{{Prompt: prompt, MaxTokens: steps + 1, Stop: []int32{}}}, opts)
		if err != nil {
			return 0, 0, nil, err
		}
		return st.GenerateTime, st.DecodeSteps, out[0].Tokens, nil
	}
	// Warm-up: every variant once, short (records each step's graph).
	for _, v := range runnerVariants {
		if _, _, _, err := run(v, 8); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
	}
	times := make([][]float64, len(runnerVariants)) // ms per decode step, per round
	first := make([][]int32, len(runnerVariants))
	for round := 0; round < 3; round++ {
		for i, v := range runnerVariants {
			d, n, toks, err := run(v, *steps)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			if n == 0 {
				return fmt.Errorf("%s: no decode steps", v.name)
			}
			times[i] = append(times[i], d.Seconds()*1e3/float64(n))
			first[i] = toks[:min(8, len(toks))]
		}
	}
	for i, v := range runnerVariants {
		sort.Float64s(times[i])
		msTok := times[i][len(times[i])/2]
		gbps := float64(decodeBytes) / (msTok * 1e-3) / 1e9
		row := map[string]any{"what": "tiller_runner_b1", "variant": v.name, "kv_bf16": v.kvBF16, "batch": v.batch, "steered": v.steered,
			"steps": *steps, "ms_per_token": msTok, "tok_s": 1e3 / msTok, "weight_gbps": gbps, "runs_ms": times[i], "first_tokens": first[i]}
		if copyPeak > 0 {
			row["frac_copy"] = gbps / copyPeak
		}
		emit(row)
	}
	return nil
}
