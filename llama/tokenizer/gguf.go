package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/llama/gguf"
)

// llama.cpp's token types (tokenizer.ggml.token_type).
const (
	ggufNormal      = 1
	ggufUnknown     = 2
	ggufControl     = 3
	ggufUserDefined = 4
	ggufUnused      = 5
	ggufByte        = 6
)

// ggufPreTokenizers are the Hugging Face pre-tokenizers of the byte-level BPE vocabularies that
// llama.cpp names in tokenizer.ggml.pre, each the one of the original tokenizer.json
// (llama.cpp's llama-vocab.cpp holds the same splits as regexes). ignore_merges is Llama 3's
// setting: a word that is itself a token is not merged further.
var ggufPreTokenizers = map[string]struct {
	json         string
	ignoreMerges bool
	addBOS       bool // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
}{
	"default": {byteLevelPre, false, false},
	"gpt2":    {byteLevelPre, false, false},
	"smollm": {`{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, ` +
		byteLevelPre + `]}`, false, false},
	"llama-bpe": {`{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": ` + llama3Split +
		`}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, ` +
		`"trim_offsets": true, "use_regex": false}]}`, true, true},
}

const byteLevelPre = `{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}`

// llama3Split is Llama 3's pre-tokenizer regex, as a JSON string.
const llama3Split = `"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"`

// FromGGUF rebuilds a GGUF file's tokenizer from its tokenizer.ggml.* metadata, as llama.cpp
// reads it: tokens, merges and token types of a byte-level BPE vocabulary (tokenizer.ggml.model
// "gpt2"), the pre-tokenizer tokenizer.ggml.pre names, the bos, eos, unknown and padding ids,
// add_bos_token / add_eos_token, and tokenizer.chat_template. It writes the tokenizer.json and
// tokenizer_config.json a Hugging Face folder of the model would hold (GGUFFiles) to a temporary
// folder and loads them with Load, so a GGUF's tokenizer behaves as a folder's in every respect.
func FromGGUF(g *gguf.File) (*Tokenizer, error) {
	tj, cfg, err := GGUFFiles(g)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tiller-gguf-tokenizer-")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", g.Path, err)
	}
	defer os.RemoveAll(dir)
	for name, b := range map[string][]byte{"tokenizer.json": tj, "tokenizer_config.json": cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", g.Path, err)
		}
	}
	t, err := Load(dir)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: the tokenizer rebuilt from tokenizer.ggml.*: %w", g.Path, err)
	}
	t.path = g.Path + " (tokenizer.ggml.*)"
	// The chat template again, so that its errors name the GGUF file, not the folder above.
	if !g.Has("tokenizer.chat_template") {
		t.chatErr = fmt.Errorf("%s has no tokenizer.chat_template: %w", g.Path, ErrNoChatTemplate)
		return t, nil
	}
	c, _, err := readConfig(dir)
	if err == nil {
		var tmpl *chat.Template
		if tmpl, err = chat.New(c.ChatTemplate, g.Path+" (tokenizer.chat_template)", c.Specials); err == nil {
			t.SetChatTemplate(tmpl)
		}
	}
	if err != nil {
		t.chat, t.chatErr = nil, err
	}
	return t, nil
}

// GGUFFiles returns the tokenizer.json and tokenizer_config.json that FromGGUF loads.
func GGUFFiles(g *gguf.File) (tokenizerJSON, configJSON []byte, err error) {
	fail := func(format string, a ...any) ([]byte, []byte, error) {
		return nil, nil, fmt.Errorf("tokenizer: %s: %s", g.Path, fmt.Sprintf(format, a...))
	}
	model, err := g.String("tokenizer.ggml.model")
	if err != nil {
		return nil, nil, err
	}
	if model != "gpt2" {
		return fail("tokenizer.ggml.model %q is not supported (tiller rebuilds byte-level BPE vocabularies, \"gpt2\")", model)
	}
	pre := "default"
	if g.Has("tokenizer.ggml.pre") {
		if pre, err = g.String("tokenizer.ggml.pre"); err != nil {
			return nil, nil, err
		}
	}
	preTok, ok := ggufPreTokenizers[pre]
	if !ok {
		return fail("tokenizer.ggml.pre %q is not supported (tiller knows default, gpt2, llama-bpe and smollm)", pre)
	}
	tokens, err := g.Strings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, nil, err
	}
	merges, err := g.Strings("tokenizer.ggml.merges")
	if err != nil {
		return nil, nil, err
	}
	types := make([]int64, len(tokens))
	for i := range types {
		types[i] = ggufNormal
	}
	if g.Has("tokenizer.ggml.token_type") {
		if types, err = g.Ints("tokenizer.ggml.token_type"); err != nil {
			return nil, nil, err
		}
		if len(types) != len(tokens) {
			return fail("tokenizer.ggml.token_type has %d entries for %d tokens", len(types), len(tokens))
		}
	}
	id := func(key string) (int, bool, error) {
		if !g.Has(key) {
			return -1, false, nil
		}
		n, err := g.Int(key)
		if err == nil && (n < 0 || n >= int64(len(tokens))) {
			err = fmt.Errorf("tokenizer: %s: %s = %d is not a token id (%d tokens)", g.Path, key, n, len(tokens))
		}
		return int(n), err == nil, err
	}
	flag := func(key string, def bool) (bool, error) {
		if !g.Has(key) {
			return def, nil
		}
		return g.Bool(key)
	}

	vocab := make(map[string]int, len(tokens))
	var added []map[string]any
	for i, tok := range tokens {
		if _, dup := vocab[tok]; dup {
			return fail("token %q appears twice in tokenizer.ggml.tokens (ids %d and %d)", tok, vocab[tok], i)
		}
		vocab[tok] = i
		switch types[i] {
		case ggufControl, ggufUserDefined:
			added = append(added, map[string]any{"id": i, "content": tok, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": types[i] == ggufControl})
		case ggufNormal, ggufUnknown, ggufUnused, ggufByte:
		default:
			return fail("token %d has type %d (llama.cpp's types are 1 to 6)", i, types[i])
		}
	}
	for i, m := range merges {
		a, b, ok := strings.Cut(m, " ")
		if !ok || strings.Contains(b, " ") {
			return fail("tokenizer.ggml.merges[%d] = %q is not two tokens separated by a space", i, m)
		}
		if _, ok := vocab[a+b]; !ok {
			return fail("tokenizer.ggml.merges[%d] = %q makes %q, which is not a token", i, m, a+b)
		}
	}

	cfg := map[string]any{"clean_up_tokenization_spaces": false}
	specials := []struct{ key, field string }{
		{"tokenizer.ggml.bos_token_id", "bos_token"}, {"tokenizer.ggml.eos_token_id", "eos_token"},
		{"tokenizer.ggml.unknown_token_id", "unk_token"}, {"tokenizer.ggml.padding_token_id", "pad_token"},
	}
	var bos string
	var unk any
	for _, s := range specials {
		n, ok, err := id(s.key)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			cfg[s.field] = tokens[n]
		}
		if ok && s.field == "bos_token" {
			bos = tokens[n]
		}
		if ok && s.field == "unk_token" {
			unk = tokens[n]
		}
	}
	addBOS, err := flag("tokenizer.ggml.add_bos_token", preTok.addBOS)
	if err != nil {
		return nil, nil, err
	}
	addEOS, err := flag("tokenizer.ggml.add_eos_token", false)
	if err != nil {
		return nil, nil, err
	}
	if addBOS && bos == "" {
		return fail("tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id")
	}
	cfg["add_bos_token"], cfg["add_eos_token"] = addBOS, addEOS
	if g.Has("tokenizer.chat_template") {
		tmpl, err := g.String("tokenizer.chat_template")
		if err != nil {
			return nil, nil, err
		}
		cfg["chat_template"] = tmpl
	}

	post := json.RawMessage(`{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}`)
	if addBOS {
		b, _ := json.Marshal(bos)
		post = json.RawMessage(fmt.Sprintf(`{"type": "TemplateProcessing", `+
			`"single": [{"SpecialToken": {"id": %[1]s, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], `+
			`"pair": [{"SpecialToken": {"id": %[1]s, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, `+
			`{"SpecialToken": {"id": %[1]s, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}], `+
			`"special_tokens": {%[1]s: {"id": %[1]s, "ids": [%[2]d], "tokens": [%[1]s]}}}`, b, vocab[bos]))
	}
	tok := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     nil,
		"pre_tokenizer":  json.RawMessage(preTok.json),
		"post_processor": post,
		"decoder":        json.RawMessage(`{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}`),
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": unk, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false,
			"ignore_merges": preTok.ignoreMerges, "vocab": vocab, "merges": merges,
		},
	}
	if tokenizerJSON, err = json.Marshal(tok); err != nil {
		return nil, nil, err
	}
	configJSON, err = json.Marshal(cfg)
	return tokenizerJSON, configJSON, err
}
