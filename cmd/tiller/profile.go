package main

import (
	"fmt"
	"io"
)

// profileOptions are `tiller profile`'s flags; the command itself needs a CUDA build
// (profile_cuda.go; profile_nocuda.go says so).
type profileOptions struct {
	dir     string
	tokens  int    // decode steps profiled (and as many timed with the graph)
	prompt  int    // prompt tokens before them (fixed pseudo-random ids)
	step    string // "fused", "generic" or "both"
	jsonOut string // JSON lines of every row, for scripts
}

func runProfile(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("profile", "--model DIR [--tokens N] [flags]", stderr)
	var o profileOptions
	fs.StringVar(&o.dir, "model", "", "model folder in Hugging Face layout (config.json, *.safetensors); no tokenizer needed")
	fs.IntVar(&o.tokens, "tokens", 16, "decode steps to profile (as many again are timed as one CUDA graph per step)")
	fs.IntVar(&o.prompt, "prompt", 64, "prompt tokens (fixed pseudo-random ids) decoded before the profiled steps")
	fs.StringVar(&o.step, "step", "fused", "form of the decode step: fused (where the card supports it), generic, or both")
	fs.StringVar(&o.jsonOut, "json", "", "also append every row as a JSON line to this file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case o.dir == "":
		return usagef("--model is required")
	case len(pos) > 0:
		return usagef("unexpected arguments %q", pos)
	case o.tokens < 1 || o.prompt < 1:
		return usagef("--tokens %d, --prompt %d: want >= 1", o.tokens, o.prompt)
	case o.step != "fused" && o.step != "generic" && o.step != "both":
		return usagef("--step %q: want fused, generic or both", o.step)
	}
	return profile(&o, stdout, stderr)
}

// errNoCUDA is what the GPU commands of a build without the cuda tag return.
func errNoCUDA(what string) error {
	return fmt.Errorf("%s needs the GPU backend, and this tiller was built without CUDA: build it with `make tiller-cuda` (bin/tiller-cuda), on a machine with the CUDA toolchain (`make cuda-toolchain`)", what)
}
