package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// vocab is what tiller reads from tokenizer.json itself, beside handing the file to HF tokenizers:
// daulet/tokenizers has no token→id lookup, so the string↔id tables are parsed here.
type vocab struct {
	ids     map[string]int32 // token string → id; added tokens win over model tokens, as in HF
	special map[int32]bool   // ids of added tokens marked "special": true
	size    int32            // 1 + the largest id of any token
	// leading is the special token the post-processor puts first in a single sequence
	// (<|begin_of_text|> for Llama 3), or "" if it puts none.
	leading string
}

// rawTokenizerFile is the part of tokenizer.json that parseVocab looks at.
type rawTokenizerFile struct {
	AddedTokens []struct {
		ID      *int64 `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Model *struct {
		Type  string          `json:"type"`
		Vocab json.RawMessage `json:"vocab"`
	} `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
}

// parseVocab reads the token tables of a tokenizer.json. Model vocabularies are either an object
// {"token": id} (BPE, WordPiece, WordLevel) or a list [["piece", score], …] whose index is the id
// (Unigram). Errors say what is wrong; the caller adds the file name.
func parseVocab(data []byte) (*vocab, error) {
	var raw rawTokenizerFile
	if err := unmarshalObject(data, &raw); err != nil {
		return nil, err
	}
	if raw.Model == nil {
		return nil, errors.New(`not a tokenizer: no "model" object`)
	}
	v := &vocab{ids: map[string]int32{}, special: map[int32]bool{}}
	if err := v.addModelVocab(raw.Model.Vocab); err != nil {
		return nil, err
	}
	for i, a := range raw.AddedTokens {
		if a.ID == nil || *a.ID < 0 || *a.ID > maxTokenID {
			return nil, fmt.Errorf("added_tokens[%d] (%q): missing or out-of-range id", i, a.Content)
		}
		id := int32(*a.ID)
		v.ids[a.Content] = id
		if a.Special {
			v.special[id] = true
		}
		v.size = max(v.size, id+1)
	}
	if len(v.ids) == 0 {
		return nil, errors.New("not a tokenizer: no tokens in model.vocab or added_tokens")
	}
	v.leading = leadingSpecial(raw.PostProcessor)
	return v, nil
}

// maxTokenID bounds ids so that they fit int32 with room for size = id+1.
const maxTokenID = 1<<31 - 2

func (v *vocab) addModelVocab(raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
		return nil // added tokens alone can still make a tokenizer
	case raw[0] == '{':
		var m map[string]int64
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("model.vocab: %w", err)
		}
		for tok, id := range m {
			if id < 0 || id > maxTokenID {
				return fmt.Errorf("model.vocab: token %q has out-of-range id %d", tok, id)
			}
			v.ids[tok] = int32(id)
			v.size = max(v.size, int32(id)+1)
		}
	case raw[0] == '[':
		var list [][]json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("model.vocab: %w", err)
		}
		for i, entry := range list {
			var tok string
			if len(entry) == 0 || json.Unmarshal(entry[0], &tok) != nil {
				return fmt.Errorf("model.vocab[%d]: want [\"piece\", score]", i)
			}
			v.ids[tok] = int32(i)
		}
		v.size = max(v.size, int32(len(list)))
	default:
		return errors.New("model.vocab: neither an object nor a list")
	}
	return nil
}

// rawProcessor covers the post-processor shapes that can put a special token first.
type rawProcessor struct {
	Type       string            `json:"type"`
	Processors []json.RawMessage `json:"processors"` // Sequence
	Single     []struct {        // TemplateProcessing
		SpecialToken *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
	} `json:"single"`
	Cls []json.RawMessage `json:"cls"` // BertProcessing, RobertaProcessing: ["[CLS]", 101]
}

// leadingSpecial returns the special token a post-processor puts in front of a single sequence, or ""
// when it puts none or its shape is not one tiller knows (HF tokenizers still applies it).
func leadingSpecial(raw json.RawMessage) string {
	var p rawProcessor
	if len(raw) == 0 || json.Unmarshal(raw, &p) != nil {
		return ""
	}
	switch p.Type {
	case "Sequence":
		for _, sub := range p.Processors {
			if tok := leadingSpecial(sub); tok != "" {
				return tok
			}
		}
	case "TemplateProcessing":
		if len(p.Single) > 0 && p.Single[0].SpecialToken != nil {
			return p.Single[0].SpecialToken.ID
		}
	case "BertProcessing", "RobertaProcessing":
		var tok string
		if len(p.Cls) > 0 && json.Unmarshal(p.Cls[0], &tok) == nil {
			return tok
		}
	}
	return ""
}

// unmarshalObject decodes a JSON file whose top level must be an object, telling malformed JSON
// apart from well-formed JSON of the wrong shape.
func unmarshalObject(data []byte, v any) error {
	if !json.Valid(data) {
		// Unmarshal again only for its message, which gives the offset of the first error.
		var discard any
		return fmt.Errorf("malformed JSON: %w", json.Unmarshal(data, &discard))
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) == 0 || trimmed[0] != '{' {
		return errors.New("not a JSON object")
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("unexpected JSON: %w", err)
	}
	return nil
}
