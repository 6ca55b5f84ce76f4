package main

import (
	"flag"

	"github.com/tillerlm/tiller/llama"
)

// precisionFlags are the flags of the commands that may trade exactness for speed on the CPU.
// The defaults are exact.
type precisionFlags struct {
	kvCache, compute string
}

func (p *precisionFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.kvCache, "kv-cache", "f32", "dtype of the KV cache (CPU): f32, exact; or bf16, half the memory and of the bytes attention reads per token, each key and value rounded to 8 significant bits")
	fs.StringVar(&p.compute, "compute", "f32", "arithmetic of the prompt's matrix products (CPU): f32, exact; or bf16, about twice as fast with bf16 weights on a CPU with AVX512-BF16, the activations rounded to 8 significant bits")
}

// precision checks the flags against the device and returns what they ask for.
func (p *precisionFlags) precision(device string) (llama.Precision, error) {
	var prec llama.Precision
	switch p.kvCache {
	case "f32":
	case "bf16":
		prec.KVBF16 = true
	default:
		return prec, usagef("--kv-cache %q: want f32 or bf16", p.kvCache)
	}
	switch p.compute {
	case "f32":
	case "bf16":
		prec.ComputeBF16 = true
	default:
		return prec, usagef("--compute %q: want f32 or bf16", p.compute)
	}
	if prec != (llama.Precision{}) && device != "cpu" {
		return prec, usagef("--kv-cache bf16 and --compute bf16 run on the CPU only (--device cpu)")
	}
	return prec, nil
}
