package server

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

// TestNoChatTemplate checks that a server is refused at startup for a model without a chat
// template, with the reason, rather than answering every request with an error.
func TestNoChatTemplate(t *testing.T) {
	f := newFixture(t, options{noRun: true})
	dir := t.TempDir()
	if err := tokenizer.WriteByteLevel(filepath.Join(dir, "tokenizer.json"), 512); err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteConfig(filepath.Join(dir, "tokenizer_config.json"), "<|begin_of_text|>", "<|eot_id|>", ""); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	_, err = New(Config{Name: "m", Model: f.model, Tokenizer: tok, Engine: f.eng})
	if err == nil || !errors.Is(err, tokenizer.ErrNoChatTemplate) || !strings.Contains(err.Error(), dir) {
		t.Errorf("New without a chat template: %v; want an error naming %s", err, dir)
	}
}
