//go:build cuda

package main

import (
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// batched times greedy generation of many rows at once through llama.Runner's GenerateBatch on
// the device, the path of a strength sweep and of the server's batches: rows prompts of 128
// random tokens, newTokens each, once plain and once with every row steered at one layer with
// its own strength (rows cycle through 0, 2, 4 and 8 times one random vector). Its peer is HF
// transformers' `generate` of 64 rows with a static cache (bench/peers/hf_baseline.py, the same
// prompt length). Then a short steered run with every op timed (Backend.OpTimes) says where a
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

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
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

	// The op profile: the prefill and four decode steps, steered, every op waited for.
	short := make([]llama.Sequence, len(seqs))
	for i, sq := range seqs {
		sq.MaxTokens = 5
		short[i] = sq
	}
	set, err := steer()
	if err != nil {
		return err
	}
	b.OpTimes = map[string]time.Duration{}
	_, st, err := r.GenerateBatch(short, llama.BatchOptions{Decode: set})
	times := b.OpTimes
	b.OpTimes = nil
	if err != nil {
		return err
	}
	var ops []string
	var sum time.Duration
	for op, d := range times {
		ops = append(ops, op)
		sum += d
	}
	sort.Slice(ops, func(i, j int) bool { return times[ops[i]] > times[ops[j]] })
	total := st.PromptTime + st.GenerateTime
	for _, op := range ops {
		emit(map[string]any{"what": "batch_op", "rows": rows, "op": op, "ms": times[op].Seconds() * 1e3, "share": times[op].Seconds() / total.Seconds()})
	}
	emit(map[string]any{"what": "batch_op", "rows": rows, "op": "(outside ops: transfers, sampling, host)",
		"ms": (total - sum).Seconds() * 1e3, "share": (total - sum).Seconds() / total.Seconds(),
		"prompt_ms": st.PromptTime.Seconds() * 1e3, "decode_ms": st.GenerateTime.Seconds() * 1e3, "decode_steps": st.DecodeSteps})
	return nil
}
