package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tillerlm/tiller/llama/chat"
)

// Text is a prompt as input files give it: raw text, or a list of chat messages that the chat
// template renders. In JSON it is either a string or an array of {"role", "content"} objects.
type Text struct {
	Raw      string
	Messages []chat.Message
}

// IsChat reports whether the text is a list of messages.
func (t Text) IsChat() bool { return t.Messages != nil }

// UnmarshalJSON accepts a string or a list of messages.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		*t = Text{}
		return json.Unmarshal(b, &t.Raw)
	}
	var msgs []chat.Message
	if err := json.Unmarshal(b, &msgs); err != nil {
		return fmt.Errorf("want a string or a list of {\"role\", \"content\"} messages: %v", err)
	}
	if len(msgs) == 0 {
		return fmt.Errorf("an empty list of messages")
	}
	*t = Text{Messages: msgs}
	return nil
}

// MarshalJSON writes the string or the list of messages.
func (t Text) MarshalJSON() ([]byte, error) {
	if t.IsChat() {
		return json.Marshal(t.Messages)
	}
	return json.Marshal(t.Raw)
}

// EncodeText encodes raw text with the tokenizer's special tokens (the BOS), or renders messages
// with the chat template, opening the assistant's turn when generationPrompt is set.
func (tk *Tokenizer) EncodeText(t Text, generationPrompt bool) ([]int32, error) {
	if t.IsChat() {
		return tk.EncodeChat(t.Messages, generationPrompt)
	}
	return tk.Encode(t.Raw, true)
}
