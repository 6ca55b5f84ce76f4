package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tillerlm/tiller/llama/chat"
)

// config is what tiller takes from tokenizer_config.json. Everything in that file is optional.
type config struct {
	// Specials are bos_token, eos_token, … as the chat template sees them; "" when absent or null.
	Specials chat.Specials
	// AddBOS and AddEOS are add_bos_token and add_eos_token; nil when the file does not set them.
	AddBOS, AddEOS *bool
	// ChatTemplate is the template to render: chat_template as a string, or the one named
	// "default" of a list; "" when absent.
	ChatTemplate string
	// TemplateNames are a chat_template list's names when none is "default": transformers then
	// refuses to pick one, and so does tiller.
	TemplateNames []string
}

// parseConfig reads tokenizer_config.json. Special tokens are either a string or an AddedToken
// object {"content": "...", …} (additional_special_tokens a list of those); chat_template is
// either a string or a list of {"name", "template"} entries. Keys match exactly, as in Python
// (Go's struct decoding would also take "BOS_TOKEN"); the others, such as the large
// added_tokens_decoder, are skipped. Errors name the field at fault; the caller adds the file name.
func parseConfig(data []byte) (config, error) {
	var fields map[string]json.RawMessage
	if err := unmarshalObject(data, &fields); err != nil {
		return config{}, err
	}
	var c config
	if err := parseSpecials(fields, &c.Specials); err != nil {
		return config{}, err
	}
	var err error
	if c.AddBOS, err = optionalBool(fields["add_bos_token"]); err != nil {
		return config{}, fmt.Errorf("add_bos_token: %w", err)
	}
	if c.AddEOS, err = optionalBool(fields["add_eos_token"]); err != nil {
		return config{}, fmt.Errorf("add_eos_token: %w", err)
	}
	if c.ChatTemplate, c.TemplateNames, err = chatTemplate(fields["chat_template"]); err != nil {
		return config{}, fmt.Errorf("chat_template: %w", err)
	}
	return c, nil
}

// parseSpecials reads the special-token fields into sp, leaving those already set (by a file
// read before) when the field is absent.
func parseSpecials(fields map[string]json.RawMessage, sp *chat.Specials) error {
	for key, dst := range map[string]*string{
		"bos_token": &sp.BOS, "eos_token": &sp.EOS, "unk_token": &sp.UNK, "sep_token": &sp.SEP,
		"pad_token": &sp.PAD, "cls_token": &sp.CLS, "mask_token": &sp.Mask,
	} {
		raw, ok := fields[key]
		if !ok || *dst != "" {
			continue
		}
		s, err := tokenString(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		*dst = s
	}
	if raw, ok := fields["additional_special_tokens"]; ok && sp.Additional == nil && !isNull(raw) {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return errors.New("additional_special_tokens: want a list of tokens")
		}
		for i, item := range items {
			s, err := tokenString(item)
			if err != nil {
				return fmt.Errorf("additional_special_tokens[%d]: %w", i, err)
			}
			sp.Additional = append(sp.Additional, s)
		}
	}
	return nil
}

// readConfig reads dir/tokenizer_config.json, then fills special tokens it leaves unset from
// dir/special_tokens_map.json, as transformers does. Both files are optional; ok reports whether
// the first was there. Errors name the file.
func readConfig(dir string) (c config, ok bool, err error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return config{}, false, fmt.Errorf("tokenizer: %w", err)
	default:
		ok = true
		if c, err = parseConfig(data); err != nil {
			return config{}, false, fmt.Errorf("tokenizer: %s: %w", path, err)
		}
	}
	mapPath := filepath.Join(dir, "special_tokens_map.json")
	data, err = os.ReadFile(mapPath)
	if errors.Is(err, os.ErrNotExist) {
		return c, ok, nil
	}
	var fields map[string]json.RawMessage
	if err == nil {
		if err = unmarshalObject(data, &fields); err == nil {
			err = parseSpecials(fields, &c.Specials)
		}
	}
	if err != nil {
		return config{}, false, fmt.Errorf("tokenizer: %s: %w", mapPath, err)
	}
	return c, ok, nil
}

// ErrNoChatTemplate is wrapped by the errors of a model folder that has no chat template.
var ErrNoChatTemplate = errors.New("no chat template")

// LoadTemplate reads the chat template of the model folder dir as transformers does:
// chat_template.jinja when present, else tokenizer_config.json's chat_template, with the special
// tokens of tokenizer_config.json (and special_tokens_map.json) as its variables. It needs no
// tokenizer.json and no weights. A folder with no template gives an error wrapping
// ErrNoChatTemplate that says where one would be.
func LoadTemplate(dir string) (*chat.Template, error) {
	c, _, err := readConfig(dir)
	if err != nil {
		return nil, err
	}
	return templateOf(dir, c)
}

func templateOf(dir string, c config) (*chat.Template, error) {
	jinjaPath := filepath.Join(dir, "chat_template.jinja")
	text, err := os.ReadFile(jinjaPath)
	switch {
	case err == nil:
		return chat.New(string(text), jinjaPath, c.Specials)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	if c.TemplateNames != nil {
		return nil, fmt.Errorf("%s has chat templates named %s but none named \"default\", so neither transformers nor tiller picks one: %w",
			cfgPath, strings.Join(c.TemplateNames, ", "), ErrNoChatTemplate)
	}
	if c.ChatTemplate == "" {
		return nil, fmt.Errorf("%s: %w (neither chat_template.jinja nor a chat_template in tokenizer_config.json): give raw text instead, or add the model's template", dir, ErrNoChatTemplate)
	}
	return chat.New(c.ChatTemplate, cfgPath+" (chat_template)", c.Specials)
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

// chatTemplate reads chat_template: absent, null, a string, or [{"name": …, "template": …}, …],
// of which the one named "default" is the template; a list without one gives its names instead.
func chatTemplate(raw json.RawMessage) (text string, names []string, err error) {
	if isNull(raw) {
		return "", nil, nil
	}
	raw = bytes.TrimSpace(raw)
	if raw[0] == '"' {
		err := json.Unmarshal(raw, &text)
		return text, nil, err
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return "", nil, errors.New(`want a string or a list of {"name", "template"} objects`)
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil, nil
		}
		names = append(names, fmt.Sprintf("%q", e.Name))
	}
	sort.Strings(names)
	if names == nil {
		return "", nil, nil
	}
	return "", names, nil
}
