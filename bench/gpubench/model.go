//go:build cuda

package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// decodeVariant is one form of the device-resident decode step (gpu.Decoder); steer adds a
// steering vector at hook_resid_post of the middle layer (DESIGN.md: at most 2% slower than the
// same step unhooked, the row before it).
type decodeVariant struct {
	name                     string
	fused, pdl, graph, steer bool
}

var decodeVariants = []decodeVariant{
	{"generic, graph", false, false, true, false},
	{"fused, graph", true, false, true, false},
	{"fused+PDL, graph", true, true, true, false},
	{"fused+PDL, graph, steered at one layer", true, true, true, true},
}

// model builds the full model with random bf16 weights in device memory, then times batch-1
// greedy decode in each form of the step (one CUDA graph per step), profiles each kernel of the
// generic and the fused step, times batch-1 decode through the runner (runnerDecode), a prefill,
// and batched generation.
func model(b *gpu.Backend, c *llama.Config) error {
	m, decodeBytes, err := randomDeviceModel(b, c)
	if err != nil {
		return err
	}
	r := llama.NewRunner(m, b)
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32(rand.IntN(c.Vocab))
	}

	// Batch-1 greedy decode after a 128-token prompt: the prompt through the runner, then the
	// device-resident decoder, timed over many steps.
	capacity := len(prompt) + *steps + 8 + *profileSteps + 8
	for _, v := range decodeVariants {
		kv := r.NewKVCache(capacity+1, 16)
		err := func() error {
			if _, err := r.Forward(llama.Prompt(0, prompt[:len(prompt)-1], 0, false), kv, nil); err != nil {
				return err
			}
			dec, err := gpu.NewDecoder(b, r.Model, kv, 0, capacity)
			if err != nil {
				return err
			}
			defer dec.Close()
			if v.fused && !dec.Fused {
				emit(map[string]any{"what": "skipped", "step": "decode " + v.name, "reason": "the fused step needs compute capability 9.0"})
				return nil
			}
			dec.UseGraph, dec.Fused, dec.PDL = v.graph, v.fused, v.pdl
			if v.steer {
				vec := make([]float32, c.Dim)
				for k := range vec {
					vec[k] = float32(0.02 * rand.NormFloat64())
				}
				if err := dec.Steer(hooks.Point{Layer: c.Layers / 2, Kind: hooks.ResidPost}, vec, 4); err != nil {
					return err
				}
			}
			if err := dec.Start(prompt[len(prompt)-1], len(prompt)-1); err != nil {
				return err
			}
			var stepErr error
			step := func() {
				if err := dec.Step(); err != nil && stepErr == nil {
					stepErr = err
				}
			}
			// Warm-up: 8 steps (the graph is captured in the first). Then one timed run of -steps.
			ms, err := b.Time(0, 1, func() {
				for i := 0; i < 8; i++ {
					step()
				}
			})
			if err == nil && stepErr == nil {
				ms, err = b.Time(0, 1, func() {
					for i := 0; i < *steps; i++ {
						step()
					}
				})
			}
			if err == nil {
				err = stepErr
			}
			if err != nil {
				return err
			}
			toks := dec.Tokens(len(prompt), len(prompt)+8)
			msTok := ms / float64(*steps)
			gbps := float64(decodeBytes) / (msTok * 1e-3) / 1e9
			row := map[string]any{"what": "tiller_decode_b1", "variant": v.name, "fused": v.fused, "pdl": dec.PDL, "graph": v.graph,
				"steered": v.steer, "steps": *steps, "ms_per_token": msTok, "tok_s": 1e3 / msTok, "weight_gbps": gbps, "first_tokens": toks}
			if copyPeak > 0 {
				row["frac_copy"] = gbps / copyPeak
			}
			emit(row)
			// The per-kernel profile of this form of the step (once per form).
			if (v.pdl || !v.fused) && !v.steer {
				p, err := dec.Profile(*profileSteps)
				if err != nil {
					return fmt.Errorf("profile: %w", err)
				}
				emitProfile(v.name, p)
			}
			return nil
		}()
		for l := range kv.K { // the caches are large: give them back before the next run
			b.Free(kv.K[l])
			b.Free(kv.V[l])
		}
		if err != nil {
			return fmt.Errorf("decode (%s): %w", v.name, err)
		}
	}

	// The same decode as the user commands run it: through the runner, one step at a time.
	guarded("runner decode", func() error { return runnerDecode(b, m, decodeBytes) })

	// Prefill of -prefill tokens through the runner (GEMMs on tensor cores, flash-style
	// attention), into the bf16 KV cache the commands use on the GPU by default (the pipelined
	// kernel) and into an f32 one; the batched generation after it runs on the bf16 cache too.
	n := *prefillN
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rand.IntN(c.Vocab))
	}
	for _, bf16 := range []bool{false, true} {
		if err := r.SetPrecision(llama.Precision{KVBF16: bf16}); err != nil {
			return err
		}
		kv := r.NewKVCache(n, 16)
		var fwdErr error
		ms, err := b.Time(1, 3, func() {
			kv.Release(0)
			if _, err := r.Forward(llama.Prompt(0, ids, 0, false), kv, nil); err != nil && fwdErr == nil {
				fwdErr = err
			}
		})
		r.FreeKVCache(kv)
		if err == nil {
			err = fwdErr
		}
		if err != nil {
			return fmt.Errorf("prefill (kv bf16 %v): %w", bf16, err)
		}
		params := float64(decodeBytes) / 2
		emit(map[string]any{"what": "tiller_prefill", "tokens": n, "kv_bf16": bf16, "ms": ms, "tok_s": float64(n) / ms * 1e3,
			"tflops": 2 * params * float64(n) / (ms * 1e-3) / 1e12})
	}
	if *batchRows > 0 {
		if err := batched(b, r, *batchRows, *batchNew); err != nil {
			return fmt.Errorf("batched generation: %w", err)
		}
	}
	return nil
}

// emitProfile writes one row per kernel of a decode-step profile.
func emitProfile(variant string, p *gpu.StepProfile) {
	for _, k := range p.Kernels {
		row := map[string]any{"what": "profile", "variant": variant, "kernel": k.Name, "calls": k.Calls, "us": k.Micros,
			"share": k.Micros / p.Micros, "bytes": k.Bytes}
		if k.Bytes > 0 {
			gbps := k.Bytes / (k.Micros * 1e-6) / 1e9
			row["gbps"] = gbps
			if copyPeak > 0 {
				row["frac_copy"] = gbps / copyPeak
			}
		}
		emit(row)
	}
	emit(map[string]any{"what": "profile_step", "variant": variant, "us": p.Micros, "steps": p.Steps})
}
