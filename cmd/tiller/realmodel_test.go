package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer/tokenizertest"
)

// TestSmolLM2Chats checks that a real chat model with a ChatML template (SmolLM2-135M-Instruct,
// fetched by `make real-model`) answers through its own template and stops at <|im_end|>.
// Both forms of it do: the Hugging Face folder and the GGUF file, whose tokenizer.chat_template is
// the same template.
func TestSmolLM2Chats(t *testing.T) {
	dir := tokenizertest.SmolLM2(t, "")
	msgs := writeTemp(t, "m.json", `[{"role": "user", "content": "Hi"}]`)
	for _, model := range []string{filepath.Join(dir, "hf"), filepath.Join(dir, "SmolLM2-135M-Instruct.Q4_1.gguf")} {
		code, stdout, stderr := tiller(t, "generate", "--model", model, "--chat", "--temperature", "0", "--max-tokens", "40", "What is the capital of France?")
		if code != 0 {
			t.Fatal(stderr)
		}
		if !strings.Contains(stdout, "Paris") || !strings.Contains(stderr, "stop: end of sequence") || strings.Contains(stdout, "<|im_end|>") {
			t.Errorf("%s: generate --chat: stdout %q, stderr %q; want Paris, stopped at the end of the turn", model, stdout, stderr)
		}
		code, stdout, stderr = tiller(t, "template", "--model", model, "--messages", msgs)
		want := "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
		if code != 0 || stdout != want {
			t.Errorf("%s: template: %q (%s); want %q", model, stdout, stderr, want)
		}
	}
}
