package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/tensor"
)

// tinyConfig is a small Llama 3.1-style model whose vocabulary fits tiller's byte-level tokenizer
// with the Llama 3 special tokens; initializer_range 0.5 makes steering change tokens.
const tinyConfig = `{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
  "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "initializer_range": 0.5, "bos_token_id": 256, "eos_token_id": [257, 264, 265],
  "tie_word_embeddings": false, "hidden_act": "silu"
}`

// fixture is a running server on a tiny random model, its engine, and a vectors folder holding
// "joy" (layer 1) and "calm" (layers 0 and 1) for this model and "other" for a wider one.
type fixture struct {
	url     string
	srv     *Server
	eng     *engine.Engine
	tok     *tokenizer.Tokenizer
	model   *llama.Model
	vectors string
	done    chan struct{} // a token each time a request's handler returns
	log     lockedBuffer  // the server's log
}

// lockedBuffer is a log destination the test may read while handlers write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// options adjust a fixture before it starts.
type options struct {
	engine  engine.Options
	apiKey  string
	maxBody int64
	noRun   bool          // leave the engine stopped: requests queue up
	server  func(*Config) // changes the server's config
}

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg, err := llama.WriteRandom([]byte(tinyConfig), nil, dir, llama.InitOptions{Seed: 3, DType: tensor.BF16})
	if err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteByteLevel(filepath.Join(dir, "tokenizer.json"), cfg.Vocab); err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteConfig(filepath.Join(dir, "tokenizer_config.json"), "<|begin_of_text|>", "<|eot_id|>", chat.Llama3()); err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	b := tensor.NewCPU(2)
	t.Cleanup(b.Close)
	eng, err := engine.New(llama.NewRunner(m, b), o.engine)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{eng: eng, tok: tok, model: m, vectors: filepath.Join(dir, "vectors"), done: make(chan struct{}, 64)}
	os.Mkdir(f.vectors, 0o755)
	saveVector(t, filepath.Join(f.vectors, "joy.safetensors"), cfg, 64, 1)
	saveVector(t, filepath.Join(f.vectors, "calm.safetensors"), cfg, 64, 0, 1)
	sc := Config{Name: "tiny", Model: m, Tokenizer: tok, Engine: eng, VectorDir: f.vectors, APIKey: o.apiKey, MaxBodyBytes: o.maxBody,
		CheckHost: true, Log: log.New(&f.log, "", 0)}
	if o.server != nil {
		o.server(&sc)
	}
	f.srv, err = New(sc)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.srv.LoadVectorDir(f.vectors); err != nil || n != 2 {
		t.Fatalf("loaded %d vectors: %v", n, err)
	}
	saveVector(t, filepath.Join(f.vectors, "other.safetensors"), cfg, 96, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.srv.ServeHTTP(w, r)
		select {
		case f.done <- struct{}{}:
		default: // nobody is counting: the buffer is full
		}
	}))
	f.url = hs.URL
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); hs.Close() })
	if !o.noRun {
		f.start(ctx, &wg)
	} else {
		t.Cleanup(func() { f.start(ctx, &wg) }) // so that stopped requests end before the server closes
	}
	return f
}

func (f *fixture) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); f.eng.Run(ctx) }()
}

// saveVector writes a random unit-ish vector of width dim at the given layers.
func saveVector(t testing.TB, path string, cfg *llama.Config, dim int, layers ...int) {
	t.Helper()
	v := &steer.Vector{Hook: "hook_resid_post", Info: steer.ModelInfo("tiny", cfg)}
	if dim != cfg.Dim {
		v.Info.ModelShape = "llama hidden=96"
	}
	rng := rand.New(rand.NewPCG(uint64(len(filepath.Base(path))), uint64(dim))) // the same vector every run
	for _, l := range layers {
		vals := make([]float32, dim)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
		}
		v.Layers = append(v.Layers, steer.Layer{Index: l, Values: vals, MeanNorm: 2})
	}
	if err := v.Save(path); err != nil {
		t.Fatal(err)
	}
}

// post sends a JSON body, with the header pairs given (a "Host" pair sets the Host), and returns
// the status and the decoded answer.
func (f *fixture) post(t *testing.T, path, body string, header ...string) (int, map[string]any) {
	t.Helper()
	code, out, _ := f.postHeader(t, path, body, header...)
	return code, out
}

// postHeader is post that also returns the answer's header.
func (f *fixture) postHeader(t *testing.T, path, body string, header ...string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	setHeader(req, header)
	return do(t, req)
}

func (f *fixture) get(t *testing.T, path string, header ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.url+path, nil)
	setHeader(req, header)
	code, out, _ := do(t, req)
	return code, out
}

func setHeader(req *http.Request, pairs []string) {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == "Host" {
			req.Host = pairs[i+1]
			continue
		}
		req.Header.Set(pairs[i], pairs[i+1])
	}
}

func do(t *testing.T, req *http.Request) (int, map[string]any, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: %d, body not JSON: %v", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	return resp.StatusCode, out, resp.Header
}

// completion is a non-streamed chat completion.
type completion struct {
	Choices []struct {
		Index        int    `json:"index"`
		FinishReason string `json:"finish_reason"`
		Message      struct {
			Role, Content string
		} `json:"message"`
	} `json:"choices"`
	Usage usageCounts `json:"usage"`
}

func (f *fixture) chat(t *testing.T, body string) completion {
	t.Helper()
	resp, err := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var c completion
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

const hello = `"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello there!"}]`

// A greedy completion is the engine's tokens for the chat-template prompt, decoded, with usage
// counting them.
func TestChatCompletion(t *testing.T) {
	f := newFixture(t, options{})
	c := f.chat(t, `{"model": "tiny", `+hello+`, "max_tokens": 12, "temperature": 0}`)
	prompt, _ := f.tok.EncodeChat([]chat.Message{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "Hello there!"}}, true)
	st, err := f.eng.Submit(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	res := st.Result()
	want := f.tok.Decode(res.Tokens, true)
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != want || c.Choices[0].Message.Role != "assistant" {
		t.Fatalf("got %+v, want content %q", c.Choices, want)
	}
	wantFinish := map[engine.Finish]string{engine.FinishStop: "stop", engine.FinishLength: "length"}[res.Finish]
	u := c.Usage
	if c.Choices[0].FinishReason != wantFinish || u.PromptTokens != len(prompt) || u.CompletionTokens != len(res.Tokens) || u.TotalTokens != len(prompt)+len(res.Tokens) {
		t.Errorf("finish %q (want %q), usage %+v for a %d-token prompt and %d tokens", c.Choices[0].FinishReason, wantFinish, u, len(prompt), len(res.Tokens))
	}
	if want := fmt.Sprintf("chat: %d prompt tokens (0 cached), %d completion tokens, finish %s, stream false", len(prompt), len(res.Tokens), wantFinish); !strings.Contains(f.log.String(), want) {
		t.Errorf("log %q lacks %q", f.log.String(), want)
	}
	// The same prompt again comes partly from the prefix cache, with the same text.
	again := f.chat(t, `{"model": "tiny", `+hello+`, "max_tokens": 12, "temperature": 0}`)
	if again.Choices[0].Message.Content != want || again.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Errorf("second run: %q, %d cached tokens", again.Choices[0].Message.Content, again.Usage.PromptTokensDetails.CachedTokens)
	}
}

// Concurrent requests with different steering each get exactly what they get alone.
func TestSteeringIsolation(t *testing.T) {
	f := newFixture(t, options{})
	inline := make([]string, 64)
	for i := range inline {
		inline[i] = fmt.Sprint((i%7 - 3) * 2)
	}
	bodies := []string{
		`{` + hello + `, "max_tokens": 16, "temperature": 0}`,
		`{` + hello + `, "max_tokens": 16, "temperature": 0, "steering": [{"vector": "joy", "strength": 8, "positions": "generated"}]}`,
		`{` + hello + `, "max_tokens": 16, "temperature": 0, "steering": [{"vector": "calm", "strength": -6, "layers": "0-1"}, {"vector": "joy", "strength": 3, "positions": "prompt"}]}`,
		`{` + hello + `, "max_tokens": 16, "temperature": 0, "steering": [{"vector": [` + strings.Join(inline, ",") + `], "strength": 1.5, "layers": [0], "hook": "hook_mlp_out"}]}`,
		`{` + hello + `, "max_tokens": 16, "temperature": 0.9, "seed": 4, "steering": [{"vector": "calm", "strength": 2, "relative": true}]}`,
	}
	alone := make([]string, len(bodies))
	for i, b := range bodies {
		alone[i] = f.chat(t, b).Choices[0].Message.Content
	}
	for i := range alone {
		for k := range i {
			if alone[i] == alone[k] && i < 4 {
				t.Errorf("requests %d and %d agree, steering changed nothing: %q", k, i, alone[i])
			}
		}
	}
	for round := range 2 {
		got := make([]string, len(bodies))
		var wg sync.WaitGroup
		for i, b := range bodies {
			wg.Add(1)
			go func() { defer wg.Done(); got[i] = f.chat(t, b).Choices[0].Message.Content }()
		}
		wg.Wait()
		for i := range bodies {
			if got[i] != alone[i] {
				t.Errorf("round %d, request %d: together %q, alone %q", round, i, got[i], alone[i])
			}
		}
	}
}

// sse reads a streamed response: the data payloads of its events, in order.
func sse(t *testing.T, r io.Reader) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(r)
	var lines []string
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			lines = append(lines, line)
			continue
		}
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "data: ") {
			t.Fatalf("event of lines %q: want one data line", lines)
		}
		events = append(events, strings.TrimPrefix(lines[0], "data: "))
		lines = nil
	}
	if len(lines) != 0 {
		t.Fatalf("unterminated event %q", lines)
	}
	return events
}

type chunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageCounts `json:"usage"`
}

// A streamed completion is a role chunk, a content chunk per token that join up to the unstreamed text, a
// chunk with the finish reason, the usage chunk when asked for, and [DONE]; n choices interleave.
func TestStream(t *testing.T) {
	f := newFixture(t, options{})
	body := `{` + hello + `, "max_tokens": 20, "temperature": 1, "seed": 9, "n": 2, "stream": true, "stream_options": {"include_usage": true}}`
	plain := f.chat(t, strings.Replace(body, `"stream": true, "stream_options": {"include_usage": true}`, `"stream": false`, 1))
	resp, err := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := sse(t, resp.Body)
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("last event %q, want [DONE]", events[len(events)-1])
	}
	text := make([]string, 2)
	finish := make([]string, 2)
	tokens := 0 // content chunks: one per generated token
	var usage *usageCounts
	for i, e := range events[:len(events)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("event %d %q: %v", i, e, err)
		}
		if c.Usage != nil {
			if i != len(events)-2 || len(c.Choices) != 0 {
				t.Errorf("usage chunk %d of %d with choices %v", i, len(events), c.Choices)
			}
			usage = c.Usage
			continue
		}
		ch := c.Choices[0]
		switch {
		case i < 2 && (ch.Delta.Role != "assistant" || ch.Index != i):
			t.Errorf("event %d: %q, want the role of choice %d", i, e, i)
		case finish[ch.Index] != "":
			t.Errorf("event %d for choice %d after its finish", i, ch.Index)
		case ch.FinishReason != nil:
			finish[ch.Index] = *ch.FinishReason
			if ch.Delta.Content != nil {
				text[ch.Index] += *ch.Delta.Content
			}
		case ch.Delta.Content != nil && ch.Delta.Role == "":
			text[ch.Index] += *ch.Delta.Content
			tokens++
		}
	}
	for i := range 2 {
		if text[i] != plain.Choices[i].Message.Content || finish[i] != plain.Choices[i].FinishReason {
			t.Errorf("choice %d streamed %q (%s), unstreamed %q (%s)", i, text[i], finish[i], plain.Choices[i].Message.Content, plain.Choices[i].FinishReason)
		}
	}
	if text[0] == text[1] {
		t.Errorf("the two sampled choices agree: %q", text[0])
	}
	if usage == nil || usage.CompletionTokens != plain.Usage.CompletionTokens || usage.PromptTokens != plain.Usage.PromptTokens || tokens != usage.CompletionTokens {
		t.Errorf("usage %+v, unstreamed %+v, %d content chunks", usage, plain.Usage, tokens)
	}
}

// A stop string ends the text before it, even when it spans tokens.
func TestStopString(t *testing.T) {
	f := newFixture(t, options{})
	full := f.chat(t, `{`+hello+`, "max_tokens": 30, "temperature": 0}`).Choices[0].Message.Content
	if len([]rune(full)) < 12 {
		t.Fatalf("too short to cut: %q", full)
	}
	runes := []rune(full)
	stop := string(runes[6:9])
	want := full[:strings.Index(full, stop)]
	stopJSON, _ := json.Marshal([]string{"never said", stop})
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{%s, "max_tokens": 30, "temperature": 0, "stop": %s, "stream": %v}`, hello, stopJSON, stream)
		if !stream {
			c := f.chat(t, body)
			if c.Choices[0].Message.Content != want || c.Choices[0].FinishReason != "stop" {
				t.Errorf("stop %q: %q (%s), want %q", stop, c.Choices[0].Message.Content, c.Choices[0].FinishReason, want)
			}
			continue
		}
		resp, err := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var text, finish string
		for _, e := range sse(t, resp.Body) {
			var c chunk
			if json.Unmarshal([]byte(e), &c) == nil && len(c.Choices) == 1 {
				if c.Choices[0].Delta.Content != nil {
					text += *c.Choices[0].Delta.Content
				}
				if c.Choices[0].FinishReason != nil {
					finish = *c.Choices[0].FinishReason
				}
			}
		}
		resp.Body.Close()
		if text != want || finish != "stop" {
			t.Errorf("streamed with stop %q: %q (%s), want %q", stop, text, finish, want)
		}
	}
}

func TestStopFilter(t *testing.T) {
	f := stopFilter{stops: []string{"END", "xy"}}
	var out strings.Builder
	for _, piece := range []string{"ab", "cE", "N", "x", "D", "zE", "ND tail"} {
		text, hit := f.add(piece)
		out.WriteString(text)
		if hit {
			break
		}
	}
	if out.String() != "abcENxDz" {
		t.Errorf("got %q, want %q", out.String(), "abcENxDz")
	}
	g := stopFilter{stops: []string{"END"}}
	text, hit := g.add("abEN")
	if text != "ab" || hit || g.flush() != "EN" {
		t.Errorf("held-back text: %q %v", text, hit)
	}
}

// A client that goes away mid-stream cancels its generation, whose blocks go back to the pool.
func TestDisconnectCancels(t *testing.T) {
	f := newFixture(t, options{engine: engine.Options{PrefixBlocks: -1}})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/v1/chat/completions",
		strings.NewReader(`{`+hello+`, "max_tokens": 400, "temperature": 1, "seed": 1, "stream": true}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q: %v", line, err)
	}
	cancel()
	resp.Body.Close()
	<-f.done // the handler returns once the engine has ended the request
	st := f.eng.Stats()
	if st.Running != 0 || st.FreeBlocks != st.Blocks || st.GeneratedTokens >= 400 {
		t.Errorf("after the client left: %+v", st)
	}
	if !strings.Contains(f.log.String(), "finish cancelled, stream true") {
		t.Errorf("log: %q", f.log.String())
	}
}

// A full queue answers 429; the queued request still runs once the engine does.
func TestQueueFull(t *testing.T) {
	f := newFixture(t, options{engine: engine.Options{MaxWaiting: 1}, noRun: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queued := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/v1/chat/completions", strings.NewReader(`{`+hello+`, "max_tokens": 4}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		queued <- err
	}()
	for f.eng.Stats().Waiting == 0 {
		select {
		case err := <-queued:
			t.Fatalf("the first request ended early: %v", err)
		default:
		}
		runtime.Gosched() // the handler goroutine queues the request
	}
	code, out, h := f.postHeader(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 4}`)
	if code != http.StatusTooManyRequests || errType(out) != "rate_limit_error" || errCode(out) != "rate_limit_exceeded" || h.Get("Retry-After") != "1" {
		t.Errorf("second request: %d %v, Retry-After %q", code, out, h.Get("Retry-After"))
	}
	cancel()
	<-queued
}

func errType(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func errParam(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["param"].(string)
	return s
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// Every bad field is a 400 that names it, and the server goes on serving.
func TestBadRequests(t *testing.T) {
	// 24 blocks of 16 hold 384 positions: room for the default max_tokens, not for 2000.
	f := newFixture(t, options{engine: engine.Options{Blocks: 24}})
	wide := strings.TrimSuffix(strings.Repeat("0.5,", 96), ",")
	cases := []struct{ body, param string }{
		{`{"messages": []}`, "messages"},
		{`{}`, "messages"},
		{`{"messages": [{"role": "robot", "content": "hi"}]}`, "messages[0].role"},
		{`{"messages": [{"content": "hi"}]}`, "messages[0].role"},
		{`{"messages": [{"role": "user", "content": 7}]}`, "messages[0].content"},
		{`{"messages": [{"role": "user"}]}`, "messages[0].content"},
		{`{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`, "messages[0].content[0].type"},
		{`{"messages": [{"role": "user", "content": "a\u0000b"}]}`, "messages"},
		{`{"messages": [{"role": "user", "content": "` + strings.Repeat("long ", 120) + `"}]}`, "messages"},
		{`{` + hello + `, "max_tokens": 0}`, "max_tokens"},
		{`{` + hello + `, "max_tokens": "ten"}`, "max_tokens"},
		{`{` + hello + `, "max_tokens": 2000}`, "max_tokens"},
		{`{` + hello + `, "max_tokens": 9223372036854775807}`, "max_tokens"},
		{`{` + hello + `, "max_tokens": 1e30}`, "max_tokens"},
		{`{` + hello + `, "max_tokens": 4, "max_completion_tokens": 4}`, "max_tokens"},
		{`{` + hello + `, "temperature": 2.5}`, "temperature"},
		{`{` + hello + `, "temperature": -1}`, "temperature"},
		{`{` + hello + `, "top_p": 0}`, "top_p"},
		{`{` + hello + `, "top_p": 1.5}`, "top_p"},
		{`{` + hello + `, "seed": "x"}`, "seed"},
		{`{` + hello + `, "n": 0}`, "n"},
		{`{` + hello + `, "n": 9}`, "n"},
		{`{` + hello + `, "stop": 5}`, "stop"},
		{`{` + hello + `, "stop": ["a", "b", "c", "d", "e"]}`, "stop"},
		{`{` + hello + `, "stop": [""]}`, "stop"},
		{`{` + hello + `, "stream": "yes"}`, "stream"},
		{`{` + hello + `, "stream_options": {"include_usage": true}}`, "stream_options"},
		{`{` + hello + `, "frequency_penalty": 2.5}`, "frequency_penalty"},
		{`{` + hello + `, "presence_penalty": -3}`, "presence_penalty"},
		{`{` + hello + `, "logprobs": 1}`, "logprobs"},
		{`{` + hello + `, "top_logprobs": 21, "logprobs": true}`, "top_logprobs"},
		{`{` + hello + `, "top_logprobs": 2}`, "top_logprobs"},
		{`{` + hello + `, "logit_bias": {"x": 1}}`, "logit_bias"},
		{`{` + hello + `, "logit_bias": {"512": 1}}`, "logit_bias"},
		{`{` + hello + `, "logit_bias": {"5": 101}}`, "logit_bias"},
		{`{` + hello + `, "tools": [{"type": "function", "function": {"name": "f"}}]}`, "tools"},
		{`{` + hello + `, "tool_choice": "required"}`, "tool_choice"},
		{`{` + hello + `, "response_format": {"type": "json_object"}}`, "response_format"},
		{`{` + hello + `, "modalities": ["text", "audio"]}`, "modalities"},
		{`{"messages": [{"role": "user", "content": null}]}`, "messages[0].content"},
		{`{"messages": [{"role": "assistant", "content": null}]}`, "messages[0].content"},
		{`{"messages": [{"role": "user", "content": "hi", "refusal": "no"}]}`, "messages[0].refusal"},
		{`{"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]}`, "tool_call_id"},
		{`{"messages": [{"role": "tool", "content": "42"}]}`, "messages[0].role"},
		{`{"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c1"}]}]}`, "messages[0].tool_calls"},
		{`{` + hello + `, "steering": {}}`, "steering"},
		{`{` + hello + `, "steering": [{"vector": "grief", "strength": 1}]}`, "steering[0].vector"},
		{`{` + hello + `, "steering": [{"vector": "joy"}]}`, "steering[0].strength"},
		{`{` + hello + `, "steering": [{"vector": "joy", "strength": 1e9}]}`, "steering[0].strength"},
		{`{` + hello + `, "steering": [{"vector": "joy", "strength": 1, "layers": "5"}]}`, "steering[0].layers"},
		{`{` + hello + `, "steering": [{"vector": "joy", "strength": 1, "layers": "1-x"}]}`, "steering[0].layers"},
		{`{` + hello + `, "steering": [{"vector": "joy", "strength": 1, "layers": []}]}`, "steering[0].layers"},
		{`{` + hello + `, "steering": [{"vector": "calm", "strength": 1, "layers": [0, 1, 1], "hook": "hook_q"}]}`, "steering[0].hook"},
		{`{` + hello + `, "steering": [{"vector": "joy", "strength": 1, "positions": "sometimes"}]}`, "steering[0].positions"},
		{`{` + hello + `, "steering": [{"vector": "joy", "strength": 1, "colour": "red"}]}`, "colour"},
		{`{` + hello + `, "steering": [{"vector": [` + wide + `], "strength": 1, "layers": "1"}]}`, "steering[0].vector"},
		{`{` + hello + `, "steering": [{"vector": [1, 2], "strength": 1, "layers": "1"}]}`, "steering[0].vector"},
		{`{` + hello + `, "steering": [{"vector": [` + strings.TrimSuffix(strings.Repeat("1,", 64), ",") + `], "strength": 1}]}`, "steering[0].layers"},
		{`{` + hello + `, "steering": [{"vector": [` + strings.TrimSuffix(strings.Repeat("1,", 64), ",") + `], "strength": 1, "layers": 0, "hook": "attn.hook_z"}]}`, "steering[0].hook"},
		{`{` + hello + `, "steering": [{"vector": {"a": 1}, "strength": 1}]}`, "steering[0].vector"},
		{`{` + hello + `, "steering": [{"vector": [` + strings.TrimSuffix(strings.Repeat("1,", 64), ",") + `], "strength": 1, "layers": 0, "relative": true}]}`, "steering[0].relative"},
		{`{` + hello + `, "steering": [` + strings.TrimSuffix(strings.Repeat(`{"vector": "joy", "strength": 1},`, 17), ",") + `]}`, "steering"},
		{`{` + hello, "body"},
		{`{` + hello + `} {}`, "body"},
		{`[1, 2]`, "body"},
		{``, "body"},
	}
	for _, c := range cases {
		code, out := f.post(t, "/v1/chat/completions", c.body)
		if code != http.StatusBadRequest || errParam(out) != c.param || errType(out) != "invalid_request_error" || errCode(out) == "" {
			t.Errorf("%.90s: %d, param %q (want 400, %q), code %q: %v", c.body, code, errParam(out), c.param, errCode(out), out["error"])
		}
	}
	if c := f.chat(t, `{`+hello+`, "max_tokens": 3}`); len(c.Choices) != 1 {
		t.Errorf("the server stopped serving after bad requests: %+v", c)
	}
	if st := f.eng.Stats(); st.FreeBlocks+st.PrefixBlocks != st.Blocks {
		t.Errorf("bad requests left blocks held: %+v", st)
	}
}

// An engine that has stopped answers 503.
func TestClosedEngine(t *testing.T) {
	f := newFixture(t, options{noRun: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.eng.Run(ctx)
	if code, out := f.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 2}`); code != http.StatusServiceUnavailable || errType(out) != "server_error" {
		t.Errorf("closed engine: %d %v", code, out)
	}
}

// The other status codes: 404, 405, 413, 401.
func TestStatusCodes(t *testing.T) {
	f := newFixture(t, options{maxBody: 2048})
	if code, out := f.get(t, "/v1/embeddings"); code != http.StatusNotFound || errType(out) != "not_found_error" {
		t.Errorf("unknown path: %d %v", code, out)
	}
	if code, out := f.get(t, "/v1/chat/completions"); code != http.StatusMethodNotAllowed || errType(out) != "invalid_request_error" {
		t.Errorf("GET chat: %d %v", code, out)
	}
	big := `{"messages": [{"role": "user", "content": "` + strings.Repeat("x", 3000) + `"}]}`
	if code, out := f.post(t, "/v1/chat/completions", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d %v", code, out)
	}
	k := newFixture(t, options{apiKey: "sesame"})
	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "sesame"}} {
		if code, out := k.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 2}`, h...); code != http.StatusUnauthorized || errType(out) != "authentication_error" {
			t.Errorf("key %v: %d %v", h, code, out)
		}
	}
	if code, _ := k.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 2}`, "Authorization", "Bearer sesame"); code != http.StatusOK {
		t.Errorf("right key: %d", code)
	}
}

func TestModelsAndVectors(t *testing.T) {
	f := newFixture(t, options{})
	code, out := f.get(t, "/v1/models")
	if data, _ := out["data"].([]any); code != 200 || len(data) != 1 || data[0].(map[string]any)["id"] != "tiny" {
		t.Errorf("models: %d %v", code, out)
	}
	names := func() []string {
		_, out := f.get(t, "/v1/vectors")
		var ns []string
		for _, d := range out["data"].([]any) {
			ns = append(ns, d.(map[string]any)["name"].(string))
		}
		return ns
	}
	if got := names(); !slices.Equal(got, []string{"calm", "joy"}) {
		t.Errorf("vectors: %v", got)
	}
	values := make([]string, 64)
	for i := range values {
		values[i] = fmt.Sprint(float64(i%5-2) / 2)
	}
	inline := `{"name": "hope", "layers": {"1": [` + strings.Join(values, ",") + `]}}`
	if code, out := f.post(t, "/v1/vectors", inline); code != 200 || out["name"] != "hope" || out["hidden_size"] != 64.0 {
		t.Errorf("inline vector: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/vectors", `{"name": "joy2", "file": "joy.safetensors"}`); code != 200 || fmt.Sprint(out["layers"]) != "[1]" {
		t.Errorf("vector file: %d %v", code, out)
	}
	if got := names(); !slices.Equal(got, []string{"calm", "hope", "joy", "joy2"}) {
		t.Errorf("vectors after loading: %v", got)
	}
	// The new vectors steer: hope at 60 changes a greedy reply; joy2 matches joy.
	body := `{` + hello + `, "max_tokens": 10, "temperature": 0, "steering": [{"vector": "%s", "strength": 60}]}`
	plain := f.chat(t, `{`+hello+`, "max_tokens": 10, "temperature": 0}`).Choices[0].Message.Content
	if f.chat(t, fmt.Sprintf(body, "hope")).Choices[0].Message.Content == plain {
		t.Error("the inline vector changed nothing")
	}
	if f.chat(t, fmt.Sprintf(body, "joy2")).Choices[0].Message.Content != f.chat(t, fmt.Sprintf(body, "joy")).Choices[0].Message.Content {
		t.Error("joy2 and joy steer differently")
	}
	for _, c := range []struct{ body, param string }{
		{`{"name": "../x", "layers": {"1": [1]}}`, "name"},
		{`{"name": "x"}`, "layers"},
		{`{"name": "x", "file": "../joy.safetensors"}`, "file"},
		{`{"name": "x", "file": "/etc/passwd"}`, "file"},
		{`{"name": "x", "file": "missing.safetensors"}`, "file"},
		{`{"name": "x", "file": "other.safetensors"}`, "file"}, // made for a model of hidden size 96
		{`{"name": "x", "file": "joy.safetensors", "layers": {"1": [1]}}`, "file"},
		{`{"name": "x", "layers": {"1": [1, 2]}}`, "layers.1"},
		{`{"name": "x", "layers": {"7": [1]}}`, "layers"},
		{`{"name": "x", "layers": {"1": [1]}, "hook": "hook_z"}`, "hook"},
		{`{"name": "x", "layers": {"1": "a"}}`, "layers.1"},
		{`{"name": "x", "size": 3}`, "size"},
	} {
		if code, out := f.post(t, "/v1/vectors", c.body); code != http.StatusBadRequest || errParam(out) != c.param {
			t.Errorf("%s: %d, param %q, want %q: %v", c.body, code, errParam(out), c.param, out["error"])
		}
	}
	// A vectors folder holding a vector for another model does not load.
	if _, err := f.srv.LoadVectorDir(f.vectors); err == nil || !strings.Contains(err.Error(), "other.safetensors") {
		t.Errorf("folder with another model's vector: %v", err)
	}
}
