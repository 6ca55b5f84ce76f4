package tokenizer

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseVocabShapes(t *testing.T) {
	// A Unigram vocabulary is a list whose index is the id; added tokens may repeat a model token
	// (then HF keeps the model's id) or extend the range.
	v, err := parseVocab([]byte(`{
		"added_tokens": [{"id": 1, "content": "<s>", "special": true}, {"id": 9, "content": "<extra>", "special": false}],
		"model": {"type": "Unigram", "vocab": [["<unk>", 0], ["<s>", 0], ["▁hi", -1.5]]},
		"post_processor": {"type": "Sequence", "processors": [
			{"type": "ByteLevel"},
			{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A"}}]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if v.ids["▁hi"] != 2 || v.ids["<s>"] != 1 || v.ids["<extra>"] != 9 || v.size != 10 {
		t.Errorf("ids %v, size %d; want ▁hi 2, <s> 1, <extra> 9, size 10", v.ids, v.size)
	}
	if !v.special[1] || v.special[9] {
		t.Errorf("special = %v; want only 1", v.special)
	}
	if v.leading != "<s>" {
		t.Errorf("leading = %q; want <s> from the TemplateProcessing inside the Sequence", v.leading)
	}
}

func TestLeadingSpecial(t *testing.T) {
	for in, want := range map[string]string{
		`{"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}`:                                "[CLS]",
		`{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "</s>"}}]}`: "",
		`{"type": "ByteLevel", "trim_offsets": false}`:                                                            "",
		`null`: "",
		`[1]`:  "",
	} {
		if got := leadingSpecial(json.RawMessage(in)); got != want {
			t.Errorf("leadingSpecial(%s) = %q; want %q", in, got, want)
		}
	}
}

// FuzzParseVocab checks that parseVocab never panics and that what it accepts is consistent:
// every id is below size.
func FuzzParseVocab(f *testing.F) {
	for _, seed := range []string{
		`{"model": {"vocab": {"a": 0, "b": 1}}}`,
		`{"model": {"vocab": [["a", 0.0]]}, "added_tokens": [{"id": 3, "content": "<x>", "special": true}]}`,
		`{"model": {"vocab": {"a": 2147483647}}}`, `{"model": null}`, `{"model": {"vocab": [[]]}}`,
		`{"post_processor": {"type": "Sequence", "processors": [{"type": "Sequence"}]}, "model": {"vocab": {"a": 0}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := parseVocab(data)
		if err != nil {
			if !strings.Contains(err.Error(), "JSON") && !strings.Contains(err.Error(), "tokenizer") &&
				!strings.Contains(err.Error(), "vocab") && !strings.Contains(err.Error(), "added_tokens") {
				t.Errorf("error %q does not say which part is wrong", err)
			}
			return
		}
		for tok, id := range v.ids {
			if id < 0 || id >= v.size {
				t.Errorf("token %q has id %d outside [0, %d)", tok, id, v.size)
			}
		}
	})
}
