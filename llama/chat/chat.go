// Package chat renders a model's own Jinja chat template exactly as transformers'
// apply_chat_template does, so that the prompt tiller runs is, byte for byte, the one the model
// was trained on and that Python tools would build.
//
// The Jinja engine is github.com/ardanlabs/jinja, written for chat templates: it has
// transformers' environment built in (trim_blocks, lstrip_blocks, loop controls, namespace,
// Python's string and dict methods, tojson with indent, separators and sort_keys and no HTML
// escaping). This package adds what transformers adds around its engine, and what Python's Jinja
// does that the engine leaves to its caller:
//
//   - the variables: messages, add_generation_prompt, tools and documents (none unless given),
//     and the special tokens of tokenizer_config.json (bos_token, eos_token, …);
//   - the source as Jinja's lexer reads it: newlines normalised to "\n", one trailing newline
//     dropped (keep_trailing_newline is off);
//   - filters and tests checked when the template is loaded, as Jinja's compiler does, so a
//     template using one the engine lacks fails at once, never half-rendered;
//   - raise_exception as an error naming the template line it was called from;
//   - strftime_now with Python's format codes, on a clock tests can fix;
//   - JSON values (messages, tools) that keep their key order, as Python's dicts do.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a chat, in the JSON shape of the OpenAI and HF chat APIs. The template
// sees it as the dict {"role": …, "content": …}; RenderJSON passes other keys (tool_calls, name,
// content lists) through as they are.
type Message struct {
	Role    string `json:"role"`    // "system", "user", "assistant", or any other role the template knows
	Content string `json:"content"` // as given: templates trim it or not
}

// Specials are the special tokens a template sees, as transformers' special_tokens_map gives
// them: each variable is defined only when the token is set (bos_token, eos_token, unk_token,
// sep_token, pad_token, cls_token, mask_token, additional_special_tokens).
type Specials struct {
	BOS, EOS, UNK, SEP, PAD, CLS, Mask string
	Additional                         []string
}

// vars returns the special tokens as template variables.
func (s Specials) vars() map[string]jinja.Value {
	v := map[string]jinja.Value{}
	for name, tok := range map[string]string{
		"bos_token": s.BOS, "eos_token": s.EOS, "unk_token": s.UNK, "sep_token": s.SEP,
		"pad_token": s.PAD, "cls_token": s.CLS, "mask_token": s.Mask,
	} {
		if tok != "" {
			v[name] = jinja.NewString(tok)
		}
	}
	if len(s.Additional) > 0 {
		items := make([]jinja.Value, len(s.Additional))
		for i, tok := range s.Additional {
			items[i] = jinja.NewString(tok)
		}
		v["additional_special_tokens"] = jinja.NewList(items)
	}
	return v
}

// Template is a compiled chat template. It is safe for concurrent use once built; set Now before
// sharing it.
type Template struct {
	// Source says where the template came from, in errors: a file, or a file and its field.
	Source string
	// Now is the clock strftime_now reads (transformers reads the local time).
	Now func() time.Time

	text     string // normalised as Jinja's lexer normalises it
	tmpl     *jinja.Template
	specials map[string]jinja.Value
	// trims is set when the template uses the trim filter, whose whitespace lacks U+001C…U+001F
	// (Python's str.strip counts them; the engine's trim filter does not, its .strip() does).
	trims bool
}

// ErrSeparator is the error for text holding U+001C…U+001F under a template that trims: the
// one input on which the engine's trim filter and Python's differ, refused rather than rendered
// differently.
var ErrSeparator = errors.New("the text holds an ASCII information separator (U+001C…U+001F), which Python's trim filter strips as whitespace and tiller's template engine does not; remove it")

// New compiles a chat template. source names it in errors (say "DIR/tokenizer_config.json").
// Errors: the template does not parse, or uses a filter or test the engine does not have; both
// name the line.
func New(text, source string, sp Specials) (*Template, error) {
	text = normalize(text)
	tmpl, err := jinja.Compile(text)
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %s", source, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "jinja parse: "), "jinja scan: "))
	}
	trims, err := checkNames(text)
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %w", source, err)
	}
	return &Template{Source: source, Now: time.Now, text: text, tmpl: tmpl, specials: sp.vars(), trims: trims}, nil
}

// Text returns the template source, normalised.
func (t *Template) Text() string { return t.text }

// Options are apply_chat_template's arguments besides the messages.
type Options struct {
	// AddGenerationPrompt opens the assistant's turn after the messages.
	AddGenerationPrompt bool
	// ContinueFinalMessage leaves the last message open, for the model to continue it: the text
	// is cut right after that message's content (stripped), as transformers does.
	ContinueFinalMessage bool
	// Tools is a JSON list of tool schemas, Documents a JSON list of documents; nil for none.
	Tools, Documents json.RawMessage
}

// Render renders msgs. A message with an empty role is an error (transformers would render it;
// in tiller's inputs it is always a mistake).
func (t *Template) Render(msgs []Message, opts Options) (string, error) {
	items := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		if m.Role == "" {
			return "", fmt.Errorf("message %d has an empty role", i)
		}
		d := jinja.NewDict()
		d.AsDict().Set("role", jinja.NewString(m.Role))
		d.AsDict().Set("content", jinja.NewString(m.Content))
		items[i] = d
	}
	return t.render(jinja.NewList(items), opts)
}

// RenderJSON renders a JSON list of message objects, each passed to the template with all its
// keys in their order (tool_calls, name, content lists, …).
func (t *Template) RenderJSON(messages json.RawMessage, opts Options) (string, error) {
	v, err := parseJSON(messages)
	if err != nil {
		return "", fmt.Errorf("messages: %w", err)
	}
	if !v.IsList() {
		return "", errors.New("messages: want a JSON list of message objects")
	}
	for i, m := range v.AsList().Items {
		if !m.IsDict() {
			return "", fmt.Errorf("messages: item %d is not an object", i)
		}
	}
	return t.render(v, opts)
}

func (t *Template) render(messages jinja.Value, opts Options) (string, error) {
	if messages.AsList().Len() == 0 {
		return "", errors.New("no messages to render (transformers refuses an empty conversation too)")
	}
	if opts.ContinueFinalMessage && opts.AddGenerationPrompt {
		return "", errors.New("a generation prompt and a final message left open do not go together")
	}
	vars := make(map[string]jinja.Value, len(t.specials)+8)
	for k, v := range t.specials {
		vars[k] = v
	}
	vars["messages"] = messages
	vars["add_generation_prompt"] = jinja.NewBool(opts.AddGenerationPrompt)
	for name, raw := range map[string]json.RawMessage{"tools": opts.Tools, "documents": opts.Documents} {
		vars[name] = jinja.None()
		if raw != nil {
			v, err := parseJSON(raw)
			if err != nil {
				return "", fmt.Errorf("%s: %w", name, err)
			}
			vars[name] = v
		}
	}
	if t.trims {
		for _, v := range vars {
			if hasSeparator(v) {
				return "", fmt.Errorf("chat template %s: %w", t.Source, ErrSeparator)
			}
		}
	}
	vars["raise_exception"] = jinja.NewCallable("raise_exception", raiseException)
	vars["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
		if len(args) != 1 || !args[0].IsString() {
			return jinja.Undefined(), errors.New("strftime_now takes one format string")
		}
		s, err := strftime(args[0].AsString(), t.Now())
		return jinja.NewString(s), err
	})
	out, err := t.tmpl.RenderValues(vars)
	if err != nil {
		var r *raised
		if errors.As(err, &r) {
			return "", fmt.Errorf("chat template %s raised an error%s: %s", t.Source, r.where(t.text), r.msg)
		}
		return "", fmt.Errorf("chat template %s: %v", t.Source, err)
	}
	if opts.ContinueFinalMessage {
		return leaveOpen(out, messages)
	}
	return out, nil
}

// leaveOpen cuts the rendered text right after the last message's content, as transformers'
// continue_final_message does: the content (the last part's "text" for a list), stripped, is
// found from the end, and what follows it dropped, trailing whitespace too.
func leaveOpen(text string, messages jinja.Value) (string, error) {
	items := messages.AsList().Items
	content, _ := items[len(items)-1].AsDict().Get("content")
	if content.IsList() && content.AsList().Len() > 0 {
		if last := content.AsList().Items[content.AsList().Len()-1]; last.IsDict() {
			content, _ = last.AsDict().Get("text")
		}
	}
	if !content.IsString() {
		return "", errors.New("the final message has no text content to leave open")
	}
	final := strings.TrimFunc(content.AsString(), isPySpace)
	k := strings.LastIndex(text, final)
	if k < 0 {
		return "", errors.New("the final message's content does not appear in the rendered text, so it cannot be left open")
	}
	return strings.TrimRightFunc(text[:k+len(final)], isPySpace), nil
}

// isPySpace is Python's str.isspace for one rune: Go's unicode.IsSpace and U+001C…U+001F.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || (0x1c <= r && r <= 0x1f)
}
