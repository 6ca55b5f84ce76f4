package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The attacks a hostile client makes on the server, each kind in a loop until the measured load
// ends. They are what a web page, a buggy client or a malicious local process can send:
//
//	amplify    a chat completion whose one steering entry repeats the layer range "0-L" to fill
//	           a 1 MiB body (1.5 M additions per token on a server that neither deduplicates
//	           nor caps them)
//	slow       a chat completion whose 1 MiB body arrives one byte every 100 ms
//	idle       one request, then the keep-alive connection held open without another
//	flood      inline vectors under new names, one POST /v1/vectors after another
//	crosssite  what a web page can send: a text/plain POST /v1/vectors planting a vector, a
//	           chat completion from a foreign Origin, and a read under a rebound Host name
var hostileKinds = []string{"amplify", "slow", "idle", "flood", "crosssite"}

// Hostile runs Clients hostile clients, kinds in turn.
type Hostile struct {
	URL     string
	Clients int
	Hidden  int // the model's hidden_size, for the flood's vectors
	Layers  int // the model's num_hidden_layers, for the amplification's ranges
	// Rate paces each amplify, flood and crosssite client to at most this many requests a
	// second; 0 sends each as soon as the last is answered, which on a machine of few cores
	// mostly measures the load generator and the server competing for the cores.
	Rate float64
}

// HostileReport counts what each kind of attack got back.
type HostileReport struct {
	mu       sync.Mutex
	statuses map[string]map[string]int  // kind → status ("200", "429", "closed", …) → count
	held     map[string]time.Duration   // kind → the longest the server kept one connection open
	elapsed  map[string][]time.Duration // amplify: each request's time to its answer (or to the end)
	planted  map[string]bool            // crosssite: the vector names the server took
}

func newHostileReport() *HostileReport {
	return &HostileReport{statuses: map[string]map[string]int{}, held: map[string]time.Duration{},
		elapsed: map[string][]time.Duration{}, planted: map[string]bool{}}
}

func (r *HostileReport) count(kind, status string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.statuses[kind] == nil {
		r.statuses[kind] = map[string]int{}
	}
	r.statuses[kind][status]++
}

func (r *HostileReport) hold(kind string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held[kind] = max(r.held[kind], d)
}

// String is one line per kind: the answers by status, and the longest-held connection.
func (r *HostileReport) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, k := range hostileKinds {
		st := r.statuses[k]
		keys := make([]string, 0, len(st))
		for s := range st {
			keys = append(keys, s)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, s := range keys {
			parts[i] = fmt.Sprintf("%s×%d", s, st[s])
		}
		fmt.Fprintf(&b, "%-9s %s", k, strings.Join(parts, " "))
		if d, ok := r.held[k]; ok {
			fmt.Fprintf(&b, "; longest connection %.1f s", d.Seconds())
		}
		if ts := r.elapsed[k]; len(ts) > 0 {
			fmt.Fprintf(&b, "; request time %.3f s (median), %.3f s (longest)", percentileDuration(ts, 50), percentileDuration(ts, 100))
		}
		b.WriteString("\n")
	}
	if len(r.planted) > 0 {
		fmt.Fprintf(&b, "crosssite: the server stored %d planted vectors\n", len(r.planted))
	}
	return b.String()
}

func percentileDuration(ts []time.Duration, p float64) float64 {
	xs := make([]float64, len(ts))
	for i, t := range ts {
		xs[i] = t.Seconds()
	}
	return percentile(xs, p)
}

// Run sends the attacks until ctx ends and reports what came back.
func (h Hostile) Run(ctx context.Context) *HostileReport {
	rep := newHostileReport()
	amplify := amplificationBody(h.Layers, 16)
	var wg sync.WaitGroup
	for i := range h.Clients {
		kind := hostileKinds[i%len(hostileKinds)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each client its own connections: the attacks must not share a pool with each other.
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for n := 0; ctx.Err() == nil; n++ {
				start := time.Now()
				h.attack(ctx, client, kind, i, n, amplify, rep)
				if h.Rate > 0 && kind != "slow" && kind != "idle" {
					pause(ctx, time.Duration(float64(time.Second)/h.Rate)-time.Since(start))
				}
			}
		}()
	}
	wg.Wait()
	return rep
}

func (h Hostile) attack(ctx context.Context, client *http.Client, kind string, i, n int, amplify []byte, rep *HostileReport) {
	switch kind {
	case "amplify":
		start := time.Now()
		status := h.post(ctx, client, "/v1/chat/completions", amplify, "application/json", nil)
		if ctx.Err() != nil {
			status = "unanswered at the end"
		}
		rep.count(kind, status)
		rep.mu.Lock()
		rep.elapsed[kind] = append(rep.elapsed[kind], time.Since(start))
		rep.mu.Unlock()
	case "slow":
		h.slowBody(ctx, rep)
	case "idle":
		h.idle(ctx, rep)
	case "flood":
		name := fmt.Sprintf("flood-%d-%d", i, n)
		rep.count(kind, h.post(ctx, client, "/v1/vectors", inlineVector(name, h.Hidden, h.Layers), "application/json", nil))
	case "crosssite":
		evil := map[string]string{"Origin": "http://evil.example"}
		name := fmt.Sprintf("planted-%d-%d", i, n)
		switch n % 3 {
		case 0:
			status := h.post(ctx, client, "/v1/vectors", inlineVector(name, h.Hidden, 1), "text/plain", evil)
			rep.count(kind, "plant "+status)
			if status == "200" {
				rep.mu.Lock()
				rep.planted[name] = true
				rep.mu.Unlock()
			}
		case 1:
			rep.count(kind, "origin "+h.post(ctx, client, "/v1/chat/completions",
				[]byte(`{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}`), "application/json", evil))
		case 2:
			rep.count(kind, "rebind "+h.get(ctx, client, "/v1/vectors", "evil.example"))
		}
	}
}

// post sends a body and returns the status code, or why there was none.
func (h Hostile) post(ctx context.Context, client *http.Client, path string, body []byte, contentType string, header map[string]string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+path, bytes.NewReader(body))
	if err != nil {
		return "error"
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return h.do(client, req)
}

func (h Hostile) get(ctx context.Context, client *http.Client, path, host string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+path, nil)
	if err != nil {
		return "error"
	}
	req.Host = host
	return h.do(client, req)
}

func (h Hostile) do(client *http.Client, req *http.Request) string {
	resp, err := client.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return "cancelled"
		}
		return "failed"
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

// slowBody opens a connection and trickles a 1 MiB body into it until the server gives up on it
// (or the load ends); it records how long the server kept the connection.
func (h Hostile) slowBody(ctx context.Context, rep *HostileReport) {
	conn, host := h.dial(ctx, "slow", rep)
	if conn == nil {
		return
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", host, 1<<20)
	// A reader notices the server's answer or close while the body trickles.
	closed := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			closed <- "closed"
			return
		}
		resp.Body.Close()
		closed <- strconv.Itoa(resp.StatusCode)
	}()
	body := []byte(`{"messages": [{"role": "user", "content": "`)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			rep.count("slow", "open at the end")
			rep.hold("slow", time.Since(start))
			return
		case status := <-closed:
			rep.count("slow", status)
			rep.hold("slow", time.Since(start))
			return
		case <-tick.C:
			b := byte('x')
			if k < len(body) {
				b = body[k]
			}
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte{b}); err != nil {
				rep.count("slow", "closed")
				rep.hold("slow", time.Since(start))
				return
			}
			rep.hold("slow", time.Since(start))
		}
	}
}

// idle makes one request on a keep-alive connection and then holds it, recording how long the
// server keeps it open.
func (h Hostile) idle(ctx context.Context, rep *HostileReport) {
	conn, host := h.dial(ctx, "idle", rep)
	if conn == nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/models HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		rep.count("idle", "closed")
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		rep.count("idle", strconv.Itoa(resp.StatusCode)) // refused: the connection is not kept
		return
	}
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		br.ReadByte() // returns when the server closes the connection (or the load ends and closes it)
		close(closed)
	}()
	select {
	case <-ctx.Done():
		rep.count("idle", "open at the end")
		rep.hold("idle", time.Since(start))
	case <-closed:
		rep.count("idle", "closed by server")
		rep.hold("idle", time.Since(start))
	}
}

// dial opens a raw connection to the server, or counts the failure and pauses; it returns the
// connection (nil on failure) and the host to name in requests.
func (h Hostile) dial(ctx context.Context, kind string, rep *HostileReport) (net.Conn, string) {
	u, _ := url.Parse(h.URL)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		rep.count(kind, "dial failed")
		pause(ctx, 100*time.Millisecond)
		return nil, ""
	}
	return conn, u.Host
}

// Hold opens n slow-body and n idle connections at once, each once, and reports after d what
// the server did with them: answered (503: over its connection limit; 408: the body's time ran
// out), closed, or still open.
func (h Hostile) Hold(ctx context.Context, n int, d time.Duration) *HostileReport {
	rep := newHostileReport()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for range n {
		wg.Add(2)
		go func() { defer wg.Done(); h.slowBody(ctx, rep) }()
		go func() { defer wg.Done(); h.idle(ctx, rep) }()
	}
	wg.Wait()
	return rep
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// amplificationBody is a chat completion whose one steering entry names the vector load-b (every
// layer) with the range of all the model's layers repeated to fill just under 1 MiB.
func amplificationBody(layers, maxTokens int) []byte {
	head := fmt.Sprintf(`{"messages": [{"role": "user", "content": "How was your day?"}], "max_tokens": %d, "temperature": 0, `+
		`"steering": [{"vector": "load-b", "strength": 1, "layers": "`, maxTokens)
	tail := `"}]}`
	part := fmt.Sprintf("0-%d", layers-1)
	var b bytes.Buffer
	b.WriteString(head)
	b.WriteString(part)
	for b.Len()+1+len(part)+len(tail) < 1<<20-64 {
		b.WriteString(",")
		b.WriteString(part)
	}
	b.WriteString(tail)
	return b.Bytes()
}

// inlineVector is a POST /v1/vectors body: a vector of the given width at layers 0 … n-1.
func inlineVector(name string, hidden, n int) []byte {
	layers := map[string][]float64{}
	for l := range n {
		v := make([]float64, hidden)
		for i := range v {
			v[i] = float64((i+l)%7-3) / 8
		}
		layers[strconv.Itoa(l)] = v
	}
	b, _ := json.Marshal(map[string]any{"name": name, "layers": layers})
	return b
}

// memory reads a process's resident set and its peak so far (VmRSS, VmHWM) in bytes.
func memory(pid int) (rss, peak int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || key != "VmRSS" && key != "VmHWM" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %v", pid, line, err)
		}
		if key == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, nil
}

// rssPeak samples a process's resident set every 20 ms until ctx ends, and returns the largest
// (VmHWM cannot be reset, so a peak within one phase of a run is sampled).
func rssPeak(ctx context.Context, pid int) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, _, err := memory(pid); err == nil {
				peak = max(peak, rss)
			}
			select {
			case <-ctx.Done():
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}
