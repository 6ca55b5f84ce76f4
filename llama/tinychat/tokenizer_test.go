package tinychat

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

// The committed tokenizer's layout (scripts/tinychat/train_tokenizer.py): 2032 BPE ids, then the
// first 16 of Llama 3's special tokens.
const (
	vocabSize    = 2048
	specialCount = 16
	firstSpecial = vocabSize - specialCount
)

// loadTokenizer reads this folder's tokenizer.json and tokenizer_config.json.
func loadTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tk, err := tokenizer.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tk.Close() })
	return tk
}

func TestTokenizerSpecialTokens(t *testing.T) {
	tk := loadTokenizer(t)
	if got := tk.VocabSize(); got != vocabSize {
		t.Fatalf("VocabSize %d, want %d", got, vocabSize)
	}
	for i, tok := range tokenizer.Llama3SpecialTokens()[:specialCount] {
		id, ok := tk.TokenID(tok)
		if !ok || id != int32(firstSpecial+i) || !tk.IsSpecial(id) {
			t.Errorf("%s: id %d (known %v, special %v), want special id %d", tok, id, ok, tk.IsSpecial(id), firstSpecial+i)
		}
	}
	want := map[string]int32{tokenizer.BeginOfText: 2032, tokenizer.EndOfText: 2033, tokenizer.StartHeaderID: 2038,
		tokenizer.EndHeaderID: 2039, tokenizer.EndOfTurn: 2041}
	for tok, id := range want {
		if got, _ := tk.TokenID(tok); got != id {
			t.Errorf("%s has id %d, want %d", tok, got, id)
		}
	}
	if bos, ok := tk.BOS(); !ok || bos != 2032 {
		t.Errorf("BOS %d (%v), want 2032", bos, ok)
	}
	if eos := tk.EOS(); !slices.Equal(eos, []int32{2041}) {
		t.Errorf("EOS %v, want [2041] (<|eot_id|>)", eos)
	}
	if eot, ok := tk.EndOfTurn(); !ok || eot != 2041 {
		t.Errorf("the chat template's end of turn is %d (%v), want 2041 (<|eot_id|>)", eot, ok)
	}
	// Llama 3's format: no system block is added in front of the user's turn.
	if text, err := tk.RenderChat([]chat.Message{{Role: "user", Content: "Hi"}}, false); err != nil || text != "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" {
		t.Errorf("RenderChat = %q, %v; want Llama 3's format", text, err)
	}
	// With special tokens added, the post-processor puts <|begin_of_text|> in front, as Llama 3's.
	ids, err := tk.Encode("Hello", true)
	if err != nil || len(ids) < 2 || ids[0] != 2032 {
		t.Errorf("Encode(Hello, true) = %v, %v; want <|begin_of_text|> first", ids, err)
	}
}

func TestTokenizerRoundTrip(t *testing.T) {
	tk := loadTokenizer(t)
	for _, c := range Corpus(DefaultSeed, 300) {
		for _, m := range c.Messages {
			ids, err := tk.Encode(m.Content, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := tk.Decode(ids, false); got != m.Content {
				t.Fatalf("conversation %d: Decode(Encode(%q)) = %q", c.ID, m.Content, got)
			}
		}
	}
	// Text outside the corpus still encodes, byte by byte where it must.
	for _, text := range []string{"Zebra quartz ✓ 2024: naïve café!", "\t\n  ", "日本語"} {
		ids, err := tk.Encode(text, false)
		if err != nil || tk.Decode(ids, false) != text {
			t.Errorf("%q does not round-trip: %v, %v", text, ids, err)
		}
	}
}

func TestTokenizerChat(t *testing.T) {
	tk := loadTokenizer(t)
	c := Corpus(DefaultSeed, 1)[0]
	msgs := chatOf(c)
	text, err := tk.RenderChat(msgs, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + c.User().Content +
		"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" + c.Reply().Content + "<|eot_id|>"
	if text != want {
		t.Fatalf("RenderChat:\n got %q\nwant %q", text, want)
	}
	ids, err := tk.EncodeChat(msgs, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.Decode(ids, false); got != text {
		t.Errorf("Decode(EncodeChat) = %q, want %q", got, text)
	}
	// The header and turn tokens are single ids, and so are the role names and the blank line.
	head := []int32{2032, 2038}
	if !slices.Equal(ids[:2], head) || ids[len(ids)-1] != 2041 {
		t.Errorf("ids %v: want %v first and <|eot_id|> last", ids, head)
	}
	for _, piece := range []string{"user", "assistant", "ĊĊ"} {
		if _, ok := tk.TokenID(piece); !ok {
			t.Errorf("%q is not one token", piece)
		}
	}
	// A prompt ends with the assistant header, ready for the reply.
	prompt, err := tk.RenderChat(msgs[:1], true)
	if err != nil || !strings.HasSuffix(prompt, "<|start_header_id|>assistant<|end_header_id|>\n\n") {
		t.Errorf("generation prompt %q, %v", prompt, err)
	}
}

// chatOf returns a conversation's messages as chat messages.
func chatOf(c Conversation) []chat.Message {
	msgs := make([]chat.Message, len(c.Messages))
	for i, m := range c.Messages {
		msgs[i] = chat.Message{Role: m.Role, Content: m.Content}
	}
	return msgs
}

// TestTokenizerLengths checks that conversations fit the tiny model's context: the design aims
// for most under 96 tokens, the chat format's 11 special and header tokens included.
func TestTokenizerLengths(t *testing.T) {
	tk := loadTokenizer(t)
	var lens []int
	for _, c := range Corpus(DefaultSeed, 2000) {
		ids, err := tk.EncodeChat(chatOf(c), false)
		if err != nil {
			t.Fatal(err)
		}
		lens = append(lens, len(ids))
	}
	slices.Sort(lens)
	sum := 0
	for _, n := range lens {
		sum += n
	}
	mean := float64(sum) / float64(len(lens))
	p99, longest := lens[len(lens)*99/100], lens[len(lens)-1]
	t.Logf("tokens per conversation: mean %.1f, median %d, p99 %d, max %d", mean, lens[len(lens)/2], p99, longest)
	if mean > 56 || longest > 96 {
		t.Errorf("conversations are longer than planned: mean %.1f tokens, max %d", mean, longest)
	}
}

// TestTokenizerEmotionWords checks that every emotion adjective is one token after a space, so a
// metric can compare the logits of " happy" and " sad" directly.
func TestTokenizerEmotionWords(t *testing.T) {
	tk := loadTokenizer(t)
	for _, e := range Emotions[:5] {
		for _, level := range feelings[e] {
			for _, w := range level {
				if _, ok := tk.TokenID("Ġ" + w); !ok {
					t.Errorf("%s word %q is not a single token after a space", e, w)
				}
			}
		}
	}
}

// TestTokenizerConfig checks that the committed tokenizer_config.json is what
// scripts/tinychat/write.go writes now.
func TestTokenizerConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenizer_config.json")
	if err := tokenizer.WriteConfig(path, tokenizer.BeginOfText, tokenizer.EndOfTurn, chat.Llama3()); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("tokenizer_config.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("tokenizer_config.json differs from what scripts/tinychat/write.go writes; run scripts/tinychat/make.sh")
	}
}
