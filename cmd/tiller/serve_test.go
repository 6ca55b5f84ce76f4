package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
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
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	if code := <-done; code != 0 || !strings.Contains(stderr.String(), "1 steering vectors") {
		t.Errorf("exit code %d: %s", code, stderr.String())
	}
}
