package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Load is one measured run: Requests streaming chat completions, at most Concurrency in flight.
type Load struct {
	URL         string // base URL of the server, ending before /v1
	Concurrency int
	Requests    int
	MaxTokens   int
	Steering    func(i int) []map[string]any // request i's steering list; nil: none
}

// Report is what a run measured. Latencies are in seconds.
type Report struct {
	Requests, Errors int
	FirstError       string
	Tokens           int     // completion tokens, from the usage chunks
	Wall             float64 // from the first send to the last response's end
	TTFT             []float64
	ITL              []float64 // gaps between successive token chunks of one response
	Latency          []float64 // from sending a request to the end of its response
}

// Throughput is completion tokens per second of wall time.
func (r Report) Throughput() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Tokens) / r.Wall
}

// percentile is the p-th percentile (0 to 100) of xs by the nearest-rank method; 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// prompts are short conversations the requests cycle through.
var prompts = []string{
	"How was your day?",
	"I just got back from a long trip and I am exhausted.",
	"Can you tell me something nice about the ocean?",
	"My exam results came out today.",
	"What should I cook for dinner tonight?",
}

// Run sends the load and measures it; ctx bounds the whole run.
func (l Load) Run(ctx context.Context, client *http.Client) Report {
	var (
		mu  sync.Mutex
		rep = Report{Requests: l.Requests}
		wg  sync.WaitGroup
		sem = make(chan struct{}, l.Concurrency)
	)
	start := time.Now()
	for i := 0; i < l.Requests; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			one, err := l.send(ctx, client, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Errors++
				if rep.FirstError == "" {
					rep.FirstError = err.Error()
				}
				return
			}
			rep.Tokens += one.tokens
			if one.ttft > 0 {
				rep.TTFT = append(rep.TTFT, one.ttft)
			}
			rep.ITL = append(rep.ITL, one.gaps...)
			rep.Latency = append(rep.Latency, one.latency)
		}()
	}
	wg.Wait()
	rep.Wall = time.Since(start).Seconds()
	return rep
}

type measured struct {
	tokens  int
	ttft    float64 // 0 when the reply was empty (its first token was a stop id)
	gaps    []float64
	latency float64
}

// send makes request i and reads its event stream: one chunk per generated token after the role
// chunk, then the finish, the usage and [DONE].
func (l Load) send(ctx context.Context, client *http.Client, i int) (measured, error) {
	body := map[string]any{
		"messages":       []map[string]string{{"role": "user", "content": prompts[i%len(prompts)]}},
		"max_tokens":     l.MaxTokens,
		"temperature":    0.8,
		"seed":           i,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
	}
	if l.Steering != nil {
		body["steering"] = l.Steering(i)
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL+"/v1/chat/completions", bytes.NewReader(b))
	if err != nil {
		return measured{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return measured{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return measured{}, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	var m measured
	var last time.Time
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Role    string  `json:"role"`
					Content *string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return m, fmt.Errorf("bad chunk %q: %v", data, err)
		}
		now := time.Now()
		switch {
		case c.Error != nil:
			return m, fmt.Errorf("stream error: %s", c.Error.Message)
		case c.Usage != nil:
			m.tokens = c.Usage.CompletionTokens
		case len(c.Choices) == 1 && c.Choices[0].Delta.Role == "" && c.Choices[0].FinishReason == nil:
			if last.IsZero() {
				m.ttft = now.Sub(sent).Seconds()
			} else {
				m.gaps = append(m.gaps, now.Sub(last).Seconds())
			}
			last = now
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if !done {
		return m, fmt.Errorf("stream ended without [DONE]")
	}
	m.latency = time.Since(sent).Seconds()
	return m, nil
}
