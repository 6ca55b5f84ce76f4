package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGGUFBadFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "broken.gguf")
	os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"), 0o644)
	for _, args := range [][]string{
		{"generate", "--model", bad, "hi"},
		{"inspect", "--model", bad},
		{"tokenize", "--model", bad, "hi"},
	} {
		code, _, stderr := tiller(t, args...)
		if code != 1 || !strings.Contains(stderr, bad) || strings.Contains(stderr, "panic") {
			t.Errorf("%v: code %d, %q; want 1 and an error naming the file", args, code, stderr)
		}
	}
}

// TestSmolLM2GGUF runs the real model `make real-model` fetches, when it is there: generation,
// inspect, tokenize, and a hook capture, as on any other model.
func TestSmolLM2GGUF(t *testing.T) {
	path := os.Getenv("TILLER_SMOLLM2_GGUF")
	if path == "" {
		path = filepath.Join("..", "..", "build", "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no SmolLM2 GGUF at %s: run `make real-model` (or set TILLER_SMOLLM2_GGUF)", path)
	}
	code, stdout, stderr := tiller(t, "generate", "--model", path, "--max-tokens", "4", "--threads", "2", "The capital of France is")
	if code != 0 || !strings.Contains(stdout, "Paris") || !strings.Contains(stderr, "dequantized to F32") {
		t.Errorf("generate: code %d, %q, %q", code, stdout, stderr)
	}
	code, stdout, _ = tiller(t, "inspect", "--model", path)
	for _, want := range []string{`tokenizer.ggml.pre                           "smollm"`, "210 Q4_1", "tied embeddings true", "vocab 49152"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("inspect: code %d, no %q in\n%s", code, want, stdout)
		}
	}
	if code, stdout, _ := tiller(t, "tokenize", "--model", path, "Hello, world!"); code != 0 || !strings.HasPrefix(stdout, "[19556,28,905,17]") {
		t.Errorf("tokenize: code %d, %q", code, stdout)
	}
	out := filepath.Join(t.TempDir(), "acts.safetensors")
	if code, _, stderr := tiller(t, "cache", "--model", path, "--prompt", "I feel", "--hooks", "blocks.3.hook_resid_post", "--out", out); code != 0 {
		t.Errorf("cache: code %d, %s", code, stderr)
	}
}
