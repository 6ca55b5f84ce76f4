package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
)

// llama31Config is a tokenizer_config.json shaped like Llama 3.1 Instruct's: bos_token as an
// AddedToken object, eos_token as a string, and a chat template.
const llama31Config = `{
  "added_tokens_decoder": {"128000": {"content": "<|begin_of_text|>", "special": true}},
  "bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>", "lstrip": false},
  "eos_token": "<|eot_id|>",
  "chat_template": "{{- bos_token }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}",
  "clean_up_tokenization_spaces": true,
  "model_max_length": 131072,
  "tokenizer_class": "PreTrainedTokenizerFast"
}`

func TestLoadLlama31Dir(t *testing.T) {
	tk, err := Load(llama3Dir(t, llama31Config))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	if id, ok := tk.BOS(); !ok || id != 128000 {
		t.Errorf("BOS() = %d, %v; want 128000, true", id, ok)
	}
	if got := tk.EOS(); !slices.Equal(got, []int32{128009}) {
		t.Errorf("EOS() = %v; want [128009] (<|eot_id|>)", got)
	}
	if text, err := tk.RenderChat([]chat.Message{{Role: "user", Content: "x"}}, false); err != nil || text != "<|begin_of_text|>Cutting Knowledge Date: December 2023\n" {
		t.Errorf("RenderChat = %q, %v", text, err)
	}
	if tk.VocabSize() != 128256 {
		t.Errorf("VocabSize() = %d; want 128256", tk.VocabSize())
	}
}

// TestLoadLlama3BaseConfig and TestLoadWithoutConfig use a written byte-level tokenizer with
// Llama 3's special ids, which loads in milliseconds; TestLoadLlama31Dir reads the real one.
func TestLoadLlama3BaseConfig(t *testing.T) {
	// Llama 3 base: eos is <|end_of_text|>.
	tk, err := Load(byteLevelDir(t, 128256, `{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
		"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}`))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	if got := tk.EOS(); !slices.Equal(got, []int32{128001}) {
		t.Errorf("EOS() = %v; want [128001]", got)
	}
}

func TestLoadWithoutConfig(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 128256, ""))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	// Without a config, BOS comes from the post-processor's template and EOS is unknown.
	if id, ok := tk.BOS(); !ok || id != 128000 {
		t.Errorf("BOS() = %d, %v; want 128000, true", id, ok)
	}
	if got := tk.EOS(); len(got) != 0 {
		t.Errorf("EOS() = %v; want none", got)
	}
	if _, err := tk.ChatTemplate(); !errors.Is(err, ErrNoChatTemplate) {
		t.Errorf("ChatTemplate() error = %v; want ErrNoChatTemplate", err)
	}
	if !strings.HasSuffix(tk.Path(), "tokenizer.json") {
		t.Errorf("Path() = %q", tk.Path())
	}
}

// TestEncodeKnownIDs checks ids that are well known for Llama 3 (and cl100k, whose first 100k
// tokens Llama 3 shares); the HF parity test covers many more.
func TestEncodeKnownIDs(t *testing.T) {
	tk := loadLlama3(t)
	for _, c := range []struct {
		text    string
		special bool
		want    []int32
	}{
		{"Hello world", true, []int32{128000, 9906, 1917}},
		{"Hello world", false, []int32{9906, 1917}},
		{"", true, []int32{128000}},
		{"", false, []int32{}},
		{"<|eot_id|>x", false, []int32{128009, 87}},
		{"a\x1cb", false, []int32{64, 216, 65}}, // \x1c is the byte token 'Ĝ'
	} {
		got, err := tk.Encode(c.text, c.special)
		if err != nil {
			t.Fatalf("Encode(%q, %v): %v", c.text, c.special, err)
		}
		if got == nil || !slices.Equal(got, c.want) {
			t.Errorf("Encode(%q, %v) = %#v; want %v", c.text, c.special, got, c.want)
		}
	}
}

func TestPieces(t *testing.T) {
	tk := loadLlama3(t)
	text := "héllo 👋\n"
	ids, pieces, err := tk.Pieces(text, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(pieces) || pieces[0] != "<|begin_of_text|>" {
		t.Fatalf("Pieces(%q) = %v, %q", text, ids, pieces)
	}
	// Every piece is a vocabulary string whose id is the one returned beside it, and mapping the
	// byte-level characters back to bytes gives the text.
	runeToByte := map[rune]byte{}
	for b, r := range byteToRune {
		runeToByte[r] = byte(b)
	}
	var bytes []byte
	for i, p := range pieces {
		if id, ok := tk.TokenID(p); !ok || id != ids[i] {
			t.Errorf("piece %d %q: TokenID = %d, %v; want %d", i, p, id, ok, ids[i])
		}
		if i == 0 {
			continue
		}
		for _, r := range p {
			bytes = append(bytes, runeToByte[r])
		}
	}
	if string(bytes) != text {
		t.Errorf("pieces spell %q; want %q", bytes, text)
	}
}

func TestTokenID(t *testing.T) {
	tk := loadLlama3(t)
	for tok, want := range map[string]int32{
		"<|begin_of_text|>":              128000,
		"<|eot_id|>":                     128009,
		"<|reserved_special_token_247|>": 128255,
		"Hello":                          9906,
		"Ġworld":                         1917,
		"!":                              0,
	} {
		if id, ok := tk.TokenID(tok); !ok || id != want {
			t.Errorf("TokenID(%q) = %d, %v; want %d, true", tok, id, ok, want)
		}
	}
	for _, tok := range []string{"<|nope|>", "", " world", "<|eot_id|> "} {
		if id, ok := tk.TokenID(tok); ok {
			t.Errorf("TokenID(%q) = %d, true; want not found", tok, id)
		}
	}
	if !tk.IsSpecial(128009) || tk.IsSpecial(1917) {
		t.Errorf("IsSpecial(128009), IsSpecial(1917) = %v, %v; want true, false", tk.IsSpecial(128009), tk.IsSpecial(1917))
	}
}

func TestDecode(t *testing.T) {
	tk := loadLlama3(t)
	for _, c := range []struct {
		ids  []int32
		skip bool
		want string
	}{
		{[]int32{128000, 9906, 1917, 128009}, false, "<|begin_of_text|>Hello world<|eot_id|>"},
		{[]int32{128000, 9906, 1917, 128009}, true, "Hello world"},
		{nil, false, ""},
		// Unknown ids (past the vocabulary, or negative) are skipped, as HF skips them.
		{[]int32{9906, 999999, -1, 1917}, false, "Hello world"},
		// 62904 is " \xF0\x9F\x91" and 233 is "\x8B": alone, an unfinished emoji.
		{[]int32{62904}, false, " \uFFFD"},
		{[]int32{62904, 233}, false, " 👋"},
		// 188 is the byte token for NUL, which cannot cross the C boundary: it is left out.
		{[]int32{9906, 188, 1917}, false, "Hello world"},
		{[]int32{188}, false, ""},
	} {
		if got := tk.Decode(c.ids, c.skip); got != c.want {
			t.Errorf("Decode(%v, %v) = %q; want %q", c.ids, c.skip, got, c.want)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tk := loadLlama3(t)
	for _, text := range []string{
		"plain", " leading and trailing ", "\t\r\n\v\f", "\x01\x7f\x1b[0m", "ünïcödé", "日本語", "👩🏾‍💻🏳️‍🌈",
		"\uFFFD\uFEFF\U0010FFFF", "<|eot_id|><|begin_of_text|>", strings.Repeat("ab ", 1000),
	} {
		ids, err := tk.Encode(text, false)
		if err != nil {
			t.Fatalf("Encode(%q): %v", text, err)
		}
		if got := tk.Decode(ids, false); got != text {
			t.Errorf("Decode(Encode(%q)) = %q", text, got)
		}
	}
}

// TestAddBOSFlags checks that add_bos_token and add_eos_token replace the post-processor, as in
// transformers' LlamaTokenizerFast, and that a text starting with <|begin_of_text|> keeps it. The
// byte-level tokenizer has 1000 ids: <|begin_of_text|> is 744, <|end_of_text|> 745; "Hi" is 72 105.
func TestAddBOSFlags(t *testing.T) {
	for _, c := range []struct {
		config string
		want   []int32
	}{
		{`{"bos_token": "<|begin_of_text|>", "add_bos_token": false}`, []int32{744, 72, 105}},
		{`{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_eos_token": true}`,
			[]int32{744, 744, 72, 105, 745}},
		{`{"bos_token": "<|begin_of_text|>", "add_bos_token": true}`, []int32{744, 744, 72, 105}},
		{`{"bos_token": "<|begin_of_text|>"}`, []int32{744, 744, 72, 105}}, // the post-processor's BOS
	} {
		tk, err := Load(byteLevelDir(t, 1000, c.config))
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, tk)
		ids, pieces, err := tk.Pieces("<|begin_of_text|>Hi", true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, c.want) || len(pieces) != len(ids) || (ids[len(ids)-1] == 745) != (pieces[len(ids)-1] == "<|end_of_text|>") {
			t.Errorf("config %s: Pieces = %v %q; want ids %v", c.config, ids, pieces, c.want)
		}
		if plain, _ := tk.Encode("Hi", false); !slices.Equal(plain, []int32{72, 105}) {
			t.Errorf("config %s: Encode(addSpecial=false) = %v; want [72 105]", c.config, plain)
		}
	}
}

func TestClose(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 512, ""))
	if err != nil {
		t.Fatal(err)
	}
	tk.Close()
	tk.Close() // a second Close is harmless
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "closed") {
			t.Errorf("Encode after Close: recover() = %v; want a panic about a closed Tokenizer", r)
		}
	}()
	tk.Encode("x", false)
}

func TestConcurrentEncode(t *testing.T) {
	tk := loadLlama3(t)
	want, _ := tk.Encode("The quick brown fox", true)
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 50; i++ {
				if got, _ := tk.Encode("The quick brown fox", true); !slices.Equal(got, want) {
					errs <- fmt.Sprintf("concurrent Encode gave %v; want %v", got, want)
					return
				}
			}
			errs <- ""
		}()
	}
	for g := 0; g < 8; g++ {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
