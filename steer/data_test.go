package steer

import (
	"slices"
	"testing"

	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/steer/data"
)

// reply is the last message's content of a chat text (its raw text otherwise).
func reply(t tokenizer.Text) string {
	if t.IsChat() {
		return t.Messages[len(t.Messages)-1].Content
	}
	return t.Raw
}

// The shipped pair sets: at least 60 conversational pairs each, both sides a user turn and an
// assistant reply, the same user turn on both sides, replies of matched length; the held-out
// prompts: at least 50, none of them a user turn of any pair; the starter lexicon: joy and trust.
func TestShippedData(t *testing.T) {
	pairPrompts := map[string]string{}
	for _, name := range data.PairSets {
		b, file, ok := data.File(name)
		if !ok {
			t.Fatalf("no shipped set %s", name)
		}
		pairs, err := ParsePairs(file, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(pairs) < 60 {
			t.Errorf("%s: %d pairs, want >= 60", file, len(pairs))
		}
		var posWords, negWords int
		for _, p := range pairs {
			for _, side := range []tokenizer.Text{p.Positive, p.Negative} {
				if !side.IsChat() || len(side.Messages) != 2 || side.Messages[0].Role != "user" || side.Messages[1].Role != "assistant" {
					t.Fatalf("%s:%d: want a user turn and an assistant reply on each side", file, p.Line)
				}
			}
			if PromptKey(p.Positive) != PromptKey(p.Negative) {
				t.Errorf("%s:%d: the two sides have different user turns", file, p.Line)
			}
			pw, nw := len(Words(reply(p.Positive))), len(Words(reply(p.Negative)))
			if r := float64(pw) / float64(nw); r < 0.7 || r > 1.35 {
				t.Errorf("%s:%d: replies of %d and %d words are not matched in length", file, p.Line, pw, nw)
			}
			posWords, negWords = posWords+pw, negWords+nw
			pairPrompts[PromptKey(p.Positive)] = file
		}
		if r := float64(posWords) / float64(negWords); r < 0.85 || r > 1.15 {
			t.Errorf("%s: mean reply lengths differ by a ratio of %.2f", file, r)
		}
	}
	b, file, _ := data.File(data.Prompts)
	prompts, err := ParsePrompts(file, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(prompts) < 50 {
		t.Errorf("%s: %d prompts, want >= 50", file, len(prompts))
	}
	seen := map[string]bool{}
	for _, p := range prompts {
		k := PromptKey(p.Text)
		if in, ok := pairPrompts[k]; ok {
			t.Errorf("%s:%d: %q is also a prompt of %s", file, p.Line, p.Text.Raw, in)
		}
		if seen[k] {
			t.Errorf("%s:%d: %q appears twice", file, p.Line, p.Text.Raw)
		}
		seen[k] = true
	}
	b, file, _ = data.File(data.Lexicon)
	lx, err := ParseLexicon(file, b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lx.Categories, []string{"joy", "trust"}) || !lx.Has("happy", "joy") || !lx.Has("reliable", "trust") {
		t.Errorf("starter lexicon: categories %v", lx.Categories)
	}
	if _, _, ok := data.File("surprise"); ok {
		t.Error("a set that is not shipped was found")
	}
}
