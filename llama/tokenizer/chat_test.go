package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
)

// A byte-level tokenizer of 1000 ids has Llama 3's special tokens at 744…999:
// <|begin_of_text|> 744, <|end_of_text|> 745, <|eot_id|> 753.
const llama3Specials = `"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"`

func configWith(template string) string {
	return `{` + llama3Specials + `, "chat_template": ` + string(jsonString(template)) + `}`
}

// TestTemplateSources checks where a folder's chat template comes from, as transformers reads it:
// chat_template.jinja first, then tokenizer_config.json's chat_template, a string or the list
// entry named "default".
func TestTemplateSources(t *testing.T) {
	msgs := []chat.Message{{Role: "user", Content: "hi"}}
	for _, c := range []struct {
		name, config, jinja, want string
	}{
		{"string", configWith("S{{ messages[0].content }}"), "", "Shi"},
		{"list with default", `{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}], ` + llama3Specials + `}`, "", "D<|begin_of_text|>"},
		{"jinja file wins", configWith("S"), "J{{ eos_token }}\n", "J<|end_of_text|>"},
		{"jinja file alone", "", "J{{ messages | length }}", "J1"},
	} {
		dir := byteLevelDir(t, 1000, c.config)
		if c.jinja != "" {
			writeFile(t, filepath.Join(dir, "chat_template.jinja"), c.jinja)
		}
		tk, err := Load(dir)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		closeLater(t, tk)
		if got, err := tk.RenderChat(msgs, false); err != nil || got != c.want {
			t.Errorf("%s: RenderChat = %q, %v; want %q", c.name, got, err, c.want)
		}
		// The template alone loads from the folder without tokenizer.json.
		os.Remove(filepath.Join(dir, "tokenizer.json"))
		tmpl, err := LoadTemplate(dir)
		if err != nil {
			t.Fatalf("%s: LoadTemplate: %v", c.name, err)
		}
		if got, err := tmpl.Render(msgs, chat.Options{}); err != nil || got != c.want {
			t.Errorf("%s: LoadTemplate renders %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

// TestNoTemplate checks that a folder without a usable template still tokenizes raw text, and
// that every chat use says why it cannot.
func TestNoTemplate(t *testing.T) {
	msgs := []chat.Message{{Role: "user", Content: "hi"}}
	for _, c := range []struct {
		name, config string
		want         []string
		none         bool
	}{
		{"no config", "", []string{"tokenizer_config.json"}, true},
		{"no template", `{` + llama3Specials + `}`, []string{"no chat template", "chat_template.jinja"}, true},
		{"list without default", `{"chat_template": [{"name": "b", "template": "B"}, {"name": "a", "template": "A"}]}`, []string{`"a", "b"`, `none named "default"`}, true},
		{"does not compile", configWith("{% if %}"), []string{"tokenizer_config.json (chat_template)"}, false},
		{"unknown filter", configWith("\n{{ x | shout }}"), []string{"line 2", `"shout"`}, false},
	} {
		dir := byteLevelDir(t, 1000, c.config)
		tk, err := Load(dir)
		if err != nil {
			t.Fatalf("%s: Load: %v", c.name, err)
		}
		closeLater(t, tk)
		if ids, err := tk.Encode("hi", false); err != nil || len(ids) == 0 {
			t.Errorf("%s: raw Encode = %v, %v", c.name, ids, err)
		}
		_, err = tk.RenderChat(msgs, true)
		wantErr(t, c.name, err, c.want...)
		if errors.Is(err, ErrNoChatTemplate) != c.none {
			t.Errorf("%s: errors.Is(err, ErrNoChatTemplate) = %v", c.name, !c.none)
		}
		if _, err := tk.EncodeChat(msgs, true); err == nil {
			t.Errorf("%s: EncodeChat succeeded", c.name)
		}
		if _, ok := tk.EndOfTurn(); ok {
			t.Errorf("%s: an end-of-turn token without a template", c.name)
		}
		_, err = LoadTemplate(dir)
		wantErr(t, c.name+" LoadTemplate", err, c.want...)
	}
}

// TestSpecialTokensMap checks that special_tokens_map.json fills the special tokens
// tokenizer_config.json leaves unset, as transformers does, and only those.
func TestSpecialTokensMap(t *testing.T) {
	dir := byteLevelDir(t, 1000, `{"bos_token": "<|begin_of_text|>", "eos_token": null, "chat_template": "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ additional_special_tokens | join(',') }}"}`)
	writeFile(t, filepath.Join(dir, "special_tokens_map.json"), `{"bos_token": "<|end_of_text|>", "eos_token": {"content": "<|eot_id|>"},
		"pad_token": "<|finetune_right_pad_id|>", "additional_special_tokens": ["<|eom_id|>", {"content": "<|python_tag|>"}]}`)
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	got, err := tk.RenderChat([]chat.Message{{Role: "user", Content: "x"}}, false)
	want := "<|begin_of_text|>|<|eot_id|>|<|finetune_right_pad_id|>|<|eom_id|>,<|python_tag|>"
	if err != nil || got != want {
		t.Errorf("RenderChat = %q, %v; want %q", got, err, want)
	}
	if eos := tk.EOS(); !slices.Equal(eos, []int32{753}) {
		t.Errorf("EOS = %v; want [753] (<|eot_id|>, from special_tokens_map.json)", eos)
	}
	writeFile(t, filepath.Join(dir, "special_tokens_map.json"), `{"pad_token": 5}`)
	_, err = Load(dir)
	wantErr(t, "bad map", err, "special_tokens_map.json", "pad_token")
}

// TestEndOfTurn checks the token a template closes an assistant turn with: Llama 3's <|eot_id|>,
// ChatML's <|im_end|> (found after the reply, before the newline), none for plain text.
func TestEndOfTurn(t *testing.T) {
	for _, c := range []struct {
		name, template string
		want           int32
	}{
		{"llama3", chat.Llama3(), 753},
		{"llama3.1", chat.Llama31(), 753},
		{"chatml-like", "{% for m in messages %}<|start_header_id|>{{ m.role }}\n{{ m.content }}<|eom_id|>\n{% endfor %}", 752},
		{"plain text", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}", -1},
		{"raises", "{{ raise_exception('no') }}", -1},
	} {
		tk, err := Load(byteLevelDir(t, 1000, configWith(c.template)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		closeLater(t, tk)
		id, ok := tk.EndOfTurn()
		if id != c.want || ok != (c.want >= 0) {
			t.Errorf("%s: EndOfTurn = %d, %v; want %d", c.name, id, ok, c.want)
		}
	}
}

// TestContinueChat checks that the last message is left open: the text ends with its content.
func TestContinueChat(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 1000, configWith(chat.Llama3())))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	msgs := []chat.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: " Hello there \n"}}
	got, err := tk.ContinueChat(msgs)
	want := "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello there"
	if err != nil || got != want {
		t.Errorf("ContinueChat = %q, %v; want %q", got, err, want)
	}
}

// TestEncodeChat checks the ids of a rendered chat with Meta's Llama 3 tokenizer: one BOS, since
// the rendered text carries it and EncodeChat adds no special tokens.
func TestEncodeChat(t *testing.T) {
	tk := *loadLlama3(t)
	tmpl, err := chat.New(chat.Llama3(), "llama3", chat.Specials{BOS: BeginOfText, EOS: EndOfTurn})
	if err != nil {
		t.Fatal(err)
	}
	tk.SetChatTemplate(tmpl)
	msgs := []chat.Message{{Role: "user", Content: "Hello world"}}
	ids, err := tk.EncodeChat(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	// <|begin_of_text|> <|start_header_id|> "user" <|end_header_id|> "\n\n" "Hello" " world" <|eot_id|>
	// <|start_header_id|> "assistant" <|end_header_id|> "\n\n"
	want := []int32{128000, 128006, 882, 128007, 271, 9906, 1917, 128009, 128006, 78191, 128007, 271}
	if !slices.Equal(ids, want) {
		t.Errorf("EncodeChat = %v; want %v", ids, want)
	}
	text, _ := tk.RenderChat(msgs, true)
	if got := tk.Decode(ids, false); got != text {
		t.Errorf("Decode(EncodeChat) = %q; want the rendered text %q", got, text)
	}
	if id, ok := tk.EndOfTurn(); !ok || id != 128009 {
		t.Errorf("EndOfTurn = %d, %v; want 128009", id, ok)
	}
	if !strings.HasPrefix(text, BeginOfText) {
		t.Errorf("rendered text %q does not start with the BOS", text)
	}
}
