package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// The expected texts below are written out by hand from the Llama 3 format, so that a reader can
// check them against the model card without running anything.

func TestRenderChatLlama3(t *testing.T) {
	tk := *loadLlama3(t)
	tk.ChatStyle = Llama3
	got, err := tk.RenderChat([]Message{
		{Role: "system", Content: "  Be kind.\n"},
		{Role: "user", Content: "Hi 👋"},
		{Role: "assistant", Content: "\tHello!\n\n"},
		{Role: "user", Content: "Again?"},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|begin_of_text|>" +
		"<|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nHi 👋<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nAgain?<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\n"
	if got != want {
		t.Errorf("RenderChat =\n%q\nwant\n%q", got, want)
	}
}

func TestRenderChatLlama31(t *testing.T) {
	tk := *loadLlama3(t)
	tk.ChatStyle = Llama31
	const head = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
		"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
	for _, c := range []struct {
		name string
		msgs []Message
		gen  bool
		want string
	}{
		{"leading system is merged", []Message{{"system", "\n Be kind. "}, {"user", "Hi"}}, true,
			head + "Be kind.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"no system", []Message{{"user", "Hi"}}, false,
			head + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"},
		{"later system stays", []Message{{"user", "Hi"}, {"system", "Note"}}, false,
			head + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
				"<|start_header_id|>system<|end_header_id|>\n\nNote<|eot_id|>"},
		{"no messages", nil, true,
			head + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
	} {
		got, err := tk.RenderChat(c.msgs, c.gen)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: RenderChat =\n%q\nwant\n%q", c.name, got, c.want)
		}
	}

	tk.ChatDate = "1 Jan 2026"
	got, _ := tk.RenderChat([]Message{{"user", "Hi"}}, false)
	if !strings.Contains(got, "\nToday Date: 1 Jan 2026\n\n<|eot_id|>") {
		t.Errorf("with ChatDate set, RenderChat = %q; want the new date", got)
	}
}

// TestRenderChatTrim checks that content is trimmed as Python's str.strip does (Jinja's trim
// filter), which also strips U+001C…U+001F, unlike Go's strings.TrimSpace, and keeps inner space.
func TestRenderChatTrim(t *testing.T) {
	tk := *loadLlama3(t)
	got, err := tk.RenderChat([]Message{{"user", "\x1c\u3000 a \n\n b \u00a0\x1f"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\na \n\n b<|eot_id|>"
	if got != want {
		t.Errorf("RenderChat = %q; want %q", got, want)
	}
	if pyTrim("\u200bx\u200b") != "\u200bx\u200b" {
		t.Error("pyTrim stripped U+200B, which Python does not count as whitespace")
	}
}

func TestEncodeChat(t *testing.T) {
	tk := *loadLlama3(t)
	msgs := []Message{{"user", "Hello world"}}
	ids, err := tk.EncodeChat(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	// <|begin_of_text|> <|start_header_id|> "user" <|end_header_id|> "\n\n" "Hello" " world" <|eot_id|>
	// <|start_header_id|> "assistant" <|end_header_id|> "\n\n": only one BOS, since the rendered text
	// carries it and EncodeChat adds no special tokens.
	want := []int32{128000, 128006, 882, 128007, 271, 9906, 1917, 128009, 128006, 78191, 128007, 271}
	if !slices.Equal(ids, want) {
		t.Errorf("EncodeChat = %v; want %v", ids, want)
	}
	text, _ := tk.RenderChat(msgs, true)
	if got := tk.Decode(ids, false); got != text {
		t.Errorf("Decode(EncodeChat) = %q; want the rendered text %q", got, text)
	}
}

// TestChatTemplate checks that the Jinja templates tiller writes are recognised as their own
// style, and are the whitespace-controlled single-statement form that renders no stray newlines.
func TestChatTemplate(t *testing.T) {
	for _, s := range []ChatStyle{Llama3, Llama31} {
		tmpl := ChatTemplate(s)
		if got := chatStyleOf(tmpl); got != s {
			t.Errorf("chatStyleOf(ChatTemplate(%v)) = %v", s, got)
		}
		for i, line := range strings.Split(tmpl, "\n") {
			if !strings.HasPrefix(line, "{{-") && !strings.HasPrefix(line, "{%-") {
				t.Errorf("ChatTemplate(%v) line %d %q does not strip the newline before it", s, i, line)
			}
		}
	}
}
