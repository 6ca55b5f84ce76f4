package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
)

// wantErr fails unless err is non-nil and its message contains every one of parts.
func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error; want one containing %q", what, parts)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q; want it to contain %q", what, err, p)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "no-such-model"))
	wantErr(t, "missing dir", err, "no-such-model", "tokenizer.json")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: error %v does not wrap os.ErrNotExist", err)
	}
	_, err = Load(dir) // the folder exists but holds no tokenizer.json
	wantErr(t, "empty dir", err, filepath.Join(dir, "tokenizer.json"))
	_, err = FromFile(filepath.Join(dir, "absent.json"))
	wantErr(t, "missing file", err, "absent.json")
}

func TestLoadBadTokenizerJSON(t *testing.T) {
	for _, c := range []struct {
		name, content string
		want          []string
	}{
		{"empty", ``, []string{"malformed JSON"}},
		{"truncated", `{"model": {"type": "BPE", "vocab": {"a": 0`, []string{"malformed JSON"}},
		{"array", `[1, 2, 3]`, []string{"not a JSON object"}},
		{"no model", `{"version": "1.0", "added_tokens": []}`, []string{"not a tokenizer", `no "model"`}},
		{"empty model", `{"model": {"type": "BPE", "vocab": {}, "merges": []}}`, []string{"not a tokenizer", "no tokens"}},
		{"vocab type", `{"model": {"type": "BPE", "vocab": "abc"}}`, []string{"model.vocab"}},
		{"negative id", `{"model": {"type": "BPE", "vocab": {"a": -3}}}`, []string{"model.vocab", `"a"`, "-3"}},
		{"added no id", `{"added_tokens": [{"content": "<x>"}], "model": {"type": "BPE", "vocab": {"a": 0}}}`,
			[]string{"added_tokens[0]", "<x>"}},
		// Well-formed enough for tiller's reading, but HF tokenizers refuses it.
		{"unknown model", `{"model": {"type": "NoSuchModel", "vocab": {"a": 0}}}`, []string{"HF tokenizers rejects it"}},
		{"bad merges", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a zz"]}}`, []string{"HF tokenizers rejects it"}},
	} {
		path := filepath.Join(t.TempDir(), "tokenizer.json")
		writeFile(t, path, c.content)
		tk, err := FromFile(path)
		if err == nil {
			tk.Close()
		}
		wantErr(t, c.name, err, append([]string{path}, c.want...)...)
	}
}

func TestLoadBadConfig(t *testing.T) {
	for _, c := range []struct {
		name, content string
		want          []string
	}{
		{"malformed", `{"bos_token": `, []string{"malformed JSON"}},
		{"not object", `"just a string"`, []string{"not a JSON object"}},
		{"bos number", `{"bos_token": 7}`, []string{"bos_token"}},
		{"eos no content", `{"eos_token": {"__type": "AddedToken"}}`, []string{"eos_token", "content"}},
		{"template number", `{"chat_template": 3}`, []string{"chat_template"}},
		{"add_bos string", `{"add_bos_token": "yes"}`, []string{"add_bos_token"}},
		{"unknown bos", `{"bos_token": "<s>"}`, []string{`bos_token "<s>"`, "not a token"}},
		{"unknown eos", `{"eos_token": "</s>"}`, []string{`eos_token "</s>"`, "not a token"}},
		{"add_eos without eos", `{"add_eos_token": true}`, []string{"add_eos_token", "no eos_token"}},
	} {
		dir := byteLevelDir(t, 512, c.content)
		tk, err := Load(dir)
		if err == nil {
			tk.Close()
		}
		wantErr(t, c.name, err, append([]string{filepath.Join(dir, "tokenizer_config.json")}, c.want...)...)
	}
}

func TestEncodeRejectsText(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 512, configWith(chat.Llama3())))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	_, err = tk.Encode("abc\x00def", true)
	wantErr(t, "NUL", err, "NUL byte at offset 3")
	_, _, err = tk.Pieces("\x00", false)
	wantErr(t, "NUL first", err, "NUL byte at offset 0")
	_, err = tk.Encode("ok \xE4\xBD then", false) // a CJK character cut short
	wantErr(t, "invalid UTF-8", err, "not valid UTF-8 at offset 3")
	_, err = tk.Encode("\xFF", false)
	wantErr(t, "invalid byte", err, "not valid UTF-8 at offset 0")
	_, err = tk.EncodeChat([]chat.Message{{Role: "user", Content: "a\x00"}}, true)
	wantErr(t, "NUL in chat", err, "NUL byte")
}

// TestWordLevel checks that a tokenizer of another model family (word-level, no Llama 3 tokens)
// loads and encodes.
func TestWordLevel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	writeFile(t, path, `{"model": {"type": "WordLevel", "vocab": {"hello": 0, "[UNK]": 1}, "unk_token": "[UNK]"},
		"pre_tokenizer": {"type": "Whitespace"}}`)
	wl, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, wl)
	_, err = wl.EncodeChat([]chat.Message{{Role: "user", Content: "hello"}}, true)
	wantErr(t, "no template", err, path, "no chat template")
	if ids, err := wl.Encode("hello hello", false); err != nil || len(ids) != 2 || ids[0] != 0 {
		t.Errorf("word-level Encode = %v, %v; want [0 0]", ids, err)
	}
}
