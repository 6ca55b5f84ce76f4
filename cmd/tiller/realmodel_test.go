package main

import (
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer/tokenizertest"
)

// TestSmolLM2Chats checks that a real chat model with a ChatML template (SmolLM2-135M-Instruct,
// fetched by `make real-model`) answers through its own template and stops at <|im_end|>.
func TestSmolLM2Chats(t *testing.T) {
	model := tokenizertest.SmolLM2(t, "hf")
	code, stdout, stderr := tiller(t, "generate", "--model", model, "--chat", "--temperature", "0", "--max-tokens", "40", "What is the capital of France?")
	if code != 0 {
		t.Fatal(stderr)
	}
	if !strings.Contains(stdout, "Paris") || !strings.Contains(stderr, "stop: end of sequence") || strings.Contains(stdout, "<|im_end|>") {
		t.Errorf("generate --chat: stdout %q, stderr %q; want Paris, stopped at the end of the turn", stdout, stderr)
	}
	code, stdout, _ = tiller(t, "template", "--model", model, "--messages", writeTemp(t, "m.json", `[{"role": "user", "content": "Hi"}]`))
	want := "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
	if code != 0 || stdout != want {
		t.Errorf("template: %q; want %q", stdout, want)
	}
}
