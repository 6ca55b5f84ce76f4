package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A steering entry's layers count once each however often they are named; a layers text that
// repeats itself to fill the body (a million additions per token, once) is refused at once.
func TestLayersDeduplicated(t *testing.T) {
	f := newFixture(t, options{})
	body := func(layers string) string {
		return `{` + hello + `, "max_tokens": 8, "temperature": 0, "steering": [{"vector": "calm", "strength": 30, "layers": ` + layers + `}]}`
	}
	once := f.chat(t, body(`"0-1"`)).Choices[0].Message.Content
	for _, layers := range []string{`"0-1,1,0-0,1,0-1,0,1"`, `[1, 0, 1, 1, 0]`} {
		if got := f.chat(t, body(layers)).Choices[0].Message.Content; got != once {
			t.Errorf("layers %s: %q, given once: %q", layers, got, once)
		}
	}
	var b strings.Builder
	b.WriteString("0-1")
	for b.Len() < 1<<20-256 {
		b.WriteString(",0-1,1,0")
	}
	start := time.Now()
	if code, out := f.post(t, "/v1/chat/completions", body(`"`+b.String()+`"`)); code != http.StatusBadRequest || errParam(out) != "steering[0].layers" {
		t.Errorf("a %d-byte layers text: %d %v", b.Len(), code, out)
	}
	t.Logf("a %d-byte layers text refused in %v", b.Len(), time.Since(start))
	if code, _ := f.post(t, "/v1/chat/completions", body(`"0, 1, 0-1, 1-1"`)); code != http.StatusOK {
		t.Errorf("a short text naming layers twice: %d", code)
	}
	for _, c := range []struct {
		in   string
		want []int
	}{
		{`"0-1,1,0-0,1"`, []int{0, 1}}, {`"1"`, []int{1}}, {`[1, 1, 0, 1]`, []int{0, 1}}, {`1`, []int{1}}, {`" 1 - 1 "`, nil},
	} {
		got, err := parseLayers([]byte(c.in), 2)
		if !slices.Equal(got, c.want) || (err == nil) != (c.want != nil) {
			t.Errorf("parseLayers(%s) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	if got, err := parseLayers([]byte(`"3-5,0-1,4-9,2"`), 12); err != nil || !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("overlapping ranges: %v %v", got, err)
	}
}

// A request's additions (entries × layers) are capped: 4 per layer of the model, at least 16.
func TestAdditionsCapped(t *testing.T) {
	f := newFixture(t, options{})
	entry := `{"vector": "calm", "strength": 1, "layers": "0-1"}`
	entries := func(n int) string {
		return `{` + hello + `, "max_tokens": 2, "steering": [` + strings.TrimSuffix(strings.Repeat(entry+",", n), ",") + `]}`
	}
	if code, out := f.post(t, "/v1/chat/completions", entries(8)); code != http.StatusOK { // 16 additions
		t.Errorf("16 additions: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/chat/completions", entries(9)); code != http.StatusBadRequest || errParam(out) != "steering" {
		t.Errorf("18 additions: %d %v", code, out)
	}
}

// Once MaxPending requests are admitted, the next gets 429 with Retry-After before its body is
// parsed: a bad body gets 429, not 400.
func TestAdmissionBeforeValidation(t *testing.T) {
	f := newFixture(t, options{noRun: true, server: func(c *Config) { c.MaxPending = 1 }})
	queued := make(chan int, 1)
	go func() {
		code, _ := f.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 2}`)
		queued <- code
	}()
	for f.eng.Stats().Waiting == 0 {
		time.Sleep(time.Millisecond)
	}
	code, out, h := f.postHeader(t, "/v1/chat/completions", `{"messages": "not a list", "bogus": [`)
	if code != http.StatusTooManyRequests || errCode(out) != "rate_limit_exceeded" || h.Get("Retry-After") != "1" {
		t.Errorf("over the limit: %d %v, Retry-After %q", code, out, h.Get("Retry-After"))
	}
	if code, _ := f.get(t, "/v1/models"); code != http.StatusOK {
		t.Errorf("other routes are not admitted: %d", code)
	}
	f.eng.Run(cancelled())
	if code := <-queued; code != http.StatusServiceUnavailable {
		t.Errorf("the queued request: %d", code)
	}
}

// A web page's requests are refused: a text/plain POST (which needs no preflight), a foreign
// Origin, and a foreign Host (DNS rebinding). Loopback origins and hosts, and those the operator
// allows, pass; an allowed origin's preflight is answered.
func TestCrossSite(t *testing.T) {
	f := newFixture(t, options{server: func(c *Config) {
		c.AllowOrigins = []string{"https://ui.example"}
		c.AllowHosts = []string{"tiller.internal"}
	}})
	plant := `{"name": "planted", "layers": {"1": [` + strings.TrimSuffix(strings.Repeat("1,", 64), ",") + `]}}`
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		req, _ := http.NewRequest(http.MethodPost, f.url+"/v1/vectors", strings.NewReader(plant))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if code, out, _ := do(t, req); code != http.StatusUnsupportedMediaType || errCode(out) != "unsupported_media_type" {
			t.Errorf("Content-Type %q: %d %v", ct, code, out)
		}
	}
	if _, ok := f.srv.vector("planted"); ok {
		t.Fatal("a text/plain POST planted a vector")
	}
	refused := []struct {
		header []string
		code   string
	}{
		{[]string{"Origin", "http://evil.example"}, "forbidden_origin"},
		{[]string{"Origin", "null"}, "forbidden_origin"},
		{[]string{"Origin", "http://127.0.0.1.evil.example"}, "forbidden_origin"},
		{[]string{"Host", "evil.example"}, "forbidden_host"},
		{[]string{"Host", "evil.example:80"}, "forbidden_host"},
		{[]string{"Host", "127.0.0.1.nip.io"}, "forbidden_host"},
	}
	for _, c := range refused {
		if code, out := f.post(t, "/v1/vectors", plant, c.header...); code != http.StatusForbidden || errCode(out) != c.code {
			t.Errorf("POST with %v: %d %v", c.header, code, out)
		}
		if code, out := f.get(t, "/v1/vectors", c.header...); code != http.StatusForbidden || errCode(out) != c.code {
			t.Errorf("GET with %v: %d %v", c.header, code, out)
		}
	}
	for _, h := range [][]string{
		{"Origin", "http://localhost:3000"}, {"Origin", "http://127.0.0.1:5173"}, {"Origin", "https://ui.example"},
		{"Host", "localhost:8080"}, {"Host", "[::1]:8080"}, {"Host", "tiller.internal:8080"}, {"Host", "LOCALHOST"},
	} {
		if code, out := f.get(t, "/v1/vectors", h...); code != http.StatusOK {
			t.Errorf("GET with %v: %d %v", h, code, out)
		}
	}
	req, _ := http.NewRequest(http.MethodOptions, f.url+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://ui.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := resp.Header; resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "https://ui.example" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	// A server that does not check hosts (one on a public address, behind its API key) answers any.
	open := newFixture(t, options{apiKey: "k", server: func(c *Config) { c.CheckHost = false }})
	if code, out := open.get(t, "/v1/models", "Host", "api.example.com", "Authorization", "Bearer k"); code != http.StatusOK {
		t.Errorf("unchecked host: %d %v", code, out)
	}
}

// The vector store is capped in count and bytes, and a vector in use is replaced only when the
// request says so; the log says who replaced what.
func TestVectorStore(t *testing.T) {
	f := newFixture(t, options{server: func(c *Config) { c.MaxVectors = 4; c.MaxVectorBytes = 6 * 64 * 4 }})
	// joy (1 layer) and calm (2) hold 3 × 64 float32s of the 6 allowed.
	inline := func(name string, layers int, extra string) string {
		var ls []string
		for l := range layers {
			ls = append(ls, fmt.Sprintf(`"%d": [%s]`, l, strings.TrimSuffix(strings.Repeat("0.5,", 64), ",")))
		}
		return `{"name": "` + name + `", "layers": {` + strings.Join(ls, ", ") + `}` + extra + `}`
	}
	if code, out := f.post(t, "/v1/vectors", inline("joy", 1, "")); code != http.StatusConflict || errCode(out) != "vector_exists" || errParam(out) != "name" {
		t.Errorf("replacing joy unasked: %d %v", code, out)
	}
	if nv, _ := f.srv.vector("joy"); nv.source != "joy.safetensors" {
		t.Errorf("joy's source is now %q", nv.source)
	}
	if code, out := f.post(t, "/v1/vectors", inline("big", 2, "")); code != http.StatusOK {
		t.Fatalf("a fourth and fifth layer: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/vectors", inline("huge", 2, "")); code != http.StatusConflict || errCode(out) != "vector_store_full" {
		t.Errorf("past the byte limit: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/vectors", inline("small", 1, "")); code != http.StatusOK {
		t.Errorf("the sixth layer: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/vectors", `{"name": "fifth", "file": "joy.safetensors"}`); code != http.StatusConflict || errCode(out) != "vector_store_full" {
		t.Errorf("a fifth vector: %d %v", code, out)
	}
	if code, out := f.post(t, "/v1/vectors", inline("joy", 1, `, "replace": true`)); code != http.StatusOK || out["source"] != "inline" {
		t.Errorf("replacing joy when asked: %d %v", code, out)
	}
	if !strings.Contains(f.log.String(), "vector joy replaced by client 127.0.0.1:") || !strings.Contains(f.log.String(), "was from joy.safetensors, now from inline") {
		t.Errorf("log: %s", f.log.String())
	}
	// The limits hold for the vectors folder too, naming the flags that raise them.
	g := newFixture(t, options{server: func(c *Config) { c.MaxVectors = 2 }})
	os.Remove(filepath.Join(g.vectors, "other.safetensors"))
	joy, _ := os.ReadFile(filepath.Join(g.vectors, "joy.safetensors"))
	os.WriteFile(filepath.Join(g.vectors, "joy2.safetensors"), joy, 0o644)
	if _, err := g.srv.LoadVectorDir(g.vectors); err == nil || !strings.Contains(err.Error(), "--max-vectors") || !strings.Contains(err.Error(), "joy2.safetensors") {
		t.Errorf("a folder over the limit: %v", err)
	}
}

// The vectors folder's files are confined to it: a symlink out of it is refused, and a client
// learns nothing of a file outside it or of what a file that is not a vector holds.
func TestVectorFilesConfined(t *testing.T) {
	f := newFixture(t, options{})
	outside := t.TempDir()
	secret := filepath.Join(outside, "shadow")
	os.WriteFile(secret, []byte("root:$6$SECRET:19000::::::\n"), 0o600)
	os.Symlink(outside, filepath.Join(f.vectors, "etc"))
	os.Symlink(secret, filepath.Join(f.vectors, "link.safetensors"))
	os.WriteFile(filepath.Join(f.vectors, "notes.safetensors"), []byte("PRIVATE!this is not a vector"), 0o644)
	os.Mkdir(filepath.Join(f.vectors, "sub"), 0o755)
	os.Symlink(filepath.Join(f.vectors, "joy.safetensors"), filepath.Join(f.vectors, "sub", "joy-link.safetensors"))
	leaks := []string{"root:", "SECRET", "PRIVATE", outside, f.vectors, "no such file", "permission"}
	for _, file := range []string{"etc/shadow", "link.safetensors", "etc/missing", "notes.safetensors", "missing.safetensors", "sub"} {
		code, out := f.post(t, "/v1/vectors", `{"name": "x", "file": "`+file+`"}`)
		msg := fmt.Sprint(out["error"])
		if code != http.StatusBadRequest || errParam(out) != "file" {
			t.Errorf("%s: %d %v", file, code, out)
		}
		for _, leak := range leaks {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: the answer holds %q: %s", file, leak, msg)
			}
		}
	}
	if !strings.Contains(f.log.String(), "outside the vectors folder") {
		t.Errorf("the log does not say why: %s", f.log.String())
	}
	// A link that stays inside the folder is a file of the folder; the source is relative.
	if code, out := f.post(t, "/v1/vectors", `{"name": "joy3", "file": "sub/joy-link.safetensors"}`); code != http.StatusOK || out["source"] != "sub/joy-link.safetensors" {
		t.Errorf("a link inside the folder: %d %v", code, out)
	}
	if _, out := f.get(t, "/v1/vectors"); strings.Contains(fmt.Sprint(out), f.vectors) {
		t.Errorf("GET /v1/vectors shows the folder's path: %v", out)
	}
	// At start, a link out of the folder is an error naming it.
	os.Remove(filepath.Join(f.vectors, "notes.safetensors"))
	os.Remove(filepath.Join(f.vectors, "other.safetensors"))
	if _, err := f.srv.LoadVectorDir(f.vectors); err == nil || !strings.Contains(err.Error(), "link.safetensors") || !strings.Contains(err.Error(), "outside the vectors folder") {
		t.Errorf("a folder with a link out of it: %v", err)
	}
}

// A GGUF control vector whose data offset wraps around 2^64 is a 400, not a dropped connection.
func TestWrappingGGUFOffset(t *testing.T) {
	f := newFixture(t, options{})
	var b []byte
	le := func(x uint64, n int) {
		for i := range n {
			b = append(b, byte(x>>(8*i)))
		}
	}
	str := func(s string) { le(uint64(len(s)), 8); b = append(b, s...) }
	b = append(b, "GGUF"...)
	le(3, 4)
	le(1, 8)
	le(3, 8)
	str("general.architecture")
	le(8, 4)
	str("controlvector")
	str("controlvector.model_hint")
	le(8, 4)
	str("llama")
	str("controlvector.layer_count")
	le(4, 4)
	le(1, 4)
	str("direction.1")
	le(1, 4)
	le(64, 8)
	le(0, 4)
	le(1<<64-32, 8) // offset + 256 bytes wraps to 224
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	b = append(b, make([]byte, 256)...)
	os.WriteFile(filepath.Join(f.vectors, "wrap.gguf"), b, 0o644)
	if code, out := f.post(t, "/v1/vectors", `{"name": "wrap", "file": "wrap.gguf"}`); code != http.StatusBadRequest || errParam(out) != "file" {
		t.Errorf("wrapping offset: %d %v", code, out)
	}
}

// Strength × vector value past float32 is a 400 naming the strength; additions that each fit but
// together overflow the activations end the request with a 400 naming the steering, streamed or
// not, and the server goes on.
func TestNonFiniteSteering(t *testing.T) {
	f := newFixture(t, options{})
	vec := func(x string) string { return "[" + strings.TrimSuffix(strings.Repeat(x+",", 64), ",") + "]" }
	code, out := f.post(t, "/v1/chat/completions", `{`+hello+`, "max_tokens": 4, "steering": [{"vector": `+vec("3e38")+`, "strength": 1e6, "layers": "1"}]}`)
	if code != http.StatusBadRequest || errParam(out) != "steering[0].strength" {
		t.Errorf("3e38 × 1e6: %d %v", code, out)
	}
	twice := `{"vector": ` + vec("3e38") + `, "strength": 1, "layers": "1"}`
	body := `{` + hello + `, "max_tokens": 4, "steering": [` + twice + `, ` + twice + `]`
	code, out = f.post(t, "/v1/chat/completions", body+`}`)
	if code != http.StatusBadRequest || errParam(out) != "steering" || errCode(out) != "non_finite_activations" {
		t.Errorf("two additions of 3e38: %d %v", code, out)
	}
	resp, err := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body+`, "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	events := sse(t, resp.Body)
	resp.Body.Close()
	if last := events[len(events)-1]; !strings.Contains(last, "non_finite_activations") || slices.Contains(events, "[DONE]") {
		t.Errorf("streamed: %q", events)
	}
	if c := f.chat(t, `{`+hello+`, "max_tokens": 3}`); len(c.Choices) != 1 {
		t.Errorf("the server stopped serving: %+v", c)
	}
}

// A body that does not arrive within BodyTimeout gets 408 and the connection is closed; the
// deadline is lifted once the body is in, so a generation that takes longer is not cut.
func TestBodyTimeout(t *testing.T) {
	f := newFixture(t, options{server: func(c *Config) { c.BodyTimeout = 300 * time.Millisecond }})
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"messages\": ")
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 3*time.Second {
		t.Errorf("stalled body: %d after %v", resp.StatusCode, time.Since(start))
	}
	// 300 ms is far less than the generation below takes on a busy machine with 2 threads; it
	// must still finish.
	c := f.chat(t, `{`+hello+`, "max_tokens": 60, "temperature": 0, "n": 4}`)
	if len(c.Choices) != 4 {
		t.Errorf("a long generation: %+v", c)
	}
}

// The listener holds at most n connections: the next gets a 503 at once; a closed connection
// frees its place.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	hs.Listener.Close()
	hs.Listener = LimitListener(ln, 2, nil)
	hs.Start()
	defer hs.Close()
	addr := ln.Addr().String()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v", len(held), err)
		}
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection: %v %v", resp, err)
	}
	third.Close()
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place after a connection closed: %v %v", resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	held[1].Close()
	if hs := HTTPServer(nil, nil); hs.ReadHeaderTimeout <= 0 || hs.IdleTimeout <= 0 || hs.ReadTimeout != 0 || hs.WriteTimeout != 0 {
		t.Errorf("HTTPServer timeouts: header %v, idle %v, read %v, write %v", hs.ReadHeaderTimeout, hs.IdleTimeout, hs.ReadTimeout, hs.WriteTimeout)
	}
}

// cancelled is a context that is done.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
