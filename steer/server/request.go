package server

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
)

// chatRequest is the body of POST /v1/chat/completions. Pointers tell a field left out from a
// zero. OpenAI fields for features tiller does not have (tools, structured output, audio) are
// accepted at the neutral values clients send by default and refused otherwise, never silently
// ignored; fields that change nothing about the text (store, metadata, service_tier, user) are
// accepted and ignored.
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
	N                *int               `json:"n"`
	Steering         []steeringSpec     `json:"steering"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	Logprobs         *bool              `json:"logprobs"`
	TopLogprobs      *int               `json:"top_logprobs"`

	// Neutral values only.
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"` // no tools: nothing to parallelise
	Functions         json.RawMessage `json:"functions"`
	FunctionCall      json.RawMessage `json:"function_call"`
	ResponseFormat    json.RawMessage `json:"response_format"`
	Modalities        json.RawMessage `json:"modalities"`
	Audio             json.RawMessage `json:"audio"`
	Prediction        json.RawMessage `json:"prediction"`

	// Ignored.
	User        string            `json:"user"`
	Store       *bool             `json:"store"`
	Metadata    map[string]string `json:"metadata"`
	ServiceTier *string           `json:"service_tier"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"` // a string, or a list of {"type": "text", "text": …} parts
	Name    string          `json:"name"`
	// An assistant turn that refused: its text, when content is null.
	Refusal      *string         `json:"refusal"`
	ToolCalls    json.RawMessage `json:"tool_calls"`    // neutral values only
	FunctionCall json.RawMessage `json:"function_call"` // neutral values only
	Audio        json.RawMessage `json:"audio"`         // neutral values only
}

// Bounds of the OpenAI fields, as OpenAI sets them.
const (
	maxTopLogprobs = 20
	maxPenalty     = 2
	maxLogitBias   = 100
	maxBiasedIDs   = 1024
)

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
// naming the field.
func decode(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	err := d.Decode(v)
	if err == nil && d.More() {
		err = bad("body", "data after the JSON object")
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case errors.As(err, new(*failure)):
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
		return bad(field, "unknown field").as("unknown_parameter")
	}
	return bad("body", "%v", err)
}

// parse validates a chat request, field by field. Its work is linear in the body's size: every
// list it expands is bounded by the model (layers) or a constant.
func (s *Server) parse(req *chatRequest) (*job, error) {
	c := s.cfg.Model.Config
	j := &job{n: 1, stream: req.Stream}
	if req.Model != "" && req.Model != s.cfg.Name {
		return nil, s.unknownModel(req.Model)
	}
	if err := unsupported(req); err != nil {
		return nil, err
	}
	msgs, err := messages(req.Messages)
	if err != nil {
		return nil, err
	}
	if j.prompt, err = s.cfg.Tokenizer.EncodeChat(msgs, true); err != nil {
		return nil, bad("messages", "%v", err)
	}
	if len(j.prompt) >= c.MaxPositions {
		return nil, bad("messages", "the prompt is %d tokens; the model takes %d positions in all", len(j.prompt), c.MaxPositions).as("context_length_exceeded")
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
	sc, err := s.sampler(req)
	if err != nil {
		return nil, err
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
	j.base = engine.Request{Prompt: j.prompt, MaxTokens: maxTokens, Sampler: sc}
	if req.Logprobs != nil {
		j.base.Logprobs = *req.Logprobs
	}
	if k := req.TopLogprobs; k != nil {
		switch {
		case *k < 0 || *k > maxTopLogprobs:
			return nil, bad("top_logprobs", "%d, want 0 to %d", *k, maxTopLogprobs)
		case *k > 0 && !j.base.Logprobs:
			return nil, bad("top_logprobs", "needs logprobs: true")
		}
		j.base.TopLogprobs = *k
	}
	if j.base.Steering, err = s.resolve(req.Steering); err != nil {
		return nil, err
	}
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

// sampler reads the sampling fields.
func (s *Server) sampler(req *chatRequest) (llama.SamplerConfig, error) {
	sc := llama.SamplerConfig{Temperature: 1, TopP: 1}
	if t := req.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return sc, bad("temperature", "%g, want 0 to 2 (0 is greedy)", *t)
		}
		sc.Temperature = float32(*t)
	}
	if p := req.TopP; p != nil {
		if !(*p > 0 && *p <= 1) {
			return sc, bad("top_p", "%g, want above 0, up to 1", *p)
		}
		sc.TopP = float32(*p)
	}
	for _, f := range []struct {
		name string
		v    *float64
		dst  *float32
	}{{"frequency_penalty", req.FrequencyPenalty, &sc.FrequencyPenalty}, {"presence_penalty", req.PresencePenalty, &sc.PresencePenalty}} {
		if f.v == nil {
			continue
		}
		if !(*f.v >= -maxPenalty && *f.v <= maxPenalty) {
			return sc, bad(f.name, "%g, want -2 to 2", *f.v)
		}
		*f.dst = float32(*f.v)
	}
	if len(req.LogitBias) > maxBiasedIDs {
		return sc, bad("logit_bias", "%d tokens, at most %d", len(req.LogitBias), maxBiasedIDs)
	}
	for key, b := range req.LogitBias {
		id, err := strconv.ParseInt(key, 10, 32)
		if err != nil || id < 0 || int(id) >= s.cfg.Model.Config.Vocab {
			return sc, bad("logit_bias", "%q: want a token id 0 to %d", key, s.cfg.Model.Config.Vocab-1)
		}
		if !(b >= -maxLogitBias && b <= maxLogitBias) {
			return sc, bad("logit_bias", "token %d: bias %g, want -100 to 100", id, b)
		}
		if sc.LogitBias == nil {
			sc.LogitBias = map[int32]float32{}
		}
		sc.LogitBias[int32(id)] = float32(b)
	}
	if req.Seed != nil {
		sc.Seed = uint64(*req.Seed)
	} else {
		var b [8]byte
		rand.Read(b[:])
		sc.Seed = binary.LittleEndian.Uint64(b[:])
	}
	return sc, nil
}

// unsupported refuses the fields of features tiller does not have unless they ask for nothing.
func unsupported(req *chatRequest) error {
	noTools := isNeutral(req.Tools, `[]`) && isNeutral(req.Functions, `[]`)
	for _, f := range []struct {
		param  string
		raw    json.RawMessage
		values []string
		why    string
	}{
		{"tools", req.Tools, []string{`[]`}, "tools are not supported"},
		{"functions", req.Functions, []string{`[]`}, "functions are not supported"},
		{"tool_choice", req.ToolChoice, choices(noTools), "there are no tools to call"},
		{"function_call", req.FunctionCall, choices(noTools), "there are no functions to call"},
		{"response_format", req.ResponseFormat, []string{`{"type": "text"}`}, "only text output is supported"},
		{"modalities", req.Modalities, []string{`["text"]`}, "only text output is supported"},
		{"audio", req.Audio, nil, "audio output is not supported"},
		{"prediction", req.Prediction, nil, "predicted outputs are not supported"},
	} {
		if !isNeutral(f.raw, f.values...) {
			return bad(f.param, "%s: %s; leave it out or null", strings.TrimSpace(string(f.raw)), f.why).as("unsupported_value")
		}
	}
	return nil
}

func choices(noTools bool) []string {
	if noTools {
		return []string{`"none"`, `"auto"`} // "auto" with nothing to call is "none"
	}
	return []string{`"none"`}
}

// isNeutral reports whether a raw JSON value is absent, null, or equal to one of the values.
func isNeutral(raw json.RawMessage, values ...string) bool {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return true
	}
	var got any
	if json.Unmarshal(raw, &got) != nil {
		return false
	}
	for _, v := range values {
		var want any
		json.Unmarshal([]byte(v), &want)
		if reflect.DeepEqual(got, want) {
			return true
		}
	}
	return false
}

// messages checks the chat messages and flattens their content to text.
func messages(in []chatMessage) ([]chat.Message, error) {
	if len(in) == 0 {
		return nil, bad("messages", "at least one message is required").as("missing_required_parameter")
	}
	out := make([]chat.Message, len(in))
	for i, m := range in {
		param := func(f string) string { return fmt.Sprintf("messages[%d].%s", i, f) }
		role := m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer": // OpenAI's newer name for the system role
			role = "system"
		case "tool", "function":
			return nil, bad(param("role"), "%q: there are no tools here; want system, user or assistant", m.Role).as("unsupported_value")
		case "":
			return nil, bad(param("role"), "required").as("missing_required_parameter")
		default:
			return nil, bad(param("role"), "%q: want system, user or assistant", m.Role)
		}
		for _, f := range []struct {
			name string
			raw  json.RawMessage
		}{{"tool_calls", m.ToolCalls}, {"function_call", m.FunctionCall}, {"audio", m.Audio}} {
			if !isNeutral(f.raw, `[]`) {
				return nil, bad(param(f.name), "not supported; leave it out or null").as("unsupported_value")
			}
		}
		if m.Refusal != nil && role != "assistant" {
			return nil, bad(param("refusal"), "only an assistant message holds a refusal")
		}
		text, err := content(m, param)
		if err != nil {
			return nil, err
		}
		out[i] = chat.Message{Role: role, Content: text}
	}
	return out, nil
}

// content is a message's text: its string, its text parts joined, or an assistant's refusal when
// its content is null. Null or missing content is an error for every other message.
func content(m chatMessage, param func(string) string) (string, error) {
	if len(m.Content) == 0 || bytes.Equal(bytes.TrimSpace(m.Content), []byte("null")) {
		if m.Role == "assistant" && m.Refusal != nil {
			return *m.Refusal, nil
		}
		return "", bad(param("content"), "required: a string or a list of text parts, not null").as("missing_required_parameter")
	}
	var text string
	if err := json.Unmarshal(m.Content, &text); err == nil {
		return text, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", bad(param("content"), "want a string or a list of text parts")
	}
	var b strings.Builder
	for k, p := range parts {
		if p.Type != "text" {
			return "", bad(fmt.Sprintf("%s[%d].type", param("content"), k), "%q: only text parts are supported", p.Type).as("unsupported_value")
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
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

// finiteProduct reports whether alpha·x stays a finite float32 for every x with |x| <= maxAbs.
func finiteProduct(alpha float64, maxAbs float32) bool {
	return math.Abs(alpha)*float64(maxAbs) <= math.MaxFloat32
}
