package main

import (
	"flag"

	"github.com/tillerlm/tiller/llama"
)

// precisionFlags are the flags that trade exactness, or independence from the batch, for speed:
// --kv-cache and --compute on the commands that generate or score, --deterministic on those and
// the analysis commands.
type precisionFlags struct {
	kvCache, compute string
	deterministic    bool
	withKV           bool
}

// register adds --deterministic, on by default where deterministic says (the commands whose
// results are measurements: attribute, derive, eval, cache, grad), and --kv-cache and --compute
// when kv.
func (p *precisionFlags) register(fs *flag.FlagSet, kv, deterministic bool) {
	p.withKV = kv
	if kv {
		fs.StringVar(&p.kvCache, "kv-cache", "auto", "dtype of the KV cache: f32, exact; bf16, half the memory and of the bytes attention reads per token, each key and value rounded to 8 significant bits; auto: bf16 with --device cuda, f32 on the CPU")
		fs.StringVar(&p.compute, "compute", "f32", "arithmetic of the prompt's matrix products (CPU): f32, exact; or bf16, about twice as fast with bf16 weights on a CPU with AVX512-BF16, the activations rounded to 8 significant bits (needs --deterministic=false)")
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
	switch p.compute {
	case "f32":
	case "bf16":
		prec.ComputeBF16 = true
	default:
		return prec, usagef("--compute %q: want f32 or bf16", p.compute)
	}
	if prec.ComputeBF16 && device != "cpu" {
		return prec, usagef("--compute bf16 runs on the CPU only (--device cpu)")
	}
	if prec.ComputeBF16 && p.deterministic {
		return prec, usagef("--compute bf16 rounds the prompt's products by batch, which --deterministic forbids: add --deterministic=false")
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
