package attrib

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"
	"github.com/tillerlm/tiller/llama/tokenizer/tokenizertest"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

// The diagnostic sets shipped in tasks/: at least 40 pairs each, every pair a user message and an
// assistant reply on both sides with the same user message, a logprob metric, unique ids, and
// clean and corrupt of the same token length under Meta's Llama 3 tokenizer (when
// $TILLER_LLAMA3_TOKENIZER gives it), in both the Llama 3 and the Llama 3.1 chat format (the
// reply left open for the continuation, as Encode renders it).
func TestTaskSets(t *testing.T) {
	var toks []*tokenizer.Tokenizer
	if path := os.Getenv(tokenizertest.Llama3Env); path != "" {
		for _, template := range []string{chat.Llama3(), chat.Llama31()} {
			tok, err := tokenizer.FromFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer tok.Close()
			tmpl, err := chat.New(template, "built-in", chat.Specials{BOS: tokenizer.BeginOfText, EOS: tokenizer.EndOfTurn})
			if err != nil {
				t.Fatal(err)
			}
			tok.SetChatTemplate(tmpl)
			toks = append(toks, tok)
		}
	} else {
		t.Logf("%s is not set: the token lengths under Meta's Llama 3 tokenizer are not checked", tokenizertest.Llama3Env)
	}
	files, _ := filepath.Glob("tasks/*.jsonl")
	want := []string{"tasks/anger.jsonl", "tasks/joy.jsonl", "tasks/sadness.jsonl", "tasks/trust.jsonl"}
	if strings.Join(files, " ") != strings.Join(want, " ") {
		t.Fatalf("task sets %v, want %v", files, want)
	}
	readme, err := os.ReadFile("tasks/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".jsonl")
		if !strings.Contains(string(readme), name+".jsonl") {
			t.Errorf("tasks/README.md does not describe %s.jsonl", name)
		}
		pairs, err := ReadPairs(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(pairs) < 40 {
			t.Errorf("%s: %d pairs, want at least 40", f, len(pairs))
		}
		ids := map[string]bool{}
		for _, p := range pairs {
			where := f + ":" + p.ID
			if p.ID == "" || ids[p.ID] || !strings.HasPrefix(p.ID, name+"-") {
				t.Errorf("%s line %d: id %q missing, repeated or not %s-…", f, p.Line, p.ID, name)
			}
			ids[p.ID] = true
			c, k := p.Clean.Messages, p.Corrupt.Messages
			if len(c) != 2 || len(k) != 2 || c[0].Role != "user" || k[0].Role != "user" || c[1].Role != "assistant" || k[1].Role != "assistant" {
				t.Errorf("%s: want a user message and an assistant reply on both sides", where)
				continue
			}
			if c[0].Content != k[0].Content || c[1].Content == k[1].Content {
				t.Errorf("%s: the user messages must be the same and the replies differ", where)
			}
			if p.Metric.LogitDiff != nil || !strings.HasPrefix(p.Metric.LogProb, " ") {
				t.Errorf("%s: want a logprob metric whose continuation starts with a space", where)
			}
			for which, tok := range toks {
				ci, err := EncodePrompt(tok, p.Clean)
				if err != nil {
					t.Fatal(err)
				}
				ki, err := EncodePrompt(tok, p.Corrupt)
				if err != nil {
					t.Fatal(err)
				}
				if len(ci) != len(ki) {
					_, cp, _ := tok.Pieces(c[1].Content, false)
					_, kp, _ := tok.Pieces(k[1].Content, false)
					t.Errorf("%s (%s): clean %d tokens, corrupt %d\n  clean   %q\n  corrupt %q", where, []string{"llama3", "llama3.1"}[which], len(ci), len(ki), cp, kp)
					break
				}
			}
		}
	}
}
