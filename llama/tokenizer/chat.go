package tokenizer

import (
	"strings"

	"github.com/tillerlm/tiller/llama/chat"
)

// ChatTemplate returns the model's chat template, or why it has none (an error naming the folder
// and wrapping ErrNoChatTemplate, or the template's compile error).
func (t *Tokenizer) ChatTemplate() (*chat.Template, error) { return t.chat, t.chatErr }

// RenderChat renders msgs with the model's chat template, opening the assistant's turn when
// addGenerationPrompt is set, exactly as transformers' apply_chat_template(tokenize=False) does.
func (t *Tokenizer) RenderChat(msgs []chat.Message, addGenerationPrompt bool) (string, error) {
	if t.chat == nil {
		return "", t.chatErr
	}
	return t.chat.Render(msgs, chat.Options{AddGenerationPrompt: addGenerationPrompt})
}

// EncodeChat returns the ids of RenderChat's text. It encodes without add_special_tokens, since
// the template writes the special tokens itself, as transformers' apply_chat_template does.
func (t *Tokenizer) EncodeChat(msgs []chat.Message, addGenerationPrompt bool) ([]int32, error) {
	text, err := t.RenderChat(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	return t.Encode(text, false)
}

// EndOfTurn returns the special token the chat template closes an assistant's turn with
// (<|eot_id|> for Llama 3, <|im_end|> for ChatML, <end_of_turn> for Gemma), so that generation
// stops there even when generation_config.json's eos ids do not name it; ok is false when the
// model has no template or its turns end in plain text.
func (t *Tokenizer) EndOfTurn() (id int32, ok bool) { return t.endOfTurn, t.endOfTurn >= 0 }

// endOfTurnProbe is an assistant reply no template changes, to find what follows it.
const endOfTurnProbe = "tillerprobe"

// findEndOfTurn renders a user turn and an assistant reply, and returns the first token after the
// reply (whitespace aside) if it is a special token, else -1.
func (t *Tokenizer) findEndOfTurn() int32 {
	text, err := t.RenderChat([]chat.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: endOfTurnProbe}}, false)
	if err != nil {
		return -1
	}
	k := strings.LastIndex(text, endOfTurnProbe)
	if k < 0 {
		return -1
	}
	after := strings.TrimLeft(text[k+len(endOfTurnProbe):], " \t\n")
	ids, err := t.Encode(after, false)
	if err != nil || len(ids) == 0 || !t.IsSpecial(ids[0]) {
		return -1
	}
	return ids[0]
}

// ContinueChat renders msgs with their last message left open (transformers'
// continue_final_message): the text ends with that message's content, for the model to continue.
func (t *Tokenizer) ContinueChat(msgs []chat.Message) (string, error) {
	if t.chat == nil {
		return "", t.chatErr
	}
	return t.chat.Render(msgs, chat.Options{ContinueFinalMessage: true})
}
