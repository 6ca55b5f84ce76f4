package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
)

// chatRequest is the body of POST /v1/chat/completions. Pointers tell a field left out from a
// zero. The OpenAI fields tiller does not implement are refused when set to anything but their
// neutral value, rather than silently ignored.
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N                *int           `json:"n"`
	Steering         []steeringSpec `json:"steering"`
	User             string         `json:"user"`
	FrequencyPenalty *float64       `json:"frequency_penalty"`
	PresencePenalty  *float64       `json:"presence_penalty"`
	Logprobs         *bool          `json:"logprobs"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"` // a string, or a list of {"type": "text", "text": …} parts
	Name    string          `json:"name"`
}

// job is a validated chat request.
type job struct {
	prompt       []int32
	base         engine.Request // per choice: the seed is offset by the choice's index
	n            int
	stops        []string
	stream       bool
	includeUsage bool
}

// decode reads a JSON body into v, refusing unknown fields and trailing data; errors are 400s
// naming the field (or 413 for an oversized body).
func decode(r *http.Request, v any) error {
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	err := d.Decode(v)
	if err == nil && d.More() {
		err = bad("body", "data after the JSON object")
	}
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return err
	case errors.As(err, new(*badRequest)):
		return err
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return bad(field, "got a JSON %s, want %s", typeErr.Value, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return bad("body", "invalid JSON at byte %d: %v", syntaxErr.Offset, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return bad("body", "empty or truncated JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return bad(field, "unknown field")
	}
	return bad("body", "%v", err)
}

// parse validates a chat request, field by field.
func (s *Server) parse(req *chatRequest) (*job, error) {
	c := s.cfg.Model.Config
	j := &job{n: 1, stream: req.Stream}
	if req.Model != "" && req.Model != s.cfg.Name {
		return nil, bad("model", "%q is not served here; this server has %q", req.Model, s.cfg.Name)
	}
	msgs, err := messages(req.Messages)
	if err != nil {
		return nil, err
	}
	if j.prompt, err = s.cfg.Tokenizer.EncodeChat(msgs, true); err != nil {
		return nil, bad("messages", "%v", err)
	}
	if len(j.prompt) >= c.MaxPositions {
		return nil, bad("messages", "the prompt is %d tokens; the model takes %d positions in all", len(j.prompt), c.MaxPositions)
	}
	maxTokens := s.cfg.DefaultMaxTokens
	switch {
	case req.MaxTokens != nil && req.MaxCompletionTokens != nil:
		return nil, bad("max_tokens", "give max_tokens or max_completion_tokens, not both")
	case req.MaxTokens != nil:
		maxTokens = *req.MaxTokens
	case req.MaxCompletionTokens != nil:
		maxTokens = *req.MaxCompletionTokens
	}
	if maxTokens < 1 {
		return nil, bad("max_tokens", "%d, want >= 1", maxTokens)
	}
	if req.MaxTokens == nil && req.MaxCompletionTokens == nil {
		maxTokens = min(maxTokens, c.MaxPositions-len(j.prompt)) // a default never makes a request too big
	}
	sc := llama.SamplerConfig{Temperature: 1, TopP: 1}
	if t := req.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return nil, bad("temperature", "%g, want 0 to 2 (0 is greedy)", *t)
		}
		sc.Temperature = float32(*t)
	}
	if p := req.TopP; p != nil {
		if !(*p > 0 && *p <= 1) {
			return nil, bad("top_p", "%g, want above 0, up to 1", *p)
		}
		sc.TopP = float32(*p)
	}
	if req.Seed != nil {
		sc.Seed = uint64(*req.Seed)
	} else {
		var b [8]byte
		rand.Read(b[:])
		sc.Seed = binary.LittleEndian.Uint64(b[:])
	}
	if req.N != nil {
		if *req.N < 1 || *req.N > s.cfg.MaxChoices {
			return nil, bad("n", "%d, want 1 to %d", *req.N, s.cfg.MaxChoices)
		}
		j.n = *req.N
	}
	if j.stops, err = s.stops(req.Stop); err != nil {
		return nil, err
	}
	if req.StreamOptions != nil {
		if !req.Stream {
			return nil, bad("stream_options", "only with stream: true")
		}
		j.includeUsage = req.StreamOptions.IncludeUsage
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"frequency_penalty", req.FrequencyPenalty}, {"presence_penalty", req.PresencePenalty}} {
		if f.v != nil && *f.v != 0 {
			return nil, bad(f.name, "not supported; leave it out or 0")
		}
	}
	if req.Logprobs != nil && *req.Logprobs {
		return nil, bad("logprobs", "not supported")
	}
	adds, err := s.resolve(req.Steering)
	if err != nil {
		return nil, err
	}
	j.base = engine.Request{Prompt: j.prompt, MaxTokens: maxTokens, Sampler: sc, Steering: adds}
	if err := s.cfg.Engine.Check(j.base); err != nil {
		param, _, _ := strings.Cut(err.Error(), ":")
		switch {
		case param == "prompt":
			param = "messages"
		case strings.HasPrefix(param, "steering"):
			param = "steering"
		case param == "sampler":
			param = "temperature"
		}
		return nil, bad(param, "%v", err)
	}
	return j, nil
}

// messages checks the chat messages and flattens their content to text.
func messages(in []chatMessage) ([]chat.Message, error) {
	if len(in) == 0 {
		return nil, bad("messages", "at least one message is required")
	}
	out := make([]chat.Message, len(in))
	for i, m := range in {
		param := func(f string) string { return fmt.Sprintf("messages[%d].%s", i, f) }
		role := m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer": // OpenAI's newer name for the system role
			role = "system"
		case "":
			return nil, bad(param("role"), "required")
		default:
			return nil, bad(param("role"), "%q: want system, user or assistant", m.Role)
		}
		var text string
		if err := json.Unmarshal(m.Content, &text); err != nil {
			var parts []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			}
			if err := json.Unmarshal(m.Content, &parts); err != nil || len(m.Content) == 0 || bytes.Equal(m.Content, []byte("null")) {
				return nil, bad(param("content"), "want a string or a list of text parts")
			}
			var b strings.Builder
			for k, p := range parts {
				if p.Type != "text" {
					return nil, bad(fmt.Sprintf("messages[%d].content[%d].type", i, k), "%q: only text parts are supported", p.Type)
				}
				b.WriteString(p.Text)
			}
			text = b.String()
		}
		out[i] = chat.Message{Role: role, Content: text}
	}
	return out, nil
}

// stops reads "stop": a string or a list of non-empty strings.
func (s *Server) stops(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var one string
	var list []string
	if err := json.Unmarshal(raw, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, bad("stop", "want a string or a list of strings")
	}
	if len(list) > s.cfg.MaxStops {
		return nil, bad("stop", "%d strings, at most %d", len(list), s.cfg.MaxStops)
	}
	for i, st := range list {
		if st == "" || len(st) > 256 {
			return nil, bad("stop", "string %d is empty or over 256 bytes", i)
		}
	}
	return list, nil
}

// choice is one of a request's n generations.
type choice struct {
	index  int
	stream *engine.Stream
	cancel context.CancelFunc
}

// event is one token's text of one choice (often "", inside a multi-byte character), or its end.
type event struct {
	choice int
	text   string
	final  bool
	finish string // "stop" or "length", with final
	res    engine.Result
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := decode(r, &req); err != nil {
		s.writeFailure(w, err)
		return
	}
	j, err := s.parse(&req)
	if err != nil {
		s.writeFailure(w, err)
		return
	}
	start := time.Now()
	// The client's context: when it goes away, every choice is cancelled.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	choices := make([]*choice, j.n)
	for i := range choices {
		cctx, ccancel := context.WithCancel(ctx)
		q := j.base
		q.Sampler.Seed += uint64(i)
		st, err := s.cfg.Engine.Submit(cctx, q)
		if err != nil {
			ccancel()
			cancel()
			for _, c := range choices[:i] {
				c.stream.Result() // the engine lets go of them at its next step
			}
			s.writeFailure(w, err)
			return
		}
		choices[i] = &choice{index: i, stream: st, cancel: ccancel}
	}
	events := make(chan event)
	for _, c := range choices {
		go s.follow(c, j.stops, events)
	}
	id, created := newID(), time.Now().Unix()
	if j.stream {
		finals := s.streamChat(w, ctx, cancel, j, id, created, events)
		s.logChat(ctx, j, finals, start)
		return
	}
	texts := make([]strings.Builder, j.n)
	finals := make([]event, j.n)
	for left := j.n; left > 0; {
		ev := <-events
		texts[ev.choice].WriteString(ev.text)
		if ev.final {
			finals[ev.choice] = ev
			left--
		}
	}
	s.logChat(ctx, j, finals, start)
	if ctx.Err() != nil {
		return // the client is gone
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type outChoice struct {
		Index        int       `json:"index"`
		Message      message   `json:"message"`
		FinishReason string    `json:"finish_reason"`
		Logprobs     *struct{} `json:"logprobs"`
	}
	out := make([]outChoice, j.n)
	for i, f := range finals {
		if f.res.Finish == engine.FinishError {
			s.writeFailure(w, f.res.Err)
			return
		}
		out[i] = outChoice{Index: i, Message: message{Role: "assistant", Content: texts[i].String()}, FinishReason: f.finish}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": s.cfg.Name,
		"choices": out, "usage": usage(j, finals),
	})
}

// usageCounts is OpenAI's usage object; the prompt counts once however many choices there are.
type usageCounts struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func usage(j *job, finals []event) usageCounts {
	u := usageCounts{PromptTokens: len(j.prompt)}
	for _, f := range finals {
		u.CompletionTokens += len(f.res.Tokens)
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails.CachedTokens = finals[0].res.CachedTokens
	return u
}

// follow turns one choice's tokens into text events, applying the stop strings: the text before
// the first stop string goes out, and the generation is cancelled there. It ends with a final event.
func (s *Server) follow(c *choice, stops []string, out chan<- event) {
	detok := s.cfg.Tokenizer.NewStream(true)
	f := stopFilter{stops: stops}
	stopped := false
	for tok := range c.stream.Tokens {
		if stopped {
			continue // tokens chosen before the cancellation landed
		}
		text, hit := f.add(detok.Add(tok))
		out <- event{choice: c.index, text: text}
		if hit {
			stopped = true
			c.cancel()
		}
	}
	res := c.stream.Result()
	c.cancel()
	ev := event{choice: c.index, final: true, res: res, finish: "length"}
	if !stopped {
		text, hit := f.add(detok.Flush())
		ev.text = text + f.flush()
		stopped = hit
	}
	if stopped || res.Finish == engine.FinishStop {
		ev.finish = "stop"
	}
	out <- ev
}

// stopFilter holds back text that may be the start of a stop string, so a stop string split
// across tokens is still caught and never shown.
type stopFilter struct {
	stops []string
	held  string
}

// add returns the text that can go out now, and whether a stop string was reached (the text is
// then everything before it).
func (f *stopFilter) add(s string) (string, bool) {
	buf := f.held + s
	f.held = ""
	cut := -1
	for _, st := range f.stops {
		if i := strings.Index(buf, st); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		return buf[:cut], true
	}
	keep := 0
	for _, st := range f.stops {
		for k := min(len(st)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, st[:k]) {
				keep = k
				break
			}
		}
	}
	f.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush returns the text still held back at the end of a generation.
func (f *stopFilter) flush() string {
	s := f.held
	f.held = ""
	return s
}

// logChat writes one line per chat completion: its size, its outcome and how long it took.
func (s *Server) logChat(ctx context.Context, j *job, finals []event, start time.Time) {
	u := usage(j, finals)
	outcome := make([]string, len(finals))
	for i, f := range finals {
		outcome[i] = f.finish
		if f.res.Finish == engine.FinishError || f.res.Finish == engine.FinishCancelled && ctx.Err() != nil {
			outcome[i] = f.res.Finish.String()
		}
	}
	s.logf("chat: %d prompt tokens (%d cached), %d completion tokens, finish %s, stream %v, %.3f s",
		u.PromptTokens, u.PromptTokensDetails.CachedTokens, u.CompletionTokens, strings.Join(outcome, ","), j.stream, time.Since(start).Seconds())
}

// streamChat writes the events as server-sent events in OpenAI's chunk format, then [DONE], and
// returns each choice's final event.
func (s *Server) streamChat(w http.ResponseWriter, ctx context.Context, cancel context.CancelFunc, j *job, id string, created int64, events <-chan event) []event {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	type delta struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content,omitempty"`
	}
	type chunkChoice struct {
		Index        int       `json:"index"`
		Delta        delta     `json:"delta"`
		FinishReason *string   `json:"finish_reason"`
		Logprobs     *struct{} `json:"logprobs"`
	}
	type chunk struct {
		ID      string        `json:"id"`
		Object  string        `json:"object"`
		Created int64         `json:"created"`
		Model   string        `json:"model"`
		Choices []chunkChoice `json:"choices"`
		Usage   *usageCounts  `json:"usage,omitempty"`
	}
	failed := false // the client stopped reading; drain the events and write nothing more
	send := func(v any) {
		if failed {
			return
		}
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			failed = true
			cancel()
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	empty := ""
	for i := 0; i < j.n; i++ {
		send(chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.Name,
			Choices: []chunkChoice{{Index: i, Delta: delta{Role: "assistant", Content: &empty}}}})
	}
	finals := make([]event, j.n)
	for left := j.n; left > 0; {
		ev := <-events
		c := chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.Name}
		text := ev.text
		if !ev.final {
			// One chunk per token, even one that completes no text yet (part of a multi-byte
			// character, a held-back stop prefix), so clients see every token's time.
			c.Choices = []chunkChoice{{Index: ev.choice, Delta: delta{Content: &text}}}
			send(c)
			continue
		}
		finals[ev.choice] = ev
		left--
		if ev.res.Finish == engine.FinishError {
			var e apiError
			e.Error.Message, e.Error.Type = ev.res.Err.Error(), "server_error"
			send(e)
			failed = true
			cancel()
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		// The text held back to the end (an unfinished character) rides with the finish reason.
		finish := ev.finish
		c.Choices = []chunkChoice{{Index: ev.choice, FinishReason: &finish}}
		if text != "" {
			c.Choices[0].Delta.Content = &text
		}
		send(c)
	}
	if ctx.Err() != nil {
		return finals
	}
	if j.includeUsage {
		u := usage(j, finals)
		send(chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.Name, Choices: []chunkChoice{}, Usage: &u})
	}
	if !failed {
		fmt.Fprint(w, "data: [DONE]\n\n")
		if flusher != nil {
			flusher.Flush()
		}
	}
	return finals
}
