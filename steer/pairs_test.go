package steer

import (
	"strings"
	"testing"
)

func TestParsePairs(t *testing.T) {
	in := "\uFEFF" + `{"positive": "I love it", "negative": "It is fine", "id": "a"}

{"positive": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "great!"}], "negative": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok."}]}
`
	ps, err := ParsePairs("p.jsonl", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Positive.Raw != "I love it" || ps[1].Line != 3 || !ps[1].Negative.IsChat() || ps[1].Negative.Messages[1].Content != "ok." {
		t.Errorf("parsed %+v", ps)
	}
}

// Malformed pair files are refused with the line at fault; an empty set is refused.
func TestParsePairsErrors(t *testing.T) {
	good := `{"positive": "a", "negative": "b"}` + "\n"
	cases := []struct {
		in   string
		want string
	}{
		{"", "p.jsonl: no pairs"},
		{"\n  \n", "p.jsonl: no pairs"},
		{good + `{"positive": "a", "negative": "b"`, "p.jsonl:2: not a JSON object"},
		{good + good + `{"positive": "a"}`, `p.jsonl:3: no "negative"`},
		{`{"negative": "b"}`, `p.jsonl:1: no "positive"`},
		{good + `{"positive": 5, "negative": "b"}`, `p.jsonl:2: "positive": want a string or a list`},
		{good + `{"positive": "a", "negative": []}`, `p.jsonl:2: "negative": an empty list of messages`},
		{`{"positive": "  ", "negative": "b"}`, `p.jsonl:1: "positive": empty text`},
		{`{"positive": [{"content": "x"}], "negative": "b"}`, `p.jsonl:1: "positive": message 1 has no role`},
		{`["positive", "negative"]`, "p.jsonl:1: not a JSON object"},
	}
	for _, c := range cases {
		if _, err := ParsePairs("p.jsonl", []byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
}

func TestParsePrompts(t *testing.T) {
	ps, err := ParsePrompts("q.jsonl", []byte(`{"prompt": "hello"}`+"\n"+`{"id": 2, "prompt": [{"role": "user", "content": "yo"}]}`))
	if err != nil || len(ps) != 2 || ps[0].Text.Raw != "hello" || ps[1].Line != 2 {
		t.Fatalf("%+v %v", ps, err)
	}
	for _, c := range []struct{ in, want string }{
		{"", "no prompts"},
		{`{"text": "x"}`, `q.jsonl:1: no "prompt"`},
		{`{"prompt": ""}`, "q.jsonl:1: \"prompt\": empty text"},
	} {
		if _, err := ParsePrompts("q.jsonl", []byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
}

func FuzzParsePairs(f *testing.F) {
	f.Add([]byte(`{"positive": "a", "negative": [{"role": "user", "content": "b"}]}`))
	f.Add([]byte("{\"positive\": \"a\"}\n\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParsePairs("f", data)
		if err == nil && len(ps) == 0 {
			t.Error("no error and no pairs")
		}
		for _, p := range ps {
			if checkText(p.Positive) != nil || checkText(p.Negative) != nil {
				t.Errorf("accepted an empty side: %+v", p)
			}
		}
	})
}
