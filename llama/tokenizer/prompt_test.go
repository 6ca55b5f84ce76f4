package tokenizer

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTextJSON(t *testing.T) {
	var raw, chat Text
	if err := json.Unmarshal([]byte(`"hello"`), &raw); err != nil || raw.IsChat() || raw.Raw != "hello" {
		t.Errorf("string: %+v %v", raw, err)
	}
	if err := json.Unmarshal([]byte(` [{"role":"user","content":"hi"}]`), &chat); err != nil || !chat.IsChat() || chat.Messages[0].Content != "hi" {
		t.Errorf("messages: %+v %v", chat, err)
	}
	for _, bad := range []string{`[]`, `3`, `{"role":"user"}`} {
		var x Text
		if err := json.Unmarshal([]byte(bad), &x); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	b, _ := json.Marshal(chat)
	if !strings.Contains(string(b), `"role":"user"`) {
		t.Errorf("marshal: %s", b)
	}
	tk := loadLlama3(t)
	ids, err := tk.EncodeText(chat, true)
	if err != nil || ids[0] != 128000 || ids[len(ids)-1] != 271 {
		t.Errorf("chat ids %v %v", ids, err)
	}
	ids, err = tk.EncodeText(raw, true)
	if err != nil || ids[0] != 128000 || len(ids) != 2 {
		t.Errorf("raw ids %v %v", ids, err)
	}
}
