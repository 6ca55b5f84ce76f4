package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
)

// Message is one turn of a chat, in the JSON shape of the OpenAI and HF chat APIs.
type Message struct {
	Role    string `json:"role"`    // "system", "user", "assistant", or any other header name
	Content string `json:"content"` // trimmed of surrounding whitespace when rendered
}

// ChatStyle selects which Llama 3 chat template RenderChat follows.
type ChatStyle int

const (
	// Llama3 is Llama 3's template: the messages as they are, each in its own header block.
	Llama3 ChatStyle = iota
	// Llama31 is Llama 3.1's template: a system block always comes first, opening with the
	// knowledge-cutoff and today's date lines, then the caller's system message if it leads.
	Llama31
)

// defaultChatDate is the date_string Llama 3.1's template uses when the caller passes none.
const defaultChatDate = "26 Jul 2024"

// String returns the style's name as ParseChatStyle reads it: "llama3" or "llama3.1".
func (s ChatStyle) String() string {
	switch s {
	case Llama3:
		return "llama3"
	case Llama31:
		return "llama3.1"
	}
	return fmt.Sprintf("ChatStyle(%d)", int(s))
}

// ParseChatStyle reads a style name: "llama3" or "llama3.1".
func ParseChatStyle(name string) (ChatStyle, error) {
	switch name {
	case "llama3":
		return Llama3, nil
	case "llama3.1":
		return Llama31, nil
	}
	return 0, fmt.Errorf("tokenizer: unknown chat style %q (want llama3 or llama3.1)", name)
}

// chatTokens are the special tokens the Llama 3 chat format is written with.
var chatTokens = []string{BeginOfText, StartHeaderID, EndHeaderID, EndOfTurn}

// RenderChat writes msgs in the Llama 3 chat format of t.ChatStyle, exactly as the model's
// Jinja template does:
//
//	<|begin_of_text|>
//	<|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>   (per message)
//	<|start_header_id|>assistant<|end_header_id|>\n\n                              (addGenerationPrompt)
//
// In the Llama31 style the first block is always a system block holding "Cutting Knowledge Date:
// December 2023\nToday Date: {t.ChatDate}\n\n" followed by msgs[0]'s content when msgs[0] is a
// system message (which is then not repeated). Trimming is Python's str.strip, as Jinja's trim
// filter does, so it also removes U+001C…U+001F. Errors: no messages, an empty role, a Llama31
// tool message (its template writes those as JSON), or a tokenizer without the chat tokens.
func (t *Tokenizer) RenderChat(msgs []Message, addGenerationPrompt bool) (string, error) {
	for _, tok := range chatTokens {
		if _, ok := t.vocab.ids[tok]; !ok {
			return "", fmt.Errorf("tokenizer: %s has no %s token, so it cannot write the Llama 3 chat format", t.path, tok)
		}
	}
	for i, m := range msgs {
		if m.Role == "" {
			return "", fmt.Errorf("tokenizer: chat message %d has an empty role", i)
		}
		if t.ChatStyle == Llama31 && (m.Role == "tool" || m.Role == "ipython") {
			return "", fmt.Errorf("tokenizer: chat message %d: role %q is not supported in the llama3.1 style", i, m.Role)
		}
	}

	var b strings.Builder
	b.WriteString(BeginOfText)
	switch t.ChatStyle {
	case Llama3:
	case Llama31:
		date := t.ChatDate
		if date == "" {
			date = defaultChatDate
		}
		system := "Cutting Knowledge Date: December 2023\nToday Date: " + date + "\n\n"
		if len(msgs) > 0 && msgs[0].Role == "system" {
			system += pyTrim(msgs[0].Content)
			msgs = msgs[1:]
		}
		writeBlock(&b, "system", system)
	default:
		return "", fmt.Errorf("tokenizer: unknown chat style %v", t.ChatStyle)
	}
	for _, m := range msgs {
		writeBlock(&b, m.Role, pyTrim(m.Content))
	}
	if addGenerationPrompt {
		writeHeader(&b, "assistant")
	}
	return b.String(), nil
}

// EncodeChat returns the ids of RenderChat's text. It encodes without add_special_tokens, since
// the text already starts with <|begin_of_text|>, as transformers' apply_chat_template does.
func (t *Tokenizer) EncodeChat(msgs []Message, addGenerationPrompt bool) ([]int32, error) {
	text, err := t.RenderChat(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	return t.Encode(text, false)
}

func writeHeader(b *strings.Builder, role string) {
	b.WriteString(StartHeaderID)
	b.WriteString(role)
	b.WriteString(EndHeaderID)
	b.WriteString("\n\n")
}

func writeBlock(b *strings.Builder, role, content string) {
	writeHeader(b, role)
	b.WriteString(content)
	b.WriteString(EndOfTurn)
}

// pyTrim is Python's str.strip(): Go's unicode.IsSpace plus the information separators
// U+001C…U+001F, which Python counts as whitespace.
func pyTrim(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (0x1C <= r && r <= 0x1F)
	})
}
