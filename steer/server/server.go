// Package server speaks the OpenAI chat-completions API over HTTP on top of the batching engine
// (llama/engine), with one addition: a request's "steering" field adds steering vectors to its
// own rows of the batch, by name from the vectors the server holds or inline as numbers.
//
//	POST /v1/chat/completions  messages, max_tokens, temperature, top_p, seed, stop, stream (SSE), n, steering
//	GET  /v1/models            the one model served
//	GET  /v1/vectors           the steering vectors by name
//	POST /v1/vectors           load a vector at run time: inline, or a file in the vectors folder
//	POST /v1/scores            VADER, emotion-word and first-person rates of texts (scores.go)
//	GET  /v1/attributions[/NAME]  attribution results of the attributions folder, read-only (attributions.go)
//
// Every field is validated; a bad one is a 400 whose error names it in "param", as OpenAI's
// errors do. A full queue is a 429, an oversized body a 413, a missing or wrong API key a 401.
// A client that goes away cancels its generation, which frees its KV blocks at the next step.
package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/steer"
)

// Config is what a server serves and its limits. Zero limits take the defaults in parentheses.
type Config struct {
	Name      string // the model id clients send and /v1/models lists
	Model     *llama.Model
	Tokenizer *tokenizer.Tokenizer
	Engine    *engine.Engine // running: its Run is the caller's
	// VectorDir is the folder POST /v1/vectors may load files from; "" allows inline vectors only.
	VectorDir string
	APIKey    string // when set, every request must carry "Authorization: Bearer APIKey"
	// AttributionDir is the folder whose `tiller attribute` results GET /v1/attributions offers
	// read-only; "" offers none.
	AttributionDir string
	// Lexicon is what POST /v1/scores counts emotion words with (nil: the shipped starter lexicon),
	// LexiconName its file.
	Lexicon     *steer.Lexicon
	LexiconName string

	MaxBodyBytes     int64 // request body limit (1 MiB: room for inline vectors of 8B models)
	DefaultMaxTokens int   // max_tokens when a request gives none (256)
	MaxChoices       int   // the largest n (8)
	MaxStops         int   // stop strings per request (4, as OpenAI)
	Log              *log.Logger

	// MaxAttributionBytes bounds the scores.json GET /v1/attributions/NAME sends (128 MiB).
	MaxAttributionBytes int64
}

// Server handles the API. Its vectors may be added to while it serves.
type Server struct {
	cfg Config
	mux *http.ServeMux

	mu      sync.RWMutex
	vectors map[string]*namedVector
}

type namedVector struct {
	vec    *steer.Vector
	source string // the file it came from, or "inline"
	added  time.Time
}

// New makes a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Model == nil || cfg.Tokenizer == nil || cfg.Engine == nil || cfg.Name == "" {
		return nil, errors.New("server: a model, its name, a tokenizer and an engine are required")
	}
	if _, err := cfg.Tokenizer.ChatTemplate(); err != nil {
		return nil, fmt.Errorf("server: the chat API renders every request with the model's chat template: %w", err)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.DefaultMaxTokens, 256)
	def(&cfg.MaxChoices, 8)
	def(&cfg.MaxStops, 4)
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	s := &Server{cfg: cfg, vectors: map[string]*namedVector{}}
	s.mux = http.NewServeMux()
	s.mux.Handle("/v1/chat/completions", only(http.MethodPost, s.chat))
	s.mux.Handle("/v1/models", only(http.MethodGet, s.models))
	s.mux.Handle("/v1/vectors", methods{http.MethodGet: s.listVectors, http.MethodPost: s.addVector})
	s.mux.Handle("/v1/scores", only(http.MethodPost, s.scoreTexts))
	s.mux.Handle("/v1/attributions", only(http.MethodGet, s.listAttributions))
	s.mux.Handle("/v1/attributions/", only(http.MethodGet, s.readAttribution))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found_error", "", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// ServeHTTP checks the API key and limits the body size, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.APIKey != "" {
		want := []byte("Bearer " + s.cfg.APIKey)
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, http.StatusUnauthorized, "authentication_error", "", "missing or wrong API key: send Authorization: Bearer KEY")
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	s.mux.ServeHTTP(w, r)
}

// methods routes a path by method, answering others with a JSON 405.
type methods map[string]http.HandlerFunc

func only(method string, h http.HandlerFunc) methods { return methods{method: h} }

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	var allow []string
	for k := range m {
		allow = append(allow, k)
	}
	sort.Strings(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "", fmt.Sprintf("%s %s: this path takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
}

func (s *Server) logf(format string, a ...any) {
	if s.cfg.Log != nil {
		s.cfg.Log.Printf(format, a...)
	}
}

// apiError is an OpenAI-style error body.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// badRequest is a 400 for one field.
type badRequest struct {
	param, msg string
}

func (e *badRequest) Error() string { return e.param + ": " + e.msg }

func bad(param, format string, a ...any) *badRequest {
	return &badRequest{param: param, msg: fmt.Sprintf(format, a...)}
}

func writeError(w http.ResponseWriter, code int, kind, param, msg string) {
	var e apiError
	e.Error.Message, e.Error.Type = msg, kind
	if param != "" {
		e.Error.Param = &param
	}
	writeJSON(w, code, e)
}

// writeFailure answers err: a badRequest as a 400 naming its field, anything else as a 500.
func (s *Server) writeFailure(w http.ResponseWriter, err error) {
	var br *badRequest
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "", fmt.Sprintf("request body over %d bytes", tooBig.Limit))
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, "invalid_request_error", br.param, br.Error())
	case errors.Is(err, engine.ErrQueueFull):
		writeError(w, http.StatusTooManyRequests, "rate_limit_error", "", "the queue is full; retry later")
	case errors.Is(err, engine.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "server_error", "", "the server is shutting down")
	default:
		s.logf("internal error: %v", err)
		writeError(w, http.StatusInternalServerError, "server_error", "", err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// models lists the one model.
func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []model{{ID: s.cfg.Name, Object: "model", OwnedBy: "tiller"}}})
}
