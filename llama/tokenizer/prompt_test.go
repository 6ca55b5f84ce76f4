package tokenizer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
)

func TestTextJSON(t *testing.T) {
	var raw, chatText Text
	if err := json.Unmarshal([]byte(`"hello"`), &raw); err != nil || raw.IsChat() || raw.Raw != "hello" {
		t.Errorf("string: %+v %v", raw, err)
	}
	if err := json.Unmarshal([]byte(` [{"role":"user","content":"hi"}]`), &chatText); err != nil || !chatText.IsChat() || chatText.Messages[0].Content != "hi" {
		t.Errorf("messages: %+v %v", chatText, err)
	}
	for _, bad := range []string{`[]`, `3`, `{"role":"user"}`} {
		var x Text
		if err := json.Unmarshal([]byte(bad), &x); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	b, _ := json.Marshal(chatText)
	if !strings.Contains(string(b), `"role":"user"`) {
		t.Errorf("marshal: %s", b)
	}
	tk, err := Load(byteLevelDir(t, 1000, configWith(chat.Llama3())))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	ids, err := tk.EncodeText(chatText, true)
	want, _ := tk.RenderChat(chatText.Messages, true)
	if err != nil || ids[0] != 744 || tk.Decode(ids, false) != want || !strings.HasSuffix(want, "assistant<|end_header_id|>\n\n") {
		t.Errorf("chat ids %v %v: want the rendered chat with the assistant's turn opened", ids, err)
	}
	ids, err = tk.EncodeText(raw, true)
	if err != nil || ids[0] != 744 || tk.Decode(ids[1:], false) != "hello" {
		t.Errorf("raw ids %v %v: want the BOS and hello", ids, err)
	}
}
