package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trainData writes a tiny conversation data file: counting replies the model can learn a little of.
func trainData(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data.jsonl")
	var b strings.Builder
	for i := 0; i < n; i++ {
		e := map[string]any{"messages": []map[string]string{{"role": "user", "content": "count"}, {"role": "assistant", "content": strings.Repeat("ab", 1+i%4)}}}
		if i%10 == 0 {
			e["held_out"] = true
		}
		line, _ := json.Marshal(e)
		b.Write(append(line, '\n'))
	}
	b.WriteString(`{"text": "plain text works too"}` + "\n")
	os.WriteFile(path, []byte(b.String()), 0o644)
	return path
}

func TestTrain(t *testing.T) {
	model := tinyModel(t) // for its byte-level tokenizer and config
	out := filepath.Join(t.TempDir(), "trained")
	code, stdout, stderr := tiller(t, "train", "--config", filepath.Join(model, "config.json"), "--tokenizer", filepath.Join(model, "tokenizer.json"),
		"--data", trainData(t, 40), "--out", out, "--steps", "6", "--batch", "2", "--seq-len", "48", "--warmup", "2", "--eval-every", "3")
	if code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	if !strings.Contains(stdout, "final training loss") || !strings.Contains(stderr, "37 training and 4 held-out examples") || !strings.Contains(stderr, "step 6/6") {
		t.Errorf("stdout %q\nstderr %q", stdout, stderr)
	}
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "loss.csv", "loss.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	csv, _ := os.ReadFile(filepath.Join(out, "loss.csv"))
	if lines := strings.Count(string(csv), "\n"); lines != 7 {
		t.Errorf("loss.csv has %d lines, want a header and 6 steps:\n%s", lines, csv)
	}
	// The trained checkpoint runs.
	if code, _, stderr := tiller(t, "generate", "--model", out, "--max-tokens", "3", "hi"); code != 0 {
		t.Errorf("generate from the trained model: %s", stderr)
	}
	// And refuses to overwrite it.
	if code, _, stderr := tiller(t, "train", "--config", filepath.Join(model, "config.json"), "--tokenizer", filepath.Join(model, "tokenizer.json"),
		"--data", trainData(t, 4), "--out", out, "--steps", "1"); code != 1 || !strings.Contains(stderr, "already holds") {
		t.Errorf("training over a checkpoint: %d %q", code, stderr)
	}
}

func TestTrainBadData(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	for content, want := range map[string]string{
		"{\"text\": \"ok\"}\n{\"text\": \n":                             "bad.jsonl:2:",
		`{"messages": [{"role": "user", "content": "x"}], "text": "y"}`: `exactly one of "messages" and "text"`,
		`{"held_out": true, "text": "only held out"}`:                   "no training examples",
		`{"messages": [{"role": "", "content": "x"}]}`:                  "bad.jsonl:1:",
	} {
		os.WriteFile(bad, []byte(content), 0o644)
		code, _, stderr := tiller(t, "train", "--config", filepath.Join(model, "config.json"), "--tokenizer", filepath.Join(model, "tokenizer.json"),
			"--data", bad, "--out", filepath.Join(dir, "o"), "--steps", "1")
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("%q: code %d, stderr %q, want %q", content, code, stderr, want)
		}
	}
	if code, _, stderr := tiller(t, "train", "--config", "x", "--tokenizer", "y", "--data", "z", "--out", "o", "--lr", "0"); code != 2 || !strings.Contains(stderr, "--lr 0") {
		t.Errorf("--lr 0: %d %q", code, stderr)
	}
}
