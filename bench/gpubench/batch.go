//go:build cuda

package main

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/tillerlm/tiller/bench"
	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// batched times greedy generation of many rows at once through llama.Runner's GenerateBatch on
// the device, the path of a strength sweep and of the server's batches: rows prompts of 128
// random tokens, newTokens each, once plain and once with every row steered at one layer with
// its own strength (rows cycle through 0, 2, 4 and 8 times one random vector). Its peer is HF
// transformers' `generate` of 64 rows with a static cache (bench/peers/hf_baseline.py, the same
// prompt length). Then steered decode steps with every op timed (Backend.OpTimes) say where a
// step's time goes; with -cpuprofile the timed runs' host side is profiled too.
func batched(b *gpu.Backend, r *llama.Runner, rows, newTokens int) error {
	c := r.Model.Config
	rng := rand.New(rand.NewPCG(5, 6))
	seqs := make([]llama.Sequence, rows)
	for i := range seqs {
		prompt := make([]int32, 128)
		for k := range prompt {
			prompt[k] = int32(rng.IntN(c.Vocab))
		}
		// No stop ids: every row generates all its tokens, so rows × newTokens are timed.
		seqs[i] = llama.Sequence{Prompt: prompt, MaxTokens: newTokens, Stop: []int32{}}
	}
	vec := make([]float32, c.Dim)
	for k := range vec {
		vec[k] = float32(rng.NormFloat64())
	}
	steer := func() (*hooks.Set, error) {
		alpha := map[int32]float32{}
		for i := range seqs {
			alpha[int32(i)] = []float32{0, 2, 4, 8}[i%4]
		}
		set := hooks.NewSet(c.HookDims())
		name := hooks.Point{Layer: c.Layers / 2, Kind: hooks.ResidPost}.Name()
		return set, set.Add(name, hooks.Steer{Vector: vec, SeqAlpha: alpha})
	}

	stop, err := bench.StartCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	for _, steered := range []bool{false, true} {
		var opts llama.BatchOptions
		if steered {
			set, err := steer()
			if err != nil {
				return err
			}
			opts.Prefill, opts.Decode = set, set
		}
		out, st, err := r.GenerateBatch(seqs, opts)
		if err != nil {
			return err
		}
		emit(map[string]any{"what": "tiller_generate_batch", "rows": rows, "new_tokens": newTokens, "steered": steered,
			"prompt_tokens": st.PromptTokens, "prompt_s": st.PromptTime.Seconds(),
			"generated": st.GeneratedTokens, "decode_steps": st.DecodeSteps, "generate_s": st.GenerateTime.Seconds(),
			"ms_per_step": st.GenerateTime.Seconds() * 1e3 / float64(max(st.DecodeSteps, 1)),
			"tok_s":       st.GenerateRate(), "first_tokens": out[0].Tokens[:min(8, len(out[0].Tokens))]})
	}

	// The op profile of decode alone: the prompts prefilled untimed, then four steered decode
	// steps of all rows with every op waited for; the rest of a step's wall time is transfers,
	// staging and the host.
	kv := r.NewKVCache(rows*(128+32), 16)
	defer func() {
		for l := range kv.K {
			b.Free(kv.K[l])
			b.Free(kv.V[l])
		}
	}()
	for i, sq := range seqs {
		if _, err := r.Forward(llama.Prompt(int32(i), sq.Prompt, 0, false), kv, nil); err != nil {
			return err
		}
	}
	set, err := steer()
	if err != nil {
		return err
	}
	step := llama.Batch{}
	for i := range seqs {
		step.Tokens = append(step.Tokens, int32(i))
		step.Seq, step.Pos = append(step.Seq, int32(i)), append(step.Pos, 128)
		step.Logits = append(step.Logits, true)
	}
	b.OpTimes = map[string]time.Duration{}
	const steps = 4
	start := time.Now()
	for k := 0; k < steps; k++ {
		if _, err := r.Forward(step, kv, set); err != nil {
			b.OpTimes = nil
			return err
		}
		for i := range step.Pos {
			step.Pos[i]++
		}
	}
	total := time.Since(start)
	times := b.OpTimes
	b.OpTimes = nil
	var ops []string
	var sum time.Duration
	for op, d := range times {
		ops = append(ops, op)
		sum += d
	}
	sort.Slice(ops, func(i, j int) bool { return times[ops[i]] > times[ops[j]] })
	for _, op := range ops {
		emit(map[string]any{"what": "batch_op", "rows": rows, "op": op, "ms": times[op].Seconds() * 1e3 / steps, "share": times[op].Seconds() / total.Seconds()})
	}
	emit(map[string]any{"what": "batch_op", "rows": rows, "op": "(outside ops: logits download, staging, host)",
		"ms": (total - sum).Seconds() * 1e3 / steps, "share": (total - sum).Seconds() / total.Seconds()})
	return nil
}
