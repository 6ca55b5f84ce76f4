package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// streamAll feeds ids one by one and returns what each Add returned, then Flush's text last.
func streamAll(s *Stream, ids []int32) []string {
	out := make([]string, 0, len(ids)+1)
	for _, id := range ids {
		out = append(out, s.Add(id))
	}
	return append(out, s.Flush())
}

// TestStreamBytes uses the byte-level tokenizer, where every byte is its own token, so that a
// 4-byte emoji and 3-byte CJK characters arrive split over several tokens.
func TestStreamBytes(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 600, ""))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	text := "a👋世é"
	ids, _ := tk.Encode(text, false)
	got := streamAll(tk.NewStream(false), ids)
	// One entry per byte token, then Flush: each character appears with its last byte.
	want := []string{"a", "", "", "", "👋", "", "", "世", "", "é", ""}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("stream of %q = %q; want %q", text, got, want)
	}
}

// TestStreamLlama3 streams real Llama 3 tokens, where byte-level merges cut characters at odd
// places (62904 is " " plus the first three bytes of 👋), and checks that no piece ever holds a
// broken character and the pieces join to Decode of the whole.
func TestStreamLlama3(t *testing.T) {
	tk := loadLlama3(t)
	for _, text := range []string{
		"héllo 👋 world",
		"family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵, 你好，世界！日本語のテキスト。한국어",
		"<|begin_of_text|>Say 🤔<|eot_id|> then more 🎉🎉🎉",
		"\uFFFD is a real replacement character, and so is this: \uFFFD",
	} {
		ids, err := tk.Encode(text, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, skip := range []bool{false, true} {
			got := streamAll(tk.NewStream(skip), ids)
			if joined, whole := strings.Join(got, ""), tk.Decode(ids, skip); joined != whole {
				t.Errorf("skip=%v: stream joins to %q; Decode gives %q", skip, joined, whole)
			}
			for i, piece := range got {
				if !utf8.ValidString(piece) || (strings.ContainsRune(piece, utf8.RuneError) && !strings.Contains(text, "\uFFFD")) {
					t.Errorf("skip=%v: piece %d %q holds a broken character", skip, i, piece)
				}
			}
		}
	}
	// The emoji tokens: the first (" \xF0\x9F\x91") gives nothing, the second gives " 👋" whole.
	s := tk.NewStream(false)
	if a, b := s.Add(62904), s.Add(233); a != "" || b != " 👋" {
		t.Errorf("Add(62904), Add(233) = %q, %q; want \"\", \" 👋\"", a, b)
	}
}

// TestStreamFlushUnfinished checks that Flush hands out an unfinished character as U+FFFD, as
// Decode does, and that the stream goes on cleanly after it.
func TestStreamFlushUnfinished(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 512, ""))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	s := tk.NewStream(false)
	if a, b := s.Add(0xE4), s.Add(0xBD); a != "" || b != "" {
		t.Fatalf("Add of two bytes of 你 = %q, %q; want nothing yet", a, b)
	}
	if got, want := s.Flush(), tk.Decode([]int32{0xE4, 0xBD}, false); got != want || got != "\uFFFD" {
		t.Errorf("Flush = %q; want %q (one U+FFFD, as Decode)", got, want)
	}
	if got := s.Flush(); got != "" {
		t.Errorf("second Flush = %q; want nothing", got)
	}
	if got := s.Add('o') + s.Add('k'); got != "ok" {
		t.Errorf("after Flush, stream gives %q; want \"ok\"", got)
	}
}

// TestStreamSpecialAndNUL checks skipped special tokens and the NUL byte token, which Decode
// leaves out: both add no text, and the stream does not stall behind them.
func TestStreamSpecialAndNUL(t *testing.T) {
	tk := loadLlama3(t)
	ids := []int32{128000, 9906, 188, 1917, 128009, 0} // <|begin_of_text|> Hello NUL " world" <|eot_id|> "!"
	got := streamAll(tk.NewStream(true), ids)
	want := []string{"", "Hello", "", " world", "", "!", ""}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("stream = %q; want %q", got, want)
	}
}

// TestStreamGarbageBounded feeds a continuation byte forever, which never forms a character: the
// stream must emit U+FFFD after maxPending tokens rather than hold a window that grows, and its
// window must stay small over a long generation.
func TestStreamGarbageBounded(t *testing.T) {
	tk, err := Load(byteLevelDir(t, 512, ""))
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, tk)
	s := tk.NewStream(false)
	var out strings.Builder
	for i := 0; i < 10000; i++ {
		id := int32(0x80)
		if i%100 == 0 { // runs of 99 stray continuation bytes, far more than maxPending

			id = 'x'
		}
		out.WriteString(s.Add(id))
		if len(s.ids) > 4*maxPending+64 {
			t.Fatalf("after %d tokens the window holds %d ids; want it bounded", i+1, len(s.ids))
		}
	}
	out.WriteString(s.Flush())
	if n := strings.Count(out.String(), "x"); n != 100 {
		t.Errorf("stream gave %d x; want 100", n)
	}
	if !strings.Contains(out.String(), "\uFFFD") {
		t.Error("stream never showed the invalid bytes as U+FFFD")
	}
}

// TestStreamWindowSmall checks that a long, well-formed generation keeps the window small, so each
// Add costs the same at token 10 and at token 10000.
func TestStreamWindowSmall(t *testing.T) {
	tk := loadLlama3(t)
	ids, _ := tk.Encode(strings.Repeat("Joy and trust 🌿, 喜び. ", 500), false)
	s := tk.NewStream(false)
	var out strings.Builder
	for i, id := range ids {
		out.WriteString(s.Add(id))
		if len(s.ids) > 2*64+maxPending {
			t.Fatalf("after %d tokens the window holds %d ids; want it bounded", i+1, len(s.ids))
		}
	}
	out.WriteString(s.Flush())
	if out.String() != tk.Decode(ids, false) {
		t.Error("long stream does not join to Decode of the whole")
	}
}
