package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		addr, key string
		ok        bool
	}{
		{"127.0.0.1:8080", "", true},
		{"127.3.2.1:80", "", true},
		{"[::1]:8080", "", true},
		{"localhost:8080", "", true},
		{"0.0.0.0:8080", "", false},
		{":8080", "", false},
		{"192.168.1.5:8080", "", false},
		{"example.com:8080", "", false},
		{"0.0.0.0:8080", "k", true},
		{"127.0.0.1", "", false},
	} {
		if err := checkListen(c.addr, c.key); (err == nil) != c.ok {
			t.Errorf("%s with key %q: %v", c.addr, c.key, err)
		}
	}
}

func TestServeRefusesOpenAddress(t *testing.T) {
	code, _, stderr := tiller(t, "serve", "--model", "nowhere", "--addr", "0.0.0.0:8080")
	if code != 2 || !strings.Contains(stderr, "--api-key") {
		t.Errorf("code %d: %s", code, stderr)
	}
	code, _, stderr = tiller(t, "serve", "--model", "nowhere", "--batch-tokens", "8", "--max-running", "8")
	if code != 2 || !strings.Contains(stderr, "--batch-tokens") {
		t.Errorf("code %d: %s", code, stderr)
	}
}

// tiller serve answers a chat completion with steering by a vector from --vectors, then shuts
// down on SIGINT.
func TestServe(t *testing.T) {
	dir := tinyModel(t)
	vecs := t.TempDir()
	if code, _, stderr := tiller(t, "derive", "--model", dir, "--pairs", "joy", "--layer", "1", "--out", vecs+"/joy.safetensors"); code != 0 {
		t.Fatalf("derive: %s", stderr)
	}
	r, w := io.Pipe()
	done := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		done <- run([]string{"serve", "--model", dir, "--addr", "127.0.0.1:0", "--vectors", vecs, "--threads", "2"}, w, &stderr)
		w.Close()
	}()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("no address printed: %v", err)
	}
	go io.Copy(io.Discard, r)
	url := strings.Fields(line[strings.Index(line, "http://"):])[0]
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 5, "temperature": 0, "steering": [{"vector": "joy", "strength": 4, "layers": "1", "positions": "generated"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 || out.Usage.CompletionTokens == 0 {
		t.Errorf("status %d, %+v, %v", resp.StatusCode, out, err)
	}
	// On loopback the server answers loopback Host names only (DNS rebinding), takes JSON bodies
	// only (cross-site forms), and serves metrics.
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/models", nil)
	req.Host = "evil.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign Host: %v %v", resp, err)
	}
	if resp, err := http.Post(url+"/v1/vectors", "text/plain", strings.NewReader(`{"name": "x", "file": "joy.safetensors"}`)); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain POST: %v %v", resp, err)
	}
	if resp, err := http.Get(url + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics: %v %v", resp, err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	if code := <-done; code != 0 || !strings.Contains(stderr.String(), "1 steering vectors") {
		t.Errorf("exit code %d: %s", code, stderr.String())
	}
}

// The API key comes from --api-key, --api-key-file or $TILLER_API_KEY; a key on the command line
// draws a warning, since the process list shows it.
func TestReadAPIKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	os.WriteFile(file, []byte("s3cret\nsecond line ignored\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	var logged strings.Builder
	logger := log.New(&logged, "", 0)
	t.Setenv(apiKeyEnv, "from-env")
	cases := []struct {
		flag, file, want, err string
	}{
		{"", file, "s3cret", ""},
		{"from-flag", "", "from-flag", ""},
		{"", "", "from-env", ""},
		{"a", file, "", "not both"},
		{"", empty, "", "empty"},
		{"", filepath.Join(dir, "missing"), "", "missing"},
		{"two words", "", "", "whitespace"},
	}
	for _, c := range cases {
		got, err := readAPIKey(c.flag, c.file, logger)
		if got != c.want || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("--api-key %q --api-key-file %q: %q, %v; want %q, %q", c.flag, c.file, got, err, c.want, c.err)
		}
	}
	if !strings.Contains(logged.String(), "process list") {
		t.Errorf("no warning for a key on the command line: %q", logged.String())
	}
	t.Setenv(apiKeyEnv, "")
	if _, err := readAPIKey("", "", logger); err == nil {
		t.Error("an empty $TILLER_API_KEY was taken")
	}
	os.Unsetenv(apiKeyEnv)
	if k, err := readAPIKey("", "", logger); k != "" || err != nil {
		t.Errorf("no key anywhere: %q %v", k, err)
	}
	// A key from the environment lets the server listen beyond loopback.
	t.Setenv(apiKeyEnv, "k")
	code, _, stderr := tiller(t, "serve", "--model", "nowhere", "--addr", "0.0.0.0:8080")
	if strings.Contains(stderr, "listens beyond this machine") || code == 0 {
		t.Errorf("with $%s: code %d, %s", apiKeyEnv, code, stderr)
	}
}
