package steer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

// Pair is one contrastive example: the same situation with and without the behaviour. Each side
// is raw text or a list of chat messages (usually a user turn and an assistant reply, the reply
// carrying the behaviour or not).
type Pair struct {
	Positive tokenizer.Text `json:"positive"`
	Negative tokenizer.Text `json:"negative"`
	Line     int            `json:"-"` // its line in the file, for messages
}

// Prompt is one prompt of a prompt file, with its line.
type Prompt struct {
	Text tokenizer.Text `json:"prompt"`
	Line int            `json:"-"`
}

// ParsePairs reads a pair file: JSON Lines, one {"positive": TEXT, "negative": TEXT} object per
// line, where TEXT is a string or a list of {"role", "content"} messages; other keys (an "id",
// a "topic") are allowed and ignored, blank lines are skipped. name is the file's name for
// messages, which give its line numbers. An empty set is an error.
func ParsePairs(name string, data []byte) ([]Pair, error) {
	var out []Pair
	err := eachLine(name, data, func(line int, b []byte) error {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return fmt.Errorf("not a JSON object: %v", err)
		}
		p := Pair{Line: line}
		for _, side := range []struct {
			key string
			dst *tokenizer.Text
		}{{"positive", &p.Positive}, {"negative", &p.Negative}} {
			r, ok := raw[side.key]
			if !ok {
				return fmt.Errorf("no %q: each line is {\"positive\": …, \"negative\": …}", side.key)
			}
			if err := json.Unmarshal(r, side.dst); err != nil {
				return fmt.Errorf("%q: %v", side.key, err)
			}
			if err := checkText(*side.dst); err != nil {
				return fmt.Errorf("%q: %v", side.key, err)
			}
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no pairs: the file has no lines with {\"positive\", \"negative\"}", name)
	}
	return out, nil
}

// ParsePrompts reads a prompt file: JSON Lines, one {"prompt": TEXT} object per line (TEXT as in
// a pair file). An empty set is an error.
func ParsePrompts(name string, data []byte) ([]Prompt, error) {
	var out []Prompt
	err := eachLine(name, data, func(line int, b []byte) error {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return fmt.Errorf("not a JSON object: %v", err)
		}
		r, ok := raw["prompt"]
		if !ok {
			return fmt.Errorf("no \"prompt\": each line is {\"prompt\": …}")
		}
		p := Prompt{Line: line}
		if err := json.Unmarshal(r, &p.Text); err != nil {
			return fmt.Errorf("\"prompt\": %v", err)
		}
		if err := checkText(p.Text); err != nil {
			return fmt.Errorf("\"prompt\": %v", err)
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no prompts", name)
	}
	return out, nil
}

// eachLine calls f with each non-blank line and its 1-based number, prefixing an error with
// "name:line: ".
func eachLine(name string, data []byte, f func(line int, b []byte) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\uFEFF"))
		}
		if len(b) == 0 {
			continue
		}
		if err := f(line, b); err != nil {
			return fmt.Errorf("%s:%d: %v", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s:%d: %v", name, line+1, err)
	}
	return nil
}

// checkText rejects texts that would encode to nothing useful.
func checkText(t tokenizer.Text) error {
	if !t.IsChat() {
		if strings.TrimSpace(t.Raw) == "" {
			return fmt.Errorf("empty text")
		}
		return nil
	}
	for i, m := range t.Messages {
		if m.Role == "" {
			return fmt.Errorf("message %d has no role", i+1)
		}
	}
	return nil
}

// Hash is the SHA-256 of a file's bytes, hex, as vectors record it.
func Hash(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// PromptKey is the form in which prompts are compared for overlap between a pair set and a
// held-out set: the user's words, lower-cased, with runs of spaces made one.
func PromptKey(t tokenizer.Text) string {
	s := t.Raw
	if t.IsChat() {
		var parts []string
		for _, m := range t.Messages {
			if m.Role == "user" {
				parts = append(parts, m.Content)
			}
		}
		s = strings.Join(parts, "\n")
	}
	return strings.Join(strings.Fields(strings.ToLower(s)), " ")
}
