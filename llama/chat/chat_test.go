package chat

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustNew(t *testing.T, text string) *Template {
	t.Helper()
	tmpl, err := New(text, "test.jinja", Specials{BOS: "<s>"})
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

var hello = []Message{{Role: "user", Content: "Hello"}}

// TestLoadErrors checks the errors of New: each names the source and the line, as Jinja's
// compiler does, even for a filter in a branch no conversation takes.
func TestLoadErrors(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"unclosed if", "a\n{% if x %}\nb", "test.jinja"},
		{"unknown statement", "a\nb\n{% frobnicate %}", "line 3"},
		{"unknown filter in a dead branch", "{% if false %}\n\n{{ x | shout }}\n{% endif %}", `line 3: the filter "shout" is not supported`},
		{"unknown filter after another", "{{ x | trim|shout(2) }}", `filter "shout"`},
		{"unknown filter block", "\n{% filter shout %}x{% endfilter %}", `line 2: the filter "shout"`},
		{"unknown test", "{{ 1 }}\n{% if x is not prime %}{% endif %}", `line 2: the test "prime" is not supported`},
		{"unclosed tag", "{{ x ", "test.jinja"},
	} {
		_, err := New(c.text, "test.jinja", Specials{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "test.jinja") {
			t.Errorf("%s: error %v; want one naming test.jinja and %q", c.name, err, c.want)
		}
	}
	// Filter and test names inside string literals and comments are text, not names.
	for _, text := range []string{
		`{{ '<|im_start|>' + "|shout" }}`,
		`{# x | shout #}{{ 'is prime' }}`,
		`{% raw %}{{ x | shout }}{% endraw %}`,
		`{{ x | default('a|shout') | trim }}{% if x is defined and x is not none %}{% endif %}`,
	} {
		if _, err := New(text, "ok.jinja", Specials{}); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// TestRaiseException checks that raise_exception is an error carrying the template's message and
// the line of the call that raised it.
func TestRaiseException(t *testing.T) {
	tmpl := mustNew(t, `{%- for m in messages %}
{%- if m.role == 'system' %}
{{- raise_exception('System role not supported') }}
{%- elif m.role not in ['user', 'assistant'] %}
{{- raise_exception("Unknown role: " ~ m.role) }}
{%- endif %}
{%- endfor %}`)
	for _, c := range []struct {
		role, want string
	}{
		{"system", "raised an error at line 3: System role not supported"},
		{"tool", "raised an error at line 5: Unknown role: tool"},
	} {
		_, err := tmpl.Render([]Message{{Role: c.role, Content: "x"}}, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "test.jinja") {
			t.Errorf("role %s: error %v; want %q", c.role, err, c.want)
		}
	}
	one := mustNew(t, "\n\n{{ raise_exception(messages[0].content) }}")
	if _, err := one.Render(hello, Options{}); err == nil || !strings.Contains(err.Error(), "at line 3: Hello") {
		t.Errorf("the only call: error %v; want it at line 3", err)
	}
}

func TestRenderErrors(t *testing.T) {
	tmpl := mustNew(t, "{{ messages | length }}")
	for _, c := range []struct{ name, json, want string }{
		{"empty", `[]`, "no messages"},
		{"not JSON", `[{"role": "user"`, "messages"},
		{"not a list", `{"role": "user"}`, "want a JSON list"},
		{"not objects", `["hi"]`, "item 0 is not an object"},
		{"trailing", `[{"role": "user", "content": "x"}] []`, "trailing data"},
		{"huge int", `[{"role": "user", "content": "x", "n": 123456789012345678901}]`, "out of the 64-bit range"},
	} {
		if _, err := tmpl.RenderJSON([]byte(c.json), Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v; want %q", c.name, err, c.want)
		}
	}
	if _, err := tmpl.Render(nil, Options{}); err == nil {
		t.Error("Render of no messages succeeded")
	}
	if _, err := tmpl.Render([]Message{{Role: "user", Content: "a"}, {Content: "b"}}, Options{}); err == nil || !strings.Contains(err.Error(), "message 1 has an empty role") {
		t.Errorf("empty role: %v", err)
	}
	if _, err := tmpl.RenderJSON([]byte(`[{"role": "user"}]`), Options{Tools: []byte(`[`)}); err == nil || !strings.Contains(err.Error(), "tools") {
		t.Errorf("bad tools JSON: %v", err)
	}
	clock := mustNew(t, `{{ strftime_now("%d %Q") }}`)
	if _, err := clock.Render(hello, Options{}); err == nil || !strings.Contains(err.Error(), "%Q is not supported") {
		t.Errorf("unknown strftime code: %v", err)
	}
}

// TestJSONValues checks that JSON reaches the template as Python's json.loads gives it: key
// order kept, integers and floats apart.
func TestJSONValues(t *testing.T) {
	tmpl := mustNew(t, `{{ messages[0] }}|{{ messages[0].n }} {{ messages[0].f }} {{ messages[0].e }}|{% for k in messages[0] %}{{ k }},{% endfor %}`)
	got, err := tmpl.RenderJSON([]byte(`[{"role": "user", "content": "x", "n": 3, "f": 1.0, "e": 1e2, "z": null, "b": true, "a": [1, "s"]}]`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := `{'role': 'user', 'content': 'x', 'n': 3, 'f': 1.0, 'e': 100.0, 'z': None, 'b': True, 'a': [1, 's']}|3 1.0 100.0|role,content,n,f,e,z,b,a,`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestSource checks the source as Jinja's lexer reads it: CRLF and CR are newlines, and one
// trailing newline is dropped.
func TestSource(t *testing.T) {
	for text, want := range map[string]string{
		"A\r\nB{{ bos_token }}\r\n":             "A\nB<s>",
		"A\rB\n\n":                              "A\nB\n",
		"{% if true %}\r\nX\r\n{% endif %}\r\n": "X\n",
	} {
		got, err := mustNew(t, text).Render(hello, Options{})
		if err != nil || got != want {
			t.Errorf("%q rendered %q, %v; want %q", text, got, err, want)
		}
	}
}

// TestSeparator checks that the engine's one known difference from Python's Jinja (trim does not
// strip U+001C…U+001F) is refused under a template that trims, and harmless under one that does not.
func TestSeparator(t *testing.T) {
	msgs := []Message{{Role: "user", Content: "\x1cx\x1f"}}
	if _, err := mustNew(t, "{{ messages[0].content | trim }}").Render(msgs, Options{}); !errors.Is(err, ErrSeparator) {
		t.Errorf("trim: error %v; want ErrSeparator", err)
	}
	got, err := mustNew(t, "{{ messages[0].content.strip() }}").Render(msgs, Options{})
	if err != nil || got != "x" {
		t.Errorf(".strip(): %q, %v; want x (the method strips them as Python does)", got, err)
	}
}

func TestStrftime(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 5, 9, 7000, time.UTC)
	got, err := strftime("%a %d %b %Y %I:%M %p %j %-m/%-d %y %%", at)
	want := "Thu 31 Dec 2026 11:05 PM 365 12/31 26 %"
	if err != nil || got != want {
		t.Errorf("strftime = %q, %v; want %q", got, err, want)
	}
	if _, err := strftime("50%", at); err == nil {
		t.Error("a lone % at the end was accepted")
	}
}
