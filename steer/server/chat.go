package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tillerlm/tiller/llama/engine"
)

// choice is one of a request's n generations.
type choice struct {
	index  int
	stream *engine.Stream
	cancel context.CancelFunc
	start  time.Time // when the request arrived, for the time to its first token
}

// event is one token's text of one choice (often "", inside a multi-byte character), or its end.
type event struct {
	choice   int
	text     string
	logprobs *logprobEntry // the token's, when the request asked
	final    bool
	finish   string // "stop" or "length", with final
	res      engine.Result
	// interrupted: the generation was cancelled before its end, not by a stop string: by the
	// client going away, or by the engine shutting down.
	interrupted bool
}

// logprobEntry is one token's entry in OpenAI's logprobs.content: its text, its UTF-8 bytes,
// its log-probability and the most likely alternatives.
type logprobEntry struct {
	Token       string       `json:"token"`
	Logprob     float32      `json:"logprob"`
	Bytes       []int        `json:"bytes"` // null for a token that holds part of a character
	TopLogprobs []topLogprob `json:"top_logprobs"`
}

type topLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// choiceLogprobs is a choice's (or a chunk's) logprobs object.
type choiceLogprobs struct {
	Content []logprobEntry `json:"content"`
	Refusal *string        `json:"refusal"`
}

// tokenText is a token id's text as the token decodes on its own (a special token as its name),
// and the text's UTF-8 bytes. A token that holds part of a character decodes to U+FFFD, whose
// bytes are not the token's: its bytes are nil (the tokenizer does not give a token's raw bytes).
func (s *Server) tokenText(id int32) (string, []int) {
	t := s.cfg.Tokenizer.Decode([]int32{id}, false)
	if strings.ContainsRune(t, utf8.RuneError) {
		return t, nil
	}
	b := make([]int, len(t))
	for i := range len(t) {
		b[i] = int(t[i])
	}
	return t, b
}

func (s *Server) logprobEntry(tok int32, lp engine.Logprobs) *logprobEntry {
	e := &logprobEntry{Logprob: lp.Logprob, TopLogprobs: make([]topLogprob, len(lp.Top))}
	e.Token, e.Bytes = s.tokenText(tok)
	for i, t := range lp.Top {
		text, b := s.tokenText(t.ID)
		e.TopLogprobs[i] = topLogprob{Token: text, Logprob: t.Logprob, Bytes: b}
	}
	return e
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return "chatcmpl-" + hex.EncodeToString(b[:])
}

// chat is POST /v1/chat/completions. The body is read first (bounded in size and time), then the
// request takes one of MaxPending slots, or gets 429 at once: parsing and validating it, the
// only work that grows with the body, happens only for admitted requests.
func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	data, err := s.body(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	select {
	case s.pending <- struct{}{}:
		defer func() { <-s.pending }()
	default:
		s.fail(w, &failure{http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded", "",
			fmt.Sprintf("%d requests are already in progress; retry later", s.cfg.MaxPending)})
		return
	}
	var req chatRequest
	if err := decode(data, &req); err != nil {
		s.fail(w, err)
		return
	}
	data = nil // a large body need not live as long as its generation
	j, err := s.parse(&req)
	if err != nil {
		s.fail(w, err)
		return
	}
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
			s.fail(w, err)
			return
		}
		choices[i] = &choice{index: i, stream: st, cancel: ccancel, start: start}
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
	lps := make([][]logprobEntry, j.n)
	finals := make([]event, j.n)
	for left := j.n; left > 0; {
		ev := <-events
		texts[ev.choice].WriteString(ev.text)
		if ev.logprobs != nil {
			lps[ev.choice] = append(lps[ev.choice], *ev.logprobs)
		}
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
		Role    string  `json:"role"`
		Content string  `json:"content"`
		Refusal *string `json:"refusal"`
	}
	type outChoice struct {
		Index        int             `json:"index"`
		Message      message         `json:"message"`
		FinishReason string          `json:"finish_reason"`
		Logprobs     *choiceLogprobs `json:"logprobs"`
	}
	out := make([]outChoice, j.n)
	for i, f := range finals {
		switch {
		case f.res.Finish == engine.FinishError:
			s.fail(w, f.res.Err)
			return
		case f.interrupted: // the client is here: the engine is shutting down
			s.fail(w, engine.ErrClosed)
			return
		}
		out[i] = outChoice{Index: i, Message: message{Role: "assistant", Content: texts[i].String()}, FinishReason: f.finish}
		if j.base.Logprobs {
			out[i].Logprobs = &choiceLogprobs{Content: lps[i]}
			if out[i].Logprobs.Content == nil {
				out[i].Logprobs.Content = []logprobEntry{}
			}
		}
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
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
	last := c.start
	for tok := range c.stream.Tokens {
		var lp *logprobEntry
		if c.stream.Logprobs != nil {
			lp = s.logprobEntry(tok, <-c.stream.Logprobs) // sent before the token: never waits
		}
		if stopped {
			continue // tokens chosen before the cancellation landed
		}
		now := time.Now()
		s.metrics.token(now, now.Sub(last), last == c.start)
		last = now
		text, hit := f.add(detok.Add(tok))
		out <- event{choice: c.index, text: text, logprobs: lp}
		if hit {
			stopped = true
			c.cancel()
		}
	}
	res := c.stream.Result()
	c.cancel()
	ev := event{choice: c.index, final: true, res: res, finish: "length", interrupted: res.Finish == engine.FinishCancelled && !stopped}
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
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	type delta struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content,omitempty"`
	}
	type chunkChoice struct {
		Index        int             `json:"index"`
		Delta        delta           `json:"delta"`
		FinishReason *string         `json:"finish_reason"`
		Logprobs     *choiceLogprobs `json:"logprobs"`
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
	rc := http.NewResponseController(w)
	send := func(v any) {
		if failed {
			return
		}
		b, _ := json.Marshal(v)
		// A client that takes no data for WriteTimeout is gone as far as the server is concerned:
		// the write fails and the generation is cancelled.
		rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			failed = true
			cancel()
			return
		}
		if err := rc.Flush(); err != nil {
			failed = true
			cancel()
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
			if ev.logprobs != nil {
				c.Choices[0].Logprobs = &choiceLogprobs{Content: []logprobEntry{*ev.logprobs}}
			}
			send(c)
			continue
		}
		finals[ev.choice] = ev
		left--
		if ctx.Err() != nil {
			continue
		}
		switch {
		case ev.res.Finish == engine.FinishError:
			send(s.failureOf(ev.res.Err).body())
			failed = true
			cancel()
			continue
		case ev.interrupted: // the client is here: the engine is shutting down
			send(s.failureOf(engine.ErrClosed).body())
			failed = true
			cancel()
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
		rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		fmt.Fprint(w, "data: [DONE]\n\n")
		rc.Flush()
	}
	return finals
}
