package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTemplate checks that tiller template prints the rendered prompt and nothing else, from a
// folder that holds only tokenizer_config.json, and that tokenize --messages gives its ids.
func TestTemplate(t *testing.T) {
	msgs := writeTemp(t, "chat.json", `[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \"there\" {{ x }}"}]`)
	head := "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi \"there\" {{ x }}<|eot_id|>"
	// The embedded model: Llama 3's format.
	code, stdout, stderr := tiller(t, "template", "--messages", msgs)
	if code != 0 || stdout != head+"<|start_header_id|>assistant<|end_header_id|>\n\n" || stderr != "" {
		t.Errorf("template: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = tiller(t, "template", "--messages", msgs, "--generation-prompt=false")
	if code != 0 || stdout != head {
		t.Errorf("--generation-prompt=false: code %d, stdout %q", code, stdout)
	}

	// A folder with nothing but a tokenizer_config.json holding a ChatML template.
	dir := t.TempDir()
	if err := tokenizer.WriteConfig(filepath.Join(dir, "tokenizer_config.json"), "<s>", "<|im_end|>",
		"{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = tiller(t, "template", "--model", dir, "--messages", msgs)
	if want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi \"there\" {{ x }}<|im_end|>\n<|im_start|>assistant\n"; code != 0 || stdout != want {
		t.Errorf("ChatML folder: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// tokenize --messages shows the ids of the same text.
	code, stdout, stderr = tiller(t, "tokenize", "--messages", msgs)
	if code != 0 {
		t.Fatal(stderr)
	}
	var ids []int32
	if err := json.Unmarshal([]byte(strings.SplitN(stdout, "\n", 2)[0]), &ids); err != nil || len(ids) < 10 || ids[0] != 2032 {
		t.Errorf("tokenize --messages ids %v (%v): want the rendered chat, <|begin_of_text|> first", ids, err)
	}
	code, _, stderr = tiller(t, "tokenize", "--messages", msgs, "--chat", "hello")
	if code != 2 || !strings.Contains(stderr, "--messages gives the whole conversation") {
		t.Errorf("tokenize --messages with text: %d %s", code, stderr)
	}
}

func TestTemplateErrors(t *testing.T) {
	msgs := writeTemp(t, "chat.json", `[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]`)
	bad := writeTemp(t, "bad.json", `[{"role": "user", "content": "y"`)
	notList := writeTemp(t, "obj.json", `{"role": "user", "content": "y"}`)
	raising := t.TempDir()
	tokenizer.WriteConfig(filepath.Join(raising, "tokenizer_config.json"), "<s>", "</s>",
		"{% if messages[0].role == 'system' %}\n{{ raise_exception('System role not supported') }}\n{% endif %}")
	none := t.TempDir()
	tokenizer.WriteConfig(filepath.Join(none, "tokenizer_config.json"), "<s>", "</s>", "")
	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{}, 2, []string{"--messages is required"}},
		{[]string{"--messages", msgs, "extra"}, 2, []string{`unexpected argument "extra"`}},
		{[]string{"--messages", bad}, 1, []string{bad, "malformed JSON"}},
		{[]string{"--messages", notList}, 1, []string{notList, "want a JSON list"}},
		{[]string{"--messages", filepath.Join(raising, "absent.json")}, 1, []string{"absent.json"}},
		{[]string{"--model", raising, "--messages", msgs}, 1, []string{raising, "tokenizer_config.json", "raised an error at line 2: System role not supported"}},
		{[]string{"--model", none, "--messages", msgs}, 1, []string{none, "no chat template"}},
		{[]string{"--messages", msgs, "--tools", bad}, 1, []string{bad, "malformed JSON"}},
	} {
		code, stdout, stderr := tiller(t, append([]string{"template"}, c.args...)...)
		if code != c.code || stdout != "" {
			t.Errorf("%v: code %d (want %d), stdout %q", c.args, code, c.code, stdout)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q lacks %q", c.args, stderr, w)
			}
		}
	}
}
