// Package server speaks the OpenAI chat-completions API over HTTP on top of the batching engine
// (llama/engine), with one addition: a request's "steering" field adds steering vectors to its
// own rows of the batch, by name from the vectors the server holds or inline as numbers.
//
//	POST /v1/chat/completions  messages, max_tokens, temperature, top_p, seed, stop, stream (SSE), n,
//	                           logprobs, top_logprobs, presence/frequency_penalty, logit_bias, steering
//	GET  /v1/models            the one model served; GET /v1/models/{id} it alone
//	GET  /v1/vectors           the steering vectors by name
//	POST /v1/vectors           load a vector at run time: inline, or a file in the vectors folder
//	GET  /metrics              Prometheus text: queue, batch, tokens, latency histograms
//	POST /v1/scores            VADER, emotion-word and first-person rates of texts (scores.go)
//	GET  /v1/attributions[/NAME]  attribution results of the attributions folder, read-only (attributions.go)
//
// Clients are assumed hostile (guard.go): every field is validated and a bad one is a 400 whose
// error names it in "param", as OpenAI's errors do; the work one request can cause is bounded
// (layers deduplicated, additions capped, chat requests admitted before they are validated, a
// full queue a fast 429); a web page cannot reach the server (JSON bodies only, foreign Origin
// and, on loopback, foreign Host refused); connections have timeouts and a limit. A client that
// goes away cancels its generation, which frees its KV blocks at the next step.
package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tillerlm/tiller/steer"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/llama/tokenizer"
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

	// CheckHost refuses requests whose Host header is not a loopback name or one of AllowHosts:
	// a server on loopback is then out of reach of DNS rebinding.
	CheckHost  bool
	AllowHosts []string
	// AllowOrigins are the browser origins ("http://host:port") allowed besides loopback ones;
	// a request from any other Origin is refused.
	AllowOrigins []string

	MaxBodyBytes     int64 // request body limit (1 MiB: room for inline vectors of 8B models)
	DefaultMaxTokens int   // max_tokens when a request gives none (256)
	MaxChoices       int   // the largest n (8)
	MaxStops         int   // stop strings per request (4, as OpenAI)
	// MaxPending is how many chat requests may be admitted at once, from validation to their end;
	// the next gets 429 before its body is parsed (96: the engine's default batch and queue).
	MaxPending     int
	MaxVectors     int           // vectors held (256)
	MaxVectorBytes int64         // bytes of their values (256 MiB)
	BodyTimeout    time.Duration // to receive one request body (30 s)
	WriteTimeout   time.Duration // for a client to take one write of the answer (30 s)
	Log            *log.Logger

	// MaxAttributionBytes bounds the scores.json GET /v1/attributions/NAME sends (128 MiB).
	MaxAttributionBytes int64
}

// Server handles the API. Its vectors may be added to while it serves.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	started time.Time
	pending chan struct{} // a slot per admitted chat request
	metrics *metrics

	mu          sync.RWMutex
	vectors     map[string]*namedVector
	vectorBytes int64
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
	def(&cfg.MaxPending, 96)
	def(&cfg.MaxVectors, 256)
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxVectorBytes == 0 {
		cfg.MaxVectorBytes = 256 << 20
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.MaxPending < 1 || cfg.MaxVectors < 1 || cfg.MaxBodyBytes < 1 || cfg.MaxVectorBytes < 1 {
		return nil, fmt.Errorf("server: max pending %d, max vectors %d, max body %d and max vector bytes %d must be positive",
			cfg.MaxPending, cfg.MaxVectors, cfg.MaxBodyBytes, cfg.MaxVectorBytes)
	}
	for _, o := range cfg.AllowOrigins {
		if o != strings.TrimSuffix(o, "/") || !strings.Contains(o, "://") {
			return nil, fmt.Errorf("server: allowed origin %q: want scheme://host[:port], no path", o)
		}
	}
	s := &Server{cfg: cfg, vectors: map[string]*namedVector{}, started: time.Now(),
		pending: make(chan struct{}, cfg.MaxPending), metrics: newMetrics()}
	s.mux = http.NewServeMux()
	s.mux.Handle("/v1/chat/completions", only(http.MethodPost, s.chat))
	s.mux.Handle("/v1/models", only(http.MethodGet, s.models))
	s.mux.Handle("/v1/models/", only(http.MethodGet, s.model))
	s.mux.Handle("/v1/vectors", methods{http.MethodGet: s.listVectors, http.MethodPost: s.addVector})
	s.mux.Handle("/metrics", only(http.MethodGet, s.serveMetrics))
	s.mux.Handle("/v1/scores", only(http.MethodPost, s.scoreTexts))
	s.mux.Handle("/v1/attributions", only(http.MethodGet, s.listAttributions))
	s.mux.Handle("/v1/attributions/", only(http.MethodGet, s.readAttribution))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, &failure{http.StatusNotFound, "not_found_error", "not_found", "", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	})
	return s, nil
}

// ServeHTTP turns away what a hostile client or a web page sends (guard.go), limits the body,
// then routes, counting each answer by status.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { s.metrics.answered(rec.status) }()
	if f := s.guard(rec, r); f != nil {
		s.fail(rec, f)
		return
	}
	if r.Method == http.MethodOptions {
		rec.WriteHeader(http.StatusNoContent) // a preflight from an allowed origin (guard wrote its headers)
		return
	}
	r.Body = http.MaxBytesReader(rec, r.Body, s.cfg.MaxBodyBytes)
	s.mux.ServeHTTP(rec, r)
}

// statusRecorder remembers the status of the answer; Unwrap lets http.ResponseController reach
// the connection's deadlines and flushing through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// FlushError lets http.ResponseController flush through the recorder and see the error of a
// client that has gone.
func (r *statusRecorder) FlushError() error {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

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
	writeError(w, &failure{http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "",
		fmt.Sprintf("%s %s: this path takes %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
}

func (s *Server) logf(format string, a ...any) {
	if s.cfg.Log != nil {
		s.cfg.Log.Printf(format, a...)
	}
}

// failure is an answer other than success: its HTTP status, OpenAI's error type and code, the
// request field at fault (if one is) and a message.
type failure struct {
	status            int
	kind, code, param string
	msg               string
}

func (f *failure) Error() string {
	if f.param == "" {
		return f.msg
	}
	return f.param + ": " + f.msg
}

// bad is a 400 for one field.
func bad(param, format string, a ...any) *failure {
	return &failure{http.StatusBadRequest, "invalid_request_error", "invalid_value", param, fmt.Sprintf(format, a...)}
}

// as gives a failure a more specific code.
func (f *failure) as(code string) *failure {
	f.code = code
	return f
}

// errorBody is an OpenAI-style error answer.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func (f *failure) body() errorBody {
	var e errorBody
	e.Error.Message, e.Error.Type, e.Error.Code = f.Error(), f.kind, f.code
	if f.param != "" {
		e.Error.Param = &f.param
	}
	return e
}

func writeError(w http.ResponseWriter, f *failure) {
	if f.status == http.StatusTooManyRequests || f.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, f.status, f.body())
}

// fail answers err: a failure as itself, the engine's and the body reader's errors as their
// statuses, anything else as a 500.
func (s *Server) fail(w http.ResponseWriter, err error) {
	writeError(w, s.failureOf(err))
}

func (s *Server) failureOf(err error) *failure {
	var f *failure
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &f):
		return f
	case errors.As(err, &tooBig):
		return &failure{http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "", fmt.Sprintf("request body over %d bytes", tooBig.Limit)}
	case errors.Is(err, engine.ErrQueueFull):
		return &failure{http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded", "", "the queue is full; retry later"}
	case errors.Is(err, engine.ErrClosed):
		return &failure{http.StatusServiceUnavailable, "server_error", "server_shutting_down", "", "the server is shutting down"}
	case errors.Is(err, engine.ErrNonFinite):
		return bad("steering", "%v: lower the steering strength", err).as("non_finite_activations")
	}
	s.logf("internal error: %v", err)
	return &failure{http.StatusInternalServerError, "server_error", "internal_error", "", err.Error()}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// modelInfo is a model as /v1/models lists it; created is when the server started.
type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) modelInfo() modelInfo {
	return modelInfo{ID: s.cfg.Name, Object: "model", Created: s.started.Unix(), OwnedBy: "tiller"}
}

// models lists the one model.
func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []modelInfo{s.modelInfo()}})
}

// model is GET /v1/models/{id}.
func (s *Server) model(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/models/")
	if id != s.cfg.Name {
		s.fail(w, s.unknownModel(id))
		return
	}
	writeJSON(w, http.StatusOK, s.modelInfo())
}

func (s *Server) unknownModel(id string) *failure {
	return &failure{http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
		fmt.Sprintf("the model %q does not exist here; this server has %q", id, s.cfg.Name)}
}
