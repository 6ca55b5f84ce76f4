package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/safetensors"
)

// tiller runs the command line in-process and returns its exit code and output.
func tiller(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// tinyModel writes the tiny random checkpoint (with tiller's byte-level tokenizer) once per test.
func tinyModel(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "m")
	if code, _, stderr := tiller(t, "init", "--config", "testdata/tiny-config.json", "--out", dir, "--seed", "3"); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	return dir
}

func TestHelp(t *testing.T) {
	code, _, stderr := tiller(t, "--help")
	if code != 0 || !strings.Contains(stderr, "generate") || !strings.Contains(stderr, "inspect") {
		t.Errorf("--help: code %d\n%s", code, stderr)
	}
	for name := range commands {
		code, _, stderr := tiller(t, name, "--help")
		if code != 0 || !strings.Contains(stderr, "usage: tiller "+name) || !strings.Contains(stderr, "-") {
			t.Errorf("%s --help: code %d\n%s", name, code, stderr)
		}
	}
	if code, _, _ := tiller(t); code != 2 {
		t.Errorf("no arguments: code %d, want 2", code)
	}
}

func TestBadUsage(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"generate", "--model", "x", "--bogus", "hi"}, "flag provided but not defined: -bogus"},
		{[]string{"generate", "--model", "x", "--max-tokens", "many", "hi"}, `invalid value "many" for flag -max-tokens`},
		{[]string{"generate", "--model", "x", "--max-tokens", "0", "hi"}, "--max-tokens 0"},
		{[]string{"generate", "--model", "x", "--threads", "0", "hi"}, "--threads 0"},
		{[]string{"generate", "--model", "x"}, "no prompt given"},
		{[]string{"generate", "--model", "x", "--compute", "bf16", "--device", "cuda", "hi"}, "--compute bf16 runs on the CPU only"},
		{[]string{"generate", "--model", "x", "--compute", "f16", "hi"}, `--compute "f16": want f32 or bf16`},
		{[]string{"score", "--model", "x", "--compute", "bf16", "--kv-cache", "q8", "hi"}, `--kv-cache "q8"`},
		{[]string{"score", "--model", "x"}, "no text given"},
		{[]string{"init", "--out", "x"}, "--config is required"},
		{[]string{"init", "--config", "x"}, "--out is required"},
		{[]string{"init", "--config", "x", "--out", "y", "--dtype", "q4"}, `--dtype "q4"`},
	}
	for _, c := range cases {
		code, _, stderr := tiller(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}

func TestBadModels(t *testing.T) {
	good := tinyModel(t)
	missing := filepath.Join(t.TempDir(), "absent")
	broken := t.TempDir()
	for _, f := range []string{"model.safetensors", "tokenizer.json", "generation_config.json"} {
		b, _ := os.ReadFile(filepath.Join(good, f))
		os.WriteFile(filepath.Join(broken, f), b, 0o644)
	}
	os.WriteFile(filepath.Join(broken, "config.json"), []byte(`{"model_type": "llama", "hidden_size": 64,`), 0o644)
	noTok := t.TempDir()
	for _, f := range []string{"model.safetensors", "config.json"} {
		b, _ := os.ReadFile(filepath.Join(good, f))
		os.WriteFile(filepath.Join(noTok, f), b, 0o644)
	}
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"generate", "--model", missing, "hi"}, []string{"absent"}},
		{[]string{"generate", "--model", broken, "hi"}, []string{filepath.Join(broken, "config.json"), "malformed JSON"}},
		{[]string{"generate", "--model", noTok, "hi"}, []string{"tokenizer.json"}},
		{[]string{"inspect", "--model", broken}, []string{"config.json"}},
		{[]string{"init", "--config", filepath.Join(missing, "config.json"), "--out", t.TempDir()}, []string{"absent"}},
		{[]string{"init", "--config", filepath.Join(broken, "config.json"), "--out", t.TempDir()}, []string{"malformed JSON"}},
		{[]string{"init", "--config", "testdata/tiny-config.json", "--out", good}, []string{"already holds config.json", "nothing was written"}},
		// The tiny model has 512 positions; 200 words of prompt (1000 byte tokens) do not fit.
		{[]string{"generate", "--model", good, strings.Repeat("word ", 200)}, []string{"max_position_embeddings"}},
		{[]string{"score", "--model", good, strings.Repeat("word ", 200)}, []string{"max_position_embeddings"}},
		{[]string{"score", "--model", good, "--logits-out", filepath.Join(missing, "x.safetensors"), "hello"}, []string{"absent"}},
	}
	for _, c := range cases {
		code, _, stderr := tiller(t, c.args...)
		if code != 1 {
			t.Errorf("%v: code %d, want 1; stderr %q", c.args, code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q does not say %q", c.args, stderr, w)
			}
		}
		if strings.Contains(stderr, "panic") || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%v: want one error line, got %q", c.args, stderr)
		}
	}
}

func TestGenerate(t *testing.T) {
	dir := tinyModel(t)
	code, out1, stderr := tiller(t, "generate", "--model", dir, "--max-tokens", "12", "--temperature", "0.9", "--seed", "5", "Once upon")
	if code != 0 {
		t.Fatalf("generate: %s", stderr)
	}
	if !strings.Contains(stderr, "prompt: ") || !strings.Contains(stderr, "tok/s") || !strings.Contains(stderr, "seed 5") {
		t.Errorf("stats line: %q", stderr)
	}
	_, out2, _ := tiller(t, "generate", "--model", dir, "--max-tokens", "12", "--temperature", "0.9", "--seed", "5", "Once upon")
	if out1 != out2 || strings.TrimSpace(out1) == "" {
		t.Errorf("same seed, different text: %q vs %q", out1, out2)
	}
	_, out3, _ := tiller(t, "generate", "--model", dir, "--max-tokens", "12", "--temperature", "0.9", "--seed", "6", "Once upon")
	if out3 == out1 {
		t.Errorf("seeds 5 and 6 gave the same text %q", out1)
	}
	// Flags may follow the prompt, and --chat with --system renders the template.
	code, _, stderr = tiller(t, "generate", "--model", dir, "Hello", "--chat", "--system", "Be brief.", "--max-tokens", "3")
	if code != 0 {
		t.Errorf("chat generate: %s", stderr)
	}
	if code, _, stderr := tiller(t, "generate", "--model", dir, "--system", "x", "Hello"); code != 2 || !strings.Contains(stderr, "--system needs --chat") {
		t.Errorf("--system without --chat: %d %q", code, stderr)
	}
	// A bf16 KV cache and bf16 compute generate too.
	if code, out, stderr := tiller(t, "generate", "--model", dir, "--kv-cache", "bf16", "--compute", "bf16", "--max-tokens", "5", "Once upon"); code != 0 || strings.TrimSpace(out) == "" {
		t.Errorf("generate --kv-cache bf16 --compute bf16: code %d, out %q, stderr %q", code, out, stderr)
	}
}

func TestScoreAndLogits(t *testing.T) {
	dir := tinyModel(t)
	path := filepath.Join(t.TempDir(), "logits.safetensors")
	code, out, stderr := tiller(t, "score", "--model", dir, "--logits-out", path, "abc")
	if code != 0 {
		t.Fatalf("score: %s", stderr)
	}
	// BOS then three byte tokens: three of them scored.
	if !strings.Contains(out, "tokens scored: 3") || !strings.Contains(out, "perplexity") {
		t.Errorf("score output:\n%s", out)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, ok := f.Info("logits")
	if !ok || info.DType != "F32" || len(info.Shape) != 2 || info.Shape[0] != 4 || info.Shape[1] != 512 {
		t.Errorf("logits tensor %+v", info)
	}
	if f.Header.Metadata["ids"] != "[256,97,98,99]" {
		t.Errorf("ids metadata %q", f.Header.Metadata["ids"])
	}
}

func TestTokenizeAndInspect(t *testing.T) {
	dir := tinyModel(t)
	code, out, stderr := tiller(t, "tokenize", "--model", dir, "--special", "hé")
	if code != 0 {
		t.Fatalf("tokenize: %s", stderr)
	}
	if first := strings.SplitN(out, "\n", 2)[0]; first != "[256,104,195,169]" {
		t.Errorf("ids line %q, want [256,104,195,169] (BOS, h, and the two bytes of é)", first)
	}
	// The tiny config has llama3 RoPE scaling, so init gave it the Llama 3.1 template: a dated
	// system turn, the user turn and the opened assistant turn make three headers.
	code, out, _ = tiller(t, "tokenize", "--model", dir, "--chat", "hi")
	if n := strings.Count(out, "\"<|start_header_id|>\" "); code != 0 || n != 3 {
		t.Errorf("chat tokenize has %d headers, want 3:\n%s", n, out)
	}
	code, out, stderr = tiller(t, "inspect", "--model", dir)
	if code != 0 {
		t.Fatalf("inspect: %s", stderr)
	}
	for _, want := range []string{"2 layers, hidden 64", "model.layers.1.mlp.down_proj.weight", "lm_head.weight", "llama3, factor 8", "KV cache"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
}

func TestModelName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ORG", "NAME")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for arg, want := range map[string]string{
		"":                           "tiny-chat",
		"tiny-chat":                  "tiny-chat",
		"HuggingFaceTB/SmolLM2@main": "HuggingFaceTB/SmolLM2",
		"/models/llama-8b/":          "llama-8b",
		"x/model.Q4_1.gguf":          "model.Q4_1.gguf",
		dir:                          "NAME", // a folder that exists is a folder, even shaped like ORG/NAME
	} {
		if got := modelName(arg); got != want {
			t.Errorf("modelName(%q) = %q, want %q", arg, got, want)
		}
	}
}

// Flags go anywhere among the arguments; after "--" nothing is a flag, and a flag's value may
// itself look like a flag or be "--".
func TestParseArgs(t *testing.T) {
	cases := []struct {
		args []string
		pos  []string
		n    int
		stop string
		chat bool
	}{
		{[]string{"a", "--n", "3", "b"}, []string{"a", "b"}, 3, "", false},
		{[]string{"--", "-5 degrees"}, []string{"-5 degrees"}, 0, "", false},
		{[]string{"--n", "2", "--", "-5", "--n", "7", "--chat"}, []string{"-5", "--n", "7", "--chat"}, 2, "", false},
		{[]string{"x", "--", "--"}, []string{"x", "--"}, 0, "", false},
		{[]string{"--stop", "--", "y"}, []string{"y"}, 0, "--", false},
		{[]string{"--stop", "-x", "--chat", "-", "z"}, []string{"-", "z"}, 0, "-x", true},
		{[]string{"--stop=--", "--chat=false", "--", "--chat"}, []string{"--chat"}, 0, "--", false},
	}
	for _, c := range cases {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		n := fs.Int("n", 0, "")
		stop := fs.String("stop", "", "")
		chat := fs.Bool("chat", false, "")
		pos, err := parse(fs, c.args)
		if err != nil || !slices.Equal(pos, c.pos) || *n != c.n || *stop != c.stop || *chat != c.chat {
			t.Errorf("%q: %q n=%d stop=%q chat=%v (%v); want %q n=%d stop=%q chat=%v", c.args, pos, *n, *stop, *chat, err, c.pos, c.n, c.stop, c.chat)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parse(fs, []string{"a", "--bogus", "--", "--bogus"}); err == nil || !strings.Contains(err.Error(), "-bogus") {
		t.Errorf("an undefined flag before --: %v", err)
	}
}

// A prompt that starts with "-" or holds flag-like words goes through after "--".
func TestDoubleDashPrompt(t *testing.T) {
	dir := tinyModel(t)
	code, stdout, stderr := tiller(t, "tokenize", "--model", dir, "--", "-5 degrees", "--max-tokens", "3")
	first, _, _ := strings.Cut(stdout, "\n")
	var ids []int32
	if err := json.Unmarshal([]byte(first), &ids); code != 0 || err != nil {
		t.Fatalf("code %d: %s %s", code, stdout, stderr)
	}
	if want := len("-5 degrees --max-tokens 3"); len(ids) != want { // tiller's byte-level tokenizer: a token per byte
		t.Errorf("%d tokens, want %d (the whole text after --)\n%s", len(ids), want, stdout)
	}
	if code, _, stderr := tiller(t, "generate", "--model", dir, "--max-tokens", "2", "--", "-5 degrees"); code != 0 {
		t.Errorf("generate -- \"-5 degrees\": code %d\n%s", code, stderr)
	}
}

// --threads counts a core's hardware threads once.
func TestCoresOf(t *testing.T) {
	sys := t.TempDir()
	// Two packages of two cores with two threads each: cpu0-3 on package 0, cpu4-7 on package 1;
	// cpu N and N+2 share a core.
	for cpu := range 8 {
		topo := filepath.Join(sys, fmt.Sprintf("cpu%d", cpu), "topology")
		os.MkdirAll(topo, 0o755)
		os.WriteFile(filepath.Join(topo, "physical_package_id"), []byte(fmt.Sprintf("%d\n", cpu/4)), 0o644)
		os.WriteFile(filepath.Join(topo, "core_id"), []byte(fmt.Sprintf("%d\n", cpu%2)), 0o644)
	}
	for _, c := range []struct {
		cpus []int
		want int
	}{{[]int{0, 1, 2, 3, 4, 5, 6, 7}, 4}, {[]int{0, 2}, 1}, {[]int{0, 1}, 2}, {[]int{1, 5}, 2}, {[]int{3}, 1}} {
		if n, err := coresOf(sys, c.cpus); err != nil || n != c.want {
			t.Errorf("cpus %v: %d cores (%v), want %d", c.cpus, n, err, c.want)
		}
	}
	if _, err := coresOf(sys, []int{9}); err == nil {
		t.Error("a CPU with no topology folder counted")
	}
	if n := physicalCores(); n < 1 || n > runtime.NumCPU() {
		t.Errorf("physicalCores %d, with %d logical CPUs", n, runtime.NumCPU())
	}
}
