package tokenizer

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer/tokenizertest"
)

var llama3 struct {
	once sync.Once
	tk   *Tokenizer
	err  error
}

// loadLlama3 returns Meta's Llama 3 tokenizer ($TILLER_LLAMA3_TOKENIZER; the test skips without
// it), loaded once per test binary (it takes most of a second). Tests must not change it; copy it
// (tk := *loadLlama3(t)) to set a chat template.
func loadLlama3(t testing.TB) *Tokenizer {
	t.Helper()
	path := tokenizertest.Llama3Path(t)
	llama3.once.Do(func() { llama3.tk, llama3.err = FromFile(path) })
	if llama3.err != nil {
		t.Fatalf("the Llama 3 tokenizer: %v", llama3.err)
	}
	return llama3.tk
}

// llama3Dir makes a checkpoint-like folder holding a link to the Llama 3 tokenizer.json and, when
// config is not "", a tokenizer_config.json with that content.
func llama3Dir(t *testing.T, config string) string {
	t.Helper()
	abs, err := filepath.Abs(tokenizertest.Llama3Path(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(abs, filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		writeFile(t, filepath.Join(dir, "tokenizer_config.json"), config)
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// closeLater closes tk when the test ends.
func closeLater(t *testing.T, tk *Tokenizer) *Tokenizer {
	t.Helper()
	t.Cleanup(func() { tk.Close() })
	return tk
}

// byteLevelDir makes a folder with a WriteByteLevel tokenizer.json of vocabSize ids (fast to load,
// with Llama 3's special tokens at the top) and, when config is not "", a tokenizer_config.json.
func byteLevelDir(t *testing.T, vocabSize int, config string) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteByteLevel(filepath.Join(dir, "tokenizer.json"), vocabSize); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		writeFile(t, filepath.Join(dir, "tokenizer_config.json"), config)
	}
	return dir
}
