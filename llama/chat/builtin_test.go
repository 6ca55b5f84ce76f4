package chat

import (
	"strings"
	"testing"
)

// The expected texts below are written out by hand from the Llama 3 format, so that a reader can
// check them against the model card without running anything.

var llamaSpecials = Specials{BOS: "<|begin_of_text|>", EOS: "<|eot_id|>"}

func TestLlama3(t *testing.T) {
	tmpl, err := New(Llama3(), "llama3", llamaSpecials)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render([]Message{
		{Role: "system", Content: "  Be kind.\n"},
		{Role: "user", Content: "Hi 👋"},
		{Role: "assistant", Content: "\tHello!\n\n"},
		{Role: "user", Content: "Again?"},
	}, Options{AddGenerationPrompt: true})
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
		t.Errorf("Render =\n%q\nwant\n%q", got, want)
	}
}

func TestLlama31(t *testing.T) {
	tmpl, err := New(Llama31(), "llama31", llamaSpecials)
	if err != nil {
		t.Fatal(err)
	}
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
	} {
		got, err := tmpl.Render(c.msgs, Options{AddGenerationPrompt: c.gen})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: Render =\n%q\nwant\n%q", c.name, got, c.want)
		}
	}
	if !strings.Contains(Llama31(), "Cutting Knowledge Date") {
		t.Error("the Llama 3.1 template lacks the knowledge-cutoff line")
	}
}
