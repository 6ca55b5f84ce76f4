package main

import (
	"flag"

	"github.com/tillerlm/tiller/llama"
)

// precisionFlags are the flags that trade exactness, or independence from the batch, for speed:
// --kv-cache on the commands that generate or score, --deterministic on those and the analysis
// commands.
type precisionFlags struct {
	kvCache       string
	deterministic bool
	withKV        bool
}

// register adds --deterministic, on by default where deterministic says (the commands whose
// results are measurements: attribute, derive, eval, cache, grad), and --kv-cache when kv.
func (p *precisionFlags) register(fs *flag.FlagSet, kv, deterministic bool) {
	p.withKV = kv
	if kv {
		fs.StringVar(&p.kvCache, "kv-cache", "auto", "dtype of the KV cache: f32, exact; bf16, half the memory and of the bytes attention reads per token, each key and value rounded to 8 significant bits; auto: bf16 with --device cuda, f32 on the CPU")
	}
	fs.BoolVar(&p.deterministic, "deterministic", deterministic, "compute every sequence as if it ran alone: the same prompt gives the same logits, bit for bit, whatever else shares its batch and wherever it sits (one kernel per product whatever the batch size; slower prefill and batched decode)")
}

// precision checks the flags against the device and returns the precision they ask for.
func (p *precisionFlags) precision(device string) (llama.Precision, error) {
	var prec llama.Precision
	if !p.withKV {
		return prec, nil
	}
	switch p.kvCache {
	case "f32":
	case "bf16":
		prec.KVBF16 = true
	case "auto":
		prec.KVBF16 = device == "cuda"
	default:
		return prec, usagef("--kv-cache %q: want f32, bf16 or auto", p.kvCache)
	}
	if prec.KVBF16 && device != "cuda" {
		return prec, usagef("--kv-cache bf16 runs on the GPU only (--device cuda)")
	}
	return prec, nil
}

// apply sets the precision and the deterministic mode on a runner.
func (p *precisionFlags) apply(r *llama.Runner, prec llama.Precision) error {
	if err := r.SetPrecision(prec); err != nil {
		return err
	}
	r.SetDeterministic(p.deterministic)
	return nil
}
