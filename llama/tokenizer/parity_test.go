package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
)

// parityFixture is testdata/llama3_ids.json, written by scripts/reference/make_fixtures.py with
// Python's HF tokenizers on the shared Llama 3 tokenizer.json.
const parityFixture = "testdata/llama3_ids.json"

type parityFile struct {
	Tokenizer         string `json:"tokenizer"` // relative to the repository root
	TokenizersVersion string `json:"tokenizers_version"`
	Cases             []struct {
		Name             string  `json:"name"`
		Text             string  `json:"text"`
		AddSpecialTokens bool    `json:"add_special_tokens"`
		IDs              []int32 `json:"ids"`
	} `json:"cases"`
	Chats []struct {
		Name                string         `json:"name"`
		Style               string         `json:"style"`
		Messages            []chat.Message `json:"messages"`
		AddGenerationPrompt bool           `json:"add_generation_prompt"`
		Text                string         `json:"text"`
		IDs                 []int32        `json:"ids"`
	} `json:"chats"`
}

// TestHFParity checks tiller against ids HF tokenizers produced in Python: every case's ids
// exactly, the round trip through Decode, and for chats RenderChat's text and EncodeChat's ids.
// A missing fixture fails the test; without the Llama 3 tokenizer it skips.
func TestHFParity(t *testing.T) {
	data, err := os.ReadFile(parityFixture)
	if err != nil {
		t.Fatalf("the HF parity fixture is missing (make it with scripts/reference/make_fixtures.sh): %v", err)
	}
	var fx parityFile
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatalf("%s: %v", parityFixture, err)
	}
	if len(fx.Cases) < 40 || len(fx.Chats) < 8 {
		t.Fatalf("%s holds %d cases and %d chats; want at least 40 and 8", parityFixture, len(fx.Cases), len(fx.Chats))
	}
	tk := loadLlama3(t) // the fixture's tokenizer field names the same file, Meta's Llama 3 tokenizer.json
	bos := tk.Decode([]int32{128000}, false)

	for _, c := range fx.Cases {
		name := c.Name + map[bool]string{true: "/special", false: "/plain"}[c.AddSpecialTokens]
		got, pieces, err := tk.Pieces(c.Text, c.AddSpecialTokens)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(got, c.IDs) {
			i := firstDiff(got, c.IDs)
			t.Errorf("%s: Encode(%q) differs from HF at index %d (piece %q):\n got  %v\n want %v",
				name, c.Text, i, pieceAt(pieces, i), got, c.IDs)
			continue
		}
		// A byte-level BPE without a normalizer loses nothing: Decode gives the text back, with
		// the post-processor's <|begin_of_text|> in front when special tokens were added.
		want := c.Text
		if c.AddSpecialTokens {
			want = bos + want
		}
		if back := tk.Decode(c.IDs, false); back != want {
			t.Errorf("%s: Decode(ids) = %q; want %q", name, back, want)
		}
		if !strings.Contains(c.Text, "<|") {
			if back := tk.Decode(c.IDs, true); back != c.Text {
				t.Errorf("%s: Decode(ids, skipSpecial) = %q; want %q", name, back, c.Text)
			}
		}
	}

	// The chats were rendered in Python by the Llama 3 and 3.1 formats written out; tiller renders
	// them with the templates it writes into checkpoints.
	templates := map[string]string{"llama3": chat.Llama3(), "llama3.1": chat.Llama31()}
	for _, c := range fx.Chats {
		name := c.Name
		if len(c.Messages) == 0 {
			continue // transformers refuses an empty conversation, and so does tiller (package chat)
		}
		ct := *tk
		tmpl, err := chat.New(templates[c.Style], c.Style, chat.Specials{BOS: "<|begin_of_text|>", EOS: "<|eot_id|>"})
		if err != nil {
			t.Fatalf("%s: style %q: %v", name, c.Style, err)
		}
		ct.SetChatTemplate(tmpl)
		text, err := ct.RenderChat(c.Messages, c.AddGenerationPrompt)
		if err != nil {
			t.Errorf("%s: RenderChat: %v", name, err)
			continue
		}
		if text != c.Text {
			t.Errorf("%s: RenderChat =\n%q\nwant\n%q", name, text, c.Text)
		}
		ids, err := ct.EncodeChat(c.Messages, c.AddGenerationPrompt)
		if err != nil {
			t.Errorf("%s: EncodeChat: %v", name, err)
			continue
		}
		if !slices.Equal(ids, c.IDs) {
			t.Errorf("%s: EncodeChat differs from HF at index %d:\n got  %v\n want %v", name, firstDiff(ids, c.IDs), ids, c.IDs)
		}
		if back := ct.Decode(c.IDs, false); back != c.Text {
			t.Errorf("%s: Decode(ids) = %q; want the rendered text", name, back)
		}
	}
}

func firstDiff(a, b []int32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func pieceAt(pieces []string, i int) string {
	if i < len(pieces) {
		return pieces[i]
	}
	return "(none)"
}
