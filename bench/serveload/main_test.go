package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/tensor"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {0, 1}, {100, 10}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("p%g = %g, want %g", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 || xs[0] != 5 {
		t.Error("percentile of nothing, or it sorted its input")
	}
}

func TestLoopback(t *testing.T) {
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true}, {"http://localhost:1", true}, {"http://[::1]:80", true},
		{"http://10.0.0.1:8080", false}, {"http://example.com", false}, {"https://127.0.0.1:1", false}, {"127.0.0.1:80", false},
	} {
		if err := loopback(c.url); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.url, err)
		}
	}
}

// tinyModel writes a tiny random model with tiller's byte-level tokenizer.
func tinyModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
		"max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "initializer_range": 0.1,
		"bos_token_id": 256, "eos_token_id": [257], "tie_word_embeddings": true}`
	c, err := llama.WriteRandom([]byte(cfg), nil, dir, llama.InitOptions{Seed: 1, DType: tensor.BF16})
	if err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteByteLevel(filepath.Join(dir, "tokenizer.json"), c.Vocab); err != nil {
		t.Fatal(err)
	}
	if err := tokenizer.WriteConfig(filepath.Join(dir, "tokenizer_config.json"), "<|begin_of_text|>", "<|eot_id|>", chat.Llama3()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A small run against a tiny model in this process: every level and mode answers with no errors
// and the steered rows carry a ratio.
func TestRun(t *testing.T) {
	dir := tinyModel(t)
	var out strings.Builder
	if err := run([]string{"--model", dir, "--concurrency", "1,3", "--requests", "3", "--max-tokens", "4", "--threads", "1", "--rounds", "2"}, &out); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "| 1 |") || strings.HasPrefix(line, "| 3 |") {
			rows = append(rows, line)
		}
	}
	if len(rows) != 4 || strings.Contains(out.String(), "first error") {
		t.Fatalf("output:\n%s", out.String())
	}
	for i, r := range rows {
		f := strings.Split(r, "|")
		if strings.TrimSpace(f[3]) != "6" || strings.TrimSpace(f[4]) != "0" || (i%2 == 1) == (strings.TrimSpace(f[11]) == "") || (i%2 == 1) == (strings.TrimSpace(f[12]) == "") {
			t.Errorf("row %q: want 6 requests (2 rounds of 3), 0 errors, and ratios on steered rows only", r)
		}
	}
	if err := run([]string{"--url", "http://192.168.0.1:8080", "--hidden-size", "64", "--layers", "2"}, &out); err == nil {
		t.Error("a non-loopback target was accepted")
	}
}

// The hostile clients against the server as tiller serve runs it: the amplification request is
// refused (its layers text is longer than any list of distinct layers), the cross-site requests
// are refused and plant nothing,
// the flood gets its vectors stored until the store is full; the run's table has the attacked
// rows with the latency ratio, and the normal clients see no errors.
func TestHostile(t *testing.T) {
	dir := tinyModel(t)
	base, hidden, layers, stop, err := serveModel(dir, 1, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := addVectors(context.Background(), http.DefaultClient, base, hidden, layers); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	rep := Hostile{URL: base, Clients: 10, Hidden: hidden, Layers: layers}.Run(ctx)
	st := rep.statuses
	if st["amplify"]["400"] == 0 || st["crosssite"]["plant 403"] == 0 || st["crosssite"]["origin 403"] == 0 || st["crosssite"]["rebind 403"] == 0 || len(rep.planted) != 0 {
		t.Errorf("statuses: %v, planted %v", st, rep.planted)
	}
	if st["flood"]["200"] == 0 || st["flood"]["409"] == 0 {
		t.Errorf("the flood filled no store: %v", st["flood"])
	}
	if rep.held["slow"] < time.Second || rep.held["idle"] < time.Second {
		t.Errorf("connections held: %v", rep.held)
	}
	var out strings.Builder
	if err := run([]string{"--model", dir, "--concurrency", "2", "--requests", "4", "--max-tokens", "4", "--threads", "1", "--hostile", "5"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| 2 | hostile | 4 | 0 |") || !strings.Contains(out.String(), "crosssite") {
		t.Errorf("output:\n%s", out.String())
	}
}
