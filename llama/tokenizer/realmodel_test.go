package tokenizer

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/llama/tokenizer/tokenizertest"
)

// fixtureConversation is one conversation of llama/chat/testdata/conversations.json.
type fixtureConversation struct {
	Name      string          `json:"name"`
	Messages  json.RawMessage `json:"messages"`
	Tools     json.RawMessage `json:"tools"`
	Documents json.RawMessage `json:"documents"`
}

// TestSmolLM2Template renders the conversations of llama/chat/testdata with SmolLM2-135M-Instruct's
// own ChatML template, read from its folder as tiller reads any model's, and compares with what
// transformers rendered from the same folder (testdata/smollm2_chat.json,
// scripts/reference/make_chat_fixtures.py). It runs when `make real-model` has fetched the model.
func TestSmolLM2Template(t *testing.T) {
	dir := tokenizertest.SmolLM2(t, "hf")
	var fx struct {
		Cases []struct {
			Conversation        string  `json:"conversation"`
			AddGenerationPrompt bool    `json:"add_generation_prompt"`
			Continue            bool    `json:"continue_final_message"`
			Text                *string `json:"text"`
			Error               string  `json:"error"`
		} `json:"cases"`
	}
	var convs []fixtureConversation
	for path, v := range map[string]any{"testdata/smollm2_chat.json": &fx, "../chat/testdata/conversations.json": &convs} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	tmpl, err := tk.ChatTemplate()
	if err != nil {
		t.Fatal(err)
	}
	if len(fx.Cases) < 30 {
		t.Fatalf("only %d cases", len(fx.Cases))
	}
	for _, c := range fx.Cases {
		var conv *fixtureConversation
		for i := range convs {
			if convs[i].Name == c.Conversation {
				conv = &convs[i]
			}
		}
		if conv == nil {
			t.Fatalf("no conversation %q", c.Conversation)
		}
		got, err := tmpl.RenderJSON(conv.Messages, chat.Options{AddGenerationPrompt: c.AddGenerationPrompt, ContinueFinalMessage: c.Continue, Tools: conv.Tools, Documents: conv.Documents})
		switch {
		case c.Text == nil && err == nil:
			t.Errorf("%s: rendered %q; transformers raised %s", c.Conversation, got, c.Error)
		case c.Text != nil && err != nil:
			t.Errorf("%s: %v", c.Conversation, err)
		case c.Text != nil && got != *c.Text:
			t.Errorf("%s (gen %v, continue %v):\n got %q\nwant %q", c.Conversation, c.AddGenerationPrompt, c.Continue, got, *c.Text)
		}
	}
	if id, ok := tk.EndOfTurn(); !ok || tk.Decode([]int32{id}, false) != "<|im_end|>" {
		t.Errorf("EndOfTurn = %d, %v; want <|im_end|>", id, ok)
	}
}
