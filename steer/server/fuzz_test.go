package server

import (
	"errors"
	"slices"
	"testing"
)

// parseLayers never panics, and what it accepts is each layer once, ascending, in range.
func FuzzParseLayers(f *testing.F) {
	for _, s := range []string{`"0-5"`, `"3,1-2,2"`, `[4, 4, 0]`, `7`, `"-1"`, `"5-3"`, `"9223372036854775807"`, `"0-9223372036854775807"`, `[-3]`, `"1,,2"`, `{"a": 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := parseLayers(raw, 12)
		if err != nil {
			return
		}
		if len(got) == 0 || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) || got[0] < 0 || got[len(got)-1] >= 12 {
			t.Errorf("parseLayers(%q) = %v", raw, got)
		}
	})
}

// A chat request body of any bytes is answered with a failure naming what is wrong, or accepted:
// decoding and validating it never panics.
func FuzzChatRequest(f *testing.F) {
	for _, s := range []string{
		`{` + hello + `, "max_tokens": 4}`,
		`{` + hello + `, "steering": [{"vector": "calm", "strength": 1, "layers": "0-1,1"}], "logprobs": true, "top_logprobs": 2}`,
		`{"messages": [{"role": "assistant", "content": null, "refusal": "no"}], "logit_bias": {"3": -100}, "tool_choice": "auto", "tools": []}`,
		`{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stop": ["a"], "n": 2, "presence_penalty": -2}`,
		`{"messages": [], "response_format": {"type": "text"}}`,
	} {
		f.Add([]byte(s))
	}
	fx := newFixture(f, options{noRun: true})
	f.Fuzz(func(t *testing.T, body []byte) {
		var req chatRequest
		err := decode(body, &req)
		if err == nil {
			_, err = fx.srv.parse(&req)
		}
		if err != nil && !errors.As(err, new(*failure)) {
			t.Errorf("%q: %v is not a failure naming a field", body, err)
		}
	})
}
