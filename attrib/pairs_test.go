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

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pairs.jsonl")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadPairs(t *testing.T) {
	path := writeFile(t, `{"clean": "The cat", "corrupt": "The dog", "metric": {"logit_diff": [" sat", "#42"]}}

{"id": "x", "note": "chat", "clean": [{"role": "user", "content": "Hi"}], "corrupt": [{"role": "user", "content": "Yo"}], "metric": {"logprob": " Hello!"}}
`)
	pairs, err := ReadPairs(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 2 || pairs[0].Line != 1 || pairs[1].Line != 3 {
		t.Fatalf("pairs %+v", pairs)
	}
	if pairs[0].Clean.Raw != "The cat" || pairs[0].Metric.LogitDiff[1] != "#42" || pairs[0].Metric.Name() != "logit_diff" {
		t.Errorf("first pair %+v", pairs[0])
	}
	if !pairs[1].Clean.IsChat() || pairs[1].ID != "x" || pairs[1].Metric.LogProb != " Hello!" || pairs[1].Metric.Name() != "logprob" {
		t.Errorf("second pair %+v", pairs[1])
	}
}

// Bad input gets one error that names the file and line and says what was expected.
func TestReadPairsErrors(t *testing.T) {
	good := `{"clean": "a", "corrupt": "b", "metric": {"logprob": " c"}}`
	cases := []struct {
		content string
		want    []string
	}{
		{"", []string{"no pairs", "empty"}},
		{"\n  \n", []string{"no pairs"}},
		{good + "\n{\"clean\": \"a\", \"corrupt\": \n", []string{":2:", "malformed JSON"}},
		{good + "\n" + good + "\nnot json\n", []string{":3:", "malformed JSON"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"kl": "x"}}`, []string{":1:", `unknown metric "kl"`, "logit_diff", "logprob"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logit_diff": ["x"]}}`, []string{":1:", "two tokens"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logprob": ""}}`, []string{"continuation is empty"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logprob": "x", "logit_diff": ["a", "b"]}}`, []string{"exactly one"}},
		{`{"clean": "a", "corrupt": "b", "metric": "logprob"}`, []string{"metric"}},
		{`{"clean": "a", "metric": {"logprob": "x"}}`, []string{`missing "corrupt"`}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logprob": "x"}, "metrics": 1}`, []string{`unknown field "metrics"`}},
		{`{"clean": 7, "corrupt": "b", "metric": {"logprob": "x"}}`, []string{"clean:", "string or a list"}},
		{`{"clean": [], "corrupt": "b", "metric": {"logprob": "x"}}`, []string{"clean:", "empty list"}},
		{`["clean", "corrupt"]`, []string{":1:", "malformed JSON"}},
		{`{"clean": null, "corrupt": "b", "metric": {"logprob": "x"}}`, []string{":1:", "clean is null"}},
		{`{"clean": "a", "corrupt": "b", "metric": null}`, []string{":1:", "metric is null"}},
	}
	for _, c := range cases {
		path := writeFile(t, c.content)
		_, err := ReadPairs(path)
		if err == nil {
			t.Errorf("%q: no error", c.content)
			continue
		}
		if !strings.HasPrefix(err.Error(), path) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %q does not start with the file name on one line", c.content, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not say %q", c.content, err, w)
			}
		}
	}
	if _, err := ReadPairs(filepath.Join(t.TempDir(), "absent.jsonl")); err == nil || !strings.Contains(err.Error(), "absent.jsonl") {
		t.Errorf("missing file: %v", err)
	}
}

// llama3 returns Meta's Llama 3 tokenizer ($TILLER_LLAMA3_TOKENIZER; the test skips without it)
// with tiller's Llama 3 chat template.
func llama3(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.FromFile(tokenizertest.Llama3Path(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	tmpl, err := chat.New(chat.Llama3(), "llama3", chat.Specials{BOS: tokenizer.BeginOfText, EOS: tokenizer.EndOfTurn})
	if err != nil {
		t.Fatal(err)
	}
	tok.SetChatTemplate(tmpl)
	return tok
}

func TestEncode(t *testing.T) {
	tok := llama3(t)
	pairs, err := ParsePairs(strings.NewReader(`{"clean": "The cat sat", "corrupt": "The dog sat", "metric": {"logit_diff": [" on", "#1234"]}}
{"clean": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Lovely day!"}], "corrupt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Cloudy day."}], "metric": {"logprob": " I am glad."}}
{"clean": [{"role": "user", "content": "Hi there"}], "corrupt": [{"role": "user", "content": "Hey there"}], "metric": {"logit_diff": ["Hello", "#9906"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	ins, err := Encode(tok, pairs, EncodeOptions{Vocab: 128256, MaxPositions: 1024})
	if err != nil {
		t.Fatal(err)
	}
	raw := ins[0]
	if raw.Clean[0] != 128000 || len(raw.Clean) != 4 || raw.B != 1234 || raw.Cont != nil || raw.Shift != 0 {
		t.Errorf("raw pair: %+v", raw)
	}
	if raw.Labels[1] != "The" || raw.Labels[2] != " cat" {
		t.Errorf("labels %q", raw.Labels)
	}
	// A chat ending with the assistant's message stays inside it: no <|eot_id|> at the end, and
	// the continuation follows the reply.
	reply := ins[1]
	if last := reply.Clean[len(reply.Clean)-1]; last == 128009 || reply.Labels[len(reply.Labels)-1] != "!" {
		t.Errorf("open reply ends with %d %q", last, reply.Labels[len(reply.Labels)-1])
	}
	if want, _ := tok.Encode(" I am glad.", false); len(reply.Cont) != len(want) {
		t.Errorf("continuation %v, want %v", reply.Cont, want)
	}
	// A chat ending with the user's message opens the assistant's turn.
	open := ins[2]
	if n := len(open.Clean); open.Clean[n-1] != 271 || open.Clean[n-2] != 128007 {
		t.Errorf("the assistant's turn is not opened: %v", open.Clean[n-4:])
	}
}

func TestEncodeErrors(t *testing.T) {
	tok := llama3(t)
	cases := []struct {
		line string
		opt  EncodeOptions
		want []string
	}{
		{`{"clean": "The cat sat", "corrupt": "The elephant sat down", "metric": {"logprob": " x"}}`, EncodeOptions{Vocab: 128256},
			[]string{"line 1", "clean is 4 tokens and corrupt is 5", "--align right"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logit_diff": [" happily ever", " b"]}}`, EncodeOptions{Vocab: 128256},
			[]string{"line 1", `" happily ever" is 2 tokens`, "not one token of the vocabulary", "#ID"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logit_diff": ["#128256", " b"]}}`, EncodeOptions{Vocab: 128256},
			[]string{`token "#128256" is not in the vocabulary`, "ID < 128256"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logit_diff": ["#-3", " b"]}}`, EncodeOptions{Vocab: 128256},
			[]string{"not in the vocabulary"}},
		{`{"clean": "hello world", "corrupt": "hello there", "metric": {"logprob": " x"}}`, EncodeOptions{Vocab: 1000},
			[]string{"clean token 0 is id 128000, not in the model's vocabulary of 1000"}},
		{`{"clean": "a b c", "corrupt": "a b d", "metric": {"logprob": " e f g"}}`, EncodeOptions{Vocab: 128256, MaxPositions: 5},
			[]string{"7 tokens with the continuation", "at most 5"}},
		{`{"clean": "a", "corrupt": "b", "metric": {"logprob": "\u0000"}}`, EncodeOptions{Vocab: 128256},
			[]string{"metric logprob", "NUL"}},
	}
	for _, c := range cases {
		pairs, err := ParsePairs(strings.NewReader(c.line))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Encode(tok, pairs, c.opt)
		if err == nil {
			t.Errorf("%s: no error", c.line)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.line, err, w)
			}
		}
	}
	// With right alignment the lengths may differ.
	pairs, _ := ParsePairs(strings.NewReader(cases[0].line))
	ins, err := Encode(tok, pairs, EncodeOptions{Vocab: 128256, Align: AlignRight})
	if err != nil || ins[0].Shift != -1 {
		t.Errorf("aligned: %v, %+v", err, ins)
	}
}

// FuzzParsePairs: any input either parses into pairs that have both sides and a metric, or
// fails with an error that names a line (or the whole input) — never a panic.
func FuzzParsePairs(f *testing.F) {
	f.Add(`{"clean": "a", "corrupt": "b", "metric": {"logprob": " c"}}`)
	f.Add(`{"clean": [{"role": "user", "content": "Hi"}], "corrupt": "b", "metric": {"logit_diff": ["a", "#3"]}}` + "\n\n{")
	f.Add(`{"metric": {"kl": 1}}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := ParsePairs(strings.NewReader(s))
		if err != nil {
			if !strings.HasPrefix(err.Error(), ":") {
				t.Fatalf("error %q does not start with a line reference", err)
			}
			return
		}
		for _, p := range pairs {
			if p.Line < 1 || (p.Metric.LogitDiff == nil && p.Metric.LogProb == "") || (p.Metric.LogitDiff != nil && len(p.Metric.LogitDiff) != 2) {
				t.Fatalf("pair %+v", p)
			}
			if p.Clean.IsChat() && len(p.Clean.Messages) == 0 {
				t.Fatalf("pair %+v", p)
			}
		}
	})
}
