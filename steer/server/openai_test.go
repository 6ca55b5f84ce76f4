package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
)

// The fields OpenAI clients send with neutral values are accepted and change nothing.
func TestNeutralOpenAIFields(t *testing.T) {
	f := newFixture(t, options{})
	plain := f.chat(t, `{`+hello+`, "max_tokens": 8, "temperature": 0}`).Choices[0].Message.Content
	for _, extra := range []string{
		`"tools": null`, `"tools": []`, `"tool_choice": "none"`, `"tool_choice": "auto"`, `"tool_choice": null`,
		`"parallel_tool_calls": true`, `"functions": null`, `"function_call": "none"`,
		`"response_format": {"type": "text"}`, `"response_format": null`, `"logit_bias": {}`, `"logit_bias": null`,
		`"store": false`, `"store": true`, `"metadata": {"team": "a"}`, `"service_tier": "auto"`, `"service_tier": null`,
		`"top_logprobs": 0`, `"logprobs": false`, `"frequency_penalty": 0`, `"presence_penalty": 0`, `"modalities": ["text"]`,
		`"audio": null`, `"prediction": null`, `"user": "u-1"`, `"seed": null`, `"stop": null`, `"n": 1`,
	} {
		c := f.chat(t, `{`+hello+`, "max_tokens": 8, "temperature": 0, `+extra+`}`)
		if c.Choices[0].Message.Content != plain {
			t.Errorf("%s changed the reply: %q, want %q", extra, c.Choices[0].Message.Content, plain)
		}
	}
	// An assistant turn that refused, and history with null tool calls, as clients replay them.
	history := `"messages": [{"role": "user", "content": "Tell me a secret."},
		{"role": "assistant", "content": null, "refusal": "I cannot share that.", "tool_calls": null},
		{"role": "assistant", "content": "Anything else?", "refusal": null, "tool_calls": [], "function_call": null, "audio": null},
		{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there!"}], "name": "ann"}]`
	withRefusal := f.chat(t, `{`+history+`, "max_tokens": 6, "temperature": 0}`).Choices[0].Message.Content
	asText := f.chat(t, `{`+strings.Replace(history, `"content": null, "refusal": "I cannot share that."`, `"content": "I cannot share that."`, 1)+`, "max_tokens": 6, "temperature": 0}`).Choices[0].Message.Content
	if withRefusal != asText {
		t.Errorf("a refusal is not the assistant's text: %q vs %q", withRefusal, asText)
	}
}

// ascii is a logit_bias entry banning every token but the printable ASCII bytes of tiller's
// byte-level tokenizer, so that each token is a whole character and the tokens spell the reply.
func ascii() string {
	var ban []string
	for id := range 512 {
		if id < 32 || id > 126 {
			ban = append(ban, fmt.Sprintf(`"%d": -100`, id))
		}
	}
	return `"logit_bias": {` + strings.Join(ban, ", ") + `}`
}

type logprobsReply struct {
	Choices []struct {
		Message  struct{ Content string }
		Logprobs struct {
			Content []logprobEntry `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage usageCounts `json:"usage"`
}

// logprobs: each token's log-probability under the model and its top alternatives, as OpenAI
// lays them out, streamed and not; under plain greedy decoding the token is the best alternative
// (a logit bias moves the choice, not the model's probabilities), and the tokens spell the reply.
func TestLogprobs(t *testing.T) {
	f := newFixture(t, options{})
	for _, bias := range []string{ascii(), `"logit_bias": {}`} {
		body := `{` + hello + `, "max_tokens": 10, "temperature": 0, "logprobs": true, "top_logprobs": 3, ` + bias
		resp, err := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body+`}`))
		if err != nil {
			t.Fatal(err)
		}
		var out logprobsReply
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || len(out.Choices) != 1 {
			t.Fatalf("%v %+v", err, out)
		}
		lps := out.Choices[0].Logprobs.Content
		if len(lps) != out.Usage.CompletionTokens || len(lps) == 0 {
			t.Fatalf("%d entries for %d tokens", len(lps), out.Usage.CompletionTokens)
		}
		var text strings.Builder
		for i, e := range lps {
			text.WriteString(e.Token)
			top := e.TopLogprobs
			if len(top) != 3 || !(e.Logprob <= 0) || top[1].Logprob > top[0].Logprob || e.Logprob > top[0].Logprob {
				t.Errorf("token %d: %+v", i, e)
			}
			if bias != ascii() && (top[0].Token != e.Token || top[0].Logprob != e.Logprob) {
				t.Errorf("token %d: %+v", i, e)
			}
			if partial := strings.ContainsRune(e.Token, '\uFFFD'); partial != (e.Bytes == nil) || !partial && string(bytesOf(e.Bytes)) != e.Token {
				t.Errorf("token %d: bytes %v for %q", i, e.Bytes, e.Token)
			}
			if p := math.Exp(float64(top[0].Logprob)) + math.Exp(float64(top[1].Logprob)) + math.Exp(float64(top[2].Logprob)); p > 1+1e-5 {
				t.Errorf("token %d: the top 3 hold probability %g", i, p)
			}
		}
		if bias == ascii() && text.String() != out.Choices[0].Message.Content {
			t.Errorf("tokens %q, reply %q", text.String(), out.Choices[0].Message.Content)
		}
		// Streamed: one entry per token chunk, the same numbers.
		resp, err = http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body+`, "stream": true}`))
		if err != nil {
			t.Fatal(err)
		}
		var streamed []logprobEntry
		for _, e := range sse(t, resp.Body) {
			var c struct {
				Choices []struct {
					Logprobs *struct {
						Content []logprobEntry `json:"content"`
					} `json:"logprobs"`
				} `json:"choices"`
			}
			if json.Unmarshal([]byte(e), &c) == nil && len(c.Choices) == 1 && c.Choices[0].Logprobs != nil {
				streamed = append(streamed, c.Choices[0].Logprobs.Content...)
			}
		}
		resp.Body.Close()
		if fmt.Sprint(streamed) != fmt.Sprint(lps) {
			t.Errorf("streamed %v\nunstreamed %v", streamed, lps)
		}
	}
	// Without logprobs, the field is null.
	resp, _ := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(`{`+hello+`, "max_tokens": 2}`))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"logprobs":null`) {
		t.Errorf("no logprobs asked: %s", b)
	}
}

func bytesOf(xs []int) []byte {
	b := make([]byte, len(xs))
	for i, x := range xs {
		b[i] = byte(x)
	}
	return b
}

// Presence and frequency penalties and logit bias reach the sampler: the reply is the engine's
// for the same sampler settings, and differs from the plain one.
func TestPenaltiesAndBias(t *testing.T) {
	f := newFixture(t, options{})
	prompt, _ := f.tok.EncodeChat([]chat.Message{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "Hello there!"}}, true)
	engineTokens := func(sc llama.SamplerConfig) []int32 {
		st, err := f.eng.Submit(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 24, Sampler: sc})
		if err != nil {
			t.Fatal(err)
		}
		return st.Result().Tokens
	}
	sampled := llama.SamplerConfig{Temperature: 0.8, TopP: 1, Seed: 5}
	plain := engineTokens(sampled)
	cases := []struct {
		extra string
		sc    func(*llama.SamplerConfig)
	}{
		{`"presence_penalty": 2, "frequency_penalty": 1.5`, func(c *llama.SamplerConfig) { c.PresencePenalty, c.FrequencyPenalty = 2, 1.5 }},
		{`"presence_penalty": -2`, func(c *llama.SamplerConfig) { c.PresencePenalty = -2 }},
		{fmt.Sprintf(`"logit_bias": {"%d": -100, "300": 5}`, plain[0]), func(c *llama.SamplerConfig) { c.LogitBias = map[int32]float32{plain[0]: -100, 300: 5} }},
	}
	for _, c := range cases {
		sc := sampled
		c.sc(&sc)
		want := engineTokens(sc)
		if slices.Equal(want, plain) {
			t.Errorf("%s changes nothing on this model: pick other values", c.extra)
		}
		got := f.chat(t, `{`+hello+`, "max_tokens": 24, "temperature": 0.8, "seed": 5, `+c.extra+`}`).Choices[0].Message.Content
		if got != f.tok.Decode(want, true) {
			t.Errorf("%s: %q, the engine gives %q", c.extra, got, f.tok.Decode(want, true))
		}
	}
}

// GET /v1/models/{id}, an unknown model as 404, a creation time, error codes, Retry-After, a
// bearer scheme in any case.
func TestOpenAIStatus(t *testing.T) {
	f := newFixture(t, options{apiKey: "sesame"})
	auth := []string{"Authorization", "Bearer sesame"}
	code, out := f.get(t, "/v1/models/tiny", auth...)
	if code != 200 || out["id"] != "tiny" || out["object"] != "model" || out["created"].(float64) < 1.7e9 {
		t.Errorf("GET /v1/models/tiny: %d %v", code, out)
	}
	_, list := f.get(t, "/v1/models", auth...)
	if data := list["data"].([]any); data[0].(map[string]any)["created"] != out["created"] {
		t.Errorf("models list: %v", list)
	}
	if code, out := f.get(t, "/v1/models/gpt-4", auth...); code != http.StatusNotFound || errCode(out) != "model_not_found" {
		t.Errorf("GET an unknown model: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/chat/completions", `{`+hello+`, "model": "gpt-4"}`, auth...); code != http.StatusNotFound || errCode(out) != "model_not_found" || errParam(out) != "model" {
		t.Errorf("chat with an unknown model: %d %v", code, out)
	}
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		if code, out := f.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 1}`, "Authorization", scheme+" sesame"); code != 200 {
			t.Errorf("scheme %q: %d %v", scheme, code, out)
		}
	}
	for _, h := range []string{"Basic sesame", "Bearer", "Bearersesame", "Bearer sesam"} {
		if code, out := f.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 1}`, "Authorization", h); code != http.StatusUnauthorized || errCode(out) != "invalid_api_key" {
			t.Errorf("Authorization %q: %d %v", h, code, out)
		}
	}
	for path, want := range map[string]string{"/v1/embeddings": "not_found", "/v1/chat/completions": "method_not_allowed"} {
		if _, out := f.get(t, path, auth...); errCode(out) != want {
			t.Errorf("GET %s: code %q, want %q", path, errCode(out), want)
		}
	}
}

// GET /metrics is Prometheus text: the queue, the batch, tokens and their rate, answers by status,
// and latency histograms that count every token.
func TestMetrics(t *testing.T) {
	f := newFixture(t, options{})
	c := f.chat(t, `{`+hello+`, "max_tokens": 6, "temperature": 0, "n": 2}`)
	f.post(t, "/v1/chat/completions", `{"messages": []}`)
	resp, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	value := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("no %s in\n%s", name, text)
			return math.NaN()
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	tokens := float64(c.Usage.CompletionTokens)
	checks := []struct {
		name string
		want float64
	}{
		{"tiller_queue_depth", 0}, {"tiller_running_requests", 0}, {"tiller_pending_requests", 0},
		{"tiller_generated_tokens_total", tokens}, {"tiller_streamed_tokens_total", tokens},
		{`tiller_http_responses_total{code="200"}`, 1}, {`tiller_http_responses_total{code="400"}`, 1},
		{"tiller_time_to_first_token_seconds_count", 2}, {"tiller_inter_token_latency_seconds_count", tokens - 2},
		{`tiller_time_to_first_token_seconds_bucket{le="+Inf"}`, 2}, {"tiller_steering_vectors", 2},
	}
	for _, c := range checks {
		if got := value(c.name); got != c.want {
			t.Errorf("%s = %g, want %g", c.name, got, c.want)
		}
	}
	if value("tiller_kv_blocks") <= 0 || value("tiller_time_to_first_token_seconds_sum") <= 0 {
		t.Errorf("metrics:\n%s", text)
	}
	for _, want := range []string{"# TYPE tiller_time_to_first_token_seconds histogram", "# TYPE tiller_generated_tokens_total counter", "# TYPE tiller_tokens_per_second gauge"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q", want)
		}
	}
}

// The tokens-per-second gauge counts the whole seconds of its window, not the current one.
func TestTokenRate(t *testing.T) {
	m := newMetrics()
	now := int64(1_000_000)
	for sec := now - 12; sec <= now; sec++ {
		for range 5 {
			m.token(time.Unix(sec, 0), 0, false)
		}
	}
	if r := m.rate(time.Unix(now, 0)); r != 5 {
		t.Errorf("rate %g, want 5 (10 whole seconds of 5 tokens)", r)
	}
	if r := m.rate(time.Unix(now+30, 0)); r != 0 {
		t.Errorf("rate after a quiet spell %g", r)
	}
}
