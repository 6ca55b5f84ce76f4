package server

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// metrics are what GET /metrics reports besides the engine's counters: answers by status, the
// time to each request's first token and the gaps between tokens, and tokens per second over the
// last rateWindow seconds.
type metrics struct {
	mu       sync.Mutex
	answers  map[int]uint64 // HTTP status → answers
	ttft     histogram
	itl      histogram
	perSec   [2 * rateWindow]secondCount // a ring of recent seconds' token counts
	streamed uint64                      // tokens sent to clients
}

// rateWindow is the span, in seconds, of the tokens-per-second gauge.
const rateWindow = 10

type secondCount struct {
	sec int64
	n   uint64
}

// histogram is a Prometheus histogram: counts of observations at or below each bound.
type histogram struct {
	bounds []float64 // seconds, ascending
	counts []uint64  // per bound, not cumulative; the last is above every bound
	sum    float64
	n      uint64
}

func newHistogram(bounds ...float64) histogram {
	return histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(x float64) {
	h.counts[sort.SearchFloat64s(h.bounds, x)]++
	h.sum += x
	h.n++
}

func newMetrics() *metrics {
	return &metrics{
		answers: map[int]uint64{},
		ttft:    newHistogram(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
		itl:     newHistogram(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
	}
}

func (m *metrics) answered(status int) {
	if status == 0 {
		status = http.StatusOK // a handler that wrote nothing
	}
	m.mu.Lock()
	m.answers[status]++
	m.mu.Unlock()
}

// token records one token sent to a client at now, gap after the previous one (or after the
// request's arrival for its first).
func (m *metrics) token(now time.Time, gap time.Duration, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if first {
		m.ttft.observe(gap.Seconds())
	} else {
		m.itl.observe(gap.Seconds())
	}
	m.streamed++
	sec := now.Unix()
	slot := &m.perSec[sec%int64(len(m.perSec))]
	if slot.sec != sec {
		*slot = secondCount{sec: sec}
	}
	slot.n++
}

// rate is tokens per second over the rateWindow whole seconds before now.
func (m *metrics) rate(now time.Time) float64 {
	var n uint64
	for _, c := range m.perSec {
		if d := now.Unix() - c.sec; d >= 1 && d <= rateWindow {
			n += c.n
		}
	}
	return float64(n) / rateWindow
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	s.writeMetrics(w, time.Now())
}

// writeMetrics writes the Prometheus text exposition format.
func (s *Server) writeMetrics(w io.Writer, now time.Time) {
	st := s.cfg.Engine.Stats()
	s.mu.RLock()
	nVectors, vectorBytes := len(s.vectors), s.vectorBytes
	s.mu.RUnlock()
	one := func(name, kind, help string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, kind, name, strconv.FormatFloat(v, 'g', -1, 64))
	}
	one("tiller_queue_depth", "gauge", "Requests waiting for a place in the batch.", float64(st.Waiting))
	one("tiller_running_requests", "gauge", "Sequences in the batch (one decode row each, or a prompt being prefilled).", float64(st.Running))
	one("tiller_pending_requests", "gauge", "Chat requests admitted by the server: being validated, queued or running.", float64(len(s.pending)))
	one("tiller_kv_blocks", "gauge", "Blocks of the KV cache pool.", float64(st.Blocks))
	one("tiller_kv_blocks_free", "gauge", "KV cache blocks held by no sequence and no prefix-cache entry.", float64(st.FreeBlocks))
	one("tiller_prefix_cache_blocks", "gauge", "KV cache blocks held by the prefix cache.", float64(st.PrefixBlocks))
	one("tiller_steps_total", "counter", "Forward passes of the engine.", float64(st.Steps))
	one("tiller_prompt_tokens_total", "counter", "Prompt tokens run through the model.", float64(st.PromptTokens))
	one("tiller_prompt_tokens_cached_total", "counter", "Prompt tokens taken from the prefix cache instead.", float64(st.CachedTokens))
	one("tiller_generated_tokens_total", "counter", "Tokens generated.", float64(st.GeneratedTokens))
	one("tiller_sequences_completed_total", "counter", "Generations that ended at a stop or their length.", float64(st.Completed))
	one("tiller_sequences_failed_total", "counter", "Generations that ended in an error.", float64(st.Failed))
	one("tiller_steering_vectors", "gauge", "Steering vectors held.", float64(nVectors))
	one("tiller_steering_vector_bytes", "gauge", "Bytes of the steering vectors' values.", float64(vectorBytes))

	m := s.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	one("tiller_streamed_tokens_total", "counter", "Tokens sent to clients.", float64(m.streamed))
	one("tiller_tokens_per_second", "gauge", fmt.Sprintf("Tokens sent to clients per second over the last %d seconds.", rateWindow), m.rate(now))
	fmt.Fprintf(w, "# HELP tiller_http_responses_total HTTP answers by status code.\n# TYPE tiller_http_responses_total counter\n")
	codes := make([]int, 0, len(m.answers))
	for c := range m.answers {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		fmt.Fprintf(w, "tiller_http_responses_total{code=\"%d\"} %d\n", c, m.answers[c])
	}
	m.ttft.write(w, "tiller_time_to_first_token_seconds", "Time from a request's arrival to its first token (per choice).")
	m.itl.write(w, "tiller_inter_token_latency_seconds", "Time between successive tokens of one choice.")
}

func (h *histogram) write(w io.Writer, name, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", name, strconv.FormatFloat(b, 'g', -1, 64), cum)
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, h.n, name, strconv.FormatFloat(h.sum, 'g', -1, 64), name, h.n)
}
