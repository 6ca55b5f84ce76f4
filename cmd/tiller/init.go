package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/tensor"
)

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", "--config FILE --out DIR [--layers N] [--seed S] [--dtype bf16] [--tokenizer FILE]", stderr)
	configPath := fs.String("config", "", "a Hugging Face config.json (e.g. llama/testdata/configs/llama-3.1-8b-instruct/config.json); a generation_config.json beside it is copied too")
	out := fs.String("out", "", "folder to write the checkpoint into (created; must not already hold a model)")
	layers := fs.Int("layers", 0, "number of decoder layers (default: the config's)")
	seed := fs.Uint64("seed", 0, "random seed for the weights")
	dtypeName := fs.String("dtype", "bf16", "weight dtype: bf16, f16 or f32")
	tokPath := fs.String("tokenizer", "", "tokenizer.json to copy (with a tokenizer_config.json beside it, if any); default: a byte-level tokenizer with the Llama 3 special tokens")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *configPath == "":
		return usagef("--config is required")
	case *out == "":
		return usagef("--out is required")
	case len(pos) > 0:
		return usagef("unexpected argument %q", pos[0])
	case *layers < 0:
		return usagef("--layers %d, want >= 1", *layers)
	}
	dt, err := tensor.ParseDType(*dtypeName)
	if err != nil || dt == tensor.I32 {
		return usagef("--dtype %q: want bf16, f16 or f32", *dtypeName)
	}
	cfgJSON, err := os.ReadFile(*configPath)
	if err != nil {
		return err
	}
	genJSON, err := os.ReadFile(filepath.Join(filepath.Dir(*configPath), "generation_config.json"))
	if errors.Is(err, os.ErrNotExist) {
		genJSON = nil
	} else if err != nil {
		return err
	}
	for _, f := range []string{"config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(*out, f)); err == nil {
			return fmt.Errorf("%s already holds %s; choose an empty folder (nothing was written)", *out, f)
		}
	}
	var tokJSON, tokConfig []byte
	if *tokPath != "" {
		if tokJSON, err = os.ReadFile(*tokPath); err != nil {
			return err
		}
		tokConfig, err = os.ReadFile(filepath.Join(filepath.Dir(*tokPath), "tokenizer_config.json"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	cfg, err := llama.WriteRandom(cfgJSON, genJSON, *out, llama.InitOptions{Layers: *layers, Seed: *seed, DType: dt, Log: stderr})
	if err != nil {
		return fmt.Errorf("%s: %v", *configPath, err)
	}
	if err := writeTokenizer(*out, cfg, tokJSON, tokConfig); err != nil {
		return err
	}
	tok, err := tokenizer.Load(*out)
	if err != nil {
		return err
	}
	defer tok.Close()
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("%s has ids up to %d but the config's vocab_size is %d", *tokPath, tok.VocabSize()-1, cfg.Vocab)
	}
	fmt.Fprintf(stdout, "wrote %s: %d layers, %s parameters in %s, tokenizer %s\n", *out, cfg.Layers, count(cfg.Params()), dt, filepath.Join(*out, "tokenizer.json"))
	return nil
}

// writeTokenizer copies the given tokenizer files, or writes tiller's byte-level tokenizer with
// the Llama 3 special tokens at the top of the vocabulary and a tokenizer_config.json naming them.
func writeTokenizer(dir string, cfg *llama.Config, tokJSON, tokConfig []byte) error {
	if tokJSON != nil {
		if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tokJSON, 0o644); err != nil {
			return err
		}
		if tokConfig != nil {
			return os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tokConfig, 0o644)
		}
	} else if err := tokenizer.WriteByteLevel(filepath.Join(dir, "tokenizer.json"), cfg.Vocab); err != nil {
		return fmt.Errorf("default tokenizer for vocab_size %d: %v (give --tokenizer)", cfg.Vocab, err)
	}
	// Llama 3.1 and later (the ones with llama3 RoPE scaling) date their system turn; Llama 3 does not.
	template := chat.Llama3()
	if cfg.RopeScaling.Type == "llama3" {
		template = chat.Llama31()
	}
	return tokenizer.WriteConfig(filepath.Join(dir, "tokenizer_config.json"), "<|begin_of_text|>", "<|eot_id|>", template)
}
