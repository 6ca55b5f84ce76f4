// Package tokenizer turns text into token ids and back for LLaMA-family checkpoints, renders chats
// with the model's own chat template (package chat), and decodes generated ids as a stream of
// complete UTF-8 text.
//
// Tokenization itself is Hugging Face tokenizers (Rust) through github.com/daulet/tokenizers,
// reading the checkpoint's tokenizer.json, so ids are exactly those of Python's tokenizers. The
// package adds what that binding lacks: token↔id lookup, the special tokens named in
// tokenizer_config.json, the chat template, and checks on the text it is given.
package tokenizer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	hf "github.com/daulet/tokenizers"

	"github.com/tillerlm/tiller/llama/chat"
)

// Tokenizer is a loaded tokenizer.json, plus what tokenizer_config.json says about it.
// Its methods are safe for concurrent use, except Close, which must come after all other calls.
type Tokenizer struct {
	tk    *hf.Tokenizer
	path  string // tokenizer.json, for error messages
	vocab *vocab
	bos   int32 // -1 when unknown
	eos   []int32
	// bosToken and eosToken are the strings of bos and eos[0], for Pieces.
	bosToken, eosToken string
	// addBOS and addEOS, when non-nil, replace the post-processor's special tokens (see Encode).
	addBOS, addEOS *bool

	// chat is the model's chat template, or nil with chatErr saying why there is none.
	chat    *chat.Template
	chatErr error
	// endOfTurn is the token the template closes an assistant turn with, or -1.
	endOfTurn int32
}

// Load reads dir/tokenizer.json (required), dir/tokenizer_config.json and
// dir/special_tokens_map.json (optional; they supply the special tokens and add_bos_token,
// add_eos_token) and the chat template (see LoadTemplate; a folder without one, or with one that
// does not compile, loads, and only its chat methods fail). Errors name the file and what is
// wrong with it.
func Load(dir string) (*Tokenizer, error) {
	t, err := FromFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	c, ok, err := readConfig(dir)
	if err == nil && ok {
		if err = t.applyConfig(c); err != nil {
			err = fmt.Errorf("tokenizer: %s: %w", filepath.Join(dir, "tokenizer_config.json"), err)
		}
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	// A template that is missing or does not compile leaves raw text working: the chat methods
	// return why there is none.
	if tmpl, err := templateOf(dir, c); err != nil {
		t.chatErr = err
	} else {
		t.SetChatTemplate(tmpl)
	}
	return t, nil
}

// SetChatTemplate replaces the chat template (nil: none), as for a GGUF file that carries its
// own; it also finds the template's end-of-turn token again.
func (t *Tokenizer) SetChatTemplate(tmpl *chat.Template) {
	t.chat, t.chatErr, t.endOfTurn = tmpl, nil, -1
	if tmpl == nil {
		t.chatErr = fmt.Errorf("%s: %w", t.path, ErrNoChatTemplate)
		return
	}
	t.endOfTurn = t.findEndOfTurn()
}

// FromFile reads one tokenizer.json, with no tokenizer_config.json: BOS is then the special token
// the post-processor puts first (if any), EOS is unknown and the chat style is Llama3.
func FromFile(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err) // *PathError names the file
	}
	// The Rust parse and tiller's own take similar time (0.45 s and 0.2 s for Llama 3); overlap them.
	type result struct {
		tk  *hf.Tokenizer
		err error
	}
	done := make(chan result, 1)
	go func() {
		tk, err := hf.FromBytes(data)
		done <- result{tk, err}
	}()
	v, err := parseVocab(data)
	r := <-done
	if err != nil {
		if r.tk != nil {
			r.tk.Close()
		}
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	if r.err != nil {
		return nil, fmt.Errorf("tokenizer: %s: HF tokenizers rejects it: %w", path, r.err)
	}
	tk := r.tk
	t := &Tokenizer{tk: tk, path: path, vocab: v, bos: -1, endOfTurn: -1,
		chatErr: fmt.Errorf("%s has no tokenizer_config.json beside it: %w", path, ErrNoChatTemplate)}
	if id, ok := v.ids[v.leading]; ok && v.leading != "" {
		t.bos, t.bosToken = id, v.leading
	}
	return t, nil
}

// applyConfig takes the special tokens and flags of tokenizer_config.json.
func (t *Tokenizer) applyConfig(c config) error {
	if bos := c.Specials.BOS; bos != "" {
		id, ok := t.vocab.ids[bos]
		if !ok {
			return fmt.Errorf("bos_token %q is not a token of %s", bos, t.path)
		}
		t.bos, t.bosToken = id, bos
	}
	if eos := c.Specials.EOS; eos != "" {
		id, ok := t.vocab.ids[eos]
		if !ok {
			return fmt.Errorf("eos_token %q is not a token of %s", eos, t.path)
		}
		t.eos, t.eosToken = []int32{id}, eos
	}
	if c.AddBOS != nil || c.AddEOS != nil {
		// transformers' LlamaTokenizerFast rebuilds the post-processor from these two flags, with
		// add_bos_token defaulting to true and add_eos_token to false.
		t.addBOS, t.addEOS = boolOr(c.AddBOS, true), boolOr(c.AddEOS, false)
		if *t.addBOS && t.bos < 0 {
			return errors.New("add_bos_token is true but there is no bos_token")
		}
		if *t.addEOS && len(t.eos) == 0 {
			return errors.New("add_eos_token is true but there is no eos_token")
		}
	}
	return nil
}

func boolOr(p *bool, def bool) *bool {
	if p == nil {
		return &def
	}
	return p
}

// Close frees the Rust tokenizer. Calling any other method afterwards panics; Close itself may be
// called again.
func (t *Tokenizer) Close() error {
	if t.tk != nil {
		t.tk.Close()
		t.tk = nil
	}
	return nil
}

// rust returns the Rust tokenizer, panicking on use after Close (a programmer error).
func (t *Tokenizer) rust() *hf.Tokenizer {
	if t.tk == nil {
		panic("tokenizer: use of a closed Tokenizer")
	}
	return t.tk
}

// Encode returns the token ids of text. addSpecial is HF's add_special_tokens: the post-processor
// adds its special tokens (Llama 3: <|begin_of_text|> in front). When tokenizer_config.json sets
// add_bos_token or add_eos_token, those flags decide instead, as in transformers'
// LlamaTokenizerFast. Special-token strings inside text (such as "<|eot_id|>") always become their
// ids, as in HF. Text must be valid UTF-8 without NUL bytes: the Rust side would silently replace
// the former and truncate at the latter. daulet drops HF's encoding errors, which only
// tokenizers without byte fallback can raise (a WordLevel model with no unk_token meeting an
// unknown word); such text comes back as no ids.
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int32, error) {
	ids, _, err := t.Pieces(text, addSpecial)
	return ids, err
}

// Pieces is Encode that also returns each token's string as it is stored in the vocabulary (for
// byte-level BPE a space shows as 'Ġ' and a newline as 'Ċ'), for displaying a tokenization.
func (t *Tokenizer) Pieces(text string, addSpecial bool) ([]int32, []string, error) {
	if err := checkText(text); err != nil {
		return nil, nil, err
	}
	override := addSpecial && t.addBOS != nil
	raw, pieces := t.rust().Encode(text, addSpecial && !override)
	ids := make([]int32, len(raw))
	for i, id := range raw {
		ids[i] = int32(id)
	}
	if pieces == nil {
		pieces = []string{}
	}
	if override {
		ids, pieces = t.addSpecials(ids, pieces)
	}
	return ids, pieces, nil
}

// addSpecials wraps ids in the BOS and EOS that add_bos_token and add_eos_token ask for.
func (t *Tokenizer) addSpecials(ids []int32, pieces []string) ([]int32, []string) {
	if *t.addBOS {
		ids = append([]int32{t.bos}, ids...)
		pieces = append([]string{t.bosToken}, pieces...)
	}
	if *t.addEOS {
		ids = append(ids, t.eos[0])
		pieces = append(pieces, t.eosToken)
	}
	return ids, pieces
}

// checkText rejects text the C boundary would change: a NUL ends a C string, and the Rust side
// replaces invalid UTF-8 with U+FFFD.
func checkText(text string) error {
	if i := strings.IndexByte(text, 0); i >= 0 {
		return fmt.Errorf("tokenizer: text contains a NUL byte at offset %d", i)
	}
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Errorf("tokenizer: text is not valid UTF-8 at offset %d", i)
		}
		i += n
	}
	return nil
}

// Decode returns the text of ids; with skipSpecial, special tokens (such as <|eot_id|>) are left
// out. As in HF, ids the tokenizer does not know (negative ones included) are skipped, and bytes
// that do not form valid UTF-8 become U+FFFD. A NUL character cannot cross the C boundary, so a
// token whose text contains one is left out (in Llama 3, the byte token "Ā", id 188).
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) string {
	raw := make([]uint32, 0, len(ids))
	for _, id := range ids {
		if id >= 0 {
			raw = append(raw, uint32(id))
		}
	}
	return t.decodeRaw(raw, skipSpecial)
}

// decodeRaw is Decode on the ids the Rust side takes.
func (t *Tokenizer) decodeRaw(ids []uint32, skipSpecial bool) string {
	tk := t.rust()
	s := tk.Decode(ids, skipSpecial)
	if s != "" || len(ids) == 0 {
		return s
	}
	// HF decoded these ids to a string with a NUL in it (or to nothing at all), which daulet
	// returns as "". Decode again without the tokens that decode to "" on their own; the others
	// stay together so that characters split across tokens still join up.
	kept := make([]uint32, 0, len(ids))
	for _, id := range ids {
		if tk.Decode([]uint32{id}, skipSpecial) != "" {
			kept = append(kept, id)
		}
	}
	if len(kept) == len(ids) {
		return "" // no single token is the culprit; HF's decode really failed
	}
	return tk.Decode(kept, skipSpecial)
}

// VocabSize is one more than the largest id of any token in tokenizer.json (128256 for Llama 3):
// the number of rows the embedding needs. HF's len(tokenizer) counts tokens instead, which is
// smaller when ids have gaps (as in files WriteByteLevel writes).
func (t *Tokenizer) VocabSize() int { return int(t.vocab.size) }

// TokenID returns the id of a token string, special ("<|eot_id|>") or ordinary, written as the
// vocabulary stores it (byte-level BPE: "Ġworld" for " world"). ok is false for unknown tokens.
func (t *Tokenizer) TokenID(token string) (id int32, ok bool) {
	id, ok = t.vocab.ids[token]
	return id, ok
}

// IsSpecial reports whether id is an added token marked special (one that Decode skips with
// skipSpecial).
func (t *Tokenizer) IsSpecial(id int32) bool { return t.vocab.special[id] }

// BOS returns the id of the beginning-of-sequence token: tokenizer_config.json's bos_token, or
// else the special token the post-processor puts first. ok is false when neither names one.
func (t *Tokenizer) BOS() (id int32, ok bool) { return t.bos, t.bos >= 0 }

// EOS returns the end-of-sequence ids the tokenizer knows: tokenizer_config.json's eos_token, or
// none. A checkpoint's generation_config.json usually lists more (Llama 3.1: 128001, 128008,
// 128009); merging those is the caller's job.
func (t *Tokenizer) EOS() []int32 { return append([]int32(nil), t.eos...) }

// Path returns the tokenizer.json the tokenizer was read from.
func (t *Tokenizer) Path() string { return t.path }
