package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/tensor"
)

// tinyRunner loads a small random GQA model with odd sizes; initializer_range 0.3 makes logits
// differ by whole units, so steering and batching mistakes change tokens.
func tinyRunner(t testing.TB) *llama.Runner {
	t.Helper()
	cfg, _ := json.Marshal(map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 48, "intermediate_size": 72, "num_hidden_layers": 3,
		"num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 97,
		"max_position_embeddings": 160, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"initializer_range": 0.3, "bos_token_id": 1, "eos_token_id": []int{2}, "tie_word_embeddings": false,
	})
	dir := t.TempDir()
	if _, err := llama.WriteRandom(cfg, nil, dir, llama.InitOptions{Seed: 7, DType: tensor.BF16}); err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	b := tensor.NewCPU(2)
	t.Cleanup(b.Close)
	return llama.NewRunner(m, b)
}

// start makes an engine and runs it until the test ends.
func start(t *testing.T, r *llama.Runner, opts Options) *Engine {
	t.Helper()
	e := newEngine(t, r, opts)
	run(t, e)
	return e
}

func newEngine(t *testing.T, r *llama.Runner, opts Options) *Engine {
	t.Helper()
	e, err := New(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func run(t *testing.T, e *Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func submit(t *testing.T, e *Engine, r Request) *Stream {
	t.Helper()
	s, err := e.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// alone runs one request on a fresh engine and runner of its own, with the prefix cache off.
func alone(t *testing.T, r *llama.Runner, req Request) Result {
	t.Helper()
	b := tensor.NewCPU(1)
	t.Cleanup(b.Close)
	return submit(t, start(t, llama.NewRunner(r.Model, b), Options{PrefixBlocks: -1}), req).Result()
}

func tokens(n int, seed uint64) []int32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := []int32{1}
	for len(out) < n {
		out = append(out, int32(4+rng.IntN(90)))
	}
	return out
}

func direction(seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 2))
	v := make([]float32, 48)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// Requests batched together, each with its own steering, sampler and length, get exactly the
// tokens each gets alone; the tokens stream in the order of the result.
func TestBatchedMatchesAlone(t *testing.T) {
	r := tinyRunner(t)
	joy, sad := direction(1), direction(2)
	reqs := []Request{
		{Prompt: tokens(9, 1), MaxTokens: 12, Stop: []int32{}},
		{Prompt: tokens(9, 1), MaxTokens: 12, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: joy, Alpha: 6, Span: Generated}}},
		{Prompt: tokens(9, 1), MaxTokens: 12, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: sad, Alpha: 6, Span: All}, {Point: "blocks.2.hook_resid_pre", Vector: joy, Alpha: -3, Span: Prompt}}},
		{Prompt: tokens(30, 2), MaxTokens: 7, Sampler: llama.SamplerConfig{Temperature: 1.1, TopP: 0.9, Seed: 5}, Stop: []int32{}},
		{Prompt: tokens(3, 3), MaxTokens: 20, Sampler: llama.SamplerConfig{Temperature: 0.8, TopK: 10, Seed: 9}, Stop: []int32{}, Steering: []Addition{{Point: "blocks.0.hook_mlp_out", Vector: sad, Alpha: 2, Span: All}}},
	}
	// A small budget chunks the 30-token prompt across steps that also decode the others.
	e := newEngine(t, r, Options{BatchTokens: 12, MaxRunning: 8})
	var streams []*Stream
	for _, q := range reqs {
		streams = append(streams, submit(t, e, q))
	}
	run(t, e)
	var got [][]int32
	for i, s := range streams {
		var streamed []int32
		for tok := range s.Tokens {
			streamed = append(streamed, tok)
		}
		res := s.Result()
		if res.Finish != FinishLength || res.Err != nil || !slices.Equal(streamed, res.Tokens) {
			t.Fatalf("request %d: finish %v, err %v, streamed %v, result %v", i, res.Finish, res.Err, streamed, res.Tokens)
		}
		want := alone(t, r, reqs[i])
		if !slices.Equal(res.Tokens, want.Tokens) {
			t.Errorf("request %d: batched %v, alone %v", i, res.Tokens, want.Tokens)
		}
		got = append(got, res.Tokens)
	}
	// The steering took effect: the three greedy requests on one prompt differ.
	if slices.Equal(got[0], got[1]) || slices.Equal(got[0], got[2]) || slices.Equal(got[1], got[2]) {
		t.Errorf("steering changed nothing: %v %v %v", got[0], got[1], got[2])
	}
	if st := e.Stats(); st.MixedSteps == 0 || st.FreeBlocks+st.PrefixBlocks != st.Blocks {
		t.Errorf("stats after the batch: %+v", st)
	}
}

// The engine's steering means what steer.Generate's plans mean, position for position.
func TestSteeringMatchesSteerPackage(t *testing.T) {
	r := tinyRunner(t)
	v := &steer.Vector{Hook: "hook_resid_post", Layers: []steer.Layer{{Index: 1, Values: direction(3)}}}
	prompt := tokens(11, 4)
	for _, span := range []Span{All, Prompt, Generated} {
		plan := &steer.Plan{Vectors: []steer.Applied{{Name: "v", Vector: v, Strength: 5}}, Positions: span.String()}
		out, _, err := steer.Generate(r, plan, [][]int32{prompt}, []float64{1}, steer.GenOptions{MaxTokens: 10, Stop: []int32{}})
		if err != nil {
			t.Fatal(err)
		}
		got := alone(t, r, Request{Prompt: prompt, MaxTokens: 10, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v.Layers[0].Values, Alpha: 5, Span: span}}})
		if !slices.Equal(got.Tokens, out[0][0].Tokens) {
			t.Errorf("positions %s: engine %v, steer.Generate %v", span, got.Tokens, out[0][0].Tokens)
		}
	}
}

// A request that arrives while another decodes joins at the next step, whose batch then holds
// its prompt beside the other's decode row.
func TestJoinsAtNextStep(t *testing.T) {
	r := tinyRunner(t)
	first := Request{Prompt: tokens(8, 5), MaxTokens: 30, Stop: []int32{}}
	second := Request{Prompt: tokens(13, 6), MaxTokens: 5, Stop: []int32{}, Steering: []Addition{{Point: "blocks.2.hook_resid_mid", Vector: direction(4), Alpha: 4}}}
	var (
		e     *Engine
		mu    sync.Mutex // steps and later are written on the engine's goroutine
		later *Stream
		steps []Step
	)
	e = newEngine(t, r, Options{OnStep: func(s Step) {
		mu.Lock()
		defer mu.Unlock()
		steps = append(steps, s)
		if len(steps) == 1 {
			var err error
			if later, err = e.Submit(context.Background(), second); err != nil {
				t.Error(err)
			}
		}
	}})
	s := submit(t, e, first)
	run(t, e)
	a := s.Result()
	mu.Lock()
	b := later
	mu.Unlock()
	bres := b.Result()
	mu.Lock()
	defer mu.Unlock()
	if steps[0].Prefill != 8 || steps[0].Decode != 0 || steps[1].Prefill != 13 || steps[1].Decode != 1 || !steps[1].Steered {
		t.Errorf("first steps: %+v %+v", steps[0], steps[1])
	}
	if !slices.Equal(a.Tokens, alone(t, r, first).Tokens) || !slices.Equal(bres.Tokens, alone(t, r, second).Tokens) {
		t.Errorf("joined requests differ from their runs alone")
	}
	if steps[len(steps)-1].Steered || len(bres.Tokens) != 5 || len(a.Tokens) != 30 {
		t.Errorf("last step %+v; %d and %d tokens", steps[len(steps)-1], len(a.Tokens), len(bres.Tokens))
	}
}

// Cancelling a running request, or one still waiting, ends it as cancelled and gives its blocks
// back before its caller hears of it.
func TestCancelFreesBlocks(t *testing.T) {
	r := tinyRunner(t)
	ctx, cancel := context.WithCancel(context.Background())
	wctx, wcancel := context.WithCancel(context.Background())
	var e *Engine
	var during Stats
	steps := 0
	// Cancellation comes from the engine's own step callback, so it lands at a known step.
	e = start(t, r, Options{MaxRunning: 1, Blocks: 64, PrefixBlocks: -1, OnStep: func(Step) {
		steps++
		switch steps {
		case 1:
			during = e.Stats()
			wcancel()
		case 3:
			cancel()
		}
	}})
	running, err := e.Submit(ctx, Request{Prompt: tokens(20, 7), MaxTokens: 120, Stop: []int32{}})
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := e.Submit(wctx, Request{Prompt: tokens(5, 8), MaxTokens: 5, Stop: []int32{}})
	if err != nil {
		t.Fatal(err)
	}
	if res := waiting.Result(); res.Finish != FinishCancelled || len(res.Tokens) != 0 {
		t.Errorf("waiting request: %+v", res)
	}
	res := running.Result()
	if res.Finish != FinishCancelled || len(res.Tokens) != 3 {
		t.Errorf("running request: finish %v after %d tokens, want cancelled after 3", res.Finish, len(res.Tokens))
	}
	// 20+120 positions are 9 blocks of 16.
	if during.FreeBlocks != 64-9 || during.Running != 1 {
		t.Errorf("while running: %+v", during)
	}
	if st := e.Stats(); st.FreeBlocks != 64 || st.Running != 0 || st.Waiting != 0 {
		t.Errorf("after cancelling: %+v", st)
	}
	// The engine goes on serving.
	after := Request{Prompt: tokens(6, 9), MaxTokens: 4, Stop: []int32{}}
	if got := submit(t, e, after).Result(); !slices.Equal(got.Tokens, alone(t, r, after).Tokens) {
		t.Errorf("request after cancellation: %v", got.Tokens)
	}
}

// A prompt that starts with an earlier prompt's whole blocks takes their keys and values from the
// prefix cache and generates exactly what it generates without the cache. Steering of prompt
// positions changes the key; steering of generated positions does not.
func TestPrefixCache(t *testing.T) {
	r := tinyRunner(t)
	e := start(t, r, Options{})
	base := tokens(40, 10) // 2 whole blocks of 16 before the last token
	v := direction(5)
	cases := []struct {
		name   string
		req    Request
		cached int
	}{
		{"first", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}}, 0},
		{"same prompt", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}}, 32},
		{"longer prompt", Request{Prompt: append(slices.Clone(base[:35]), tokens(20, 11)...), MaxTokens: 8, Stop: []int32{}}, 32},
		{"other second block", Request{Prompt: append(slices.Clone(base[:20]), tokens(30, 12)...), MaxTokens: 8, Stop: []int32{}}, 16},
		{"decode-only steering", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 5, Span: Generated}}}, 32},
		{"prompt steering", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 5, Span: Prompt}}}, 0},
		{"prompt steering again", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 5, Span: Prompt}}}, 32},
		{"other strength", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 4, Span: All}}}, 0},
		{"locus steering", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 5, Span: Prompt, FromEnd: []int{0, 9, 30}}}}, 0},
		{"locus steering again", Request{Prompt: base, MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 5, Span: Prompt, FromEnd: []int{0, 9, 30}}}}, 32},
		// The same offsets name other positions of a longer prompt: no entry of the shorter one applies.
		{"locus steering, longer prompt", Request{Prompt: append(slices.Clone(base), tokens(20, 13)...), MaxTokens: 8, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: v, Alpha: 5, Span: Prompt, FromEnd: []int{0, 9, 30}}}}, 0},
	}
	for _, c := range cases {
		got := submit(t, e, c.req).Result()
		want := alone(t, r, c.req)
		if got.CachedTokens != c.cached || !slices.Equal(got.Tokens, want.Tokens) {
			t.Errorf("%s: %d cached tokens (want %d), tokens %v, without the cache %v", c.name, got.CachedTokens, c.cached, got.Tokens, want.Tokens)
		}
	}
	if st := e.Stats(); st.CachedTokens != 32*5+16 || st.PrefixEntries == 0 || st.FreeBlocks+st.PrefixBlocks != st.Blocks {
		t.Errorf("stats: %+v", st)
	}
}

// Steering prompt positions counted from the end (a locus) adds at exactly those positions: every
// offset at once is prompt steering, offsets past the prompt's start are none, and one offset
// changes the reply that no steering gives.
func TestLocusSteering(t *testing.T) {
	r := tinyRunner(t)
	e := start(t, r, Options{})
	prompt := tokens(12, 30)
	v := direction(7)
	req := func(span Span, fromEnd ...int) Request {
		return Request{Prompt: prompt, MaxTokens: 10, Stop: []int32{},
			Steering: []Addition{{Point: "blocks.1.hook_resid_pre", Vector: v, Alpha: 8, Span: span, FromEnd: fromEnd}}}
	}
	plain := submit(t, e, Request{Prompt: prompt, MaxTokens: 10, Stop: []int32{}}).Result().Tokens
	every := make([]int, len(prompt))
	for i := range every {
		every[i] = len(prompt) - 1 - i
	}
	if got, want := submit(t, e, req(Prompt, every...)).Result().Tokens, submit(t, e, req(Prompt)).Result().Tokens; !slices.Equal(got, want) {
		t.Errorf("every offset %v, prompt steering %v", got, want)
	}
	if got := submit(t, e, req(Prompt, 12, 40)).Result().Tokens; !slices.Equal(got, plain) {
		t.Errorf("offsets before the prompt: %v, unsteered %v", got, plain)
	}
	if got := submit(t, e, req(Prompt, 0)).Result().Tokens; slices.Equal(got, plain) {
		t.Errorf("steering the last prompt token changed nothing: %v", got)
	}
	for _, bad := range []Request{req(All, 0), req(Generated, 1), req(Prompt, -1), req(Prompt, make([]int, maxFromEnd+1)...)} {
		if err := e.Check(bad); err == nil {
			t.Errorf("%+v was accepted", bad.Steering[0])
		}
	}
}

// When the pool runs short, admission evicts prefix-cache entries, oldest first.
func TestPrefixCacheEviction(t *testing.T) {
	r := tinyRunner(t)
	// 10 blocks: a 40-token prompt with 8 new tokens takes 3, and leaves an entry of 2.
	e := start(t, r, Options{Blocks: 10, PrefixBlocks: 10})
	for i := range 4 {
		submit(t, e, Request{Prompt: tokens(40, uint64(20+i)), MaxTokens: 8, Stop: []int32{}}).Result()
	}
	if st := e.Stats(); st.PrefixEntries != 3 || st.FreeBlocks != 4 {
		t.Fatalf("after 4 prompts: %+v", st)
	}
	// 5 blocks needed: the oldest entry goes; the big prompt's own entry then evicts the next.
	big := Request{Prompt: tokens(40, 30), MaxTokens: 40, Stop: []int32{}}
	if got := submit(t, e, big).Result(); !slices.Equal(got.Tokens, alone(t, r, big).Tokens) {
		t.Errorf("request after eviction differs")
	}
	// Probing inserts entries too, so the newest goes first.
	for _, p := range []struct{ seed, cached int }{{23, 32}, {21, 0}, {20, 0}} {
		if got := submit(t, e, Request{Prompt: tokens(40, uint64(p.seed)), MaxTokens: 1}).Result(); got.CachedTokens != p.cached {
			t.Errorf("prompt of seed %d: %d cached tokens, want %d", p.seed, got.CachedTokens, p.cached)
		}
	}
}

// A stop id ends a request without emitting it.
func TestStopID(t *testing.T) {
	r := tinyRunner(t)
	req := Request{Prompt: tokens(7, 13), MaxTokens: 10, Stop: []int32{}}
	free := alone(t, r, req)
	req.Stop = []int32{free.Tokens[3]}
	got := alone(t, r, req)
	if got.Finish != FinishStop || !slices.Equal(got.Tokens, free.Tokens[:3]) {
		t.Errorf("stop at %d: %v %v, unstopped %v", free.Tokens[3], got.Finish, got.Tokens, free.Tokens)
	}
}

// The end of the model's context ends a request with FinishLength and ContextFull.
func TestContextFull(t *testing.T) {
	r := tinyRunner(t)
	got := alone(t, r, Request{Prompt: tokens(150, 14), MaxTokens: 50, Stop: []int32{}})
	if got.Finish != FinishLength || !got.ContextFull || len(got.Tokens) != 10 {
		t.Errorf("%v, context full %v, %d tokens", got.Finish, got.ContextFull, len(got.Tokens))
	}
}

func TestQueueFull(t *testing.T) {
	r := tinyRunner(t)
	e := newEngine(t, r, Options{MaxWaiting: 2})
	req := Request{Prompt: tokens(4, 15), MaxTokens: 3}
	for range 2 {
		submit(t, e, req)
	}
	if _, err := e.Submit(context.Background(), req); !errors.Is(err, ErrQueueFull) {
		t.Errorf("third request: %v, want ErrQueueFull", err)
	}
}

// Run ends what is left when its context ends, and the engine then refuses requests.
func TestClose(t *testing.T) {
	r := tinyRunner(t)
	e := newEngine(t, r, Options{})
	s := submit(t, e, Request{Prompt: tokens(4, 16), MaxTokens: 3})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Run(ctx)
	if res := s.Result(); res.Finish != FinishCancelled {
		t.Errorf("queued request at close: %v", res.Finish)
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: tokens(4, 16), MaxTokens: 3}); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}

func TestCheck(t *testing.T) {
	r := tinyRunner(t)
	e := newEngine(t, r, Options{Blocks: 8})
	good := func() Request {
		return Request{Prompt: tokens(5, 17), MaxTokens: 4, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: direction(1), Alpha: 1}}}
	}
	if err := e.Check(good()); err != nil {
		t.Fatal(err)
	}
	nan := float32(0)
	nan /= nan
	cases := []struct {
		change func(*Request)
		want   string
	}{
		{func(q *Request) { q.Prompt = nil }, "prompt: empty"},
		{func(q *Request) { q.Prompt = tokens(160, 1) }, "prompt: 160 tokens"},
		{func(q *Request) { q.Prompt[2] = 97 }, "prompt: token 2 is id 97"},
		{func(q *Request) { q.Prompt[1] = -1 }, "prompt: token 1 is id -1"},
		{func(q *Request) { q.MaxTokens = 0 }, "max_tokens: 0"},
		{func(q *Request) { q.MaxTokens = 130 }, "max_tokens: prompt and max_tokens need 144 positions, the KV cache holds 128"},
		{func(q *Request) { q.MaxTokens = math.MaxInt }, "max_tokens: prompt and max_tokens need 160 positions"},
		{func(q *Request) { q.Sampler.Temperature = -1 }, "sampler: temperature -1"},
		{func(q *Request) { q.Sampler.TopP = 2 }, "sampler: top-p 2"},
		{func(q *Request) { q.Steering[0].Point = "blocks.3.hook_resid_post" }, "steering[0]: "},
		{func(q *Request) { q.Steering[0].Point = "blocks.1.attn.hook_pattern" }, "not supported"},
		{func(q *Request) { q.Steering[0].Point = "blocks.1.attn.hook_k" }, "vector has 48 values, the point has 16"},
		{func(q *Request) { q.Steering[0].Vector = q.Steering[0].Vector[:47] }, "vector has 47 values"},
		{func(q *Request) { q.Steering[0].Alpha = nan }, "strength NaN"},
		{func(q *Request) { q.Steering[0].Vector[3] = nan }, "vector value 3 is NaN"},
		{func(q *Request) { q.Steering[0].Span = 7 }, "span 7"},
		{func(q *Request) { q.Steering[0].Alpha = 1e6; q.Steering[0].Vector[5] = -1e33 }, "strength 1e+06 × vector value 5 (-1e+33) overflows float32"},
		{func(q *Request) { q.TopLogprobs = 3 }, "top_logprobs: 3, want 0 to the vocabulary size, with logprobs"},
		{func(q *Request) { q.Logprobs, q.TopLogprobs = true, 98 }, "top_logprobs: 98"},
	}
	for _, c := range cases {
		q := good()
		c.change(&q)
		err := e.Check(q)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error with %q, got %v", c.want, err)
		}
		if _, err := e.Submit(context.Background(), q); err == nil {
			t.Errorf("Submit took a request Check refuses (%s)", c.want)
		}
	}
	if _, err := New(r, Options{BatchTokens: 8, MaxRunning: 8}); err == nil {
		t.Error("a budget no larger than the batch was accepted")
	}
	if _, err := ParseSpan("sometimes"); err == nil || fmt.Sprint(Spans) != "[all prompt generated]" {
		t.Errorf("ParseSpan: %v", err)
	}
}

// Requests one after another reuse one KV sequence id; each still gets its own steering, not
// the hook set its predecessor decoded with.
func TestSteeringFollowsSequence(t *testing.T) {
	r := tinyRunner(t)
	e := start(t, r, Options{MaxRunning: 1})
	for i, seed := range []uint64{6, 7, 6, 8} {
		q := Request{Prompt: tokens(10, 20), MaxTokens: 10, Stop: []int32{}, Steering: []Addition{{Point: "blocks.1.hook_resid_post", Vector: direction(seed), Alpha: 6, Span: Generated}}}
		if got, want := submit(t, e, q).Result(), alone(t, r, q); !slices.Equal(got.Tokens, want.Tokens) {
			t.Errorf("request %d: %v, alone %v", i, got.Tokens, want.Tokens)
		}
	}
}

// Activations that overflow float32 end the request with ErrNonFinite instead of generating from
// NaN logits, and the engine goes on serving.
func TestNonFiniteLogits(t *testing.T) {
	r := tinyRunner(t)
	e := start(t, r, Options{})
	huge := make([]float32, 48)
	for i := range huge {
		huge[i] = 3e38 // finite, and so is 1 × it; two of them at one point are not
	}
	add := Addition{Point: "blocks.1.hook_resid_post", Vector: huge, Alpha: 1}
	res := submit(t, e, Request{Prompt: tokens(6, 21), MaxTokens: 5, Stop: []int32{}, Steering: []Addition{add, add}}).Result()
	if res.Finish != FinishError || !errors.Is(res.Err, ErrNonFinite) || len(res.Tokens) != 0 {
		t.Errorf("overflowing steering: %v, %v, tokens %v", res.Finish, res.Err, res.Tokens)
	}
	plain := Request{Prompt: tokens(6, 21), MaxTokens: 5, Stop: []int32{}}
	if got := submit(t, e, plain).Result(); got.Finish != FinishLength || !slices.Equal(got.Tokens, alone(t, r, plain).Tokens) {
		t.Errorf("the next request: %v %v", got.Finish, got.Tokens)
	}
	if st := e.Stats(); st.Failed != 1 || st.Running != 0 || st.FreeBlocks+st.PrefixBlocks != st.Blocks {
		t.Errorf("stats: %+v", st)
	}
}

// A request asking for log-probabilities gets, before each token, its log-probability under the
// model and the k most likely tokens: for the first token, exactly log softmax of the prompt's
// last logits row from a plain forward pass; under greedy decoding the token is the best of them.
func TestLogprobs(t *testing.T) {
	r := tinyRunner(t)
	e := start(t, r, Options{})
	prompt := tokens(9, 22)
	cpu := tensor.NewCPU(1)
	t.Cleanup(cpu.Close)
	own := llama.NewRunner(r.Model, cpu) // the engine's runner reuses its logits buffer every step
	kv := own.NewKVCache(16, 16)
	if err := kv.Reserve(0, 16); err != nil {
		t.Fatal(err)
	}
	b := llama.Batch{Tokens: prompt, Seq: make([]int32, len(prompt)), Pos: make([]int32, len(prompt))}
	for i := range b.Pos {
		b.Pos[i] = int32(i)
	}
	logits, err := own.Forward(b, kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, temp := range []float32{0, 1.3} {
		s := submit(t, e, Request{Prompt: prompt, MaxTokens: 6, Stop: []int32{}, Logprobs: true, TopLogprobs: 4, Sampler: llama.SamplerConfig{Temperature: temp, Seed: 3}})
		var got []Logprobs
		var toks []int32
		for tok := range s.Tokens {
			got = append(got, <-s.Logprobs)
			toks = append(toks, tok)
		}
		if len(got) != 6 || len(toks) != 6 {
			t.Fatalf("temperature %g: %d entries for %d tokens", temp, len(got), len(toks))
		}
		wantLP, wantTop := llama.Logprobs(logits.F32(), toks[0], 4, nil)
		if got[0].Logprob != wantLP || !slices.Equal(got[0].Top, wantTop) {
			t.Errorf("temperature %g, first token %d: %v %v, want %v %v", temp, toks[0], got[0].Logprob, got[0].Top, wantLP, wantTop)
		}
		for i, g := range got {
			if len(g.Top) != 4 || !(g.Logprob <= 0) || g.Top[0].Logprob < g.Top[3].Logprob {
				t.Errorf("temperature %g, token %d: %+v", temp, i, g)
			}
			if temp == 0 && (g.Top[0].ID != toks[i] || g.Top[0].Logprob != g.Logprob) {
				t.Errorf("greedy token %d is %d, the best is %+v", i, toks[i], g.Top[0])
			}
		}
	}
	if s := submit(t, e, Request{Prompt: prompt, MaxTokens: 2}); s.Logprobs != nil {
		t.Error("a request that did not ask has a Logprobs channel")
	}
}
