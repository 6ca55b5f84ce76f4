package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// config is what tiller takes from tokenizer_config.json. Everything in that file is optional.
type config struct {
	BOS, EOS string // token strings; "" when absent or null
	// AddBOS and AddEOS are add_bos_token and add_eos_token; nil when the file does not set them.
	AddBOS, AddEOS *bool
	ChatTemplate   string // the template that decides the chat style; "" when absent
}

// parseConfig reads tokenizer_config.json. bos_token and eos_token are either a string or an
// AddedToken object {"content": "...", …}; chat_template is either a string or a list of
// {"name", "template"} entries, of which the one named "default" (else the first) is kept. Keys
// match exactly, as in Python (Go's struct decoding would also take "BOS_TOKEN"); the others, such
// as the large added_tokens_decoder, are skipped. Errors name the field at fault; the caller adds
// the file name.
func parseConfig(data []byte) (config, error) {
	var fields map[string]json.RawMessage
	if err := unmarshalObject(data, &fields); err != nil {
		return config{}, err
	}
	var c config
	var err error
	if c.BOS, err = tokenString(fields["bos_token"]); err != nil {
		return config{}, fmt.Errorf("bos_token: %w", err)
	}
	if c.EOS, err = tokenString(fields["eos_token"]); err != nil {
		return config{}, fmt.Errorf("eos_token: %w", err)
	}
	if c.AddBOS, err = optionalBool(fields["add_bos_token"]); err != nil {
		return config{}, fmt.Errorf("add_bos_token: %w", err)
	}
	if c.AddEOS, err = optionalBool(fields["add_eos_token"]); err != nil {
		return config{}, fmt.Errorf("add_eos_token: %w", err)
	}
	if c.ChatTemplate, err = chatTemplate(fields["chat_template"]); err != nil {
		return config{}, fmt.Errorf("chat_template: %w", err)
	}
	return c, nil
}

// optionalBool reads a field that is absent, null, true or false.
func optionalBool(raw json.RawMessage) (*bool, error) {
	if isNull(raw) {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, errors.New("want true or false")
	}
	return &b, nil
}

// isNull reports whether a field is absent or null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// tokenString reads a special-token field: absent, null, "<tok>" or {"content": "<tok>", …}.
func tokenString(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	raw = bytes.TrimSpace(raw)
	var s string
	if raw[0] == '"' {
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if raw[0] != '{' || json.Unmarshal(raw, &obj) != nil || obj.Content == nil {
		return "", errors.New(`want a string or an object with a "content" string`)
	}
	return *obj.Content, nil
}

// chatTemplate reads chat_template: absent, null, a string, or [{"name": …, "template": …}, …].
func chatTemplate(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	raw = bytes.TrimSpace(raw)
	var s string
	if raw[0] == '"' {
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return "", errors.New(`want a string or a list of {"name", "template"} objects`)
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil
		}
	}
	if len(list) > 0 {
		return list[0].Template, nil
	}
	return "", nil
}

// chatStyleOf tells which Llama chat format a template writes: only Llama 3.1's own template
// (among the Llama 3 family) carries the knowledge-cutoff line in its system message.
func chatStyleOf(template string) ChatStyle {
	if strings.Contains(template, "Cutting Knowledge Date") {
		return Llama31
	}
	return Llama3
}
