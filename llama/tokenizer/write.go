package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// WriteByteLevel writes a Hugging Face tokenizer.json for a byte-level BPE with no merges: token i
// (i < 256) is byte i, so any text encodes to its UTF-8 bytes, and Llama 3's 256 special tokens,
// in Llama 3's order, take ids vocabSize-256 … vocabSize-1. With vocabSize 128256 the special ids
// are Llama 3's own (<|begin_of_text|> 128000, <|eot_id|> 128009); ids 256 … vocabSize-257 are
// unused. The post-processor puts <|begin_of_text|> in front when special tokens are added. It is
// meant for tiny test models, whose embedding has vocabSize rows; vocabSize must be at least 512.
func WriteByteLevel(path string, vocabSize int) error {
	if vocabSize < 2*llama3SpecialCount || vocabSize > maxTokenID+1 {
		return fmt.Errorf("tokenizer: WriteByteLevel %s: vocab size %d is not in [%d, %d]", path, vocabSize, 2*llama3SpecialCount, maxTokenID+1)
	}
	return writeJSON(path, byteLevelFile(vocabSize))
}

// writeJSON writes v indented, with <, > and & as themselves (Go escapes them by default, which
// would make every special token unreadable).
func writeJSON(path string, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic("tokenizer: " + err.Error()) // the structures are ours; they always marshal
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	return nil
}

// The types below spell tokenizer.json as HF tokenizers serialises it (format version "1.0"),
// with fields in its order.
type (
	jsonTokenizer struct {
		Version       string        `json:"version"`
		Truncation    any           `json:"truncation"`
		Padding       any           `json:"padding"`
		AddedTokens   []jsonAdded   `json:"added_tokens"`
		Normalizer    any           `json:"normalizer"`
		PreTokenizer  jsonByteLevel `json:"pre_tokenizer"`
		PostProcessor jsonTemplate  `json:"post_processor"`
		Decoder       jsonByteLevel `json:"decoder"`
		Model         jsonBPE       `json:"model"`
	}
	jsonAdded struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	jsonByteLevel struct {
		Type           string `json:"type"`
		AddPrefixSpace bool   `json:"add_prefix_space"`
		TrimOffsets    bool   `json:"trim_offsets"`
		UseRegex       bool   `json:"use_regex"`
	}
	jsonTemplate struct {
		Type          string                      `json:"type"`
		Single        []any                       `json:"single"`
		Pair          []any                       `json:"pair"`
		SpecialTokens map[string]jsonSpecialToken `json:"special_tokens"`
	}
	jsonSpecialToken struct {
		ID     string   `json:"id"`
		IDs    []int    `json:"ids"`
		Tokens []string `json:"tokens"`
	}
	jsonBPE struct {
		Type                    string    `json:"type"`
		Dropout                 any       `json:"dropout"`
		UnkToken                any       `json:"unk_token"`
		ContinuingSubwordPrefix any       `json:"continuing_subword_prefix"`
		EndOfWordSuffix         any       `json:"end_of_word_suffix"`
		FuseUnk                 bool      `json:"fuse_unk"`
		ByteFallback            bool      `json:"byte_fallback"`
		IgnoreMerges            bool      `json:"ignore_merges"`
		Vocab                   byteVocab `json:"vocab"`
		Merges                  []string  `json:"merges"`
	}
)

// byteLevelFile builds the tokenizer.json that WriteByteLevel writes.
func byteLevelFile(vocabSize int) jsonTokenizer {
	first := vocabSize - llama3SpecialCount
	added := make([]jsonAdded, 0, llama3SpecialCount)
	for i, tok := range Llama3SpecialTokens() {
		added = append(added, jsonAdded{ID: first + i, Content: tok, Special: true})
	}
	type obj = map[string]any
	special := func(typeID int) obj { return obj{"SpecialToken": obj{"id": BeginOfText, "type_id": typeID}} }
	sequence := func(name string, typeID int) obj { return obj{"Sequence": obj{"id": name, "type_id": typeID}} }
	// GPT-2's split regex keeps words short for BPE; with no merges it does not change the ids.
	byteLevel := jsonByteLevel{Type: "ByteLevel", TrimOffsets: true, UseRegex: true}
	return jsonTokenizer{
		Version:      "1.0",
		AddedTokens:  added,
		PreTokenizer: byteLevel,
		PostProcessor: jsonTemplate{
			Type:   "TemplateProcessing",
			Single: []any{special(0), sequence("A", 0)},
			Pair:   []any{special(0), sequence("A", 0), special(1), sequence("B", 1)},
			SpecialTokens: map[string]jsonSpecialToken{
				BeginOfText: {ID: BeginOfText, IDs: []int{first}, Tokens: []string{BeginOfText}},
			},
		},
		Decoder: byteLevel,
		Model:   jsonBPE{Type: "BPE", Vocab: byteVocab{first}, Merges: []string{}},
	}
}

// byteVocab is the model vocabulary of WriteByteLevel: the 256 byte tokens {"Ā": 0, "ā": 1, …}
// and then the special tokens at first, first+1, …. The special tokens must be in the model
// vocabulary too: HF tokenizers ignores the ids written in added_tokens and numbers added tokens
// that the model lacks from the model's token count up (here 256), which would close the gap that
// puts them at Llama 3's ids. No merge produces them, so text only reaches them as added tokens.
type byteVocab struct{ first int }

// MarshalJSON writes the vocabulary in id order, which a Go map would not keep (it sorts keys), so
// that the file reads in id order.
func (v byteVocab) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	entry := func(tok string, id int) {
		if id > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", jsonString(tok), id)
	}
	for i, r := range byteToRune {
		entry(string(r), i)
	}
	for i, tok := range Llama3SpecialTokens() {
		entry(tok, v.first+i)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// WriteConfig writes a minimal tokenizer_config.json naming bos and eos as bos_token and eos_token,
// with chatTemplate as chat_template unless it is "" (ChatTemplate gives one per style). It also
// sets clean_up_tokenization_spaces to false, so that transformers decodes as HF tokenizers and
// tiller do.
func WriteConfig(path, bos, eos, chatTemplate string) error {
	c := map[string]any{
		"bos_token":                    bos,
		"eos_token":                    eos,
		"clean_up_tokenization_spaces": false,
		"tokenizer_class":              "PreTrainedTokenizerFast",
	}
	if chatTemplate != "" {
		c["chat_template"] = chatTemplate
	}
	return writeJSON(path, c)
}

// jsonString quotes s as a JSON string without escaping <, > and &.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
