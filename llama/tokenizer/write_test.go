package tokenizer

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tillerlm/tiller/llama/chat"
)

// TestWriteByteLevelLlama3IDs writes the full-size file and checks that HF tokenizers gives every
// special token Llama 3's own id (the shared Llama 3 tokenizer.json is the reference for the order).
func TestWriteByteLevelLlama3IDs(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 128256, ""))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	ref := loadLlama3(t)
	specials := Llama3SpecialTokens()
	if len(specials) != 256 || specials[255] != "<|reserved_special_token_247|>" {
		t.Fatalf("Llama3SpecialTokens: %d tokens ending %q", len(specials), specials[len(specials)-1])
	}
	for i, tok := range specials {
		want := int32(128000 + i)
		if id, ok := ref.TokenID(tok); !ok || id != want {
			t.Errorf("%q: Llama 3 has id %d, %v; Llama3SpecialTokens puts it at %d", tok, id, ok, want)
		}
		// Encoding the token's text, not just looking it up, shows that HF itself numbers it so.
		if ids, _ := tk.Encode(tok, false); !slices.Equal(ids, []int32{want}) {
			t.Errorf("written file: Encode(%q) = %v; want [%d]", tok, ids, want)
		}
		if !tk.IsSpecial(want) {
			t.Errorf("written file: %q (id %d) is not marked special", tok, want)
		}
	}
	if tk.VocabSize() != 128256 {
		t.Errorf("VocabSize() = %d; want 128256", tk.VocabSize())
	}
	if id, ok := tk.BOS(); !ok || id != 128000 {
		t.Errorf("BOS() = %d, %v; want 128000 from the post-processor", id, ok)
	}
}

func TestWriteByteLevelEncode(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 777, "")) // an odd size: specials at 521 … 776
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	for _, c := range []struct {
		text    string
		special bool
		want    []int32
	}{
		// The UTF-8 bytes of "héllo 👋": é is C3 A9, 👋 is F0 9F 91 8B.
		{"héllo 👋", false, []int32{'h', 0xC3, 0xA9, 'l', 'l', 'o', ' ', 0xF0, 0x9F, 0x91, 0x8B}},
		{"héllo 👋", true, []int32{521, 'h', 0xC3, 0xA9, 'l', 'l', 'o', ' ', 0xF0, 0x9F, 0x91, 0x8B}},
		{"a<|eot_id|>b", false, []int32{'a', 530, 'b'}},
		{"<|start_header_id|>x<|end_header_id|>", false, []int32{527, 'x', 528}},
		{"\x01\t\n \x7f", false, []int32{1, 9, 10, 32, 127}},
		{"<|eot_id |>", false, []int32{'<', '|', 'e', 'o', 't', '_', 'i', 'd', ' ', '|', '>'}},
	} {
		if got, err := tk.Encode(c.text, c.special); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Encode(%q, %v) = %v, %v; want %v", c.text, c.special, got, err, c.want)
		}
	}
	if got := tk.Decode([]int32{521, 'h', 'i', 530}, true); got != "hi" {
		t.Errorf("Decode with skipSpecial = %q; want \"hi\"", got)
	}
	// Unused ids between the bytes and the specials decode to nothing.
	if got := tk.Decode([]int32{'a', 256, 400, 520, 'b'}, false); got != "ab" {
		t.Errorf("Decode over unused ids = %q; want \"ab\"", got)
	}
}

// TestWriteByteLevelRoundTrip decodes the encoding of random valid UTF-8 text, drawn from every
// byte length of UTF-8 and from the characters that byte-level alphabets treat specially.
func TestWriteByteLevelRoundTrip(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 512, ""))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	alphabet := []rune("aZ09 \t\n\r\x01\x1f\x7fĀĠĊ\u00a0\u00ad©é€世界\uFFFD\U0001F44B\U0010FFFF<|>")
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		var b strings.Builder
		for i := r.IntN(40); i > 0; i-- {
			if r.IntN(10) == 0 {
				b.WriteString("<|eot_id|>")
			} else {
				b.WriteRune(alphabet[r.IntN(len(alphabet))])
			}
		}
		text := b.String()
		ids, err := tk.Encode(text, false)
		if err != nil {
			t.Fatalf("Encode(%q): %v", text, err)
		}
		if len(ids) != len(text)-9*strings.Count(text, "<|eot_id|>") {
			t.Errorf("Encode(%q) gave %d ids; want one per byte, one per <|eot_id|>", text, len(ids))
		}
		if got := tk.Decode(ids, false); got != text {
			t.Errorf("Decode(Encode(%q)) = %q", text, got)
		}
	}
}

func TestWriteByteLevelFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenizer.json")
	if err := WriteByteLevel(path, 512); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The vocabulary is written in id order, starting with byte 0 ("Ā") and ending with the
	// specials, which read as themselves (not as \u003c…).
	s := strings.Join(strings.Fields(string(data)), "") // no token here holds whitespace
	if a, z, e := strings.Index(s, `"Ā":0,"ā":1`), strings.Index(s, `"ÿ":255,"<|begin_of_text|>":256`), strings.Index(s, `"<|reserved_special_token_247|>":511}`); a < 0 || z < a || e < z {
		t.Errorf("vocabulary not in id order: positions %d %d %d", a, z, e)
	}
	var file struct {
		AddedTokens []struct{ ID int } `json:"added_tokens"`
	}
	if !strings.Contains(string(data), `"content": "<|eot_id|>"`) {
		t.Error("special tokens are escaped in the file")
	}
	if err := json.Unmarshal(data, &file); err != nil || len(file.AddedTokens) != 256 || file.AddedTokens[9].ID != 265 {
		t.Errorf("added_tokens: %v, %d entries", err, len(file.AddedTokens))
	}
	for _, bad := range []int{0, 511, -5} {
		err := WriteByteLevel(filepath.Join(dir, "small.json"), bad)
		wantErr(t, "small vocab", err, "vocab size", "512")
	}
	err = WriteByteLevel(filepath.Join(dir, "missing", "tokenizer.json"), 512)
	wantErr(t, "missing folder", err, "missing")
}

func TestWriteConfig(t *testing.T) {
	for _, template := range []string{chat.Llama3(), chat.Llama31()} {
		dir := byteLevelDir(t, 1000, "")
		if err := WriteConfig(filepath.Join(dir, "tokenizer_config.json"), BeginOfText, EndOfTurn, template); err != nil {
			t.Fatal(err)
		}
		tk, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, tk)
		tmpl, err := tk.ChatTemplate()
		if bos, _ := tk.BOS(); bos != 744 || !slices.Equal(tk.EOS(), []int32{753}) || err != nil || tmpl.Text() != strings.TrimSuffix(template, "\n") {
			t.Errorf("written config read back as BOS %d, EOS %v, template %v; want 744, [753] and the template", bos, tk.EOS(), err)
		}
	}
	dir := byteLevelDir(t, 512, "")
	path := filepath.Join(dir, "tokenizer_config.json")
	if err := WriteConfig(path, BeginOfText, EndOfText, ""); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "chat_template") || !utf8.Valid(data) {
		t.Errorf("config without a template: %s", data)
	}
}
