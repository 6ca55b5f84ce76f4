package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixtureNow is the clock scripts/reference/make_chat_fixtures.py gives strftime_now.
var fixtureNow = time.Date(2024, 3, 5, 9, 7, 2, 123456000, time.Local)

type conversation struct {
	Name      string          `json:"name"`
	Messages  json.RawMessage `json:"messages"`
	Tools     json.RawMessage `json:"tools"`
	Documents json.RawMessage `json:"documents"`
	Only      []string        `json:"only"`
}

type expectedCase struct {
	Template            string  `json:"template"`
	Conversation        string  `json:"conversation"`
	AddGenerationPrompt bool    `json:"add_generation_prompt"`
	Continue            bool    `json:"continue_final_message"`
	Text                *string `json:"text"`
	Error               string  `json:"error"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// specialsFrom reads one entry of testdata/templates.json.
func specialsFrom(m map[string]json.RawMessage) Specials {
	var s Specials
	str := func(key string) string {
		var v string
		json.Unmarshal(m[key], &v)
		return v
	}
	s.BOS, s.EOS, s.UNK, s.PAD = str("bos_token"), str("eos_token"), str("unk_token"), str("pad_token")
	json.Unmarshal(m["additional_special_tokens"], &s.Additional)
	return s
}

func loadTemplate(t *testing.T, name string, sp Specials) *Template {
	t.Helper()
	path := filepath.Join("templates", name+".jinja")
	if _, err := os.Stat(path); err != nil {
		path = filepath.Join("testdata", "templates", name+".jinja")
	}
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := New(string(text), path, sp)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Now = func() time.Time { return fixtureNow }
	return tmpl
}

// TestTransformersFixtures renders every team-written template of testdata/templates/ for every
// conversation of testdata/conversations.json, and compares with what transformers'
// apply_chat_template wrote (testdata/expected.json, scripts/reference/make_chat_fixtures.py):
// the same bytes, or an error where transformers raised one, with the template's own message.
func TestTransformersFixtures(t *testing.T) {
	var specials map[string]map[string]json.RawMessage
	var convs []conversation
	var fx struct {
		Transformers string         `json:"transformers"`
		Cases        []expectedCase `json:"cases"`
	}
	readJSON(t, "testdata/templates.json", &specials)
	readJSON(t, "testdata/conversations.json", &convs)
	readJSON(t, "testdata/expected.json", &fx)
	byName := map[string]conversation{}
	for _, c := range convs {
		byName[c.Name] = c
	}
	templates := map[string]*Template{}
	for name, sp := range specials {
		templates[name] = loadTemplate(t, name, specialsFrom(sp))
	}
	want := 0
	for _, c := range convs {
		n := len(specials)
		if c.Only != nil {
			n = len(c.Only)
		}
		want += 3 * n
	}
	if len(fx.Cases) != want {
		t.Fatalf("expected.json holds %d cases; the templates and conversations make %d: regenerate it", len(fx.Cases), want)
	}
	var texts, errs, refused int
	for _, c := range fx.Cases {
		conv, ok := byName[c.Conversation]
		if !ok {
			t.Fatalf("expected.json names conversation %q, which conversations.json lacks", c.Conversation)
		}
		name := c.Template + "/" + c.Conversation + map[bool]string{true: "/gen", false: ""}[c.AddGenerationPrompt] + map[bool]string{true: "/continue", false: ""}[c.Continue]
		got, err := templates[c.Template].RenderJSON(conv.Messages, Options{AddGenerationPrompt: c.AddGenerationPrompt, ContinueFinalMessage: c.Continue, Tools: conv.Tools, Documents: conv.Documents})
		if c.Text == nil {
			errs++
			if err == nil {
				t.Errorf("%s: rendered %q; transformers raised %s", name, got, c.Error)
				continue
			}
			if msg, ok := strings.CutPrefix(c.Error, "TemplateError: "); ok && !strings.Contains(err.Error(), msg) {
				t.Errorf("%s: error %q does not carry the template's message %q", name, err, msg)
			}
			continue
		}
		texts++
		if errors.Is(err, ErrSeparator) && holdsSeparator(conv.Messages) {
			refused++ // the one known difference, refused rather than rendered differently
			continue
		}
		if err != nil {
			t.Errorf("%s: %v; transformers rendered %q", name, err, *c.Text)
			continue
		}
		if got != *c.Text {
			t.Errorf("%s:\n got %q\nwant %q", name, got, *c.Text)
		}
	}
	t.Logf("%d texts (%d refused: ErrSeparator) and %d errors as transformers %s renders them", texts, refused, errs, fx.Transformers)
}

// TestRenderMessages checks that Render, which takes role and content, gives what RenderJSON
// gives for the same messages written as JSON.
func TestRenderMessages(t *testing.T) {
	var convs []conversation
	readJSON(t, "testdata/conversations.json", &convs)
	tmpl := loadTemplate(t, "llama31", Specials{BOS: "<|begin_of_text|>"})
	checked := 0
	for _, c := range convs {
		var msgs []Message
		var keys []map[string]any
		json.Unmarshal(c.Messages, &msgs)
		json.Unmarshal(c.Messages, &keys)
		plain := len(msgs) > 0
		for _, k := range keys {
			plain = plain && len(k) == 2 && k["content"] != nil
		}
		if !plain {
			continue
		}
		checked++
		for _, gen := range []bool{false, true} {
			a, errA := tmpl.Render(msgs, Options{AddGenerationPrompt: gen})
			b, errB := tmpl.RenderJSON(c.Messages, Options{AddGenerationPrompt: gen})
			if a != b || (errA == nil) != (errB == nil) {
				t.Errorf("%s: Render %q (%v), RenderJSON %q (%v)", c.Name, a, errA, b, errB)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d conversations were plain role/content ones", checked)
	}
}

// holdsSeparator reports whether JSON text holds U+001C…U+001F once decoded.
func holdsSeparator(raw json.RawMessage) bool {
	var v any
	json.Unmarshal(raw, &v)
	return strings.ContainsAny(fmt.Sprint(v), "\x1c\x1d\x1e\x1f")
}
