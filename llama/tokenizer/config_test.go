package tokenizer

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
)

func TestParseConfig(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		name, in string
		want     config
	}{
		{"empty object", `{}`, config{}},
		{"strings", `{"bos_token": "<s>", "eos_token": "</s>"}`, config{Specials: chat.Specials{BOS: "<s>", EOS: "</s>"}}},
		{"added token objects", `{"bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>", "lstrip": false},
			"eos_token": {"content": ""}}`, config{Specials: chat.Specials{BOS: "<|begin_of_text|>"}}},
		{"every special token", `{"unk_token": "u", "sep_token": "s", "pad_token": "p", "cls_token": "c", "mask_token": "m",
			"additional_special_tokens": ["a", {"content": "b"}]}`, config{Specials: chat.Specials{UNK: "u", SEP: "s", PAD: "p", CLS: "c", Mask: "m", Additional: []string{"a", "b"}}}},
		{"nulls", `{"bos_token": null, "eos_token": null, "chat_template": null}`, config{}},
		{"flags", `{"add_bos_token": false, "add_eos_token": true}`, config{AddBOS: &no, AddEOS: &yes}},
		{"template string", `{"chat_template": "{{ bos_token }}Cutting Knowledge Date"}`,
			config{ChatTemplate: "{{ bos_token }}Cutting Knowledge Date"}},
		{"template list, default wins", `{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`,
			config{ChatTemplate: "D"}},
		{"template list without default", `{"chat_template": [{"name": "b", "template": "B"}, {"name": "a", "template": "A"}]}`,
			config{TemplateNames: []string{`"a"`, `"b"`}}},
		{"template empty list", `{"chat_template": []}`, config{}},
		{"unicode and escapes", `{"eos_token": "\u003c|eot_id|\u003e\u00e9"}`, config{Specials: chat.Specials{EOS: "<|eot_id|>é"}}},
		{"keys match exactly", `{"BOS_TOKEN": "x", "Eos_Token": "y"}`, config{}},
		{"last duplicate wins", `{"bos_token": "a", "bos_token": "b"}`, config{Specials: chat.Specials{BOS: "b"}}},
	} {
		got, err := parseConfig([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !sameConfig(got, c.want) {
			t.Errorf("%s: parseConfig = %+v; want %+v", c.name, got, c.want)
		}
	}
}

func sameConfig(a, b config) bool {
	eq := func(p, q *bool) bool { return (p == nil) == (q == nil) && (p == nil || *p == *q) }
	return reflect.DeepEqual(a.Specials, b.Specials) && a.ChatTemplate == b.ChatTemplate &&
		slices.Equal(a.TemplateNames, b.TemplateNames) && eq(a.AddBOS, b.AddBOS) && eq(a.AddEOS, b.AddEOS)
}

func TestParseConfigErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, "malformed JSON"},
		{`{"bos_token": "<s>",}`, "malformed JSON"},
		{`null`, "not a JSON object"},
		{`[{"bos_token": "<s>"}]`, "not a JSON object"},
		{`{"bos_token": ["<s>"]}`, "bos_token"},
		{`{"eos_token": {"content": 5}}`, "eos_token"},
		{`{"chat_template": {"template": "x"}}`, "chat_template"},
		{`{"chat_template": [{"name": 1}]}`, "chat_template"},
		{`{"add_eos_token": 1}`, "add_eos_token"},
		{`{"additional_special_tokens": "x"}`, "additional_special_tokens"},
		{`{"additional_special_tokens": [3]}`, "additional_special_tokens[0]"},
	} {
		_, err := parseConfig([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseConfig(%s) error = %v; want one mentioning %q", c.in, err, c.want)
		}
	}
}

// FuzzParseConfig checks that parseConfig never panics, and that what it accepts agrees with a
// plain decode of the same JSON: a string bos_token comes back as itself.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		llama31Config,
		`{}`, `null`, `[]`, `"x"`, `{"bos_token": "<s>"}`, `{"bos_token": {"content": "<s>"}}`,
		`{"chat_template": [{"name": "default", "template": "t"}]}`, `{"add_bos_token": true}`,
		`{"eos_token": {"content": null}}`, `{"bos_token": "\ud800"}`, `{"chat_template": [null, 3]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data)
		if err != nil {
			if !sameConfig(c, config{}) {
				t.Errorf("parseConfig returned %+v along with error %v", c, err)
			}
			return
		}
		var plain map[string]any
		if json.Unmarshal(data, &plain) != nil {
			t.Fatalf("parseConfig accepted %q, which is not a JSON object", data)
		}
		if s, ok := plain["bos_token"].(string); ok && s != c.Specials.BOS {
			t.Errorf("bos_token %q parsed as %q", s, c.Specials.BOS)
		}
		if s, ok := plain["chat_template"].(string); ok && s != c.ChatTemplate {
			t.Errorf("chat_template parsed as %q", c.ChatTemplate)
		}
	})
}
