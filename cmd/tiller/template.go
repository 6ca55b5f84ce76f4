package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/llama/tokenizer"
)

func runTemplate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("template", "--model DIR --messages FILE.json [--generation-prompt=false] [--tools FILE.json]", stderr)
	dir := fs.String("model", "", modelUsage+"; of a folder only tokenizer_config.json (and chat_template.jinja) are read")
	var cf chatFileFlags
	cf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (the messages come from --messages)", pos[0])
	}
	if cf.messages == "" {
		return usagef("--messages is required")
	}
	if *dir, err = modelDir(*dir); err != nil {
		return err
	}
	tmpl, err := loadTemplate(*dir)
	if err != nil {
		return err
	}
	text, err := cf.render(tmpl)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, text)
	return err
}

// loadTemplate reads a model's chat template: from a folder's tokenizer_config.json (and
// chat_template.jinja) alone, or from a GGUF file's tokenizer.chat_template with the special
// tokens its metadata names.
func loadTemplate(path string) (*chat.Template, error) {
	if !llama.IsGGUF(path) {
		return tokenizer.LoadTemplate(path)
	}
	tok, err := loadTokenizer(path)
	if err != nil {
		return nil, err
	}
	defer tok.Close()
	return tok.ChatTemplate()
}

// chatFileFlags are the flags that give a whole conversation as a file, for template and tokenize.
type chatFileFlags struct {
	messages, tools  string
	generationPrompt bool
}

func (c *chatFileFlags) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&c.messages, "messages", "", `a JSON file holding a list of {"role", "content"} messages, as the OpenAI and HF chat APIs take them (other keys, such as tool_calls, reach the template as they are); - reads standard input`)
	fs.StringVar(&c.tools, "tools", "", "a JSON file holding a list of tool schemas, for templates that describe tools (apply_chat_template's tools)")
	fs.BoolVar(&c.generationPrompt, "generation-prompt", true, "open the assistant's turn after the messages (add_generation_prompt)")
}

// render renders the messages file with tmpl.
func (c *chatFileFlags) render(tmpl *chat.Template) (string, error) {
	msgs, err := readJSONFile(c.messages)
	if err != nil {
		return "", err
	}
	opts := chat.Options{AddGenerationPrompt: c.generationPrompt}
	if c.tools != "" {
		if opts.Tools, err = readJSONFile(c.tools); err != nil {
			return "", err
		}
	}
	text, err := tmpl.RenderJSON(msgs, opts)
	if err != nil {
		return "", fmt.Errorf("%s: %w", c.messages, err)
	}
	return text, nil
}

// readJSONFile reads a file ("-": standard input) that must hold well-formed JSON.
func readJSONFile(path string) (json.RawMessage, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	if !json.Valid(data) {
		var v any
		return nil, fmt.Errorf("%s: malformed JSON: %v", path, json.Unmarshal(data, &v))
	}
	return data, nil
}
